//! Exports Courier's spans over OTLP/HTTP (protobuf) with the opentelemetry crates. This is the
//! only crate that links opentelemetry: everything else records finished spans through the
//! [`SpanSink`] seam of `courier_core::trace` and never sees an OpenTelemetry type.
//!
//! [`OtlpSpans::start`] builds the exporter and returns the sink plus a [`TelemetryGuard`].
//! [`SpanSink::record`] turns a [`SpanRecord`] into a span with Courier's own trace id, span
//! id, remote parent, kind, times, attributes and (when `error` is set) an error status, and
//! queues it for the SDK's batch span processor. It never blocks: the queue is bounded
//! ([`Config::max_queue_spans`]) and a full queue drops spans.
//! The processor posts batches from its own thread to `<endpoint>/v1/traces` every
//! [`Config::export_interval`] (sooner when [`Config::max_batch_spans`] are waiting).
//! Every span carries the resource `service.name = courier`, `courier.component = <component>`.
//!
//! # Wiring it in
//!
//! Each binary (gateway, queue worker, `courier up`, connectors) takes
//! `--otlp-endpoint <URL>`, also read from the standard `OTEL_EXPORTER_OTLP_ENDPOINT`:
//!
//! ```text
//! /// OTLP/HTTP collector to export spans to (`http://collector:4318`; `/v1/traces` is
//! /// appended unless the path already ends in it). Unset: no spans are exported.
//! #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
//! otlp_endpoint: Option<String>,
//! ```
//!
//! Start one exporter per process, inside the Tokio runtime (requests run on it), and only
//! when an endpoint is set; without one keep no sink at all, so nothing is exported and
//! nothing is slower. Shut it down last, after the server and workers have drained, so their
//! final spans are sent:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use courier_core::trace::SpanSink;
//! use courier_telemetry::OtlpSpans;
//!
//! # async fn main_body(otlp_endpoint: Option<String>) -> Result<(), courier_telemetry::Error> {
//! let (spans, telemetry): (Option<Arc<dyn SpanSink>>, _) = match &otlp_endpoint {
//!     Some(endpoint) => {
//!         // An unusable endpoint (not http://, https) is a start-up error, like a bad flag.
//!         let (sink, guard) = OtlpSpans::start(endpoint, "gateway")?;
//!         (Some(sink), Some(guard))
//!     }
//!     None => (None, None),
//! };
//! // ... hand `spans` to the code that records spans, serve, drain ...
//! if let Some(telemetry) = telemetry {
//!     // Flushes what is queued, bounded by `Config::shutdown_timeout` (5 s).
//!     if let Err(e) = telemetry.shutdown().await {
//!         eprintln!("spans not exported at shutdown: {e}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `component` names the process: `"gateway"`, `"queue-worker"`, `"up"` (everything in one
//! process), `"connector-kafka"`, ... [`OtlpSpans::start_with`] takes a [`Config`] for the
//! timeouts and queue sizes. Dropping the guard without `shutdown` flushes on a background
//! thread, best effort; spans recorded after shutdown are dropped silently.
//!
//! Of the standard exporter variables only `OTEL_EXPORTER_OTLP_HEADERS` (e.g. an auth header)
//! and `OTEL_RESOURCE_ATTRIBUTES` are honoured; the endpoint, protocol (`http/protobuf`) and
//! timeout always come from Courier's flags. Export failures are logged through `tracing` under
//! the `opentelemetry_sdk` / `opentelemetry_otlp` targets (filter them with
//! `opentelemetry_sdk=off` if a collector is expected to be down).
//!
//! # Invariants
//!
//! * Plain `http://` only: no TLS is compiled in (no rustls provider, no aws-lc). An `https`
//!   endpoint is refused at start with [`Error::Endpoint`].
//! * Knows nothing of calls, queues or HTTP routes: it exports what it is given. Sampling is
//!   the caller's decision; every recorded span is exported as sampled.

mod client;
mod endpoint;
mod span;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use courier_core::trace::{SpanRecord, SpanSink};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanExporter as _, SpanProcessor as _,
};

