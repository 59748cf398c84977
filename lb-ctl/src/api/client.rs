//! The API's client: [`Client`] calls each route by name (the routes'
//! paths live only in this layer), over one HTTP request on the control
//! socket, and reads the answer as JSON, NDJSON lines or text.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::Done;
use crate::{
    controller::report::{BackendRow, Status},
    model::{
        endpoint::{Endpoint, Protocol, VipId},
        services::VipSpec,
    },
};

/// A client of the controller on one control socket.
pub struct Client {
    socket: PathBuf,
}

/// `?protocol=udp` for UDP (TCP is the API's default).
fn protocol_query(p: Protocol) -> String {
    match p {
        Protocol::Tcp => String::new(),
        Protocol::Udp => format!("?protocol={}", p.as_str()),
    }
}

fn vip_path(vip: VipId) -> String {
    format!("/v1/vips/{}{}", vip.endpoint, protocol_query(vip.protocol))
}

fn backend_path(vip: VipId, backend: Endpoint, tail: &str) -> String {
    format!(
        "/v1/vips/{}/backends/{backend}{tail}{}",
        vip.endpoint,
        protocol_query(vip.protocol)
    )
}

impl Client {
    #[must_use]
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Reply> {
        call(&self.socket, method, path, body.as_ref())
    }

    fn done(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<String> {
        Ok(self.call(method, path, body)?.json::<Done>()?.message)
    }

    /// `GET /v1/status`.
    ///
    /// # Errors
    /// When the controller cannot be reached or refuses.
    pub fn status(&self) -> anyhow::Result<Status> {
        self.call("GET", "/v1/status", None)?.json()
    }

    /// `POST /v1/reload`: the controller re-reads its config file.
    ///
    /// # Errors
    /// As [`Client::status`], with the reason a file is refused.
    pub fn reload(&self) -> anyhow::Result<String> {
        self.done("POST", "/v1/reload", None)
    }

    /// `GET /v1/config`: the running configuration.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub fn config(&self) -> anyhow::Result<crate::model::config::Config> {
        self.call("GET", "/v1/config", None)?.json()
    }

    /// `GET /v1/vips`.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub fn vips(&self) -> anyhow::Result<Vec<crate::controller::report::VipRow>> {
        self.call("GET", "/v1/vips", None)?.json()
    }

    /// `POST /v1/vips`; the controller's message.
    ///
    /// # Errors
    /// As [`Client::status`], with the controller's reason.
    pub fn vip_add(&self, spec: &VipSpec) -> anyhow::Result<String> {
        self.done("POST", "/v1/vips", Some(serde_json::to_value(spec)?))
    }

    /// `DELETE /v1/vips/{vip}`.
    ///
    /// # Errors
    /// As [`Client::vip_add`].
    pub fn vip_remove(&self, vip: VipId) -> anyhow::Result<String> {
        self.done("DELETE", &vip_path(vip), None)
    }

    /// `GET /v1/backends`, of one VIP and/or protocol or of all.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub fn backends(
        &self,
        vip: Option<Endpoint>,
        protocol: Option<Protocol>,
    ) -> anyhow::Result<Vec<BackendRow>> {
        let mut query = Vec::new();
        if let Some(v) = vip {
            query.push(format!("vip={v}"));
        }
        if let Some(p) = protocol {
            query.push(format!("protocol={}", p.as_str()));
        }
        let path = if query.is_empty() {
            "/v1/backends".to_string()
        } else {
            format!("/v1/backends?{}", query.join("&"))
        };
        self.call("GET", &path, None)?.json()
    }

    /// `POST /v1/vips/{vip}/backends`.
    ///
    /// # Errors
    /// As [`Client::vip_add`].
    pub fn backend_add(
        &self,
        vip: VipId,
        backend: Endpoint,
        weight: u32,
    ) -> anyhow::Result<String> {
        self.done(
            "POST",
            &format!(
                "/v1/vips/{}/backends{}",
                vip.endpoint,
                protocol_query(vip.protocol)
            ),
            Some(serde_json::json!({ "backend": backend, "weight": weight })),
        )
    }

    /// `DELETE /v1/vips/{vip}/backends/{backend}`.
    ///
    /// # Errors
    /// As [`Client::vip_add`].
    pub fn backend_remove(&self, vip: VipId, backend: Endpoint) -> anyhow::Result<String> {
        self.done("DELETE", &backend_path(vip, backend, ""), None)
    }

    /// `PUT /v1/vips/{vip}/backends/{backend}` with a weight.
    ///
    /// # Errors
    /// As [`Client::vip_add`].
    pub fn backend_weight(
        &self,
        vip: VipId,
        backend: Endpoint,
        weight: u32,
    ) -> anyhow::Result<String> {
        self.done(
            "PUT",
            &backend_path(vip, backend, ""),
            Some(serde_json::json!({ "weight": weight })),
        )
    }

    /// `POST …/drain`.
    ///
    /// # Errors
    /// As [`Client::vip_add`].
    pub fn backend_drain(
        &self,
        vip: VipId,
        backend: Endpoint,
        repin: bool,
    ) -> anyhow::Result<String> {
        self.done(
            "POST",
            &backend_path(vip, backend, "/drain"),
            Some(serde_json::json!({ "repin": repin })),
        )
    }

    /// `POST …/enable`.
    ///
    /// # Errors
    /// As [`Client::vip_add`].
    pub fn backend_enable(&self, vip: VipId, backend: Endpoint) -> anyhow::Result<String> {
        self.done("POST", &backend_path(vip, backend, "/enable"), None)
    }

    /// `GET /v1/connections`: NDJSON, one connection a line.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub fn connections(&self) -> anyhow::Result<Reply> {
        self.call("GET", "/v1/connections", None)
    }

    /// `GET /v1/sessions`: NDJSON, one session a line.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub fn sessions(&self) -> anyhow::Result<Reply> {
        self.call("GET", "/v1/sessions", None)
    }

    /// `GET /metrics`: the Prometheus text.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub fn metrics(&self) -> anyhow::Result<String> {
        self.call("GET", "/metrics", None)?.text()
    }
}

