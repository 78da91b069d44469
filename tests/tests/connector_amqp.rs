//! The AMQP connector inside `courier up`, end to end: messages published to a RabbitMQ queue
//! reach the function whose `topic` annotation names the queue, through the gateway; a
//! `kill -9` in the middle of the stream loses nothing (every message runs at least once after
//! the restart); the connector's and the gateway's metrics count the calls.
//!
//! Needs RabbitMQ (`courier_test_support::amqp`: skipped when unreachable, a failure with
//! `COURIER_TEST_REQUIRE_BROKERS=1`). Flags used: `--amqp-url`, `--amqp-queues`,
//! `--amqp-prefetch`, `--sandbox off` (the fork function appends to a file of the test).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use courier_e2e::{Courier, DEFAULT_NAMESPACE, eventually, fork_function, metric_sum};
use courier_test_support::amqp::{broker_url, unique_name};
use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;

const READY: Duration = Duration::from_secs(30);
const DONE: Duration = Duration::from_secs(90);

async fn channel(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("open a channel");
    (connection, channel)
}

async fn publish(channel: &Channel, queue: &str, body: &str, id: &str) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default()
                .with_message_id(id.into())
                .with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("publish confirmation");
}

/// Lines of the function's log, with how often each was written.
fn runs(log: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if !line.is_empty() {
            *counts.entry(line.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// `courier up` consuming `queue`, with function `recorder` subscribed to it: each call appends
/// its body (one line) to `<scratch>/runs.log`, then takes `pause` seconds.
async fn courier_with_recorder(url: &str, queue: &str, pause: &str) -> Courier {
    let courier = Courier::builder()
        .arg("--sandbox")
        .arg("off")
        .arg("--amqp-url")
        .arg(url)
        .arg("--amqp-queues")
        .arg(queue)
        .arg("--amqp-prefetch")
        .arg("4")
        .start()
        .await;
    let log = courier.scratch_dir().join("runs.log");
    let mut recorder = fork_function(
        "recorder",
        &format!("sh -c 'cat >> {}; sleep {pause}'", log.display()),
    );
    recorder["annotations"] = json!({ "topic": queue });
    courier.deploy(&recorder).await;
    courier
        .wait_ready("recorder", DEFAULT_NAMESPACE, READY)
        .await;
    // Let the connector's topic map take the deploy in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    courier
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_runs_at_least_once_across_a_kill_9() {
    let Some(url) = broker_url().await else {
        return;
    };
    let queue = unique_name("courier-e2e-amqp-crash");
    let mut courier = courier_with_recorder(&url, &queue, "0.1").await;
    let log = courier.scratch_dir().join("runs.log");
    let (_connection, channel) = channel(&url).await;
    let total = 100;
    for i in 0..total {
        publish(&channel, &queue, &format!("m{i:03}\n"), &format!("id-{i}")).await;
    }
    eventually(DONE, "a fifth of the messages to run", || async {
        (runs(&log).len() >= total / 5).then_some(())
    })
    .await;
    courier.crash_and_restart().await;
    let started = Instant::now();
    eventually(DONE, "every message to run", || async {
        (runs(&log).len() == total).then_some(())
    })
    .await;
    let counts = runs(&log);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "amqp kill -9: {total} messages, {} runs, {duplicates} duplicates, {:?} to finish after restart",
        counts.values().sum::<usize>(),
        started.elapsed()
    );
    assert!(counts.keys().all(|k| k.starts_with('m')), "{counts:?}");
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connector_calls_go_through_the_gateway_and_are_counted() {
    let Some(url) = broker_url().await else {
        return;
    };
    let queue = unique_name("courier-e2e-amqp-metrics");
    let courier = courier_with_recorder(&url, &queue, "0").await;
    let log = courier.scratch_dir().join("runs.log");
    let (_connection, channel) = channel(&url).await;
    for i in 0..3 {
        publish(&channel, &queue, &format!("m{i}\n"), &format!("id-{i}")).await;
    }
    eventually(DONE, "3 runs", || async {
        (runs(&log).len() == 3).then_some(())
    })
    .await;
    let metrics = eventually(DONE, "the connector's metrics", || async {
        let text = courier.metrics().await;
        (metric_sum(
            &text,
            "connector_invocations_total",
            &[("connector", "amqp"), ("outcome", "success")],
        ) == Some(3.0))
        .then_some(text)
    })
    .await;
    assert_eq!(
        metric_sum(
            &metrics,
            "connector_messages_received_total",
            &[("connector", "amqp"), ("topic", &queue)]
        ),
        Some(3.0)
    );
    let through_gateway = metric_sum(
        &metrics,
        "gateway_function_invocation_total",
        &[("function_name", "recorder.openfaas-fn")],
    )
    .unwrap_or_default();
    assert!(through_gateway >= 3.0, "{metrics}");
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}
