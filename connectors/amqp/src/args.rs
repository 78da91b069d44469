//! The AMQP connector's options.

use std::time::Duration;

use clap::{Args, ValueEnum};
use courier_connector::SecretUrl;
use courier_connector::config::duration;

use crate::Error;

/// Who keeps messages whose calls failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeadLetterTarget {
    /// Courier's dead letters (`/system/dead-letters`); the message is then acked.
    Courier,
    /// The queue's own dead-letter exchange (`x-dead-letter-exchange`): the message is
    /// rejected without requeue (`basic.nack requeue=false`) and RabbitMQ routes it there.
    Broker,
}

/// Exchange type for `--amqp-exchange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    /// Exact routing-key match.
    Direct,
    /// Routing-key patterns (`*`, `#`).
    Topic,
    /// Every bound queue.
    Fanout,
}

/// The AMQP connector (`courier connector amqp`, and `courier up --amqp-url ...`).
#[derive(Debug, Clone, Args)]
pub struct AmqpArgs {
    /// Broker URL, `amqp://user:password@host:5672/vhost` (`amqps://` for TLS; the vhost `/`
    /// is written `%2f`). Setting it turns the AMQP connector on in `courier up`. The password
    /// is never logged; prefer the environment variable.
    #[arg(long, env = "COURIER_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<SecretUrl>,
    /// Queues to consume, comma-separated; each is declared durable if it does not exist.
    /// Functions subscribe with the `topic` annotation listing the queue name.
    #[arg(long, env = "COURIER_AMQP_QUEUES", value_delimiter = ',')]
    pub amqp_queues: Vec<String>,
    /// Exchange to bind the queues to (declared durable, of `--amqp-exchange-type`, if missing).
    #[arg(long, env = "COURIER_AMQP_EXCHANGE")]
    pub amqp_exchange: Option<String>,
    /// Type of the exchange when it has to be declared.
    #[arg(
        long,
        env = "COURIER_AMQP_EXCHANGE_TYPE",
        value_enum,
        default_value = "topic"
    )]
    pub amqp_exchange_type: ExchangeType,
    /// Routing keys (binding keys) binding every queue to `--amqp-exchange`, comma-separated;
    /// default: the queue's own name.
    #[arg(long, env = "COURIER_AMQP_ROUTING_KEYS", value_delimiter = ',')]
    pub amqp_routing_keys: Vec<String>,
    /// Unacknowledged messages per queue at once (basic.qos prefetch): the concurrency per
    /// queue.
    #[arg(long, env = "COURIER_AMQP_PREFETCH", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub amqp_prefetch: u16,
    /// Where messages whose calls failed for good go: `courier` (Courier's dead letters, then
    /// ack) or `broker` (nack without requeue, for queues declared with an
    /// `x-dead-letter-exchange`).
    #[arg(
        long,
        env = "COURIER_AMQP_DEAD_LETTER",
        value_enum,
        default_value = "courier"
    )]
    pub amqp_dead_letter: DeadLetterTarget,
    /// How often queue depths are read for `connector_queue_depth_messages` (Go duration).
    #[arg(long, env = "COURIER_AMQP_DEPTH_INTERVAL", default_value = "10s", value_parser = duration)]
    pub amqp_depth_interval: Duration,
    /// Longest wait between two reconnection attempts after the broker went away (Go duration).
    #[arg(long, env = "COURIER_AMQP_RECONNECT_MAX_WAIT", default_value = "10s", value_parser = duration)]
    pub amqp_reconnect_max_wait: Duration,
}

impl AmqpArgs {
    /// Whether the AMQP connector is configured (a URL given).
    pub fn is_enabled(&self) -> bool {
        self.amqp_url
            .as_ref()
            .is_some_and(|u| !u.expose().trim().is_empty())
    }

    /// The queues, trimmed, empty entries dropped.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = Vec::new();
        for q in self.amqp_queues.iter().map(|q| q.trim()) {
            if !q.is_empty() && !queues.iter().any(|have| have == q) {
                queues.push(q.to_owned());
            }
        }
        queues
    }

    /// The binding keys for every queue: the configured ones, or the queue's name.
    pub fn routing_keys(&self, queue: &str) -> Vec<String> {
        let keys: Vec<String> = self
            .amqp_routing_keys
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            vec![queue.to_owned()]
        } else {
            keys
        }
    }

    /// Checks the options that must be there.
    pub fn validate(&self) -> Result<&SecretUrl, Error> {
        let url = self
            .amqp_url
            .as_ref()
            .filter(|u| !u.expose().trim().is_empty())
            .ok_or_else(|| Error::Config("--amqp-url is required".into()))?;
        url.expose()
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| Error::Config(format!("--amqp-url {url}: {e}")))?;
        if self.queues().is_empty() {
            return Err(Error::Config("--amqp-queues is required".into()));
        }
        if self.amqp_exchange.is_none() && !self.amqp_routing_keys.is_empty() {
            return Err(Error::Config(
                "--amqp-routing-keys needs --amqp-exchange".into(),
            ));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        amqp: AmqpArgs,
    }

    fn parse(args: &[&str]) -> AmqpArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .amqp
    }

    #[test]
    fn defaults_and_required_options() {
        let args = parse(&[]);
        assert!(!args.is_enabled());
        assert!(args.validate().is_err());
        let args = parse(&["--amqp-url", "amqp://u:secret@h:5672/%2f"]);
        assert!(args.is_enabled());
        assert!(matches!(args.validate(), Err(Error::Config(m)) if m.contains("--amqp-queues")));
        let args = parse(&[
            "--amqp-url",
            "amqp://u:secret@h:5672/%2f",
            "--amqp-queues",
            " a, b,a",
        ]);
        assert!(args.validate().is_ok());
        assert_eq!(args.queues(), ["a", "b"]);
        assert_eq!(args.amqp_prefetch, 32);
        assert_eq!(args.amqp_dead_letter, DeadLetterTarget::Courier);
        assert_eq!(args.routing_keys("a"), ["a"]);
    }

    #[test]
    fn bindings_and_dead_letters_are_configurable() {
        let args = parse(&[
            "--amqp-url",
            "amqp://u:secret@h/v",
            "--amqp-queues",
            "q",
            "--amqp-exchange",
            "events",
            "--amqp-routing-keys",
            "orders.*,payments.#",
            "--amqp-prefetch",
            "4",
            "--amqp-dead-letter",
            "broker",
        ]);
        assert!(args.validate().is_ok());
        assert_eq!(args.routing_keys("q"), ["orders.*", "payments.#"]);
        assert_eq!(args.amqp_prefetch, 4);
        assert_eq!(args.amqp_dead_letter, DeadLetterTarget::Broker);
    }

    #[test]
    fn the_password_never_prints_and_bad_urls_are_refused() {
        let args = parse(&["--amqp-url", "amqp://u:secret@h/v", "--amqp-queues", "q"]);
        assert!(!format!("{args:?}").contains("secret"));
        let args = parse(&["--amqp-url", "http://nope", "--amqp-queues", "q"]);
        let err = args.validate().unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        let args = parse(&[
            "--amqp-url",
            "amqp://u:secret@h/v",
            "--amqp-queues",
            "q",
            "--amqp-routing-keys",
            "k",
        ]);
        assert!(args.validate().is_err());
    }
}
