//! The Kafka connector's options, and the librdkafka configuration they make (pure).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use courier_connector::Secret;
use courier_connector::config::duration;

use crate::Error;

/// Where a consumer group with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitialOffset {
    /// The oldest message still kept.
    Oldest,
    /// Only messages produced from now on.
    Newest,
}

/// How messages of a partition are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ordering {
    /// One message of a partition at a time, in offset order; partitions run in parallel.
    Partition,
    /// In order per Kafka key, keys in parallel (messages without a key are one group).
    Key,
}

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL authentication without TLS.
    #[value(name = "sasl_plaintext", alias = "sasl-plaintext")]
    SaslPlaintext,
    /// SASL authentication over TLS.
    #[value(name = "sasl_ssl", alias = "sasl-ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `sasl.mechanisms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaslMechanism {
    /// User name and password in clear (use with TLS).
    #[value(name = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The Kafka connector (`courier connector kafka`, and `courier up --kafka-brokers ...`).
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers, `host:port[,host:port...]`. Setting it turns the Kafka connector
    /// on in `courier up`.
    #[arg(long, env = "COURIER_KAFKA_BROKERS", value_delimiter = ',')]
    pub kafka_brokers: Vec<String>,
    /// Topics to consume, comma-separated. Functions subscribe with the `topic` annotation.
    #[arg(long, env = "COURIER_KAFKA_TOPICS", value_delimiter = ',')]
    pub kafka_topics: Vec<String>,
    /// Consumer group. Run several connectors in one group to share partitions.
    #[arg(long, env = "COURIER_KAFKA_GROUP", default_value = "courier")]
    pub kafka_group: String,
    /// Where a group without committed offsets starts: `oldest` or `newest`.
    #[arg(
        long,
        env = "COURIER_KAFKA_OFFSET",
        value_enum,
        default_value = "oldest"
    )]
    pub kafka_offset: InitialOffset,
    /// Static group membership (`group.instance.id`): a stable, unique name per connector
    /// instance (e.g. the pod name of a StatefulSet). A restarted connector with the same id
    /// takes its partitions back at once instead of waiting for the group to expire the old
    /// member.
    #[arg(long, env = "COURIER_KAFKA_INSTANCE_ID")]
    pub kafka_instance_id: Option<String>,
    /// `partition`: in order within a partition, partitions in parallel. `key`: in order per
    /// Kafka key, keys in parallel (messages without a key form one group).
    #[arg(
        long,
        env = "COURIER_KAFKA_ORDERING",
        value_enum,
        default_value = "partition"
    )]
    pub kafka_ordering: Ordering,
    /// Messages of one partition held at once (running or waiting for their key); more are
    /// not fetched until some finish.
    #[arg(long, env = "COURIER_KAFKA_MAX_IN_FLIGHT", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub kafka_max_in_flight: u16,
    /// Messages fetched ahead per partition (waiting for its worker). A partition whose buffer
    /// is full is paused until the buffer is down to a quarter.
    #[arg(long, env = "COURIER_KAFKA_PARTITION_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub kafka_partition_buffer: u32,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[arg(
        long,
        env = "COURIER_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "plaintext"
    )]
    pub kafka_security_protocol: SecurityProtocol,
    /// SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (with a sasl_* protocol).
    #[arg(
        long,
        env = "COURIER_KAFKA_SASL_MECHANISM",
        value_enum,
        default_value = "PLAIN"
    )]
    pub kafka_sasl_mechanism: SaslMechanism,
    /// SASL user name.
    #[arg(long, env = "COURIER_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password (prefer the environment variable; it is never logged).
    #[arg(long, env = "COURIER_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,
    /// PEM file of the CA certificates that verify the brokers (TLS); default: the system's.
    #[arg(long, env = "COURIER_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<PathBuf>,
    /// How often stored offsets are committed (Go duration). A crash replays at most this much
    /// of finished work.
    #[arg(long, env = "COURIER_KAFKA_COMMIT_INTERVAL", default_value = "1s", value_parser = duration)]
    pub kafka_commit_interval: Duration,
    /// librdkafka debug contexts (e.g. `cgrp,fetch`), logged at debug level under the target
    /// `courier_connector_kafka`; for troubleshooting only.
    #[arg(long, env = "COURIER_KAFKA_DEBUG")]
    pub kafka_debug: Option<String>,
    /// How often consumer lag is measured for `connector_lag_messages` (Go duration; 0 = off).
    #[arg(long, env = "COURIER_KAFKA_STATS_INTERVAL", default_value = "5s", value_parser = duration)]
    pub kafka_stats_interval: Duration,
}

