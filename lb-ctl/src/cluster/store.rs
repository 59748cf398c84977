//! The cluster's moving parts: the reader of the data path's session
//! announcements, the publisher and the subscriber, each a tokio task.
//!
//! Forwarding never waits for them: the data path writes its ring and goes
//! on, and a full ring or a full queue loses only announcements (counted),
//! after which the next sweep publishes every live session again. With Redis unreachable each host goes on
//! alone (logged once, `lb_cluster_store_up 0`); when it returns, every
//! host publishes all its live sessions again and reads the stream from
//! where it stopped.
//!
//! About 650 lines: the three tasks share the counters, the connection
//! handling and the resync flag defined here, and are read best side by
//! side.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use lb_common::{Session, SessionEvent, SessionKey};
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, Value};
use tokio::sync::{mpsc, watch};

use super::{merge, Clocks, Directory, Merge, Passes, Record};
use crate::model::config::ClusterSettings;

/// Batches waiting for the publisher; more are dropped (and counted), and
/// the next refresh pass publishes every live session again.
const QUEUE: usize = 1024;
/// Announcements read from the ring per wake-up before the reader lets
/// other tasks run.
const RING_BURST: usize = 4096;
/// Sessions installed from other hosts whose re-publication is held back
/// (their `last_seen` unchanged here) at most; beyond, the memory is
/// dropped and some are published back once, harmlessly.
const INSTALLED_MAX: usize = 1 << 20;
/// Records per pipelined `XADD` batch and per `XREAD`.
const BATCH: usize = 1024;
/// How long `XREAD` blocks waiting for new entries.
const BLOCK: Duration = Duration::from_millis(500);
/// Wait between attempts to reach an unreachable store.
const RETRY: Duration = Duration::from_secs(1);

/// What the tasks count, for metrics and `status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Whether the store answered the publisher and the subscriber last
    /// time: [`UNKNOWN`] until the first contact, then [`UP`] or [`DOWN`].
    pub publisher: AtomicU8,
    pub subscriber: AtomicU8,
    /// Set when the store is reachable again after an outage (or at the
    /// first contact): the next sweep publishes every live session.
    pub resync: AtomicBool,
    pub published: AtomicU64,
    /// Records not published: the queue was full or the store down.
    pub publish_dropped: AtomicU64,
    pub installed: AtomicU64,
    pub kept_local: AtomicU64,
    pub expired: AtomicU64,
    /// Records for a VIP, backend or client family this host does not have.
    pub unplaced: AtomicU64,
    /// Stream entries that are not records (named in the log once).
    pub malformed: AtomicU64,
    /// Installs the kernel refused (the persistence table is full).
    pub install_failed: AtomicU64,
    /// Announcements the data path could not put on the full ring.
    pub ring_lost: AtomicU64,
    /// Milliseconds from creation on another host to installation here,
    /// of the last [`LAGS`] new sessions installed.
    pub lags: Mutex<std::collections::VecDeque<u32>>,
}

/// Values of [`Counters::state`].
pub const UNKNOWN: u8 = 0;
pub const UP: u8 = 1;
pub const DOWN: u8 = 2;

/// The counters at one moment, for metrics and `status`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Snapshot {
    pub node: String,
    pub store: String,
    pub up: bool,
    pub published: u64,
    pub publish_dropped: u64,
    /// Received records by what became of them.
    pub received: Vec<(String, u64)>,
    /// Publication lag of recent new sessions (ms): median and 99th
    /// percentile.
    pub lag_p50_ms: Option<u32>,
    pub lag_p99_ms: Option<u32>,
}

/// New sessions whose publication lag is kept (for the metric's
/// quantiles and the benchmark).
pub const LAGS: usize = 65_536;

impl Counters {
    /// The `q` quantile (0..=1) of the kept lags, in milliseconds.
    #[must_use]
    pub fn lag_quantile(&self, q: f64) -> Option<u32> {
        let mut v: Vec<u32> = crate::sync::lock(&self.lags).iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[i])
    }

    fn lag(&self, ms: u64) {
        let mut lags = crate::sync::lock(&self.lags);
        if lags.len() == LAGS {
            lags.pop_front();
        }
        lags.push_back(u32::try_from(ms).unwrap_or(u32::MAX));
    }
}

