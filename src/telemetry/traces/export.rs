//! The OTLP exporter's HTTP client: our `reqwest` (so no second HTTP stack is
//! built) on a small runtime of its own. The SDK's batch processor exports
//! from its own thread by blocking on the export future; a request spawned
//! onto this runtime works from there, and span export never competes with
//! the actix arbiters for their event loops.

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Unix seconds of the last warning about a failed export.
static LAST_WARNING: AtomicU64 = AtomicU64::new(0);

/// Says that spans are being lost, at most once a minute (the exporter
/// retries nothing: a failed batch is dropped).
fn warn_export_failed(error: &dyn std::fmt::Display) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let last = LAST_WARNING.load(Ordering::Relaxed);
    if now >= last + 60 && LAST_WARNING.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(%error, "exporting spans failed; spans are being dropped (next warning in a minute at most)");
    }
}

#[derive(Debug)]
pub struct ExportClient {
    client: reqwest::Client,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl ExportClient {
    pub fn new(timeout: Duration) -> std::io::Result<ExportClient> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(std::io::Error::other)?;
        Ok(ExportClient { client, runtime: Some(runtime) })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self.client.request(parts.method, parts.uri.to_string()).body(body);
        for (name, value) in parts.headers.iter() {
            req = req.header(name, value);
        }
        let runtime = self.runtime.as_ref().ok_or("the export client is shut down")?;
        let sent = runtime.spawn(async move {
            let res = req.send().await?;
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = match sent.await? {
            Ok(r) => r,
            Err(e) => {
                warn_export_failed(&e);
                return Err(e.into());
            }
        };
        if !status.is_success() {
            warn_export_failed(&format!("the receiver answered {status}"));
        }
        let mut response = Response::builder().status(status.as_u16());
        for (name, value) in headers.iter() {
            response = response.header(name.as_str(), value.as_bytes());
        }
        Ok(response.body(body)?)
    }
}

impl Drop for ExportClient {
    /// The exporter may be dropped on an async thread, where dropping a
    /// runtime the normal way would panic.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