use crate::client::RuntimeClient;

/// The `service.name` of every span.
pub const SERVICE_NAME: &str = "courier";

/// The resource attribute naming the process that exported a span.
pub const COMPONENT_ATTRIBUTE: &str = "courier.component";

/// A boxed error kept as a source.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the exporter could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not a plain `http://` URL the exporter can post to.
    #[error("OTLP endpoint {endpoint:?} is not usable: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`OtlpSpans::start`] ran outside a Tokio runtime; the exporter's requests run on it.
    #[error("the OTLP exporter must be started inside a Tokio runtime")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    /// The HTTP client or the OTLP exporter could not be built.
    #[error("building the OTLP exporter failed: {0}")]
    Build(#[source] BoxError),
    /// Shutdown did not send every queued span within its timeout (or had already run).
    #[error("flushing spans at shutdown failed: {0}")]
    Shutdown(#[source] BoxError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How spans are exported.
#[derive(Debug, Clone)]
pub struct Config {
    /// The collector: a base URL (`http://collector:4318`, `/v1/traces` is appended) or the
    /// full traces URL (`http://collector:4318/v1/traces`).
    pub endpoint: String,
    /// The `courier.component` resource attribute: which process exported the span.
    pub component: &'static str,
    /// How long one export (one POST, with the exporter's retries) may take.
    pub export_timeout: Duration,
    /// How long [`TelemetryGuard::shutdown`] waits for the queued spans to be sent.
    pub shutdown_timeout: Duration,
    /// How often queued spans are posted. Shorter than OpenTelemetry's 5 s so a trace shows up
    /// while someone is looking for it; nothing is posted while nothing is queued.
    pub export_interval: Duration,
    /// The most spans one POST carries; a full batch is posted without waiting for the interval.
    pub max_batch_spans: usize,
    /// How many finished spans may wait for export; past that, new spans are dropped.
    pub max_queue_spans: usize,
}

impl Config {
    /// The defaults: 10 s per export, 5 s to flush at shutdown, a post every second of at most
    /// 512 spans, 2048 spans queued at most.
    pub fn new(endpoint: impl Into<String>, component: &'static str) -> Self {
        Self {
            endpoint: endpoint.into(),
            component,
            export_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            export_interval: Duration::from_secs(1),
            max_batch_spans: 512,
            max_queue_spans: 2048,
        }
    }
}

/// The state the sink and the guard share.
#[derive(Debug)]
struct Exporting {
    /// The SDK's batch span processor (its own thread, a bounded queue).
    processor: BatchSpanProcessor,
    /// The instrumentation scope every span names (`courier`, this crate's version).
    scope: InstrumentationScope,
    /// Set once shutdown began: later spans are dropped without reaching the processor (which
    /// would warn about each one).
    stopped: AtomicBool,
}

/// The [`SpanSink`] that exports over OTLP/HTTP. Obtain it from [`OtlpSpans::start`].
#[derive(Debug)]
pub struct OtlpSpans {
    exporting: Arc<Exporting>,
}

impl OtlpSpans {
    /// Starts exporting to `endpoint` with the default [`Config`]. Must run inside a Tokio
    /// runtime. Returns the sink to record spans into and the guard that flushes them.
    pub fn start(
        endpoint: &str,
        component: &'static str,
    ) -> Result<(Arc<dyn SpanSink>, TelemetryGuard)> {
        Self::start_with(Config::new(endpoint, component))
    }

    /// Starts exporting as `config` says. Must run inside a Tokio runtime.
    pub fn start_with(config: Config) -> Result<(Arc<dyn SpanSink>, TelemetryGuard)> {
        let traces_url =
            endpoint::traces_url(&config.endpoint).map_err(|reason| Error::Endpoint {
                endpoint: config.endpoint.clone(),
                reason,
            })?;
        let runtime = tokio::runtime::Handle::try_current().map_err(Error::NoRuntime)?;
        let http = reqwest::Client::builder()
            .timeout(config.export_timeout)
            .connect_timeout(config.export_timeout)
            .build()
            .map_err(|e| Error::Build(e.into()))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(RuntimeClient::new(http, runtime))
            .with_endpoint(traces_url)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| Error::Build(e.into()))?;
        exporter.set_resource(&resource(config.component));
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(config.export_interval)
            .with_max_export_batch_size(config.max_batch_spans.min(config.max_queue_spans))
            .with_max_queue_size(config.max_queue_spans)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let exporting = Arc::new(Exporting {
            processor,
            scope: InstrumentationScope::builder(SERVICE_NAME)
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            stopped: AtomicBool::new(false),
        });
        let sink = Arc::new(Self {
            exporting: exporting.clone(),
        });
        let guard = TelemetryGuard {
            exporting: Some(exporting),
            shutdown_timeout: config.shutdown_timeout,
        };
        Ok((sink, guard))
    }
}

impl SpanSink for OtlpSpans {
    fn record(&self, span: SpanRecord) {
        let exporting = &self.exporting;
        if exporting.stopped.load(Ordering::Relaxed) {
            return;
        }
        // A bounded channel's try_send: never waits, drops the span when the queue is full.
        exporting
            .processor
            .on_end(span::span_data(span, &exporting.scope));
    }
}

/// Keeps the exporter running; [`TelemetryGuard::shutdown`] sends what is queued and stops it.
#[derive(Debug)]
#[must_use = "dropping the guard stops the exporter; call shutdown() at the end instead"]
pub struct TelemetryGuard {
    /// `None` once shut down.
    exporting: Option<Arc<Exporting>>,
    /// How long shutdown waits for the queued spans to be sent.
    shutdown_timeout: Duration,
}

impl TelemetryGuard {
    /// Stops taking spans, sends the queued ones and stops the exporter, waiting at most
    /// [`Config::shutdown_timeout`]. The wait happens on a blocking thread, so the runtime's
    /// own threads stay free to carry the last requests.
    pub async fn shutdown(mut self) -> Result<()> {
        let Some(exporting) = self.exporting.take() else {
            return Ok(());
        };
        exporting.stopped.store(true, Ordering::Relaxed);
        let timeout = self.shutdown_timeout;
        tokio::task::spawn_blocking(move || exporting.processor.shutdown_with_timeout(timeout))
            .await
            .map_err(|e| Error::Shutdown(e.into()))?
            .map_err(|e| Error::Shutdown(e.into()))
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(exporting) = self.exporting.take() else {
            return;
        };
        exporting.stopped.store(true, Ordering::Relaxed);
        let timeout = self.shutdown_timeout;
        // Best effort, off the caller's thread: a drop must not block an async thread.
        let _ = std::thread::Builder::new()
            .name("courier-otlp-shutdown".into())
            .spawn(move || exporting.processor.shutdown_with_timeout(timeout));
    }
}

/// `service.name = courier`, `courier.component = <component>`, plus the SDK's own
/// `telemetry.sdk.*` and whatever `OTEL_RESOURCE_ATTRIBUTES` adds.
fn resource(component: &'static str) -> Resource {
    Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attribute(KeyValue::new(COMPONENT_ATTRIBUTE, component))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_outside_a_runtime_is_an_error() {
        let Err(err) = OtlpSpans::start("http://127.0.0.1:4318", "test") else {
            panic!("started outside a runtime");
        };
        assert!(matches!(err, Error::NoRuntime(_)), "{err}");
    }

    #[tokio::test]
    async fn an_unusable_endpoint_is_refused_at_start() {
        let Err(err) = OtlpSpans::start("https://collector:4318", "test") else {
            panic!("started with an https endpoint");
        };
        assert!(
            matches!(&err, Error::Endpoint { endpoint, .. } if endpoint == "https://collector:4318"),
            "{err}"
        );
    }

    #[test]
    fn the_resource_names_courier_and_the_component() {
        let resource = resource("gateway");
        let get = |key: &'static str| resource.get(&opentelemetry::Key::from_static_str(key));
        assert_eq!(get("service.name"), Some("courier".into()));
        assert_eq!(get(COMPONENT_ATTRIBUTE), Some("gateway".into()));
    }
}
