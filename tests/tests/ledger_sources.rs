//! Calls put in the queue by a trigger have a ledger record naming their source, end to end
//! inside `courier up`: a cron fire (its scheduled time), a Kafka message and an AMQP message
//! in the connectors' async mode (`--connector-async`: topic, partition and offset; queue and
//! message id), and a `traceparent` sent with a broker message becomes the record's trace id
//! and reaches the function.
//!
//! Brokers: tansu when installed (required with `COURIER_TEST_REQUIRE_BROKERS=1`, as the
//! README's test command sets), else librdkafka's mock cluster on real TCP ports; RabbitMQ
//! from `courier_test_support::amqp`.

use std::time::Duration;

use courier_e2e::kafka::Broker;
use courier_e2e::{Courier, DEFAULT_NAMESPACE, eventually, fork_function, parse_rfc3339};
use courier_test_support::amqp::{broker_url, unique_name};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::Method;
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(30);
const DONE: Duration = Duration::from_secs(60);

/// The trace context the broker messages carry.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A fork function that appends the `traceparent` it was called with to `<scratch>/trace.log`.
fn trace_recorder(courier: &Courier, topic: &str) -> Value {
    let log = courier.scratch_dir().join("trace.log");
    let mut function = fork_function(
        "recorder",
        &format!(
            "sh -c 'cat > /dev/null; echo \"$Http_Traceparent\" >> {}'",
            log.display()
        ),
    );
    function["annotations"] = json!({ "topic": topic });
    function
}

/// The ledger records of `function`, newest first, once there is at least one.
async fn records(courier: &Courier, function: &str) -> Vec<Value> {
    eventually(DONE, &format!("a ledger record of {function}"), || async {
        let list = courier
            .admin_json(Method::GET, &format!("/system/calls?function={function}"))
            .await;
        let list = list.as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    })
    .await
}

/// Waits until the record of call `id` is final and returns it.
async fn final_record(courier: &Courier, id: &str) -> Value {
    let record = courier
        .admin_json(Method::GET, &format!("/system/calls/{id}?wait=30s"))
        .await;
    assert!(
        ["succeeded", "failed", "dead-lettered"].contains(&record["state"].as_str().unwrap_or("")),
        "{record}"
    );
    record
}

/// The parents the function saw, one per call.
fn traces_seen(courier: &Courier) -> Vec<String> {
    std::fs::read_to_string(courier.scratch_dir().join("trace.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_same_trace_new_parent(seen: &str) {
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "the function's traceparent: {seen:?}");
    assert_eq!(parts[1], TRACE_ID, "the function's traceparent: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_fire_has_a_record_with_its_scheduled_time() {
    let courier = Courier::start().await;
    let mut tick = fork_function("tick", "sh -c 'cat > /dev/null; echo ran'");
    tick["annotations"] = json!({ "topic": "cron-function", "schedule": "*/1 * * * * *" });
    courier.deploy(&tick).await;

    let list = records(&courier, "tick").await;
    let record = &list[0];
    assert_eq!(record["function"], "tick");
    assert_eq!(record["namespace"], DEFAULT_NAMESPACE);
    assert_eq!(record["source"]["kind"], "cron", "{record}");
    let scheduled = parse_rfc3339(record["source"]["scheduledAt"].as_str().unwrap());
    assert_eq!(
        scheduled.nanosecond(),
        0,
        "fires are on whole seconds: {record}"
    );
    assert_eq!(
        record["traceId"].as_str().map(str::len),
        Some(32),
        "{record}"
    );
    let id = record["id"].as_str().unwrap();
    let done = final_record(&courier, id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"][0]["status"], 200, "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_message_in_async_mode_has_a_record_with_topic_partition_offset_and_its_trace() {
    let kafka = Broker::start().await;
    let topic = unique_name("courier-e2e-ledger-kafka");
    kafka.create_topic(&topic, 1).await;
    let courier = Courier::builder()
        .arg("--sandbox")
        .arg("off")
        .arg("--connector-async")
        .arg("--kafka-brokers")
        .arg(kafka.servers())
        .arg("--kafka-topics")
        .arg(&topic)
        .arg("--kafka-group")
        .arg(unique_name("courier-e2e"))
        .start()
        .await;
    courier.deploy(&trace_recorder(&courier, &topic)).await;
    courier
        .wait_ready("recorder", DEFAULT_NAMESPACE, READY)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.servers())
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::<str, _>::to(&topic)
                .partition(0)
                .payload("hello")
                .headers(OwnedHeaders::new().insert(Header {
                    key: "traceparent",
                    value: Some(TRACEPARENT),
                })),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce: {e}"));

    let list = records(&courier, "recorder").await;
    let record = &list[0];
    assert_eq!(
        record["source"],
        json!({"kind": "kafka", "topic": topic, "partition": 0, "offset": 0}),
        "{record}"
    );
    assert_eq!(record["traceId"], TRACE_ID, "{record}");
    let done = final_record(&courier, record["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let seen = traces_seen(&courier);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_same_trace_new_parent(&seen[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_amqp_message_in_async_mode_has_a_record_with_queue_message_id_and_its_trace() {
    let Some(url) = broker_url().await else {
        return;
    };
    let queue = unique_name("courier-e2e-ledger-amqp");
    let courier = Courier::builder()
        .arg("--sandbox")
        .arg("off")
        .arg("--connector-async")
        .arg("--amqp-url")
        .arg(&url)
        .arg("--amqp-queues")
        .arg(&queue)
        .start()
        .await;
    courier.deploy(&trace_recorder(&courier, &queue)).await;
    courier
        .wait_ready("recorder", DEFAULT_NAMESPACE, READY)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("open a channel");
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("traceparent"),
        AMQPValue::LongString(LongString::from(TRACEPARENT)),
    );
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"hello",
            BasicProperties::default()
                .with_message_id("order-7".into())
                .with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("publish confirmation");

    let list = records(&courier, "recorder").await;
    let record = &list[0];
    assert_eq!(
        record["source"],
        json!({"kind": "amqp", "queue": queue, "messageId": "order-7"}),
        "{record}"
    );
    assert_eq!(record["traceId"], TRACE_ID, "{record}");
    let done = final_record(&courier, record["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let seen = traces_seen(&courier);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_same_trace_new_parent(&seen[0]);
}
