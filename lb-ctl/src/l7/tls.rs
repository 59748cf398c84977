//! TLS termination of `mode: http` VIPs with `tls:` (rustls, ring): the
//! server configuration made from a VIP's loaded certificates, the choice
//! of certificate by SNI, and the handshake with its time limit.
//!
//! Session resumption: every VIP's configuration shares one ticket key
//! (made at start, kept for the process's life, rotated every 6 hours by
//! rustls's `Ticketer`, the previous key still accepted) and one session
//! cache for TLS 1.2 session ids, so that a certificate reload does not
//! cost the clients their sessions.

use std::{sync::Arc, time::Duration};

use rustls::{
    server::{
        ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
        StoresServerSessions,
    },
    sign::CertifiedKey,
    ServerConfig,
};

use crate::model::tls::{LoadedCert, TlsSpec, TlsVersion};

/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS 1.2 session ids remembered (about 200 bytes each).
const SESSION_CACHE: usize = 20_000;

/// What every VIP's TLS server shares for the process's life.
pub struct Shared {
    ticketer: Arc<dyn ProducesTickets>,
    cache: Arc<dyn StoresServerSessions>,
}

impl Shared {
    /// # Errors
    /// When no ticket key can be made (no randomness).
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            ticketer: rustls::crypto::ring::Ticketer::new()
                .map_err(|e| format!("TLS session tickets: {e}"))?,
            cache: ServerSessionMemoryCache::new(SESSION_CACHE),
        })
    }
}

/// A VIP's TLS server as running: its configuration and what the metrics
/// tell of its certificates.
#[derive(Clone)]
pub struct Server {
    pub spec: TlsSpec,
    pub config: Arc<ServerConfig>,
    /// Each certificate's file and the end of its validity (Unix seconds).
    pub certificates: Vec<(String, i64)>,
}

impl Server {
    /// The server for `spec`, from its certificates as loaded.
    ///
    /// # Errors
    /// When rustls refuses the settings.
    pub fn new(spec: &TlsSpec, certs: Vec<LoadedCert>, shared: &Shared) -> Result<Self, String> {
        let versions: &[&rustls::SupportedProtocolVersion] = match spec.min_version {
            TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V13 => &[&rustls::version::TLS13],
        };
        let certificates = certs
            .iter()
            .map(|c| (c.file.display().to_string(), c.not_after))
            .collect();
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .map_err(|e| format!("tls: {e}"))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(BySni(certs)));
        config.alpn_protocols = spec.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.ticketer = Arc::clone(&shared.ticketer);
        config.session_storage = Arc::clone(&shared.cache);
        Ok(Self {
            spec: spec.clone(),
            config: Arc::new(config),
            certificates,
        })
    }
}

/// The certificate that serves the client's server name; the first when
/// none does or the client sent none.
#[derive(Debug)]
struct BySni(Vec<LoadedCert>);

impl BySni {
    fn pick(&self, sni: Option<&str>) -> Option<&LoadedCert> {
        sni.and_then(|name| self.0.iter().find(|c| c.serves(name)))
            .or_else(|| self.0.first())
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name()).map(|c| Arc::clone(&c.key))
    }
}

/// How a handshake ended.
pub enum Handshake<S> {
    /// Done: the stream, whether HTTP/2 was agreed, the TLS version ("1.2"
    /// or "1.3") and whether a session was resumed.
    Done {
        stream: Box<tokio_rustls::server::TlsStream<S>>,
        h2: bool,
        version: &'static str,
        resumed: bool,
    },
    Failed(std::io::Error),
    TimedOut,
}

/// Run the server side of a handshake on `stream`, within
/// [`HANDSHAKE_TIMEOUT`].
pub async fn accept<S>(config: Arc<ServerConfig>, stream: S) -> Handshake<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Err(_) => Handshake::TimedOut,
        Ok(Err(e)) => Handshake::Failed(e),
        Ok(Ok(stream)) => {
            let (_, conn) = stream.get_ref();
            let h2 = conn.alpn_protocol() == Some(b"h2");
            let version = match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
                _ => "1.2",
            };
            let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            Handshake::Done {
                stream: Box::new(stream),
                h2,
                version,
                resumed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(file: &str, names: &[&str]) -> LoadedCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let signer = rustls::crypto::ring::sign::any_supported_type(
            &rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("der"),
        )
        .expect("signer");
        LoadedCert {
            file: file.into(),
            names: names.iter().map(|n| (*n).to_string()).collect(),
            not_after: 0,
            key: Arc::new(CertifiedKey::new(Vec::new(), signer)),
        }
    }

    #[test]
    fn sni_picks_its_certificate_and_the_first_is_the_default() {
        let by = BySni(vec![
            cert("shop", &["shop.test"]),
            cert("mail", &["*.mail.test"]),
        ]);
        let file = |sni| by.pick(sni).map(|c| c.file.display().to_string());
        assert_eq!(file(Some("shop.test")).as_deref(), Some("shop"));
        assert_eq!(file(Some("web.mail.test")).as_deref(), Some("mail"));
        assert_eq!(file(Some("unknown.test")).as_deref(), Some("shop"));
        assert_eq!(file(None).as_deref(), Some("shop"));
        assert!(BySni(Vec::new()).pick(Some("shop.test")).is_none());
    }
}
