//! The YAML configuration file. Unknown keys are errors; durations are
//! written as "300s", "5m", "1h 30m".

use std::{net::IpAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    endpoint::{Endpoint, Protocol, VipId},
    sched::Scheduler,
    services::{ServiceError, Services, VipSpec},
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub vips: Vec<VipConfig>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub sweeper: Sweeper,
    #[serde(default)]
    pub http: Http,
    /// Several balancer hosts sharing sticky state; without it, one host
    /// and nothing shared.
    #[serde(default)]
    pub cluster: Option<Cluster>,
    /// Announce the VIPs by BGP through the host's BGP daemon; without
    /// it, nothing is announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<super::announce::Announce>,
}

/// The `cluster:` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Where sessions are shared: `redis://HOST:PORT[/DB]`, or
    /// `rediss://…` over TLS.
    pub store: String,
    /// A file holding the store's password (its first line), so that the
    /// config itself can be readable by all; instead of a password in
    /// `store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_password_file: Option<std::path::PathBuf>,
    /// With `rediss://`: the PEM file of the CA that signed the store's
    /// certificate; default: the system's trusted CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_ca_file: Option<std::path::PathBuf>,
    /// This host's name in the store; default: the host name
    /// (`lb-ctl attach --node` overrides it).
    #[serde(default)]
    pub node: Option<String>,
    /// The Redis stream's key.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// About how many entries the stream keeps: at least the sessions the
    /// hosts publish within a quarter of the longest persistence timeout.
    #[serde(default = "default_stream_max_len")]
    pub stream_max_len: u64,
}

fn default_stream() -> String {
    "lb:sessions".into()
}

const fn default_stream_max_len() -> u64 {
    1_000_000
}

impl Cluster {
    /// Check the block; `node` is the name to use when it names none.
    ///
    /// # Errors
    /// Naming the field that is wrong.
    pub fn settings(&self, node: Option<&str>) -> Result<ClusterSettings, String> {
        let url = redis::parse_redis_url(&self.store).ok_or_else(|| {
            format!(
                "cluster.store: {:?} is not a Redis URL (for example redis://198.18.4.10:6379)",
                redact(&self.store)
            )
        })?;
        let tls = matches!(url.scheme(), "rediss" | "valkeys");
        if !tls
            && !matches!(
                url.scheme(),
                "redis" | "valkey" | "redis+unix" | "valkey+unix" | "unix"
            )
        {
            return Err(format!(
                "cluster.store: scheme {:?} is not supported (redis://, rediss:// or redis+unix://)",
                url.scheme()
            ));
        }
        if self.store_ca_file.is_some() && !tls {
            return Err("cluster.store_ca_file: only with a rediss:// store".into());
        }
        let password = match &self.store_password_file {
            None => None,
            Some(_) if url.password().is_some() => {
                return Err(
                    "cluster.store_password_file: the store's URL has a password already; keep one"
                        .into(),
                )
            }
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cluster.store_password_file: {}: {e}", path.display()))?;
                let line = text.lines().next().unwrap_or_default().to_string();
                if line.is_empty() {
                    return Err(format!(
                        "cluster.store_password_file: {} is empty",
                        path.display()
                    ));
                }
                Some(line)
            }
        };
        let ca = match &self.store_ca_file {
            None => None,
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("cluster.store_ca_file: {}: {e}", path.display()))?,
            ),
        };
        redis::Client::open(self.store.as_str())
            .map_err(|e| format!("cluster.store: {}: {e}", redact(&self.store)))?;
        let node = node
            .map(str::to_string)
            .or_else(|| self.node.clone())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_default();
        if node.is_empty()
            || node.len() > 64
            || node.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "cluster.node: {node:?} must be 1 to 64 characters without spaces"
            ));
        }
        if self.stream.is_empty() {
            return Err("cluster.stream: must not be empty".into());
        }
        if self.stream_max_len < 1000 {
            return Err(format!(
                "cluster.stream_max_len: {} is too small (at least 1000)",
                self.stream_max_len
            ));
        }
        Ok(ClusterSettings {
            store: self.store.clone(),
            password,
            ca,
            node,
            stream: self.stream.clone(),
            stream_max_len: self.stream_max_len,
        })
    }
}