/// Who talks to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
}

impl Counters {
    /// [`UP`] when both roles are, [`DOWN`] when either is, else
    /// [`UNKNOWN`].
    #[must_use]
    pub fn state(&self) -> u8 {
        let (p, s) = (self.publisher.load(Relaxed), self.subscriber.load(Relaxed));
        if p == DOWN || s == DOWN {
            DOWN
        } else if p == UP && s == UP {
            UP
        } else {
            UNKNOWN
        }
    }

    /// Note whether the store answered `role`; log once per change of the
    /// whole. The publisher regaining the store publishes every live
    /// session again (at the next sweep).
    fn reached(
        &self,
        role: Role,
        ok: bool,
        settings: &ClusterSettings,
        why: &dyn std::fmt::Display,
    ) {
        let before = self.state();
        let mine = match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        };
        let was = mine.swap(if ok { UP } else { DOWN }, Relaxed);
        if role == Role::Publisher && ok && was != UP {
            self.resync.store(true, Relaxed);
        }
        let now = self.state();
        if now == before {
            return;
        }
        if now == UP {
            log::info!(
                "cluster: store {} reachable as node {:?}; publishing this host's live sessions \
                 and reading the others' from where this host stopped",
                settings.shown_store(),
                settings.node
            );
        } else if now == DOWN {
            log::warn!(
                "cluster: store {} unreachable ({role:?}: {why}); this host goes on alone, \
                 forwarding is not affected; sessions created meanwhile are shared when it returns",
                settings.shown_store()
            );
        }
    }
}

/// The controller's handle on the cluster tasks.
pub struct Cluster {
    pub settings: ClusterSettings,
    /// This controller's id in the stream (random at each start).
    pub instance: u64,
    pub counters: Arc<Counters>,
    queue: mpsc::Sender<Vec<Record>>,
    directory: watch::Sender<Arc<Directory>>,
    passes: Mutex<Passes>,
    /// Sessions installed from other hosts, with the `last_seen` they were
    /// installed with: not published back while it is unchanged.
    installed: Arc<Mutex<HashMap<SessionKey, u64>>>,
    /// The data path's count of announcements lost on a full ring.
    lost: Option<PerCpuArray<MapData, u64>>,
}

impl Cluster {
    /// Start the tasks: the ring reader (when the program has the ring),
    /// the publisher and the subscriber, which installs into `sessions`.
    ///
    /// # Errors
    /// When the store's address is not a Redis URL.
    pub fn start(
        settings: ClusterSettings,
        directory: Directory,
        sessions: BpfHashMap<MapData, SessionKey, Session>,
        ring: Option<RingBuf<MapData>>,
        lost: Option<PerCpuArray<MapData, u64>>,
    ) -> anyhow::Result<Self> {
        let client = Store::new(&settings)
            .map_err(|e| anyhow::anyhow!("cluster.store {}: {e}", settings.shown_store()))?;
        let instance = random_instance()?;
        let counters = Arc::new(Counters::default());
        // Unknown until the first contact, which is logged as reachable
        // (or as unreachable, below).
        let (queue, rx) = mpsc::channel(QUEUE);
        let (directory, dir_rx) = watch::channel(Arc::new(directory));
        let installed = Arc::new(Mutex::new(HashMap::new()));
        let me = Me {
            instance,
            node: settings.node.clone(),
        };
        tokio::spawn(publish(
            client.clone(),
            settings.clone(),
            rx,
            Arc::clone(&counters),
        ));
        tokio::spawn(subscribe(
            client,
            settings.clone(),
            me.clone(),
            dir_rx.clone(),
            Install {
                sessions,
                installed: Arc::clone(&installed),
            },
            Arc::clone(&counters),
        ));
        if let Some(ring) = ring {
            tokio::spawn(read_ring(
                ring,
                me,
                dir_rx,
                queue.clone(),
                Arc::clone(&counters),
            ));
        }
        Ok(Self {
            settings,
            instance,
            counters,
            queue,
            directory,
            passes: Mutex::new(Passes::default()),
            installed,
            lost,
        })
    }

