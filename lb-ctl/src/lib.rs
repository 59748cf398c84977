//! lb-ctl: the controller and CLI of the lb XDP load balancer, in layers.
//! Each layer imports only the layers below it (a test in `tests/` checks
//! it), from the bottom up:
//!
//! - [`model`]: the desired state, pure and tested on the host: endpoints,
//!   services and their ids, the config file, schedulers, the health check
//!   and cookie specs;
//! - [`kernel`]: the XDP program and its maps (load, attach, apply the
//!   model, sweep, list, count), pins, netlink, sysctl, ethtool;
//! - [`health`], [`l7`] (the proxy and its cookie) and [`cluster`]: the
//!   features, each on `model` and `kernel`, never on each other;
//! - [`controller`]: keeps the model and the kernel in step, serves the
//!   commands, composes the reports;
//! - [`api`]: the control socket's server and client, and the metrics;
//! - [`daemon`]: `lb-ctl attach`, wiring the tasks together;
//! - [`cli`]: the command line.
//!
//! [`sync`] and [`error_text`] are helpers every layer may use.
pub mod announce;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod daemon;
pub mod error_text;
pub mod health;
pub mod kernel;
pub mod l7;
pub mod model;
pub mod sync;