/// An answer of the API: its status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as `T` on success; else the API's error message.
    ///
    /// # Errors
    /// The controller's message, or an unreadable body.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        if !(200..300).contains(&self.status) {
            let message = serde_json::from_slice::<super::ApiError>(&self.body).map_or_else(
                |_| String::from_utf8_lossy(&self.body).into_owned(),
                |e| e.error,
            );
            anyhow::bail!("{message}");
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| anyhow::anyhow!("the controller answered something unreadable: {e}"))
    }

    /// The body as text on success; else the API's error message.
    ///
    /// # Errors
    /// The controller's message.
    pub fn text(&self) -> anyhow::Result<String> {
        if !(200..300).contains(&self.status) {
            let message = serde_json::from_slice::<super::ApiError>(&self.body).map_or_else(
                |_| String::from_utf8_lossy(&self.body).into_owned(),
                |e| e.error,
            );
            anyhow::bail!("{message}");
        }
        Ok(String::from_utf8_lossy(&self.body).into_owned())
    }

    /// NDJSON lines, each as `T`.
    ///
    /// # Errors
    /// The controller's message, or an unreadable line.
    pub fn lines<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<Vec<T>> {
        let text = self.text()?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                if let Ok(e) = serde_json::from_str::<super::ApiError>(l) {
                    anyhow::bail!("{}", e.error);
                }
                serde_json::from_str(l).map_err(|e| anyhow::anyhow!("unreadable line {l:?}: {e}"))
            })
            .collect()
    }
}

/// One HTTP request to the controller on `socket`.
///
/// # Errors
/// When the controller cannot be reached.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Reply> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(call_async(socket, method, path, body))
}

async fn call_async(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Reply> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the controller at {}: {e} (is `lb-ctl attach` running with this --socket?)",
            socket.display()
        )
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let bytes = body
        .map(serde_json::to_vec)
        .transpose()?
        .unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "lb")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(axum::body::Bytes::from(bytes)))?;
    let response = tokio::time::timeout(Duration::from_secs(600), sender.send_request(request))
        .await
        .map_err(|_| anyhow::anyhow!("the controller did not answer within 600 s"))??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok(Reply { status, body })
}
