//! The API's client: one HTTP request over the control socket, and the
//! answer read as JSON, NDJSON lines or text.

use std::{path::Path, time::Duration};

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
