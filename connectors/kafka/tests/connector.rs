//! The Kafka connector against a real broker: tansu (`courier_test_support::kafka`, skipped
//! unless installed, required with `COURIER_TEST_REQUIRE_BROKERS=1`) and librdkafka's
//! in-process mock cluster (always). Functions are a recording fake invoker; offsets are read
//! back from the broker.
//!
//! Every scenario runs on both brokers: `mock_<name>` and `tansu_<name>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_connector::testing::{RecordingInvoker, fast_config, function};
use courier_connector::{ConnectorConfig, InvocationMode};
use courier_connector_kafka::{KafkaArgs, run};
use courier_core::FunctionStatus;
use courier_invoke::FunctionList;
use courier_test_support::kafka::TansuBroker;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu(TansuBroker),
}

impl Broker {
    fn mock() -> Self {
        Self::Mock(MockCluster::new(1).expect("start librdkafka's mock cluster"))
    }

    async fn tansu() -> Option<Self> {
        TansuBroker::start().await.map(Self::Tansu)
    }

    fn servers(&self) -> String {
        match self {
            Self::Mock(m) => m.bootstrap_servers(),
            Self::Tansu(t) => t.bootstrap_servers(),
        }
    }

    async fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Self::Mock(m) => m.create_topic(name, partitions, 1).expect("create topic"),
            Self::Tansu(_) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", self.servers())
                    .create()
                    .expect("admin client");
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                let results = admin
                    .create_topics([&topic], &AdminOptions::new())
                    .await
                    .expect("create topics");
                for r in results {
                    r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
                }
            }
        }
    }

    fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .set("message.timeout.ms", "10000")
            .create()
            .expect("producer")
    }
}

/// Produces `(partition, key, body)` messages in order, each with header `trace: t-<body>`.
async fn produce(broker: &Broker, topic: &str, messages: &[(i32, Option<&str>, String)]) {
    let producer = broker.producer();
    for (partition, key, body) in messages {
        let trace = format!("t-{body}");
        let mut record = FutureRecord::to(topic)
            .partition(*partition)
            .payload(body.as_bytes())
            .headers(OwnedHeaders::new().insert(Header {
                key: "trace",
                value: Some(trace.as_bytes()),
            }));
        if let Some(key) = key {
            record = record.key(key.as_bytes());
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

fn unique(prefix: &str) -> String {
    courier_test_support::amqp::unique_name(prefix)
}

/// A running connector.
struct Connector {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), courier_connector_kafka::Error>>,
    registry: prometheus::Registry,
    _catalog: watch::Sender<FunctionList>,
}

impl Connector {
    fn start(
        broker: &Broker,
        topics: &[&str],
        group: &str,
        invoker: &RecordingInvoker,
        functions: Vec<FunctionStatus>,
        config: ConnectorConfig,
        extra: &[&str],
    ) -> Self {
        let mut argv = vec![
            "x".to_owned(),
            "--kafka-brokers".to_owned(),
            broker.servers(),
            "--kafka-topics".to_owned(),
            topics.join(","),
            "--kafka-group".to_owned(),
            group.to_owned(),
            "--kafka-stats-interval".to_owned(),
            "500ms".to_owned(),
            "--kafka-commit-interval".to_owned(),
            "200ms".to_owned(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let args = <Cli as clap::Parser>::try_parse_from(argv)
            .expect("parse options")
            .kafka;
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
            _catalog: catalog,
        }
    }

    /// Stops cleanly (drain, final commit).
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("connector stops")
            .expect("connector task")
            .expect("connector ran");
    }

    /// Kills the connector in the middle of its work: no drain, no final commit of its own.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        courier_test_support::metrics::sample(&self.registry, name, labels)
    }
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Offsets committed by `group` for partitions `0..partitions` of `topic` (-1: none).
async fn committed(broker: &Broker, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let servers = broker.servers();
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", &group)
            .create()
            .expect("offsets consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let tpl = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        tpl.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect()
    })
    .await
    .expect("committed offsets task")
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

async fn wait_committed(broker: &Broker, group: &str, topic: &str, expected: &[i64]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = committed(broker, group, topic, expected.len() as i32).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets stayed {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod mock {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Broker::mock()).await;
                }
            )*
        }
        mod tansu {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(broker) = super::Broker::tansu().await else { return };
                    super::$name(broker).await;
                }
            )*
        }
    };
}

