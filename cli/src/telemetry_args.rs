//! `--otlp-endpoint`, shared by every process that handles calls (`courier up`, `courier
//! gateway`, `courier queue-worker`, `courier scheduler`, `courier connector ...`): with it,
//! each exports its spans (accept, enqueue, attempt, callback, dead letter) over OTLP/HTTP;
//! without it no exporter starts and no span is built.

use anyhow::{Context as _, Result};
use clap::Args;
use courier_core::trace::Spans;
use courier_telemetry::{OtlpSpans, TelemetryGuard};

/// Where spans are exported.
#[derive(Debug, Clone, Args)]
pub(crate) struct OtlpArgs {
    /// OTLP/HTTP collector to export spans to (`http://collector:4318`; `/v1/traces` is
    /// appended unless the path already ends in it). Unset: no spans are built or exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,
}

/// A running exporter (or none): hand `spans` to the components, `shutdown` last.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    /// Where the components record spans; `None` without `--otlp-endpoint`.
    pub(crate) spans: Option<Spans>,
    guard: Option<TelemetryGuard>,
}

impl OtlpArgs {
    /// Starts the exporter of process `component` when an endpoint is set. Must run inside
    /// the Tokio runtime.
    pub(crate) fn start(&self, component: &'static str) -> Result<Telemetry> {
        let Some(endpoint) = self.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
            return Ok(Telemetry::default());
        };
        let (sink, guard) = OtlpSpans::start(endpoint, component).context("--otlp-endpoint")?;
        Ok(Telemetry {
            spans: Some(Spans::new(sink)),
            guard: Some(guard),
        })
    }

    /// One line for the start-up banner.
    pub(crate) fn describe(&self) -> String {
        match self.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
            Some(endpoint) => format!("spans: exported to {endpoint} (OTLP/HTTP)"),
            None => "spans: not exported (no --otlp-endpoint)".to_owned(),
        }
    }
}

impl Telemetry {
    /// Sends what is still queued (bounded by the exporter's shutdown timeout). Call it after
    /// the components that record spans have stopped.
    pub(crate) async fn shutdown(self) {
        if let Some(guard) = self.guard
            && let Err(e) = guard.shutdown().await
        {
            tracing::warn!(error = %e, "Spans not exported at shutdown.");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        otlp: OtlpArgs,
    }

    fn parse(args: &[&str]) -> Result<OtlpArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("courier").chain(args.iter().copied()))
            .map(|cli| cli.otlp)
    }

    #[tokio::test]
    async fn without_an_endpoint_nothing_starts() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.otlp_endpoint, None);
        let telemetry = args.start("up").unwrap();
        assert!(telemetry.spans.is_none());
        assert!(args.describe().contains("not exported"));
    }

    #[tokio::test]
    async fn an_endpoint_starts_the_exporter_and_a_bad_one_is_refused() {
        let args = parse(&["--otlp-endpoint", "http://127.0.0.1:4318"]).unwrap();
        let telemetry = args.start("up").unwrap();
        assert!(telemetry.spans.is_some());
        assert!(args.describe().contains("http://127.0.0.1:4318"));
        telemetry.shutdown().await;
        let bad = parse(&["--otlp-endpoint", "https://collector:4318"]).unwrap();
        let error = bad.start("up").unwrap_err();
        assert!(
            format!("{error:#}").contains("--otlp-endpoint"),
            "{error:#}"
        );
    }
}
