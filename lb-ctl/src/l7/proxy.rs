//! The layer-7 proxy of `mode: http` VIPs, on the controller's runtime
//! (hyper 1): what happens to each request once [`super::listen`] has
//! accepted its connection (plain, or TLS through [`super::tls`]; HTTP/1.1
//! or HTTP/2), and the pooled HTTP/1.1 client to the backends.
//!
//! Every request is decided on its own, also on a keep-alive connection
//! that carries several users' requests: a valid cookie (see
//! [`super::cookie`]) sends it to its backend while that backend is up and
//! not drained with `--repin`; anything else — no cookie, a tampered,
//! expired or unknown one, a backend gone, down or draining — is balanced
//! afresh by the VIP's scheduler and gets a new cookie. Our cookie is
//! stripped before the request goes upstream, and a `Set-Cookie` of our
//! name from a backend is dropped. Backends see `X-Forwarded-For`,
//! `X-Forwarded-Proto` and `Forwarded`. An HTTP/2 request goes to its
//! backend as HTTP/1.1: its `:authority` becomes `Host`, its `cookie`
//! fields are joined into one (RFC 9113, 8.2.3). Bodies stream both ways.
//! A connect failure to the chosen backend is retried once on another (its
//! response then carries the new backend's cookie), for requests without
//! a body.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::body::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Empty, Full};
use hyper::{
    body::Incoming,
    header::{HeaderValue, CACHE_CONTROL, SET_COOKIE},
    upgrade::OnUpgrade,
    Request, Response, StatusCode,
};
use hyper_util::{
    client::legacy::connect::HttpConnector,
    rt::{TokioExecutor, TokioIo},
};
use serde::{Deserialize, Serialize};

use super::{
    cookie::{unix_now, Keys, Ticket},
    headers::{
        connection_has, drop_set_cookie, join_cookies, our_cookie, strip_cookie, strip_hop_by_hop,
        Forwarded,
    },
};
use crate::{
    model::{
        cookie::CookieSpec,
        endpoint::{Endpoint, VipId},
        services::Services,
    },
    sync::lock,
};

pub(super) type Body = BoxBody<Bytes, hyper::Error>;

/// A client's connection, as its requests need it.
pub(super) struct Client {
    tls: bool,
    /// Its forwarding headers, made once.
    forwarded: Forwarded,
}

impl Client {
    pub(super) fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            tls,
            forwarded: Forwarded::new(peer, if tls { "https" } else { "http" }),
        }
    }
}

/// What the proxy needs of one `mode: http` VIP, published by the
/// controller after every change.
#[derive(Clone, Debug, Default)]
pub struct HttpVip {
    pub cookie: Option<CookieSpec>,
    /// Every backend: address, takes new clients, keeps its cookies.
    pub backends: Vec<(Endpoint, bool, bool)>,
    /// The selection table, as addresses (rr or weighted, up and not
    /// draining only).
    pub table: Vec<Endpoint>,
    /// The TLS server of a VIP with `tls:`; new connections take the one
    /// published last (a certificate reload).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// All `mode: http` VIPs.
pub type View = BTreeMap<VipId, HttpVip>;

/// The view of `services`, with the TLS servers of the VIPs with `tls:`.
#[must_use]
pub fn view(services: &Services, tls: &HashMap<VipId, super::tls::Server>) -> View {
    services
        .vips()
        .filter(|v| v.spec.mode == crate::model::services::Mode::Http)
        .map(|v| {
            let slot_ep: HashMap<u32, Endpoint> =
                v.backends.iter().map(|b| (b.slot, b.endpoint)).collect();
            (
                v.spec.id,
                HttpVip {
                    cookie: v.spec.cookie.clone(),
                    backends: v
                        .backends
                        .iter()
                        .map(|b| (b.endpoint, b.takes_new_clients(), b.keeps_sessions()))
                        .collect(),
                    table: v
                        .table
                        .iter()
                        .filter_map(|s| slot_ep.get(s).copied())
                        .collect(),
                    tls: tls.get(&v.spec.id).map(|t| Arc::clone(&t.config)),
                },
            )
        })
        .collect()
}

/// Counters of one VIP, or of one backend of it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpCounters {
    pub requests: u64,
    /// Requests routed by a valid cookie.
    pub cookie_hits: u64,
    /// Cookies issued (new users, invalid cookies, redispatches).
    pub cookie_inserts: u64,
    /// Cookies present but not honoured (tampered, expired, unknown,
    /// backend gone, down or draining).
    pub cookie_invalid: u64,
    /// Requests retried on another backend after a connect failure.
    pub redispatches: u64,
    /// Requests that failed upstream (answered 502/503).
    pub upstream_errors: u64,
    /// Malformed requests (answered 400).
    pub bad_requests: u64,
    /// Latency histogram: counts per bucket of [`LATENCY_BUCKETS`] (the
    /// last: larger), and the sum in microseconds.
    pub latency: [u64; 8],
    pub latency_sum_us: u64,
    /// TLS handshakes (VIP rows only): done, failed, timed out.
    #[serde(default)]
    pub tls_handshakes: [u64; 3],
    /// Handshakes that resumed a session (ticket or session id).
    #[serde(default)]
    pub tls_resumed: u64,
    /// Handshakes done per TLS version: 1.2, 1.3.
    #[serde(default)]
    pub tls_versions: [u64; 2],
    /// Handshakes done per ALPN protocol: h2, http/1.1, none.
    #[serde(default)]
    pub tls_alpn: [u64; 3],
}

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 7] = [0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0];