/// The `http:` block: settings of the layer-7 proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// The key that authenticates persistence cookies: created with a
    /// random key when missing, kept across restarts; share it between
    /// balancer hosts so that they honour each other's cookies.
    #[serde(default = "default_key_file")]
    pub cookie_key_file: std::path::PathBuf,
}

fn default_key_file() -> std::path::PathBuf {
    "/var/lib/lb/cookie.key".into()
}

impl Default for Http {
    fn default() -> Self {
        Self {
            cookie_key_file: default_key_file(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub address: IpAddr,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub scheduler: Scheduler,
    /// `tcp` (default): the XDP path; `http`: the layer-7 proxy.
    #[serde(default)]
    pub mode: crate::model::services::Mode,
    /// `nat` (default) or `dsr` (direct server return).
    #[serde(default)]
    pub forwarding: crate::model::services::Forwarding,
    #[serde(default)]
    pub persistence: Persistence,
    /// Without one, every backend counts as up.
    #[serde(default)]
    pub health_check: Option<crate::model::health::HealthCheck>,
    /// TLS termination (`mode: http` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::model::tls::TlsSpec>,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persistence {
    #[serde(with = "humantime_serde", default)]
    pub timeout: Duration,
    #[serde(default = "default_netmask")]
    pub netmask: u8,
    /// The prefix length of IPv6 clients that share a session.
    #[serde(default = "default_netmask6")]
    pub netmask6: u8,
    /// A session ends this long after it began, even while the client keeps
    /// talking; 0s: no limit.
    #[serde(with = "humantime_serde", default)]
    pub max_lifetime: Duration,
    /// Cookie persistence (`mode: http` only).
    #[serde(default)]
    pub cookie: Option<crate::model::cookie::CookieSpec>,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            timeout: Duration::ZERO,
            netmask: default_netmask(),
            netmask6: default_netmask6(),
            max_lifetime: Duration::ZERO,
            cookie: None,
        }
    }
}

const fn default_netmask() -> u8 {
    32
}

/// IPv6 clients' default prefix: a /64 is usually one household (RFC 8981
/// temporary addresses rotate inside it), as one IPv4 address behind a NAT.
pub(crate) const fn default_netmask6() -> u8 {
    64
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: IpAddr,
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

const fn default_weight() -> u32 {
    1
}

/// Idle timeouts of connection-table entries, by connection state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(with = "humantime_serde", default = "d900")]
    pub tcp_established: Duration,
    /// Unconfirmed flows (TCP half-open) and connections whose client sent
    /// a new SYN.
    #[serde(with = "humantime_serde", default = "d10")]
    pub tcp_syn: Duration,
    #[serde(with = "humantime_serde", default = "d10")]
    pub tcp_closing: Duration,
    #[serde(with = "humantime_serde", default = "d300")]
    pub udp: Duration,
}

const fn d900() -> Duration {
    Duration::from_secs(900)
}
const fn d10() -> Duration {
    Duration::from_secs(10)
}
const fn d300() -> Duration {
    Duration::from_secs(300)
}
const fn d5() -> Duration {
    Duration::from_secs(5)
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_established: d900(),
            tcp_syn: d10(),
            tcp_closing: d10(),
            udp: d300(),
        }
    }
}

