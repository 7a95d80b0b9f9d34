//! The OTLP exporter's HTTP client: our `reqwest` (so no second HTTP stack is
//! built) on a small runtime of its own. The SDK's batch processor exports
//! from its own thread by blocking on the export future; a request spawned
//! onto this runtime works from there, and span export never competes with
//! the actix arbiters for their event loops.

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use std::time::Duration;

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
        let (status, headers, body) = sent.await??;
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
