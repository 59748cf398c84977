//! Accepting the clients of `mode: http` VIPs: the listening sockets
//! (bound by the controller, started and stopped as the VIPs come and go),
//! the TLS handshake of a VIP with `tls:`, and each connection served as
//! HTTP/1.1 or, when ALPN agreed on it, HTTP/2. Every request then goes to
//! [`Proxy::handle`].

use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc};

use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{
    proxy::{Body, Client, Proxy, View},
    tls::Handshake,
};
use crate::model::endpoint::VipId;

impl Proxy {
    /// Serve `vip` on `listener` until the task is aborted.
    pub async fn serve(self: Arc<Self>, vip: VipId, listener: tokio::net::TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of
                    // spinning, and say so.
                    log::warn!("VIP {vip}: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let tls = self.view.borrow().get(&vip).and_then(|v| v.tls.clone());
            let proxy = Arc::clone(&self);
            tokio::spawn(async move {
                match tls {
                    None => proxy.serve_http1(vip, peer, stream, false).await,
                    Some(config) => proxy.serve_tls(vip, peer, stream, config).await,
                }
            });
        }
    }

    /// Finish the TLS handshake, then serve HTTP/2 or HTTP/1.1 as agreed
    /// by ALPN.
    async fn serve_tls(
        self: Arc<Self>,
        vip: VipId,
        peer: SocketAddr,
        stream: tokio::net::TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) {
        let (stream, h2) = match super::tls::accept(config, stream).await {
            Handshake::Done {
                stream,
                h2,
                version,
                resumed,
            } => {
                self.count(vip, None, |c| {
                    c.tls_handshakes[0] += 1;
                    c.tls_resumed += u64::from(resumed);
                    c.tls_versions[usize::from(version == "1.3")] += 1;
                    let alpn = stream.get_ref().1.alpn_protocol();
                    c.tls_alpn[match alpn {
                        Some(b"h2") => 0,
                        Some(_) => 1,
                        None => 2,
                    }] += 1;
                });
                (stream, h2)
            }
            Handshake::Failed(e) => {
                self.count(vip, None, |c| c.tls_handshakes[1] += 1);
                log::debug!("VIP {vip}: TLS handshake with {peer} failed: {e}");
                return;
            }
            Handshake::TimedOut => {
                self.count(vip, None, |c| c.tls_handshakes[2] += 1);
                log::debug!("VIP {vip}: TLS handshake with {peer} timed out");
                return;
            }
        };
        if h2 {
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), self.service(vip, peer, true))
                .await;
            if let Err(e) = served {
                log::debug!("VIP {vip}: HTTP/2 connection from {peer}: {e}");
            }
        } else {
            self.serve_http1(vip, peer, stream, true).await;
        }
    }

    /// The service of one client connection: each request handled on its
    /// own.
    fn service(
        self: &Arc<Self>,
        vip: VipId,
        peer: SocketAddr,
        tls: bool,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
           + Send
           + 'static {
        let proxy = Arc::clone(self);
        let client = Arc::new(Client::new(peer, tls));
        hyper::service::service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            let client = Arc::clone(&client);
            async move { Ok::<_, Infallible>(proxy.handle(vip, &client, req).await) }
        })
    }

    /// Serve HTTP/1.1 on a client's connection (plain or TLS).
    async fn serve_http1<S>(self: Arc<Self>, vip: VipId, peer: SocketAddr, stream: S, tls: bool)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service(vip, peer, tls);
        // The timer enables hyper's 30 s limit on reading a request's
        // head (a client trickling its headers is dropped).
        let served = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive(true)
            .writev(false)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
        // hyper answers a request it cannot parse with 400 itself.
        if let Err(e) = served {
            if e.is_parse() || e.is_parse_too_large() {
                self.count(vip, None, |c| c.bad_requests += 1);
                log::debug!("VIP {vip}: malformed request from {peer}: {e}");
            }
        }
    }
}

/// The listeners of the `mode: http` VIPs, started and stopped as the view
/// changes.
pub struct Listeners {
    proxy: Arc<Proxy>,
    running: HashMap<VipId, tokio::task::JoinHandle<()>>,
}

impl Listeners {
    #[must_use]
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Self {
            proxy,
            running: HashMap::new(),
        }
    }

    /// Serve `vip` on `listener` (bound by the caller, which reports a
    /// port in use).
    pub fn start(&mut self, vip: VipId, listener: std::net::TcpListener) {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let task = tokio::spawn(Arc::clone(&self.proxy).serve(vip, listener));
        if let Some(old) = self.running.insert(vip, task) {
            old.abort();
        }
    }

    /// Stop serving VIPs no longer in `view`.
    pub fn retain(&mut self, view: &View) {
        self.running.retain(|vip, task| {
            let keep = view.contains_key(vip);
            if !keep {
                task.abort();
            }
            keep
        });
    }

    /// Whether `vip` is served.
    #[must_use]
    pub fn serves(&self, vip: &VipId) -> bool {
        self.running.contains_key(vip)
    }
}

/// Bind `vip`'s listening socket.
///
/// # Errors
/// Naming the address when it is taken or not local.
pub fn bind(vip: VipId) -> Result<std::net::TcpListener, String> {
    let addr = SocketAddr::from((vip.endpoint.addr, vip.endpoint.port));
    let socket = socket2_free_bind(addr).map_err(|e| {
        format!("VIP {vip} (mode http): cannot listen on {addr}: {e} (is the port taken by another process, or the address not on this host?)")
    })?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(socket)
}

fn socket2_free_bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    Ok(listener)
}