impl Timeouts {
    #[must_use]
    pub fn to_settings(&self) -> lb_common::Settings {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        lb_common::Settings {
            tcp_syn_ns: ns(self.tcp_syn),
            tcp_established_ns: ns(self.tcp_established),
            tcp_closing_ns: ns(self.tcp_closing),
            udp_ns: ns(self.udp),
            ..lb_common::Settings::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Connection-table size: most concurrent connections.
    #[serde(default = "default_max")]
    pub max_connections: u32,
    /// Persistence-table size: most concurrent sessions.
    #[serde(default = "default_max")]
    pub max_sessions: u32,
    /// Unconfirmed flows (TCP handshakes in progress, UDP flows not yet
    /// answered) held at once, in their own fixed table of sets of four
    /// (rounded up to a power of two of sets): a new flow whose set is
    /// full replaces the set's least recently used one, never a confirmed
    /// connection.
    #[serde(default = "default_half_open")]
    pub max_half_open: u32,
}

const fn default_half_open() -> u32 {
    131_072
}

const fn default_max() -> u32 {
    1_000_000
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max(),
            max_sessions: default_max(),
            max_half_open: default_half_open(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweeper {
    #[serde(with = "humantime_serde", default = "d5")]
    pub interval: Duration,
}

impl Default for Sweeper {
    fn default() -> Self {
        Self { interval: d5() }
    }
}

/// Largest table a limit may ask for (the connection table holds two
/// entries per connection).
pub const MAX_LIMIT: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("config file {path}: vips[{index}]: {source}")]
    Service {
        path: String,
        index: usize,
        source: ServiceError,
    },
    #[error("config file {path}: {field} must be between 1 and {MAX_LIMIT}, not {value}")]
    Limit {
        path: String,
        field: &'static str,
        value: u32,
    },
    #[error("config file {path}: {field} must be longer than zero")]
    Zero { path: String, field: &'static str },
    #[error("config file {path}: {message}")]
    Cluster { path: String, message: String },
    #[error("config file {path}: {message}")]
    Announce { path: String, message: String },
    #[error("config file {path}: vips[{index}]: {message}")]
    Tls {
        path: String,
        index: usize,
        message: String,
    },
}

impl Config {
    /// Read and validate a config file.
    ///
    /// # Errors
    /// Naming the file and the field that is wrong.
    pub fn load(path: &Path) -> Result<(Self, Services), ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parse and validate config text; `origin` names it in errors.
    ///
    /// # Errors
    /// Naming the field that is wrong.
    pub fn parse(text: &str, origin: &str) -> Result<(Self, Services), ConfigError> {
        let path = origin.to_string();
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
                path: path.clone(),
                source,
            })?
        };
        for (field, value) in [
            ("limits.max_connections", config.limits.max_connections),
            ("limits.max_sessions", config.limits.max_sessions),
            ("limits.max_half_open", config.limits.max_half_open),
        ] {
            if value == 0 || value > MAX_LIMIT {
                return Err(ConfigError::Limit { path, field, value });
            }
        }
        for (field, value) in [
            ("timeouts.tcp_established", config.timeouts.tcp_established),
            ("timeouts.tcp_syn", config.timeouts.tcp_syn),
            ("timeouts.tcp_closing", config.timeouts.tcp_closing),
            ("timeouts.udp", config.timeouts.udp),
            ("sweeper.interval", config.sweeper.interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero { path, field });
            }
        }
        if let Some(cluster) = &config.cluster {
            cluster
                .settings(None)
                .map_err(|message| ConfigError::Cluster {
                    path: path.clone(),
                    message,
                })?;
            // Shared sessions are re-published by the sweeps: they must
            // come often enough for the other hosts' copies to stay alive.
            let interval = config.sweeper.interval;
            if let Some((i, v)) = config.vips.iter().enumerate().find(|(_, v)| {
                !v.persistence.timeout.is_zero() && v.persistence.timeout <= 2 * interval
            }) {
                return Err(ConfigError::Cluster {
                    path,
                    message: format!(
                        "vips[{i}]: persistence.timeout {} is too short to share with \
                         sweeper.interval {}: the other hosts' copies would expire between \
                         refreshes; make the timeout more than twice the interval",
                        humantime::format_duration(v.persistence.timeout),
                        humantime::format_duration(interval)
                    ),
                });
            }
        }
        if let Some(announce) = &config.announce {
            announce.check().map_err(|message| ConfigError::Announce {
                path: path.clone(),
                message,
            })?;
        }
        let services = config
            .services()
            .map_err(|(index, source)| ConfigError::Service {
                path: path.clone(),
                index,
                source,
            })?;
        config
            .tls_warnings(std::time::SystemTime::now())
            .map_err(|(index, message)| ConfigError::Tls {
                path,
                index,
                message,
            })?;
        Ok((config, services))
    }

    /// Load every VIP's certificates at `now`: what deserves a warning
    /// (`vips[N]: ...`: a certificate that expires soon).
    ///
    /// # Errors
    /// The index of the VIP and what is wrong with its files.
    pub fn tls_warnings(&self, now: std::time::SystemTime) -> Result<Vec<String>, (usize, String)> {
        let mut out = Vec::new();
        for (i, v) in self.vips.iter().enumerate() {
            if let Some(tls) = &v.tls {
                let loaded = tls.load(now).map_err(|e| (i, e))?;
                out.extend(
                    crate::model::tls::warnings(&loaded, now)
                        .into_iter()
                        .map(|w| format!("vips[{i}]: {w}")),
                );
            }
        }
        Ok(out)
    }

    fn services(&self) -> Result<Services, (usize, ServiceError)> {
        let mut services = Services::default();
        for (i, v) in self.vips.iter().enumerate() {
            let id = VipId {
                endpoint: Endpoint {
                    addr: v.address,
                    port: v.port,
                },
                protocol: v.protocol,
            };
            services
                .add_vip(VipSpec {
                    name: v.name.clone(),
                    id,
                    scheduler: v.scheduler,
                    persistence_timeout: v.persistence.timeout,
                    persistence_netmask: v.persistence.netmask,
                    persistence_netmask6: v.persistence.netmask6,
                    max_lifetime: v.persistence.max_lifetime,
                    health_check: v.health_check.clone(),
                    mode: v.mode,
                    cookie: v.persistence.cookie.clone(),
                    forwarding: v.forwarding,
                    tls: v.tls.clone(),
                })
                .map_err(|e| (i, e))?;
            for b in &v.backends {
                services
                    .add_backend(
                        &id,
                        Endpoint {
                            addr: b.address,
                            port: b.port,
                        },
                        b.weight,
                    )
                    .map_err(|e| (i, e))?;
            }
        }
        Ok(services)
    }
}

