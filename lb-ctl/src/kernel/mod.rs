//! The kernel: the XDP program and its maps as seen from user space, and
//! the host settings lb needs. Imports only `model`.

pub mod batch;
pub mod clock;
pub mod error;
pub mod ethtool;
pub mod fixed;
pub mod lister;
pub mod netdev;
pub mod pins;
pub mod program;
pub mod release;
pub mod stats;
pub mod sweeper;
pub mod sysctl;
pub mod tables;
pub mod tables6;
pub mod vipaddr;
pub mod xdpmode;
