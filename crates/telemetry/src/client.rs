//! The exporter's HTTP client: the workspace's reqwest, run on Courier's Tokio runtime.
//!
//! The SDK's batch span processor exports from its own OS thread, driving the export future
//! with `futures_executor::block_on`. reqwest's async client needs a Tokio reactor, which that
//! thread does not have ("there is no reactor running"). [`RuntimeClient`] therefore spawns
//! each request onto the runtime captured at start and hands the answer back through the task's
//! `JoinHandle`, which any executor may await. If the runtime is gone (process exit), the
//! request fails instead of hanging.

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tokio::runtime::Handle;

/// reqwest on the runtime Courier runs on, callable from any thread.
#[derive(Debug)]
pub(crate) struct RuntimeClient {
    /// The pooled client (its own timeout bounds each request, body included).
    client: reqwest::Client,
    /// Where requests run.
    runtime: Handle,
}

impl RuntimeClient {
    pub(crate) fn new(client: reqwest::Client, runtime: Handle) -> Self {
        Self { client, runtime }
    }
}

#[async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        // opentelemetry-http's reqwest adapter: status, headers, a body capped at 4 MiB.
        self.runtime
            .spawn(async move { HttpClient::send_bytes(&client, request).await })
            .await?
    }
}
