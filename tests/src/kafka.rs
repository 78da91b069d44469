//! A Kafka broker for the end-to-end tests: tansu (`courier_test_support::kafka`) when it is
//! installed or required (`COURIER_TEST_REQUIRE_BROKERS=1`, which the README's test command
//! sets), else librdkafka's mock cluster, which listens on real TCP ports.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use courier_test_support::kafka::TansuBroker;

/// A running broker.
pub enum Broker {
    /// librdkafka's mock cluster.
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// A tansu process.
    Tansu(TansuBroker),
}

impl Broker {
    /// Starts tansu when installed or required, else the mock cluster.
    pub async fn start() -> Self {
        if courier_test_support::kafka::binary().is_some()
            || std::env::var("COURIER_TEST_REQUIRE_BROKERS").is_ok_and(|v| v == "1")
        {
            return Self::Tansu(TansuBroker::start_required().await);
        }
        Self::Mock(MockCluster::new(1).expect("start librdkafka's mock cluster"))
    }

    /// The bootstrap servers.
    pub fn servers(&self) -> String {
        match self {
            Self::Mock(m) => m.bootstrap_servers(),
            Self::Tansu(t) => t.bootstrap_servers(),
        }
    }

    /// Creates `name` with `partitions` partitions.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Self::Mock(m) => m.create_topic(name, partitions, 1).expect("create topic"),
            Self::Tansu(_) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", self.servers())
                    .create()
                    .expect("admin client");
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                for r in admin
                    .create_topics([&topic], &AdminOptions::new())
                    .await
                    .expect("create topics")
                {
                    r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
                }
            }
        }
    }
}
