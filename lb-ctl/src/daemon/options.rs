//! What `lb-ctl attach` is given on its command line.

use std::path::PathBuf;

/// The options of `lb-ctl attach`.
pub struct AttachOptions {
    pub ifaces: Vec<String>,
    pub config: Option<PathBuf>,
    pub xdp_mode: crate::kernel::xdpmode::Requested,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub keep_state: bool,
    /// Serve Prometheus metrics over HTTP here.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Load this eBPF object instead of the built-in program.
    pub program: Option<PathBuf>,
    /// This host's name in the cluster (overrides `cluster.node`).
    pub node: Option<String>,
}
