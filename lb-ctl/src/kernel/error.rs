//! What can go wrong between lb-ctl and the kernel, for every module of
//! this layer.

use std::path::PathBuf;

use lb_common::PROGRAM_NAME;

use super::xdpmode::Mode;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the XDP program")]
    MissingMap(&'static str),
    #[error("the XDP program has no program named {PROGRAM_NAME}")]
    MissingProgram,
    #[error("interface {name:?} does not exist")]
    UnknownInterface { name: String },
    #[error("attaching to interface {name:?} in {mode} mode: {source}")]
    Attach {
        name: String,
        mode: Mode,
        source: aya::programs::ProgramError,
    },
    #[error("pinning map {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("adding interface {name:?} to the redirect map: {source}")]
    Ports {
        name: String,
        source: aya::maps::xdp::XdpMapError,
    },
    #[error(
        "the table pinned at {path} (kept by --keep-state) holds {have}, but {field} is {wanted}; \
         set {field} back to {have}, or remove {path} and lose the kept state"
    )]
    PinnedSize {
        path: PathBuf,
        have: u32,
        field: &'static str,
        wanted: u32,
    },
    #[error(
        "the map pinned at {path} is not the {name} this build expects: {what}. It was left by \
         another build or program; remove it with `lb-ctl detach IFACE...` (this drops the kept \
         connections and sessions) and attach again"
    )]
    PinnedShape {
        path: PathBuf,
        name: &'static str,
        what: String,
    },
    #[error("reading the program's own map definitions: {0}")]
    Object(String),
    #[error(
        "the program has no SESSION_EVENTS ring, which `cluster:` needs: load lb's own \
         program (no --program) or one built from this version"
    )]
    NoSessionRing,
    #[error("pinning the attachment of {name:?} at {path}: {source}")]
    PinLink {
        name: String,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("the attachment of {name:?}: {message}")]
    Link { name: String, message: String },
    #[error("batched access to map {name}: {source}")]
    Batch {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("counting possible CPUs: {0}")]
    Cpus(String),
    #[error("reading the monotonic clock: {0}")]
    Clock(nix::Error),
}

pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

pub(crate) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}
