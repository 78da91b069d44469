//! Function logs on `/system/logs`: NDJSON lines `{name, namespace, instance, timestamp, text}`,
//! the watchdog-style lines every fork writes, and `tail`, `since` and `follow`.

use std::time::{Duration, Instant};

use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, eventually, fork_function, format_rfc3339, parse_rfc3339,
    url_encode,
};
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const READY: Duration = Duration::from_secs(20);
const LOGS: Duration = Duration::from_secs(15);

async fn courier_with_logger() -> Courier {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("test-logger", "cat")).await;
    courier
        .wait_ready("test-logger", DEFAULT_NAMESPACE, READY)
        .await;
    courier
}

async fn call(courier: &Courier, body: &str) {
    let resp = courier
        .invoke(Method::POST, "test-logger", Some(body.as_bytes().to_vec()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), body);
}

fn text(line: &Value) -> &str {
    line["text"].as_str().unwrap_or_default()
}

/// Whether `text` contains `Wrote <bytes> Bytes - Duration: <seconds>s`.
fn is_wrote_line(text: &str, bytes: usize) -> bool {
    let needle = format!("Wrote {bytes} Bytes - Duration: ");
    text.find(&needle).is_some_and(|at| {
        let rest = text[at + needle.len()..].trim_end();
        rest.strip_suffix('s')
            .is_some_and(|seconds| seconds.parse::<f64>().is_ok_and(|s| s >= 0.0))
    })
}

async fn wait_for_wrote_line(courier: &Courier, bytes: usize) -> Vec<Value> {
    let what = format!("a log line 'Wrote {bytes} Bytes - Duration: …s'");
    eventually(LOGS, &what, || async {
        let lines = courier.logs("test-logger", "").await;
        lines
            .iter()
            .any(|l| is_wrote_line(text(l), bytes))
            .then_some(lines)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fork_writes_forking_and_wrote_lines_as_ndjson() {
    let courier = courier_with_logger().await;
    call(&courier, DEFAULT_NAMESPACE).await;

    let lines = wait_for_wrote_line(&courier, DEFAULT_NAMESPACE.len()).await;
    assert!(
        lines.iter().any(|l| text(l).contains("Forking fprocess.")),
        "no 'Forking fprocess.' line: {lines:?}"
    );
    for line in &lines {
        assert_eq!(line["name"], "test-logger", "{line}");
        assert_eq!(line["namespace"], DEFAULT_NAMESPACE, "{line}");
        assert!(line["instance"].is_string(), "instance: {line}");
        assert!(line["text"].is_string(), "text: {line}");
        parse_rfc3339(line["timestamp"].as_str().expect("timestamp is a string"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_returns_only_the_most_recent_lines() {
    let courier = courier_with_logger().await;
    for body in ["a", "bb", "ccc"] {
        call(&courier, body).await;
    }
    let all = wait_for_wrote_line(&courier, 3).await;
    assert!(all.len() >= 6, "two lines per call expected: {all:?}");

    let tail = courier.logs("test-logger", "&tail=2").await;
    assert_eq!(tail.len(), 2, "{tail:?}");
    let last_two: Vec<&str> = all[all.len() - 2..].iter().map(text).collect();
    let tail_texts: Vec<&str> = tail.iter().map(text).collect();
    assert_eq!(tail_texts, last_two);
    assert!(tail.iter().any(|l| is_wrote_line(text(l), 3)), "{tail:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn since_leaves_out_older_lines() {
    let courier = courier_with_logger().await;
    call(&courier, "early").await;
    let all = wait_for_wrote_line(&courier, 5).await;

    let past = url_encode("2000-01-01T00:00:00Z");
    let from_past = courier.logs("test-logger", &format!("&since={past}")).await;
    assert_eq!(
        from_past.len(),
        all.len(),
        "since long ago keeps every line"
    );

    let future = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let future = url_encode(&format_rfc3339(future));
    let from_future = courier
        .logs("test-logger", &format!("&since={future}"))
        .await;
    assert!(from_future.is_empty(), "since the future: {from_future:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_streams_new_lines_as_they_are_written() {
    let courier = courier_with_logger().await;
    let request = courier.admin(
        Method::GET,
        "/system/logs?name=test-logger&namespace=openfaas-fn&follow=true",
    );
    // Seven bytes, so the Wrote line can only come from calls made after the stream opened.
    let (found_tx, mut found_rx) = tokio::sync::oneshot::channel::<Result<String, String>>();
    let reader = tokio::spawn(async move {
        let resp = match request.send().await {
            Ok(resp) if resp.status() == StatusCode::OK => resp,
            Ok(resp) => return found_tx.send(Err(format!("follow answered {}", resp.status()))),
            Err(e) => return found_tx.send(Err(format!("follow failed: {e}"))),
        };
        let mut stream = resp.bytes_stream();
        let mut buffered = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buffered.extend_from_slice(&chunk);
            while let Some(newline) = buffered.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffered.drain(..=newline).collect();
                let Ok(value) = serde_json::from_slice::<Value>(&line) else {
                    return found_tx.send(Err(format!(
                        "non-JSON line: {}",
                        String::from_utf8_lossy(&line)
                    )));
                };
                if is_wrote_line(text(&value), 7) {
                    return found_tx.send(Ok(value.to_string()));
                }
            }
        }
        found_tx.send(Err("follow stream ended".to_owned()))
    });

    let deadline = Instant::now() + LOGS;
    let found = loop {
        call(&courier, "seven!!").await;
        match tokio::time::timeout(Duration::from_millis(500), &mut found_rx).await {
            Ok(result) => break result.expect("reader finished"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "no followed line within {LOGS:?}"
            ),
        }
    };
    reader.abort();
    let line = found.unwrap_or_else(|e| panic!("{e}"));
    assert!(line.contains("test-logger"), "{line}");
}