    /// The model changed: translate by the new one.
    pub fn update(&self, directory: Directory) {
        self.directory.send_if_modified(|d| {
            let changed = **d != directory;
            if changed {
                *d = Arc::new(directory);
            }
            changed
        });
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        Snapshot {
            node: self.settings.node.clone(),
            store: self.settings.shown_store(),
            up: c.state() == UP,
            published: c.published.load(Relaxed),
            publish_dropped: c.publish_dropped.load(Relaxed) + c.ring_lost.load(Relaxed),
            received: [
                ("installed", &c.installed),
                ("kept_local", &c.kept_local),
                ("expired", &c.expired),
                ("unplaced", &c.unplaced),
                ("malformed", &c.malformed),
                ("install_failed", &c.install_failed),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.load(Relaxed)))
            .collect(),
            lag_p50_ms: c.lag_quantile(0.5),
            lag_p99_ms: c.lag_quantile(0.99),
        }
    }

    /// The VIPs whose used sessions the next sweep publishes (see
    /// [`Passes`]).
    pub fn due(&self, now_ns: u64) -> HashMap<u32, u64> {
        // Announcements lost on a full ring: publish everything again.
        let lost: u64 = self
            .lost
            .as_ref()
            .and_then(|m| m.get(&0, 0).ok())
            .map_or(0, |v| v.iter().sum());
        if lost > self.counters.ring_lost.swap(lost, Relaxed) {
            self.counters.resync.store(true, Relaxed);
        }
        let mut passes = crate::sync::lock(&self.passes);
        if self.counters.resync.swap(false, Relaxed) {
            passes.reset();
        }
        passes.due(&self.directory.borrow(), now_ns)
    }

    /// Queue sessions of this host's table for publication (one batch),
    /// leaving out those installed from other hosts and not used here since.
    pub fn publish(&self, sessions: &[(SessionKey, Session)]) {
        let Ok(clocks) = Clocks::now() else { return };
        let directory = Arc::clone(&self.directory.borrow());
        let mut installed = crate::sync::lock(&self.installed);
        let batch: Vec<Record> = sessions
            .iter()
            .filter(|(k, s)| match installed.get(k) {
                Some(&t) if t == s.last_seen_ns => false,
                Some(_) => {
                    installed.remove(k);
                    true
                }
                None => true,
            })
            .filter_map(|(k, s)| {
                directory.record(k, s, &clocks, (self.instance, &self.settings.node))
            })
            .collect();
        if installed.len() > INSTALLED_MAX {
            installed.clear();
        }
        drop(installed);
        offer(&self.queue, batch, &self.counters);
    }
}

/// Queue a batch, or count it as dropped when the queue is full (the next
/// refresh pass then publishes every live session).
fn offer(queue: &mpsc::Sender<Vec<Record>>, batch: Vec<Record>, counters: &Counters) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = queue.try_send(batch) {
        let lost = match e {
            mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b.len(),
        };
        counters.publish_dropped.fetch_add(lost as u64, Relaxed);
        counters.resync.store(true, Relaxed);
    }
}

fn random_instance() -> anyhow::Result<u64> {
    getrandom::u64().map_err(|e| anyhow::anyhow!("cluster: no random instance id: {e}"))
}

/// Who this controller is in the stream.
#[derive(Clone, Debug)]
struct Me {
    instance: u64,
    node: String,
}

/// The store: its client, and the credentials sent once connected.
#[derive(Clone)]
struct Store {
    client: redis::Client,
    /// (user, password), from the URL or `store_password_file`.
    auth: Option<(Option<String>, String)>,
}

impl Store {
    /// The store's client: its URL, the password of `store_password_file`,
    /// and for `rediss://` the CA of `store_ca_file` (else the system's).
    /// The credentials are taken out of the connection's own setup and
    /// sent by [`Store::connect`], so that a refusal comes back with
    /// Redis's own reason.
    fn new(settings: &ClusterSettings) -> redis::RedisResult<Self> {
        use redis::IntoConnectionInfo as _;
        // rustls takes its cryptography from the process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let info = settings.store.as_str().into_connection_info()?;
        let written = info.redis_settings();
        let password = settings
            .password
            .clone()
            .or_else(|| written.password().map(str::to_string));
        let auth = password.map(|p| (written.username().map(str::to_string), p));
        let mut plain = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if written.db() != 0 {
            plain = plain.set_db(written.db());
        }
        let info = info.set_redis_settings(plain);
        let client = match &settings.ca {
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
            None => redis::Client::open(info)?,
        };
        Ok(Self { client, auth })
    }

