//! Courier's gateway: the OpenFaaS HTTP API in front of a [`Provider`].
//!
//! It owns routing, authentication of `/system/*` (basic auth, or the dashboard's login
//! session), decoding and validating management
//! requests, the synchronous invocation proxy (`/function/{name}`: streaming, pooled,
//! timeouts, scale-from-zero), asynchronous invocation into the queue with its ledger record
//! and trace context, the invocation ledger's API (`/system/calls`), the OpenFaaS-named
//! Prometheus metrics, the autoscaler driven by its own per-function counters, and the web
//! dashboard (`/ui/`).
//!
//! Invariant: the gateway knows only the [`Provider`] seam. It never knows whether functions
//! are processes or Kubernetes pods, and never touches the data directory.

mod api;
mod auth;
mod autoscaler;
mod enqueue;
mod error;
mod invoke;
mod metrics;
mod path;
mod readiness;
mod same_origin;
mod server;
mod session;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use courier_core::Provider;
use courier_core::system::VersionInfo;
use courier_queue::WorkQueue;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::BasicAuth;
pub use autoscaler::AutoscaleConfig;
pub use error::ApiError;
pub use metrics::Metrics;

/// The function of a [`SpecCheck`]: `Err` with the reason when the spec is refused.
pub type SpecCheckFn =
    dyn Fn(&courier_core::FunctionDeployment) -> Result<(), String> + Send + Sync;

/// A check every deployed or updated function spec must pass (for example, that its
/// `schedule` annotation parses); the error text is the 400's message.
#[derive(Clone)]
pub struct SpecCheck(pub Arc<SpecCheckFn>);

impl std::fmt::Debug for SpecCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpecCheck")
    }
}

/// How the gateway behaves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How long a function may take to answer with its response headers before the caller
    /// gets 504.
    pub upstream_timeout: Duration,
    /// How long an invocation waits for a function with no ready replica (starting, or scaled
    /// to zero and being woken) before the caller gets 503.
    pub ready_timeout: Duration,
    /// Largest management request body (`/system/*`) accepted, in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Largest asynchronous invocation body accepted, in bytes; larger gets 413.
    pub max_async_body_bytes: usize,
    /// Credentials for `/system/*`; `None` turns authentication off.
    pub auth: Option<BasicAuth>,
    /// The gateway's version for `/system/info`.
    pub version: VersionInfo,
    /// Checks a function spec must pass to be deployed or updated (beyond the gateway's own).
    pub spec_checks: Vec<SpecCheck>,
    /// Where the `courier.accept` span of each asynchronous call goes (`--otlp-endpoint`);
    /// `None` builds no span.
    pub spans: Option<courier_core::trace::Spans>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            upstream_timeout: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            max_async_body_bytes: 1024 * 1024,
            auth: None,
            version: VersionInfo {
                commit_message: String::new(),
                sha: "unknown".into(),
                release: env!("CARGO_PKG_VERSION").into(),
            },
            spec_checks: Vec::new(),
            spans: None,
        }
    }
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    provider: Arc<dyn Provider>,
    /// Where `/async-function` stores calls; `None` disables asynchronous invocation.
    queue: Option<Arc<dyn WorkQueue>>,
    /// The invocation ledger kept beside `queue` (`/system/calls`).
    ledger: Option<courier_ledger::Ledger>,
    /// Cancelled when the server stops: ends long polls (`/system/calls/{id}?wait=`) so open
    /// connections can drain.
    stopping: CancellationToken,
    config: GatewayConfig,
    client: Client<HttpConnector, invoke::UpstreamBody>,
    metrics: Metrics,
    waking: readiness::Waking,
    routes: invoke::Routes,
    /// Signalled after every deploy, update or removal through this gateway.
    changes: Arc<tokio::sync::Notify>,
    /// The dashboard's login sessions (in memory only).
    sessions: session::Sessions,
}

impl Gateway {
    /// A gateway over `provider`, registering its metrics on `registry`.
    pub fn new(
        provider: Arc<dyn Provider>,
        queue: Option<Arc<dyn WorkQueue>>,
        config: GatewayConfig,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        let metrics = Metrics::register(registry, &config.version)?;
        let ledger = queue.clone().map(courier_ledger::Ledger::new);
        Ok(Arc::new(Self {
            provider,
            queue,
            ledger,
            stopping: CancellationToken::new(),
            config,
            client,
            metrics,
            waking: readiness::Waking::default(),
            routes: invoke::Routes::default(),
            changes: Arc::new(tokio::sync::Notify::new()),
            sessions: session::Sessions::default(),
        }))
    }

    /// The provider behind this gateway.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// Invokes a function in-process, exactly as `POST /function/...` over HTTP would
    /// (readiness, scale-from-zero, proxy, metrics), for a caller in the same process (the
    /// queue worker in `courier up`). `request`'s URI is the `/function/...` path and query.
    pub async fn call_function(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> http::Response<http_body_util::Either<hyper::body::Incoming, axum::body::Body>> {
        let request = request.map(|b| http_body_util::Either::Right(http_body_util::Full::new(b)));
        let local = http::HeaderValue::from_static("127.0.0.1");
        invoke::invoke(self, Some(local), request).await
    }

    /// Runs the autoscaler until `stop` is cancelled: every `config.interval`, each function's
    /// load from this gateway's counters becomes a replica count set through the provider.
    pub async fn autoscale(&self, config: AutoscaleConfig, stop: CancellationToken) {
        autoscaler::run(self, config, stop).await;
    }

    /// Signalled (`notify_one`) after every deploy, update or removal made through this
    /// gateway, so an in-process function catalog can refresh at once.
    pub fn function_changes(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    /// The gateway's routes, plus `extra` management routes (behind the same authentication
    /// and body limit as `/system/*`).
    pub fn router(self: &Arc<Self>, registry: prometheus::Registry, extra: Router) -> Router {
        api::router(self.clone(), registry, extra)
    }

    /// Serves the gateway on `listener` until `shutdown` is cancelled, then lets open
    /// connections finish (the caller bounds how long).
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        registry: prometheus::Registry,
        extra: Router,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let router = path::normalize(self.router(registry, extra));
        server::serve(self.clone(), listener, router, shutdown).await
    }
}
