//! The AMQP connector against the real RabbitMQ (`courier_test_support::amqp`: skipped when
//! it cannot be reached, a failure with `COURIER_TEST_REQUIRE_BROKERS=1`). Functions are a
//! recording fake invoker; queues get unique names per test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_connector::testing::{RecordingInvoker, fast_config, function};
use courier_connector::{ConnectorConfig, InvocationMode};
use courier_connector_amqp::{AmqpArgs, run};
use courier_core::FunctionStatus;
use courier_invoke::FunctionList;
use courier_test_support::amqp::{self, CuttableProxy, unique_name};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    amqp: AmqpArgs,
}

/// The test's own connection to the broker, to publish and inspect.
struct Broker {
    url: String,
    channel: Channel,
    _connection: Connection,
    queues: Vec<String>,
}

impl Broker {
    async fn connect() -> Option<Self> {
        let url = amqp::broker_url().await?;
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("test connection to RabbitMQ");
        let channel = connection.create_channel().await.expect("test channel");
        Some(Self {
            url,
            channel,
            _connection: connection,
            queues: Vec::new(),
        })
    }

    /// A fresh queue name, deleted at the end of the test.
    fn queue(&mut self, prefix: &str) -> String {
        let name = unique_name(&format!("courier-test-{prefix}"));
        self.queues.push(name.clone());
        name
    }

    async fn declare(&self, queue: &str, arguments: FieldTable) {
        self.channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
            .await
            .expect("declare queue");
    }

    async fn publish(&self, exchange: &str, routing_key: &str, body: &str, id: Option<&str>) {
        let mut properties = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2);
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        self.channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirmation");
    }

    async fn publish_numbered(&self, queue: &str, n: usize) {
        for i in 0..n {
            self.publish("", queue, &format!("m{i}"), Some(&format!("id-{i}")))
                .await;
        }
    }

    /// Messages ready in `queue` (not counting unacknowledged ones).
    async fn ready(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }

    async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        self.channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
    }

    async fn cleanup(self) {
        for q in &self.queues {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
}

/// A running connector.
struct Connector {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), courier_connector_amqp::Error>>,
    registry: prometheus::Registry,
    catalog: watch::Sender<FunctionList>,
}

