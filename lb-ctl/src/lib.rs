//! lb-ctl: the controller and CLI of the lb XDP load balancer.
//!
//! - [`config`]: the YAML file and its validation;
//! - [`services`]: the desired state (VIPs, backends, ids) every change is
//!   validated against before it reaches the kernel;
//! - [`sched`]: selection tables (rr, wrr) the data path indexes;
//! - [`dataplane`]: loading and attaching the XDP program, writing and
//!   reading its maps, sweeping expired entries;
//! - [`control`]: the Unix-socket protocol between `lb-ctl attach` and the
//!   other subcommands; [`daemon`] is `lb-ctl attach` itself;
//! - [`metrics`]: Prometheus text output; [`sysctl`]: host settings.
pub mod api;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod control;
pub mod cookie;
pub mod daemon;
pub mod dataplane;
pub mod ethtool;
pub mod health;
pub mod metrics;
pub mod netdev;
pub mod pins;
pub mod proxy;
pub mod sched;
pub mod services;
pub mod sysctl;
pub mod xdpmode;