on_both_brokers!(
    messages_reach_every_subscribed_function_with_kafka_headers,
    offsets_are_committed_only_after_the_outcome,
    a_failing_message_is_dead_lettered_and_its_partition_moves_on,
    a_crash_replays_unfinished_messages_and_loses_none,
    key_ordering_keeps_each_key_in_order_and_runs_keys_in_parallel,
    replies_are_published_to_the_reply_topic,
    async_mode_queues_the_calls_and_commits,
    a_full_partition_is_paused_and_resumed_without_loss_or_reordering,
);

async fn a_full_partition_is_paused_and_resumed_without_loss_or_reordering(broker: Broker) {
    let (topic, group) = (unique("flow"), unique("group"));
    broker.create_topic(&topic, 1).await;
    let total = 150;
    let messages: Vec<_> = (0..total).map(|i| (0, None, format!("{i}"))).collect();
    produce(&broker, &topic, &messages).await;
    let invoker = RecordingInvoker::new();
    invoker.set_delay(Duration::from_millis(2));
    let connector = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        vec![function("f", &[("topic", &topic)])],
        fast_config(),
        &[
            "--kafka-partition-buffer",
            "4",
            "--kafka-max-in-flight",
            "2",
        ],
    );
    wait_committed(&broker, &group, &topic, &[total as i64]).await;
    let order: Vec<i64> = invoker
        .calls()
        .iter()
        .map(|c| c.body_text().parse().unwrap())
        .collect();
    assert_eq!(order, (0..total as i64).collect::<Vec<_>>());
    connector.stop().await;
}

async fn messages_reach_every_subscribed_function_with_kafka_headers(broker: Broker) {
    let (topic, group) = (unique("orders"), unique("group"));
    broker.create_topic(&topic, 2).await;
    let messages: Vec<_> = (0..10)
        .map(|i| {
            (
                i % 2,
                Some(if i % 2 == 0 { "even" } else { "odd" }),
                format!("m{i}"),
            )
        })
        .collect();
    produce(&broker, &topic, &messages).await;
    let invoker = RecordingInvoker::new();
    let connector = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        vec![
            function("a", &[("topic", &topic)]),
            function("b", &[("topic", &format!("other, {topic}"))]),
            function("c", &[("topic", "other")]),
        ],
        fast_config(),
        &[],
    );
    wait_for("20 calls", || (invoker.calls().len() >= 20).then_some(())).await;
    let bodies = invoker.bodies();
    assert_eq!(
        bodies.keys().collect::<Vec<_>>(),
        ["a.openfaas-fn", "b.openfaas-fn"]
    );
    for per_function in bodies.values() {
        assert_eq!(per_function.len(), 10, "{bodies:?}");
    }
    for call in invoker.calls() {
        let body = call.body_text();
        let i: i32 = body[1..].parse().unwrap();
        assert_eq!(call.header("x-topic"), topic);
        assert_eq!(call.header("x-connector"), "courier-connector-kafka");
        assert_eq!(call.header("x-kafka-partition"), (i % 2).to_string());
        assert_eq!(call.header("x-kafka-offset"), (i / 2).to_string());
        assert_eq!(
            call.header("x-kafka-key"),
            if i % 2 == 0 { "even" } else { "odd" }
        );
        assert_eq!(call.header("x-kafka-trace"), format!("t-{body}"));
    }
    wait_committed(&broker, &group, &topic, &[5, 5]).await;
    let received = connector
        .metric("connector_messages_received_total", &[("topic", &topic)])
        .unwrap_or_default();
    assert_eq!(received, 10.0);
    wait_for("commit offset gauge", || {
        (connector.metric(
            "connector_commit_offset",
            &[("topic", &topic), ("partition", "1")],
        ) == Some(5.0))
        .then_some(())
    })
    .await;
    wait_for("lag gauge", || {
        (connector.metric("connector_lag_messages", &[("topic", &topic)]) == Some(0.0))
            .then_some(())
    })
    .await;
    connector.stop().await;
}