impl Connector {
    fn start(
        url: &str,
        queues: &[&str],
        invoker: &RecordingInvoker,
        functions: Vec<FunctionStatus>,
        config: ConnectorConfig,
        extra: &[&str],
    ) -> Self {
        let mut argv = vec![
            "x".to_owned(),
            "--amqp-url".to_owned(),
            url.to_owned(),
            "--amqp-queues".to_owned(),
            queues.join(","),
            "--amqp-depth-interval".to_owned(),
            "200ms".to_owned(),
            "--amqp-reconnect-max-wait".to_owned(),
            "1s".to_owned(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let args = <Cli as clap::Parser>::try_parse_from(argv)
            .expect("parse options")
            .amqp;
        let (catalog, rx) = watch::channel::<FunctionList>(Arc::new(functions));
        let shutdown = CancellationToken::new();
        let registry = prometheus::Registry::new();
        let task = tokio::spawn({
            let (invoker, registry, shutdown) = (
                Arc::new(invoker.clone()),
                registry.clone(),
                shutdown.clone(),
            );
            async move { run(args, config, rx, invoker, &registry, shutdown).await }
        });
        Self {
            shutdown,
            task,
            registry,
            catalog,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("connector stops")
            .expect("connector task")
            .expect("connector ran");
    }

    /// Kills the connector in the middle of its work: no drain, nothing acked on the way out.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        courier_test_support::metrics::sample(&self.registry, name, labels)
    }
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn seen(invoker: &RecordingInvoker, function: &str) -> BTreeMap<String, usize> {
    invoker.bodies().remove(function).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_reach_every_subscribed_function_with_rabbitmq_headers() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("orders");
    let invoker = RecordingInvoker::new();
    let connector = Connector::start(
        &broker.url,
        &[&queue],
        &invoker,
        vec![
            function("a", &[("topic", &queue)]),
            function("b", &[("topic", &format!("other,{queue}"))]),
            function("c", &[("topic", "other")]),
        ],
        fast_config(),
        &[],
    );
    // The connector declares the missing queue durable.
    wait_for("the queue to be declared", || {
        (connector
            .metric("connector_queue_depth_messages", &[("queue", &queue)])
            .is_some())
        .then_some(())
    })
    .await;
    broker.publish_numbered(&queue, 10).await;
    wait_for("20 calls", || (invoker.calls().len() >= 20).then_some(())).await;
    let bodies = invoker.bodies();
    assert_eq!(
        bodies.keys().collect::<Vec<_>>(),
        ["a.openfaas-fn", "b.openfaas-fn"]
    );
    for call in invoker.calls() {
        let i = &call.body_text()[1..];
        assert_eq!(call.header("x-topic"), queue);
        assert_eq!(call.header("x-connector"), "courier-connector-amqp");
        assert_eq!(call.header("x-rabbitmq-msg-id"), format!("id-{i}"));
        assert_eq!(call.header("x-rabbitmq-routing-key"), queue);
        assert_eq!(call.header("content-type"), "text/plain");
    }
    connector.stop().await;
    // Everything was acked: nothing comes back once the connector is gone.
    assert_eq!(broker.ready(&queue).await, 0);
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_topic_map_follows_deploys() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("deploys");
    broker.declare(&queue, FieldTable::default()).await;
    let invoker = RecordingInvoker::new();
    let connector = Connector::start(&broker.url, &[&queue], &invoker, vec![], fast_config(), &[]);
    broker.publish("", &queue, "before", None).await;
    wait_for("the unsubscribed message to be skipped", || {
        (connector.metric("connector_messages_unrouted_total", &[("topic", &queue)]) == Some(1.0))
            .then_some(())
    })
    .await;
    connector
        .catalog
        .send(Arc::new(vec![function("late", &[("topic", &queue)])]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.publish("", &queue, "after", None).await;
    wait_for("the call", || (!invoker.calls().is_empty()).then_some(())).await;
    assert_eq!(invoker.calls()[0].body_text(), "after");
    assert_eq!(invoker.calls()[0].function, "late.openfaas-fn");
    connector.catalog.send(Arc::new(vec![])).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.publish("", &queue, "removed", None).await;
    wait_for("the second unrouted message", || {
        (connector.metric("connector_messages_unrouted_total", &[("topic", &queue)]) == Some(2.0))
            .then_some(())
    })
    .await;
    assert_eq!(invoker.calls().len(), 1);
    connector.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_message_goes_to_courier_dead_letters_and_is_acked() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("poison");
    broker.declare(&queue, FieldTable::default()).await;
    broker.publish("", &queue, "poison", Some("p-1")).await;
    broker.publish("", &queue, "fine", Some("f-1")).await;
    let invoker = RecordingInvoker::new();
    invoker.script(
        "f.openfaas-fn",
        |body, _| if body == "poison" { 503 } else { 200 },
    );
    let connector = Connector::start(
        &broker.url,
        &[&queue],
        &invoker,
        vec![function("f", &[("topic", &queue)])],
        fast_config(),
        &[],
    );
    wait_for("the dead letter", || {
        (invoker.dead_letters().len() == 1).then_some(())
    })
    .await;
    let dead = &invoker.dead_letters()[0];
    assert_eq!(dead.body, "poison");
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.last_status, Some(503));
    wait_for("both messages settled", || {
        (seen(&invoker, "f.openfaas-fn").len() == 2).then_some(())
    })
    .await;
    connector.stop().await;
    assert_eq!(
        broker.ready(&queue).await,
        0,
        "the poison message was acked"
    );
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_broker_dead_letters_a_failing_message_is_rejected_to_the_dead_letter_exchange() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("dlx");
    let dlq = broker.queue("dlq");
    broker.declare(&dlq, FieldTable::default()).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq.as_str().into()),
    );
    broker.declare(&queue, arguments).await;
    broker.publish("", &queue, "poison", Some("p-1")).await;
    let invoker = RecordingInvoker::new();
    invoker.script("f.openfaas-fn", |_, _| 500);
    let connector = Connector::start(
        &broker.url,
        &[&queue],
        &invoker,
        vec![function("f", &[("topic", &queue)])],
        fast_config(),
        &["--amqp-dead-letter", "broker"],
    );
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        if let Some(m) = broker.get(&dlq).await {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the dead-letter queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.delivery.data, b"poison");
    assert_eq!(invoker.calls().len(), 3, "rejected after its attempts");
    assert!(
        invoker.dead_letters().is_empty(),
        "the broker keeps it, not Courier"
    );
    assert_eq!(
        connector.metric(
            "connector_invocations_total",
            &[
                ("function_name", "f.openfaas-fn"),
                ("outcome", "dead_letter")
            ]
        ),
        Some(1.0)
    );
    connector.stop().await;
    assert_eq!(broker.ready(&queue).await, 0);
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_redelivers_unfinished_messages_and_loses_none() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("crash");
    broker.declare(&queue, FieldTable::default()).await;
    let total = 40;
    broker.publish_numbered(&queue, total).await;
    let invoker = RecordingInvoker::new();
    invoker.set_delay(Duration::from_millis(50));
    let functions = vec![function("f", &[("topic", &queue)])];
    let first = Connector::start(
        &broker.url,
        &[&queue],
        &invoker,
        functions.clone(),
        fast_config(),
        &["--amqp-prefetch", "4"],
    );
    wait_for("a third of the messages", || {
        (invoker.calls().len() >= total / 3).then_some(())
    })
    .await;
    first.crash().await;
    let before_restart = invoker.calls().len();
    invoker.set_delay(Duration::from_millis(1));
    let second = Connector::start(
        &broker.url,
        &[&queue],
        &invoker,
        functions,
        fast_config(),
        &["--amqp-prefetch", "4"],
    );
    wait_for("every message", || {
        (seen(&invoker, "f.openfaas-fn").len() == total).then_some(())
    })
    .await;
    second.stop().await;
    let counts = seen(&invoker, "f.openfaas-fn");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {total} messages, {before_restart} calls before the crash, {} in all, \
         {duplicates} duplicates",
        invoker.calls().len()
    );
    assert!(
        duplicates <= 4,
        "only the prefetched in-flight messages run twice: {counts:?}"
    );
    assert_eq!(broker.ready(&queue).await, 0);
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_connection_is_reestablished_without_losing_or_double_acking() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("reconnect");
    broker.declare(&queue, FieldTable::default()).await;
    let total = 30;
    broker.publish_numbered(&queue, total).await;
    let proxy = CuttableProxy::start(&amqp::host_port(&broker.url)).await;
    let url = amqp::with_host_port(&broker.url, &proxy.host_port());
    let invoker = RecordingInvoker::new();
    invoker.set_delay(Duration::from_millis(40));
    let connector = Connector::start(
        &url,
        &[&queue],
        &invoker,
        vec![function("f", &[("topic", &queue)])],
        fast_config(),
        &["--amqp-prefetch", "4"],
    );
    wait_for("a third of the messages", || {
        (invoker.calls().len() >= total / 3).then_some(())
    })
    .await;
    proxy.cut();
    wait_for("the reconnection", || {
        (connector.metric("connector_amqp_reconnects_total", &[]) >= Some(1.0)).then_some(())
    })
    .await;
    broker
        .publish("", &queue, "after-reconnect", Some("late"))
        .await;
    wait_for("every message", || {
        (seen(&invoker, "f.openfaas-fn").len() == total + 1).then_some(())
    })
    .await;
    // Give stray acks of the old channel time to do damage, if they could.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        connector.metric("connector_amqp_reconnects_total", &[]),
        Some(1.0),
        "an ack with a stale delivery tag would have closed the new channel"
    );
    connector.stop().await;
    let counts = seen(&invoker, "f.openfaas-fn");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "reconnect test: {} calls, {duplicates} duplicates",
        invoker.calls().len()
    );
    assert!(duplicates <= 4, "{counts:?}");
    assert_eq!(broker.ready(&queue).await, 0, "nothing left unacked");
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bindings_route_exchange_messages_to_the_queue() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("bound");
    let exchange = unique_name("courier-test-exchange");
    let invoker = RecordingInvoker::new();
    let connector = Connector::start(
        &broker.url,
        &[&queue],
        &invoker,
        vec![function("f", &[("topic", &queue)])],
        fast_config(),
        &[
            "--amqp-exchange",
            &exchange,
            "--amqp-routing-keys",
            "orders.*",
        ],
    );
    wait_for("the topology", || {
        (connector
            .metric("connector_queue_depth_messages", &[("queue", &queue)])
            .is_some())
        .then_some(())
    })
    .await;
    broker.publish(&exchange, "orders.eu", "routed", None).await;
    broker
        .publish(&exchange, "payments.eu", "not routed", None)
        .await;
    wait_for("the call", || (!invoker.calls().is_empty()).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = invoker.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header("x-rabbitmq-routing-key"), "orders.eu");
    connector.stop().await;
    let _ = broker
        .channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_are_published_to_the_reply_queue() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("in");
    let out = broker.queue("out");
    broker.declare(&queue, FieldTable::default()).await;
    broker.declare(&out, FieldTable::default()).await;
    broker.publish("", &queue, "hello", Some("h-1")).await;
    let invoker = RecordingInvoker::new();
    let connector = Connector::start(
        &broker.url,
        &[&queue],
        &invoker,
        vec![function(
            "f",
            &[("topic", &queue), ("com.courier.reply-topic", &out)],
        )],
        fast_config(),
        &[],
    );
    let deadline = Instant::now() + WAIT;
    let reply = loop {
        if let Some(m) = broker.get(&out).await {
            break m;
        }
        assert!(Instant::now() < deadline, "no reply");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reply.delivery.data, b"ok: hello");
    let call_id = invoker.calls()[0].call_id.clone().unwrap();
    assert_eq!(
        reply
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some(call_id.as_str())
    );
    let headers = reply
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let header = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("header {name}: {other:?}"),
    };
    assert_eq!(header("x-call-id"), call_id);
    assert_eq!(header("x-function-name"), "f.openfaas-fn");
    assert_eq!(header("x-topic"), queue);
    connector.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_mode_acks_once_the_calls_are_queued() {
    let Some(mut broker) = Broker::connect().await else {
        return;
    };
    let queue = broker.queue("queued");
    broker.declare(&queue, FieldTable::default()).await;
    broker.publish_numbered(&queue, 3).await;
    let invoker = RecordingInvoker::new();
    let mut config = fast_config();
    config.mode = InvocationMode::Async;
    let connector = Connector::start(
        &broker.url,
        &[&queue],
        &invoker,
        vec![function("f", &[("topic", &queue)])],
        config,
        &[],
    );
    wait_for("3 queued calls", || {
        (connector.metric("connector_invocations_total", &[("outcome", "queued")]) == Some(3.0))
            .then_some(())
    })
    .await;
    // Same message id, same call id: a redelivery would be dropped by the queue.
    for call in invoker.calls() {
        let id = format!("amqp/{queue}/id-{}", &call.body_text()[1..]);
        assert_eq!(
            call.call_id,
            Some(courier_connector::call_id(Some(&id), "f.openfaas-fn"))
        );
    }
    connector.stop().await;
    assert_eq!(broker.ready(&queue).await, 0);
    broker.cleanup().await;
}
