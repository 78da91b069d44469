//! `/system/logs` on Kubernetes: the container logs of a function's pods, read through the
//! API server with timestamps and turned into [`LogMessage`]s (`instance` = pod name).
//!
//! - Following: the pods' streams interleaved as lines arrive. Pods started after the call
//!   are not picked up (call again).
//! - Not following, with `tail`: the last `tail` lines of each pod, merged by time, the last
//!   `tail` of those.
//! - Not following, without `tail`: each pod's kept lines, pod after pod.

use std::time::Duration;

use courier_core::function::LABEL_FUNCTION;
use courier_core::{LogMessage, LogRequest, LogStream};
use futures_util::io::AsyncBufReadExt;
use futures_util::{Stream, StreamExt, future, stream};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, LogParams};

use crate::error::{Result, within};

/// Opens the log lines `request` asks for.
pub(crate) async fn open(
    api: Api<Pod>,
    request: LogRequest,
    timeout: Duration,
) -> Result<LogStream> {
    let selector = format!("{LABEL_FUNCTION}={}", request.name);
    let pods = within(timeout, api.list(&ListParams::default().labels(&selector))).await?;
    let mut names: Vec<String> = pods
        .items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .filter(|pod| request.instance.as_ref().is_none_or(|i| i == pod))
        .collect();
    names.sort();

    let params = LogParams {
        container: Some(request.name.clone()),
        follow: request.follow,
        tail_lines: request.tail.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        since_time: request
            .since_unix_nanos
            .and_then(|nanos| Timestamp::from_nanosecond(nanos).ok()),
        timestamps: true,
        ..LogParams::default()
    };
    let mut streams = Vec::with_capacity(names.len());
    for pod in names {
        let reader = within(timeout, api.log_stream(&pod, &params)).await?;
        let (function, namespace) = (request.name.clone(), request.namespace.clone());
        let lines = reader.lines().scan((), move |(), line| {
            future::ready(match line {
                Ok(line) => Some(message(&function, &namespace, &pod, &line)),
                Err(e) => {
                    tracing::warn!(pod = %pod, error = %e, "Log stream broke off.");
                    None
                }
            })
        });
        streams.push(lines.boxed());
    }

    Ok(match (request.follow, request.tail) {
        (true, _) => stream::select_all(streams).boxed(),
        (false, Some(tail)) => stream::iter(last_by_time(streams, tail).await).boxed(),
        (false, None) => stream::iter(streams).flatten().boxed(),
    })
}

/// The last `tail` lines of all `streams` (each finite), oldest first.
async fn last_by_time(
    streams: Vec<impl Stream<Item = LogMessage> + Unpin>,
    tail: usize,
) -> Vec<LogMessage> {
    let mut all: Vec<(Option<Timestamp>, LogMessage)> = stream::iter(streams)
        .flatten()
        .map(|m| (m.timestamp.parse().ok(), m))
        .collect()
        .await;
    all.sort_by_key(|entry| entry.0); // Stable: a pod's lines keep their order.
    let skip = all.len().saturating_sub(tail);
    all.into_iter().skip(skip).map(|(_, m)| m).collect()
}

/// One line as the kubelet sends it with `timestamps=true`: `<RFC 3339 time> <text>`.
fn message(function: &str, namespace: &str, pod: &str, line: &str) -> LogMessage {
    let (timestamp, text) = match line.split_once(' ') {
        Some((time, text)) if time.parse::<Timestamp>().is_ok() => (time, text),
        _ => ("", line),
    };
    LogMessage {
        name: function.to_owned(),
        namespace: namespace.to_owned(),
        instance: pod.to_owned(),
        timestamp: timestamp.to_owned(),
        text: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pod: &str, time: &str, text: &str) -> LogMessage {
        message("echo", "openfaas-fn", pod, &format!("{time} {text}"))
    }

    #[test]
    fn a_kubelet_line_splits_into_time_and_text() {
        let m = line(
            "echo-1",
            "2026-11-26T10:00:00.123456789Z",
            "Forking fprocess.",
        );
        assert_eq!(m.timestamp, "2026-11-26T10:00:00.123456789Z");
        assert_eq!(m.text, "Forking fprocess.");
        assert_eq!((m.name.as_str(), m.instance.as_str()), ("echo", "echo-1"));
    }

    #[test]
    fn a_line_without_a_time_is_kept_whole() {
        let m = message("echo", "openfaas-fn", "echo-1", "no time here");
        assert_eq!(
            (m.timestamp.as_str(), m.text.as_str()),
            ("", "no time here")
        );
    }

    #[tokio::test]
    async fn tail_keeps_the_newest_lines_of_all_pods_by_time_not_by_text() {
        // Kubelet times drop trailing zeros: ".5Z" is later than ".25Z".
        let a = stream::iter(vec![
            line("a", "2026-11-26T10:00:00.25Z", "a1"),
            line("a", "2026-11-26T10:00:02Z", "a2"),
        ]);
        let b = stream::iter(vec![
            line("b", "2026-11-26T10:00:00.5Z", "b1"),
            line("b", "2026-11-26T10:00:01Z", "b2"),
        ]);
        let kept: Vec<String> = last_by_time(vec![a, b], 3)
            .await
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(kept, ["b1", "b2", "a2"]);
    }
}