    /// A connection to the store, authenticated and answering, or why
    /// there is none: Redis's own words for a refusal (a wrong password,
    /// protected mode), which come back as the answer to the first command.
    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        if let Some((user, password)) = &self.auth {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = user {
                auth.arg(user);
            }
            auth.arg(password).query_async::<()>(&mut conn).await?;
        }
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(conn)
    }
}

/// Read the data path's announcements and queue them.
async fn read_ring(
    ring: RingBuf<MapData>,
    me: Me,
    directory: watch::Receiver<Arc<Directory>>,
    queue: mpsc::Sender<Vec<Record>>,
    counters: Arc<Counters>,
) {
    // SAFETY: the ring owns its descriptor, which stays open and the same
    // for as long as the `AsyncFd` holds the ring.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("cluster: cannot watch the session ring: {e}; new sessions are shared by refresh passes only");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                log::error!("cluster: session ring: {e}");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        let clocks = Clocks::now().ok();
        let dir = Arc::clone(&directory.borrow());
        let mut batch = Vec::new();
        let mut read = 0;
        while read < RING_BURST {
            let Some(item) = ring.next() else { break };
            read += 1;
            if item.len() < size_of::<SessionEvent>() {
                continue;
            }
            // SAFETY: the ring holds `SessionEvent`s written by the data
            // path; the read copes with any alignment.
            let event = unsafe { item.as_ptr().cast::<SessionEvent>().read_unaligned() };
            if let Some(r) = clocks
                .as_ref()
                .and_then(|c| dir.record_of_event(&event, c, (me.instance, &me.node)))
            {
                batch.push(r);
            }
        }
        offer(&queue, batch, &counters);
        if read < RING_BURST {
            // The ring is empty: wait for the next wake-up.
            guard.clear_ready();
        } else {
            // A full burst: more may wait; let the other tasks run first.
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
}

/// Publish queued records in pipelined batches.
async fn publish(
    client: Store,
    settings: ClusterSettings,
    mut queue: mpsc::Receiver<Vec<Record>>,
    counters: Arc<Counters>,
) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut retry_at = tokio::time::Instant::now();
    loop {
        // Connected from the start, so that the store's state is known
        // before the first session; again after a connection was lost.
        if conn.is_none() && tokio::time::Instant::now() >= retry_at {
            match client.connect().await {
                Ok(c) => {
                    counters.reached(Role::Publisher, true, &settings, &"");
                    conn = Some(c);
                }
                Err(e) => {
                    counters.reached(Role::Publisher, false, &settings, &e);
                    retry_at = tokio::time::Instant::now() + RETRY;
                }
            }
        }
        let next = if conn.is_some() {
            queue.recv().await
        } else {
            match tokio::time::timeout_at(retry_at, queue.recv()).await {
                Ok(next) => next,
                Err(_) => continue,
            }
        };
        let Some(records) = next else { return };
        for batch in records.chunks(BATCH) {
            let Some(c) = conn.as_mut() else {
                counters
                    .publish_dropped
                    .fetch_add(batch.len() as u64, Relaxed);
                continue;
            };
            let mut pipe = redis::pipe();
            for r in batch {
                let cmd = pipe
                    .cmd("XADD")
                    .arg(&settings.stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(settings.stream_max_len)
                    .arg("*");
                for (name, value) in r.fields() {
                    cmd.arg(name).arg(value);
                }
                cmd.ignore();
            }
            match pipe.query_async::<()>(c).await {
                Ok(()) => {
                    counters.reached(Role::Publisher, true, &settings, &"");
                    counters.published.fetch_add(batch.len() as u64, Relaxed);
                }
                Err(e) => {
                    counters.reached(Role::Publisher, false, &settings, &e);
                    counters
                        .publish_dropped
                        .fetch_add(batch.len() as u64, Relaxed);
                    // A lost connection is made again; a refusal (a full or
                    // read-only store) stays down until a write succeeds.
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_timeout()
                    {
                        conn = None;
                        retry_at = tokio::time::Instant::now() + RETRY;
                    }
                }
            }
        }
    }
}

/// Follow the stream and install the other hosts' sessions.
async fn subscribe(
    client: Store,
    settings: ClusterSettings,
    me: Me,
    directory: watch::Receiver<Arc<Directory>>,
    mut target: Install,
    counters: Arc<Counters>,
) {
    // From the start of the stream: what the other hosts hold now is in
    // its last entries (they re-publish used sessions regularly). Stream
    // ids grow with the store's clock, so a store that came back empty
    // continues after `last_id`.
    let mut last_id = "0-0".to_string();
    let mut malformed_logged = false;
    loop {
        let mut conn = match client.connect().await {
            Ok(c) => c,
            Err(e) => {
                counters.reached(Role::Subscriber, false, &settings, &e);
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&settings.stream)
                    .arg(&last_id)
                    .query_async(&mut conn)
                    .await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    counters.reached(Role::Subscriber, false, &settings, &e);
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            };
            counters.reached(Role::Subscriber, true, &settings, &"");
            let Some(reply) = reply else { continue };
            let Ok(clocks) = Clocks::now() else { continue };
            let dir = Arc::clone(&directory.borrow());
            let mut records = Vec::new();
            for entry in reply.keys.iter().flat_map(|k| &k.ids) {
                last_id.clone_from(&entry.id);
                let field = |name: &str| match entry.map.get(name) {
                    Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
                    Some(Value::SimpleString(s)) => Some(s.as_str()),
                    _ => None,
                };
                match Record::parse(field) {
                    Ok(r) if r.instance == me.instance => {}
                    Ok(r) => records.push(r),
                    Err(e) => {
                        counters.malformed.fetch_add(1, Relaxed);
                        if !malformed_logged {
                            malformed_logged = true;
                            log::warn!(
                                "cluster: stream {} entry {} is not a session record ({e}); \
                                 skipped (logged once)",
                                settings.stream,
                                entry.id
                            );
                        }
                    }
                }
            }
            // Map writes are system calls: off the async workers' hands.
            tokio::task::block_in_place(|| {
                for r in &records {
                    target.install(r, &dir, &clocks, &counters);
                }
            });
        }
    }
}