/// Counters per (VIP, backend); the backend `None` is the VIP's total.
pub type HttpStats = Arc<Mutex<BTreeMap<(VipId, Option<Endpoint>), HttpCounters>>>;

/// A backend's ids in cookies: under the current key, and the previous.
type BackendIds = ([u8; 8], Option<[u8; 8]>);

/// What the proxy computes once per backend: its ids in cookies and its
/// address as a URI authority.
#[derive(Clone)]
struct BackendFacts {
    ids: BackendIds,
    authority: hyper::http::uri::Authority,
}

/// The `Set-Cookie` of a new user of a backend, made at most once a
/// second: every new user of the second gets the same value (the cookie
/// names the backend and the second it was issued, nothing else).
struct FreshCookie {
    now: u32,
    spec: CookieSpec,
    value: HeaderValue,
}

/// The proxy's shared state.
pub struct Proxy {
    keys: Keys,
    /// Backend ids under the current and previous keys, computed once.
    facts: Mutex<HashMap<Endpoint, BackendFacts>>,
    /// Per (VIP, backend, TLS), the cookie of the current second.
    fresh: Mutex<HashMap<(VipId, Endpoint, bool), FreshCookie>>,
    pub(super) view: tokio::sync::watch::Receiver<Arc<View>>,
    upstream: hyper_util::client::legacy::Client<HttpConnector, Body>,
    cursors: Mutex<HashMap<VipId, Arc<AtomicUsize>>>,
    pub stats: HttpStats,
}