async fn offsets_are_committed_only_after_the_outcome(broker: Broker) {
    let (topic, group) = (unique("slow"), unique("group"));
    broker.create_topic(&topic, 1).await;
    let invoker = RecordingInvoker::new();
    invoker.set_delay(Duration::from_secs(3));
    let connector = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        vec![function("f", &[("topic", &topic)])],
        fast_config(),
        &["--kafka-ordering", "key"],
    );
    produce(&broker, &topic, &[(0, Some("slow"), "m0".into())]).await;
    wait_for("the slow call", || {
        (!invoker.calls().is_empty()).then_some(())
    })
    .await;
    invoker.set_delay(Duration::ZERO);
    let rest: Vec<_> = (1..5).map(|i| (0, Some("fast"), format!("m{i}"))).collect();
    produce(&broker, &topic, &rest).await;
    wait_for("the fast calls", || {
        (invoker.calls().len() == 5).then_some(())
    })
    .await;
    // m1..m4 finished, m0 is still running: nothing may be committed past m0.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let now = committed(&broker, &group, &topic, 1).await;
    assert!(
        now[0] <= 0,
        "committed {now:?} while offset 0 was still running"
    );
    wait_committed(&broker, &group, &topic, &[5]).await;
    connector.stop().await;
}

async fn a_failing_message_is_dead_lettered_and_its_partition_moves_on(broker: Broker) {
    let (topic, group) = (unique("poison"), unique("group"));
    broker.create_topic(&topic, 1).await;
    produce(
        &broker,
        &topic,
        &[
            (0, None, "m0".into()),
            (0, None, "poison".into()),
            (0, None, "m2".into()),
        ],
    )
    .await;
    let invoker = RecordingInvoker::new();
    invoker.script(
        "f.openfaas-fn",
        |body, _| if body == "poison" { 500 } else { 200 },
    );
    let connector = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        vec![function("f", &[("topic", &topic)])],
        fast_config(),
        &[],
    );
    wait_committed(&broker, &group, &topic, &[3]).await;
    let dead = invoker.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].last_status, Some(500));
    let order: Vec<String> = invoker.calls().iter().map(|c| c.body_text()).collect();
    assert_eq!(order, ["m0", "poison", "poison", "poison", "m2"]);
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
}

async fn a_crash_replays_unfinished_messages_and_loses_none(broker: Broker) {
    let (topic, group) = (unique("crash"), unique("group"));
    broker.create_topic(&topic, 2).await;
    let total = 60;
    let messages: Vec<_> = (0..total).map(|i| (i % 2, None, format!("m{i}"))).collect();
    produce(&broker, &topic, &messages).await;
    let invoker = RecordingInvoker::new();
    invoker.set_delay(Duration::from_millis(25));
    let functions = vec![function("f", &[("topic", &topic)])];
    let first = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        functions.clone(),
        fast_config(),
        &[],
    );
    wait_for("a third of the messages", || {
        (invoker.calls().len() >= total as usize / 3).then_some(())
    })
    .await;
    first.crash().await;
    let before_restart = invoker.calls().len();
    invoker.set_delay(Duration::from_millis(1));
    let second = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        functions,
        fast_config(),
        &[],
    );
    wait_for("every message", || {
        let seen = invoker
            .bodies()
            .get("f.openfaas-fn")
            .map_or(0, BTreeMap::len);
        (seen == total as usize).then_some(())
    })
    .await;
    wait_committed(
        &broker,
        &group,
        &topic,
        &[total as i64 / 2, total as i64 / 2],
    )
    .await;
    second.stop().await;
    let counts = invoker.bodies().remove("f.openfaas-fn").unwrap_or_default();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {total} messages, {before_restart} calls before the crash, \
         {} calls in all, {duplicates} duplicates",
        invoker.calls().len()
    );
    assert!(counts.values().all(|n| *n >= 1));
    // Only messages in flight or finished after the last commit run twice.
    assert!(duplicates <= before_restart, "{counts:?}");
}