impl KafkaArgs {
    /// Whether the Kafka connector is configured (brokers given).
    pub fn is_enabled(&self) -> bool {
        !self.kafka_brokers.is_empty()
    }

    /// The topics to consume, trimmed, empty entries dropped.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .kafka_topics
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        topics.dedup();
        topics
    }

    /// Settings shared by the consumer and the reply producer: brokers and security.
    pub fn client_settings(&self) -> Result<Vec<(&'static str, String)>, Error> {
        let brokers: Vec<&str> = self
            .kafka_brokers
            .iter()
            .map(|b| b.trim())
            .filter(|b| !b.is_empty())
            .collect();
        if brokers.is_empty() {
            return Err(Error::Config("--kafka-brokers is required".into()));
        }
        let protocol = self.kafka_security_protocol;
        let mut settings = vec![
            ("bootstrap.servers", brokers.join(",")),
            ("security.protocol", protocol.as_str().to_owned()),
        ];
        match (
            protocol.uses_sasl(),
            &self.kafka_sasl_username,
            &self.kafka_sasl_password,
        ) {
            (true, Some(user), Some(password)) => {
                settings.push(("sasl.mechanisms", self.kafka_sasl_mechanism.as_str().into()));
                settings.push(("sasl.username", user.clone()));
                settings.push(("sasl.password", password.expose().to_owned()));
            }
            (true, _, _) => {
                return Err(Error::Config(format!(
                    "--kafka-security-protocol {} needs --kafka-sasl-username and \
                     --kafka-sasl-password",
                    protocol.as_str()
                )));
            }
            (false, None, None) => {}
            (false, _, _) => {
                return Err(Error::Config(
                    "SASL credentials need --kafka-security-protocol sasl_ssl (or sasl_plaintext)"
                        .into(),
                ));
            }
        }
        if let Some(ca) = &self.kafka_ca_file {
            settings.push(("ssl.ca.location", ca.display().to_string()));
        }
        Ok(settings)
    }

    /// The consumer's configuration: at-least-once (offsets stored only by the connector once
    /// a message reached its outcome, committed in the background).
    pub fn consumer_settings(&self) -> Result<Vec<(&'static str, String)>, Error> {
        if self.topics().is_empty() {
            return Err(Error::Config("--kafka-topics is required".into()));
        }
        let mut settings = self.client_settings()?;
        settings.extend([
            ("group.id", self.kafka_group.clone()),
            ("client.id", "courier-connector-kafka".to_owned()),
            (
                "auto.offset.reset",
                match self.kafka_offset {
                    InitialOffset::Oldest => "earliest",
                    InitialOffset::Newest => "latest",
                }
                .to_owned(),
            ),
            ("enable.auto.commit", "true".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            (
                "auto.commit.interval.ms",
                self.kafka_commit_interval.as_millis().max(1).to_string(),
            ),
            (
                "statistics.interval.ms",
                self.kafka_stats_interval.as_millis().to_string(),
            ),
            ("enable.partition.eof", "false".to_owned()),
            ("session.timeout.ms", "10000".to_owned()),
            ("heartbeat.interval.ms", "3000".to_owned()),
            ("socket.timeout.ms", "30000".to_owned()),
            // A few MB prefetched per partition: paused partitions do not hoard memory.
            ("queued.max.messages.kbytes", "8192".to_owned()),
            ("fetch.queue.backoff.ms", "20".to_owned()),
        ]);
        if let Some(id) = self
            .kafka_instance_id
            .as_deref()
            .filter(|i| !i.trim().is_empty())
        {
            settings.push(("group.instance.id", id.trim().to_owned()));
        }
        if let Some(debug) = self.kafka_debug.as_deref().filter(|d| !d.trim().is_empty()) {
            settings.push(("debug", debug.trim().to_owned()));
        }
        Ok(settings)
    }

    /// The reply producer's configuration: acknowledged by all in-sync replicas, idempotent,
    /// given up on after 30 s.
    pub fn producer_settings(&self) -> Result<Vec<(&'static str, String)>, Error> {
        let mut settings = self.client_settings()?;
        settings.extend([
            ("client.id", "courier-connector-kafka-replies".to_owned()),
            ("acks", "all".to_owned()),
            ("message.timeout.ms", "30000".to_owned()),
            ("linger.ms", "5".to_owned()),
        ]);
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn parse(args: &[&str]) -> KafkaArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .kafka
    }

    fn get<'a>(settings: &'a [(&str, String)], key: &str) -> Option<&'a str> {
        settings
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn defaults_consume_from_the_oldest_offset_at_least_once() {
        let args = parse(&[
            "--kafka-brokers",
            "a:9092, b:9092",
            "--kafka-topics",
            "t1,t2",
        ]);
        assert!(args.is_enabled());
        assert_eq!(args.topics(), ["t1", "t2"]);
        assert_eq!(args.kafka_ordering, Ordering::Partition);
        let s = args.consumer_settings().unwrap();
        assert_eq!(get(&s, "bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(get(&s, "group.id"), Some("courier"));
        assert_eq!(get(&s, "auto.offset.reset"), Some("earliest"));
        assert_eq!(get(&s, "enable.auto.commit"), Some("true"));
        assert_eq!(get(&s, "enable.auto.offset.store"), Some("false"));
        assert_eq!(get(&s, "security.protocol"), Some("plaintext"));
        assert_eq!(get(&s, "sasl.password"), None);
    }

    #[test]
    fn not_configured_without_brokers() {
        let args = parse(&[]);
        assert!(!args.is_enabled());
        assert!(args.consumer_settings().is_err());
        let args = parse(&["--kafka-brokers", "a:1"]);
        assert!(
            matches!(args.consumer_settings(), Err(Error::Config(m)) if m.contains("--kafka-topics"))
        );
    }

    #[test]
    fn sasl_over_tls_is_configured_and_the_password_never_prints() {
        let args = parse(&[
            "--kafka-brokers",
            "a:9093",
            "--kafka-topics",
            "t",
            "--kafka-offset",
            "newest",
            "--kafka-ordering",
            "key",
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            "user",
            "--kafka-sasl-password",
            "hunter2",
            "--kafka-ca-file",
            "/etc/ca.pem",
        ]);
        assert_eq!(args.kafka_ordering, Ordering::Key);
        let s = args.consumer_settings().unwrap();
        assert_eq!(get(&s, "auto.offset.reset"), Some("latest"));
        assert_eq!(get(&s, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(get(&s, "sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(get(&s, "sasl.username"), Some("user"));
        assert_eq!(get(&s, "sasl.password"), Some("hunter2"));
        assert_eq!(get(&s, "ssl.ca.location"), Some("/etc/ca.pem"));
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn half_configured_sasl_is_refused() {
        let args = parse(&[
            "--kafka-brokers",
            "a:1",
            "--kafka-topics",
            "t",
            "--kafka-security-protocol",
            "sasl_plaintext",
        ]);
        assert!(args.consumer_settings().is_err());
        let args = parse(&[
            "--kafka-brokers",
            "a:1",
            "--kafka-topics",
            "t",
            "--kafka-sasl-username",
            "u",
            "--kafka-sasl-password",
            "p",
        ]);
        assert!(args.consumer_settings().is_err());
    }
}
