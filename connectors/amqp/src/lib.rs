//! The AMQP (RabbitMQ) connector: consumes the configured queues and runs every delivery
//! through the connector core's pipeline to the functions whose `topic` annotation lists the
//! queue name.
//!
//! What it owns: AMQP options ([`AmqpArgs`]), the topology it needs (queues declared durable
//! when missing, optional exchange bindings), translating a delivery into a core message
//! (`X-Rabbitmq-Msg-Id`, `X-Rabbitmq-Routing-Key`; see [`delivery`]), settling after the
//! outcome (ack; or, with `--amqp-dead-letter broker`, `nack(requeue=false)` for messages whose
//! calls failed for good, so the queue's dead-letter exchange takes them), prefetch, queue
//! depths, reconnecting with backoff after the connection is lost, and publishing replies to
//! queues ([`AmqpReplies`]).
//!
//! What it never knows: how functions are reached (the [`courier_invoke::Invoker`]), the queue
//! backend, the provider, or retry and dead-letter rules (the core's pipeline).

mod args;
pub mod delivery;
mod metrics;
mod reply;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_connector::{
    ConnectorConfig, ConnectorMetrics, DeadLetters, Pipeline, ReplySink, SourceInfo, Stop,
    TopicWatch,
};
use courier_invoke::{FunctionList, Invoker};
use prometheus::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use args::{AmqpArgs, DeadLetterTarget, ExchangeType};
pub use metrics::AmqpMetrics;
pub use reply::AmqpReplies;

use session::Session;

/// First wait before connecting again.
const RECONNECT_MIN_WAIT: Duration = Duration::from_millis(200);

/// A connection that lasted this long resets the reconnection backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// Why the AMQP connector could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options are incomplete or contradictory.
    #[error("invalid AMQP connector options: {0}")]
    Config(String),
    /// The metrics could not be registered (registered twice?).
    #[error("registering the AMQP connector's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs the AMQP connector until `shutdown`: consumes `args.amqp_queues`, invokes the
/// subscribed functions through `invoker` as `config` says, and settles each delivery after
/// its outcome. A lost connection (broker restart, network) is re-established with backoff
/// for as long as it takes; so is a broker that is not up yet. Returns once messages in flight
/// finished (or the drain timeout passed) and the connection is closed.
pub async fn run(
    args: AmqpArgs,
    config: ConnectorConfig,
    catalog: watch::Receiver<FunctionList>,
    invoker: Arc<dyn Invoker>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let url = args.validate()?.clone();
    let queues = args.queues();
    let core_metrics = ConnectorMetrics::register(registry, "amqp")?;
    let amqp_metrics = AmqpMetrics::register(registry)?;
    let topic_map = TopicWatch::start(
        catalog,
        config.retry.clone(),
        config.catalog_grace,
        shutdown.clone(),
    )
    .await;
    let stop = Stop::with_drain(&shutdown, config.drain_timeout);
    let replies = Arc::new(AmqpReplies::default());
    let pipeline = Pipeline::new(
        config,
        SourceInfo {
            connector: delivery::CONNECTOR,
            dead_letters: match args.amqp_dead_letter {
                DeadLetterTarget::Courier => DeadLetters::Courier,
                DeadLetterTarget::Broker => DeadLetters::Source,
            },
        },
        topic_map,
        invoker,
        Some(replies.clone() as Arc<dyn ReplySink>),
        core_metrics,
    );
    tracing::info!(url = %url, queues = %queues.join(","), mode = ?pipeline.config().mode, dead_letters = ?args.amqp_dead_letter, "AMQP connector starting.");
    let session = Session {
        args: &args,
        url: url.expose(),
        queues: &queues,
        pipeline: &pipeline,
        replies: &replies,
        metrics: &amqp_metrics,
        stop: &stop,
    };
    let mut wait = RECONNECT_MIN_WAIT;
    let mut ever_connected = false;
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let result = session
            .run(|| {
                if ever_connected {
                    amqp_metrics.reconnects.inc();
                    tracing::info!(url = %url, "AMQP connection re-established.");
                }
                ever_connected = true;
            })
            .await;
        let error = match result {
            Ok(()) => break,
            Err(e) => e,
        };
        if shutdown.is_cancelled() {
            break;
        }
        if started.elapsed() >= STABLE_CONNECTION {
            wait = RECONNECT_MIN_WAIT;
        }
        tracing::warn!(url = %url, error = %error, retry_in_ms = wait.as_millis() as u64, "AMQP connection lost or refused; connecting again.");
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(args.amqp_reconnect_max_wait.max(RECONNECT_MIN_WAIT));
    }
    tracing::info!("AMQP connector stopped.");
    Ok(())
}