async fn key_ordering_keeps_each_key_in_order_and_runs_keys_in_parallel(broker: Broker) {
    let (topic, group) = (unique("keys"), unique("group"));
    broker.create_topic(&topic, 1).await;
    let keys = ["a", "b", "c", "d"];
    let messages: Vec<_> = (0..40)
        .map(|i| (0, Some(keys[i % 4]), format!("{}-{i}", keys[i % 4])))
        .collect();
    produce(&broker, &topic, &messages).await;
    let invoker = RecordingInvoker::new();
    invoker.set_delay(Duration::from_millis(30));
    let connector = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        vec![function("f", &[("topic", &topic)])],
        fast_config(),
        &["--kafka-ordering", "key"],
    );
    wait_committed(&broker, &group, &topic, &[40]).await;
    let calls = invoker.calls();
    assert_eq!(calls.len(), 40);
    for key in keys {
        let seq: Vec<usize> = calls
            .iter()
            .filter(|c| c.header("x-kafka-key") == key)
            .map(|c| c.body_text().split('-').nth(1).unwrap().parse().unwrap())
            .collect();
        let mut sorted = seq.clone();
        sorted.sort_unstable();
        assert_eq!(seq, sorted, "key {key} out of order");
        assert_eq!(seq.len(), 10);
    }
    assert!(invoker.max_concurrency() > 1, "keys ran one at a time");
    assert!(invoker.max_concurrency() <= 4);
    connector.stop().await;
}

async fn replies_are_published_to_the_reply_topic(broker: Broker) {
    let (topic, out, group) = (unique("in"), unique("out"), unique("group"));
    broker.create_topic(&topic, 1).await;
    broker.create_topic(&out, 1).await;
    produce(&broker, &topic, &[(0, Some("k1"), "hello".into())]).await;
    let invoker = RecordingInvoker::new();
    let connector = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        vec![function(
            "f",
            &[("topic", &topic), ("com.courier.reply-topic", &out)],
        )],
        fast_config(),
        &[],
    );
    wait_committed(&broker, &group, &topic, &[1]).await;
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.servers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reply reader");
    reader.subscribe(&[&out]).expect("subscribe to replies");
    let reply = tokio::time::timeout(WAIT, reader.recv())
        .await
        .expect("a reply within the wait")
        .expect("reply message");
    assert_eq!(reply.payload(), Some(&b"ok: hello"[..]));
    assert_eq!(reply.key(), Some(&b"k1"[..]));
    let headers: BTreeMap<String, String> = reply
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(headers["x-function-name"], "f.openfaas-fn");
    assert_eq!(headers["x-function-status"], "200");
    assert_eq!(headers["x-topic"], topic);
    assert_eq!(
        headers["x-call-id"],
        invoker.calls()[0].call_id.clone().unwrap()
    );
    connector.stop().await;
}

async fn async_mode_queues_the_calls_and_commits(broker: Broker) {
    let (topic, group) = (unique("queued"), unique("group"));
    broker.create_topic(&topic, 1).await;
    produce(
        &broker,
        &topic,
        &[(0, None, "m0".into()), (0, None, "m1".into())],
    )
    .await;
    let invoker = RecordingInvoker::new();
    let mut config = fast_config();
    config.mode = InvocationMode::Async;
    let connector = Connector::start(
        &broker,
        &[&topic],
        &group,
        &invoker,
        vec![function("f", &[("topic", &topic)])],
        config,
        &[],
    );
    wait_committed(&broker, &group, &topic, &[2]).await;
    let calls = invoker.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls.iter().all(|c| c.status.is_none()),
        "queued, not called"
    );
    assert_eq!(
        connector.metric("connector_invocations_total", &[("outcome", "queued")]),
        Some(2.0)
    );
    connector.stop().await;
}
