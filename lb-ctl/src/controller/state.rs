//! What the controller holds: the model, the kernel's tables, the
//! features' handles and the figures of the sweeps.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use super::account::TableAccount;
use crate::{
    health::{HealthBook, Target},
    kernel::program::Dataplane,
    model::{
        endpoint::{Endpoint, VipId},
        services::Services,
    },
};

/// The controller's state: the model and the kernel tables it describes.
pub struct Controller {
    pub services: Services,
    pub dataplane: Dataplane,
    /// The interfaces the program is attached to.
    pub ifaces: Vec<String>,
    /// Health-check records, written by the checker tasks.
    pub health: Arc<Mutex<HealthBook>>,
    /// The backends to check, republished after every change.
    pub targets: tokio::sync::watch::Sender<Vec<Target>>,
    /// Draining backends already reported as safe to remove.
    pub(super) drained_reported: std::collections::HashSet<(VipId, Endpoint)>,
    /// Table sizes and unconfirmed-flow evictions, as of the last sweep.
    pub(super) tables: TableAccount,
    /// How the program is attached, and why.
    pub mode: (String, String),
    pub(super) started: std::time::Instant,
    /// When the last sweep ended, how long it took, what it deleted.
    pub(super) last_sweep: Option<(std::time::Instant, std::time::Duration, [u64; 4])>,
    /// What the sweeps deleted so far, per table.
    pub(super) swept_total: [u64; 4],
    /// The layer-7 proxy, once a `mode: http` VIP exists.
    pub(super) http: Option<HttpPart>,
    /// Where the cookie key is (`http.cookie_key_file`).
    pub cookie_key_file: PathBuf,
    /// Sessions shared with the other hosts (`cluster:`).
    pub cluster: Option<Arc<crate::cluster::store::Cluster>>,
    /// The config file `reload` re-reads (`attach --config`).
    pub config_file: Option<PathBuf>,
    /// The VIPs announced by BGP (`announce:`).
    pub announcer: Option<crate::announce::Announcer>,
    /// Where the announcer records what it announced (next to the
    /// control socket).
    pub announce_state_file: PathBuf,
    /// The settings in effect (timeouts, limits, sweeper, http, cluster);
    /// the VIPs in effect are the model.
    pub running: crate::model::config::Config,
}

/// The proxy and what the controller keeps of it.
pub(super) struct HttpPart {
    pub(super) view: tokio::sync::watch::Sender<Arc<crate::l7::proxy::View>>,
    pub(super) listeners: crate::l7::listen::Listeners,
    pub(super) stats: crate::l7::proxy::HttpStats,
    /// The TLS servers of the VIPs with `tls:`, as loaded last.
    pub(super) tls: std::collections::HashMap<VipId, crate::l7::tls::Server>,
    /// What they share for the process's life (the session ticket key).
    pub(super) tls_shared: crate::l7::tls::Shared,
}

impl Controller {
    /// A controller over `services` and `dataplane`.
    #[must_use]
    pub fn new(services: Services, dataplane: Dataplane, ifaces: Vec<String>) -> Self {
        let (targets, _) = tokio::sync::watch::channel(crate::health::targets(&services));
        Self {
            services,
            dataplane,
            ifaces,
            health: Arc::default(),
            targets,
            drained_reported: std::collections::HashSet::new(),
            tables: TableAccount::default(),
            mode: (String::new(), String::new()),
            started: std::time::Instant::now(),
            last_sweep: None,
            swept_total: [0; 4],
            http: None,
            cookie_key_file: crate::model::config::Http::default().cookie_key_file,
            cluster: None,
            config_file: None,
            announcer: None,
            announce_state_file: PathBuf::new(),
            running: crate::model::config::Config::default(),
        }
    }
}