impl Proxy {
    #[must_use]
    pub fn new(
        keys: Keys,
        view: tokio::sync::watch::Receiver<Arc<View>>,
        stats: HttpStats,
    ) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_nodelay(true);
        let upstream = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .http1_writev(false)
            .build(connector);
        Arc::new(Self {
            keys,
            facts: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
            view,
            upstream,
            cursors: Mutex::new(HashMap::new()),
            stats,
        })
    }

    pub(super) fn count(
        &self,
        vip: VipId,
        backend: Option<Endpoint>,
        f: impl Fn(&mut HttpCounters),
    ) {
        let mut stats = lock(&self.stats);
        f(stats.entry((vip, None)).or_default());
        if backend.is_some() {
            f(stats.entry((vip, backend)).or_default());
        }
    }

    /// The next backend of the VIP's selection table, not in `except`.
    fn pick(&self, id: VipId, vip: &HttpVip, except: Option<Endpoint>) -> Option<Endpoint> {
        let cursor = Arc::clone(lock(&self.cursors).entry(id).or_default());
        let n = vip.table.len();
        (0..n).find_map(|_| {
            let b = vip.table[cursor.fetch_add(1, Ordering::Relaxed) % n];
            (Some(b) != except).then_some(b)
        })
    }

    /// A backend's cookie ids and authority, computed once.
    fn facts_of(&self, b: Endpoint) -> BackendFacts {
        lock(&self.facts)
            .entry(b)
            .or_insert_with(|| BackendFacts {
                ids: (self.keys.backend_id(b), self.keys.previous_backend_id(b)),
                authority: b
                    .to_string()
                    .parse()
                    .unwrap_or_else(|_| hyper::http::uri::Authority::from_static("0.0.0.0")),
            })
            .clone()
    }

    /// A backend's cookie ids.
    fn ids_of(&self, b: Endpoint) -> BackendIds {
        self.facts_of(b).ids
    }

    /// The backend a valid cookie names, if it still keeps its clients.
    fn pinned(
        &self,
        vip: &HttpVip,
        spec: &CookieSpec,
        value: &str,
        now: u32,
    ) -> Option<(Endpoint, Ticket)> {
        let ticket = self.keys.read(&spec.name, value)?;
        if !ticket.honoured(spec, now) {
            return None;
        }
        vip.backends.iter().find_map(|(b, _, keeps)| {
            let (current, previous) = self.ids_of(*b);
            let id = if ticket.under_previous_key {
                previous?
            } else {
                current
            };
            (*keeps && id == ticket.backend).then_some((*b, ticket))
        })
    }

    pub(super) async fn handle(
        &self,
        id: VipId,
        client: &Client,
        mut req: Request<Incoming>,
    ) -> Response<Body> {
        let tls = client.tls;
        let started = Instant::now();
        let view = Arc::clone(&self.view.borrow());
        let Some(vip) = view.get(&id) else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "this VIP is not served any more\n",
            );
        };
        let now = unix_now();
        let ours = vip
            .cookie
            .as_ref()
            .and_then(|spec| our_cookie(req.headers(), &spec.name));
        let (pinned, ticket) = match (&vip.cookie, &ours) {
            (Some(spec), Some(value)) => self.pinned(vip, spec, value, now).unzip(),
            _ => (None, None),
        };
        if ours.is_some() && pinned.is_none() {
            self.count(id, None, |c| c.cookie_invalid += 1);
        }
        let Some(backend) = pinned.or_else(|| self.pick(id, vip, None)) else {
            self.count(id, None, |c| {
                c.requests += 1;
                c.upstream_errors += 1;
            });
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no backend up\n");
        };
        if let Some(spec) = &vip.cookie {
            strip_cookie(req.headers_mut(), &spec.name);
        }
        let client_side = prepare_upstream(&mut req, &client.forwarded);
        let (backend, mut response) = match self.send(id, vip, backend, req).await {
            Ok(sent) => sent,
            Err(backend) => {
                self.count(id, Some(backend), |c| {
                    c.requests += 1;
                    c.upstream_errors += 1;
                });
                return plain(StatusCode::BAD_GATEWAY, "the backend did not answer\n");
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = client_side {
                join_upgraded(client_side, hyper::upgrade::on(&mut response));
            }
        } else {
            strip_hop_by_hop(response.headers_mut());
        }
        let hit = pinned == Some(backend);
        if let Some(spec) = &vip.cookie {
            self.set_cookie(
                (id, spec),
                &mut response,
                ticket.filter(|_| hit),
                backend,
                now,
                tls,
            );
        }
        self.record(
            id,
            backend,
            hit,
            vip.cookie.is_some() && !hit,
            started.elapsed(),
        );
        response
    }

    /// Send the request to `backend`; a bodiless request whose backend
    /// refuses the connection is redispatched once to another. Returns the
    /// backend that answered, or `Err` with the one that failed.
    async fn send(
        &self,
        id: VipId,
        vip: &HttpVip,
        mut backend: Endpoint,
        req: Request<Incoming>,
    ) -> Result<(Endpoint, Response<Body>), Endpoint> {
        let (parts, body) = req.into_parts();
        let bodiless = hyper::body::Body::size_hint(&body).exact() == Some(0);
        let mut body = Some(body.boxed());
        let mut redispatched = false;
        loop {
            let authority = self.facts_of(backend).authority;
            let upstream = upstream_request(&parts, authority, body.take().unwrap_or_else(empty));
            match self.upstream.request(upstream).await {
                Ok(r) => return Ok((backend, r.map(http_body_util::BodyExt::boxed))),
                Err(e) if e.is_connect() && !redispatched && bodiless => {
                    let Some(next) = self.pick(id, vip, Some(backend)) else {
                        log::debug!("VIP {id}: upstream {backend}: {e}");
                        return Err(backend);
                    };
                    log::warn!(
                        "VIP {id}: {backend} refused the connection ({e}); redispatched to {next}"
                    );
                    self.count(id, Some(backend), |c| c.upstream_errors += 1);
                    self.count(id, Some(next), |c| c.redispatches += 1);
                    redispatched = true;
                    backend = next;
                }
                Err(e) => {
                    log::debug!("VIP {id}: upstream {backend}: {e}");
                    return Err(backend);
                }
            }
        }
    }

    /// Our cookie on the response: a new one for a user not (validly)
    /// pinned to `backend`, a refreshed one when the ticket asks; the
    /// backend's own `Set-Cookie` of our name is dropped.
    fn set_cookie(
        &self,
        (id, spec): (VipId, &CookieSpec),
        response: &mut Response<Body>,
        ticket: Option<Ticket>,
        backend: Endpoint,
        now: u32,
        tls: bool,
    ) {
        drop_set_cookie(response.headers_mut(), &spec.name);
        let hit = ticket.is_some();
        let refresh = ticket.is_some_and(|t| t.needs_refresh(spec, now) || t.under_previous_key);
        if hit && !refresh {
            return;
        }
        let make = |issued: u32| {
            let value = self
                .keys
                .issue_for(&spec.name, self.ids_of(backend).0, issued, now);
            HeaderValue::from_str(&spec.set_cookie(&value, tls)).ok()
        };
        let header = match ticket {
            Some(t) => make(t.issued),
            None => {
                let mut fresh = lock(&self.fresh);
                match fresh.get(&(id, backend, tls)) {
                    Some(f) if f.now == now && f.spec == *spec => Some(f.value.clone()),
                    _ => make(now).inspect(|value| {
                        fresh.insert(
                            (id, backend, tls),
                            FreshCookie {
                                now,
                                spec: spec.clone(),
                                value: value.clone(),
                            },
                        );
                    }),
                }
            }
        };
        if let Some(v) = header {
            response.headers_mut().append(SET_COOKIE, v);
        }
        if !hit && !response.headers().contains_key(CACHE_CONTROL) {
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("private"));
        }
    }

    /// Count a served request and its duration.
    fn record(&self, id: VipId, backend: Endpoint, hit: bool, inserted: bool, elapsed: Duration) {
        self.count(id, Some(backend), |c| {
            c.requests += 1;
            if hit {
                c.cookie_hits += 1;
            }
            if inserted {
                c.cookie_inserts += 1;
            }
            let s = elapsed.as_secs_f64();
            let bucket = LATENCY_BUCKETS.iter().position(|b| s <= *b).unwrap_or(7);
            c.latency[bucket] += 1;
            c.latency_sum_us += u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        });
    }
}