impl Config {
    /// The configuration that recreates `services` with `base`'s settings
    /// (timeouts, limits, sweeper, http, cluster): what `lb-ctl config
    /// dump` prints. VIPs and backends come out in the model's order; drain
    /// and health verdicts are state, not configuration, and are left out.
    #[must_use]
    pub fn of_running(services: &Services, base: &Self) -> Self {
        let vips = services
            .vips()
            .map(|v| {
                let s = &v.spec;
                VipConfig {
                    name: s.name.clone(),
                    address: s.id.endpoint.addr,
                    port: s.id.endpoint.port,
                    protocol: s.id.protocol,
                    scheduler: s.scheduler,
                    mode: s.mode,
                    forwarding: s.forwarding,
                    persistence: Persistence {
                        timeout: s.persistence_timeout,
                        netmask: s.persistence_netmask,
                        netmask6: s.persistence_netmask6,
                        max_lifetime: s.max_lifetime,
                        cookie: s.cookie.clone(),
                    },
                    health_check: s.health_check.clone(),
                    tls: s.tls.clone(),
                    backends: v
                        .backends
                        .iter()
                        .map(|b| BackendConfig {
                            address: b.endpoint.addr,
                            port: b.endpoint.port,
                            weight: b.weight,
                        })
                        .collect(),
                }
            })
            .collect();
        let mut config = Self {
            vips,
            ..base.clone()
        };
        if let Some(c) = &mut config.cluster {
            c.store = redact(&c.store);
        }
        config
    }
}

/// `url` with its password, if any, shown as `***`: what logs, `status`,
/// the API and the metrics say of a store.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// The `cluster:` block, as the controller runs it (checked, with the
/// node's name resolved). Its `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://HOST:PORT[/DB]` (or `rediss://`), as written: may hold a
    /// password; shown only through [`ClusterSettings::shown_store`].
    pub store: String,
    /// The password read from `store_password_file`.
    pub password: Option<String>,
    /// The CA certificates (PEM) of `store_ca_file`.
    pub ca: Option<Vec<u8>>,
    /// This host's name (logs and the stream's entries).
    pub node: String,
    /// The stream's key.
    pub stream: String,
    /// About how many entries the stream keeps (`XADD MAXLEN ~`).
    pub stream_max_len: u64,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("store", &self.shown_store())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("node", &self.node)
            .field("stream", &self.stream)
            .field("stream_max_len", &self.stream_max_len)
            .finish()
    }
}

impl ClusterSettings {
    /// The store's address with its password hidden.
    #[must_use]
    pub fn shown_store(&self) -> String {
        redact(&self.store)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
