//! The Kafka connector inside `courier up`, end to end: messages produced to a topic reach
//! the function whose `topic` annotation names it, through the gateway, and a `kill -9` in
//! the middle of the stream loses nothing (every message runs at least once after restart:
//! offsets are committed only after the outcome).
//!
//! The broker is tansu (`courier_test_support::kafka`) when installed, else librdkafka's mock
//! cluster, which listens on real TCP ports (with `COURIER_TEST_REQUIRE_BROKERS=1` tansu is
//! required). Flags used: `--kafka-brokers`, `--kafka-topics`, `--kafka-group`,
//! `--kafka-instance-id` (static membership: the restarted courier takes its partitions back
//! at once; tansu and the mock cluster never expire a killed member otherwise),
//! `--sandbox off` (the fork function appends to a file of the test).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use courier_e2e::kafka::Broker;
use courier_e2e::{Courier, DEFAULT_NAMESPACE, eventually, fork_function, metric_sum};
use courier_test_support::amqp::unique_name;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

const READY: Duration = Duration::from_secs(30);
const DONE: Duration = Duration::from_secs(120);

fn runs(log: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if !line.is_empty() {
            *counts.entry(line.to_owned()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_runs_at_least_once_across_a_kill_9() {
    let broker = Broker::start().await;
    let topic = unique_name("courier-e2e-kafka");
    broker.create_topic(&topic, 2).await;
    let mut courier = Courier::builder()
        .arg("--sandbox")
        .arg("off")
        .arg("--kafka-brokers")
        .arg(broker.servers())
        .arg("--kafka-topics")
        .arg(&topic)
        .arg("--kafka-group")
        .arg(unique_name("courier-e2e"))
        .arg("--kafka-instance-id")
        .arg("e2e-1")
        .start()
        .await;
    let log = courier.scratch_dir().join("runs.log");
    let mut recorder = fork_function(
        "recorder",
        &format!("sh -c 'cat >> {}; sleep 0.05'", log.display()),
    );
    recorder["annotations"] = json!({ "topic": topic });
    courier.deploy(&recorder).await;
    courier
        .wait_ready("recorder", DEFAULT_NAMESPACE, READY)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.servers())
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    let total = 100;
    for i in 0..total {
        let body = format!("m{i:03}\n");
        producer
            .send(
                FutureRecord::<str, _>::to(&topic)
                    .partition((i % 2) as i32)
                    .payload(body.as_bytes()),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }
    eventually(DONE, "a fifth of the messages to run", || async {
        (runs(&log).len() >= total / 5).then_some(())
    })
    .await;
    let metrics = courier.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "connector_messages_received_total",
            &[("connector", "kafka"), ("topic", &topic)]
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    courier.crash_and_restart().await;
    let started = Instant::now();
    let deadline = Instant::now() + DONE;
    while runs(&log).len() < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} messages ran after the restart\n{}",
            runs(&log).len(),
            courier.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = runs(&log);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "kafka kill -9: {total} messages, {} runs, {duplicates} duplicates, {:?} to finish after restart",
        counts.values().sum::<usize>(),
        started.elapsed()
    );
}