/// Make the request the backend gets: hop-by-hop headers out (a protocol
/// switch kept), `X-Forwarded-*` in, an HTTP/2 request's authority and
/// cookies as HTTP/1.1 has them. Returns the client side of a protocol
/// switch (WebSocket), to be joined with the backend's.
fn prepare_upstream(req: &mut Request<Incoming>, forwarded: &Forwarded) -> Option<OnUpgrade> {
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .cloned()
        .filter(|_| connection_has(req.headers(), "upgrade"));
    let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut *req));
    strip_hop_by_hop(req.headers_mut());
    if let Some(u) = &upgrade {
        req.headers_mut().insert(hyper::header::UPGRADE, u.clone());
        req.headers_mut().insert(
            hyper::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
    if !req.headers().contains_key(hyper::header::HOST) {
        if let Some(authority) = req.uri().authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                req.headers_mut().insert(hyper::header::HOST, host);
            }
        }
    }
    join_cookies(req.headers_mut());
    forwarded.add(req.headers_mut());
    client_side
}

/// Join the two sides of a protocol switch once both are upgraded.
fn join_upgraded(client_side: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        if let (Ok(a), Ok(b)) = (client_side.await, upstream.await) {
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
        }
    });
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

/// The request as it goes to `backend`: the same method, path, headers and
/// body, addressed to the backend.
fn upstream_request(
    parts: &hyper::http::request::Parts,
    backend: hyper::http::uri::Authority,
    body: Body,
) -> Request<Body> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = hyper::Uri::builder()
        .scheme(hyper::http::uri::Scheme::HTTP)
        .authority(backend)
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| hyper::Uri::from_static("/"));
    *req.version_mut() = hyper::Version::HTTP_11;
    *req.headers_mut() = parts.headers.clone();
    req
}