/// Where other hosts' sessions go: this host's persistence table.
struct Install {
    sessions: BpfHashMap<MapData, SessionKey, Session>,
    /// Shared with [`Cluster::publish`], which does not publish them back.
    installed: Arc<Mutex<HashMap<SessionKey, u64>>>,
}

impl Install {
    /// Install one record if it belongs here, is live, and was used more
    /// recently than this host's entry. (The data path may refresh its
    /// entry between the read and the write here; it refreshes it again
    /// at the client's next packet a second later at most.)
    fn install(&mut self, r: &Record, dir: &Directory, clocks: &Clocks, counters: &Counters) {
        let p = match dir.place(r, clocks) {
            Ok(p) => p,
            Err(_) => {
                counters.unplaced.fetch_add(1, Relaxed);
                return;
            }
        };
        let local = self.sessions.get(&p.key, 0).ok();
        match merge(local.as_ref(), &p, clocks.mono_ns) {
            Merge::Install => {
                if self.sessions.insert(p.key, p.session, 0).is_ok() {
                    counters.installed.fetch_add(1, Relaxed);
                    crate::sync::lock(&self.installed).insert(p.key, p.session.last_seen_ns);
                    if r.new {
                        // A new session (not a refresh): how long it took.
                        counters.lag(clocks.wall_ms.saturating_sub(r.created_ms));
                    }
                } else {
                    counters.install_failed.fetch_add(1, Relaxed);
                }
            }
            Merge::KeepLocal => {
                counters.kept_local.fetch_add(1, Relaxed);
            }
            Merge::Expired => {
                counters.expired.fetch_add(1, Relaxed);
            }
        }
    }
}
