//! The JetStream backend: one work-queue stream (`RetentionPolicy::WorkQueue`, file storage)
//! on [`QueueConfig::subject`], consumed through one durable pull consumer with explicit acks.
//!
//! How the seam maps onto JetStream:
//! - `publish` sends with `Nats-Msg-Id` = the message id and returns once the server's
//!   `PublishAck` arrives, i.e. once the message is in the stream; `duplicate: true` in that ack
//!   is [`Published::Duplicate`] (the stream's `duplicate_window` is the dedup window);
//! - `fetch` is one pull request with `no_wait` and `expires = wait`: the server answers as soon
//!   as it has delivered what it has (at least one message), or after `wait` when it has none;
//! - a delivery's `attempt` is JetStream's delivery count, its id the `Nats-Msg-Id` header;
//! - settling sends `+ACK` (ack), `-NAK {"delay":…}` (retry_after), `+WPI` (keep_alive) or
//!   `+TERM` (dead_letter), each confirmed by the server (a "double ack");
//! - `pending` is the consumer's undelivered plus unacknowledged messages;
//! - dead letters live in a stream of their own beside the queue's (see the `dead_letters` module);
//! - the ledger lives in two key-value buckets beside it (see the `ledger` module). A recorded
//!   publish sends the message and then, without waiting for its acknowledgement, the row's
//!   `create`: both are in flight together, so recording costs a second write on the server
//!   but no second round trip. Should the server refuse the message, the row is removed again.
//!   The message carries the state its row was created in ([`LEDGER_STATE_HEADER`]), so
//!   `fetch_begun` starts its first attempt in the ledger with one write and no read.
//!
//! Every network call has a deadline, and a call made while the client is disconnected fails at
//! once, so nothing hangs while the server is away: the caller gets [`Error::Unavailable`] and
//! tries again. async-nats reconnects in the background (with back-off, without limit) and
//! restores its subscriptions; the stream and consumer live on the server, so nothing needs to
//! be set up again after a server restart.

mod cluster;
mod dead_letters;
mod ledger;

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::message::{Acker, PublishMessage};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, ConnectOptions, Event, header};
use async_trait::async_trait;
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use crate::{
    Begun, DeadLetter, Delivery, Error, LedgerBegin, LedgerQuery, LedgerRow, LedgerUpdate,
    LedgerWatch, Message, Published, QueueConfig, Receipt, Result, Settle, WorkQueue,
};
use dead_letters::DeadLetters;
use ledger::{Created, Ledger};

/// The header of a queued message whose publish wrote its ledger row: the state the row was
/// created in. Its first delivery's attempt start is then written without reading the row
/// (the `ledger` module's docs). OpenFaaS ignores it.
pub const LEDGER_STATE_HEADER: &str = "Courier-Ledger-State";

/// What a queued message says of the ledger row its publish wrote ([`LEDGER_STATE_HEADER`]).
#[derive(Debug, Clone)]
struct Recorded {
    /// The state the row was created in.
    state: String,
    /// When the message was stored (the row was written with it), Unix milliseconds.
    published_at_ms: u64,
}

/// Calls `each` with every message of `stream` on `filter` that an ephemeral ordered consumer
/// delivers from `deliver` on, up to the last one pending when it was created: how the ledger
/// and the dead letters read a whole stream. The server tells with each message how many are
/// still to come.
async fn read_stream(
    stream: &stream::Stream,
    filter: String,
    deliver: DeliverPolicy,
    doing: &str,
    mut each: impl FnMut(jetstream::Message),
) -> Result<()> {
    let consumer = within(
        doing,
        stream.create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: deliver,
            ..Default::default()
        }),
    )
    .await?;
    let name = consumer.cached_info().name.clone();
    let read = async {
        if consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let mut messages = within(doing, consumer.messages()).await?;
        loop {
            let message = match tokio::time::timeout(REQUEST_TIMEOUT, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(Error::unavailable(doing, e)),
                Ok(None) => break,
                Err(_) => return Err(Error::unavailable(doing, timed_out(REQUEST_TIMEOUT))),
            };
            let pending = message
                .info()
                .map_err(|e| Error::unavailable(doing, e.to_string()))?
                .pending;
            each(message);
            if pending == 0 {
                break;
            }
        }
        Ok(())
    }
    .await;
    // The server would drop the consumer after 30 s idle; frequent listings should not pile
    // them up meanwhile. Best effort, off the caller's path.
    let stream = stream.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.delete_consumer(&name)).await;
    });
    read
}

/// A publish's acknowledgement as it arrives: in time or not, stored or refused.
type AckResult = Result<
    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    tokio::time::error::Elapsed,
>;

/// How long connecting to the server (TCP, TLS, handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server may take to answer one request: a JetStream API call, the `PublishAck`
/// of a publish, the confirmation of an ack.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `fetch` waits beyond its `wait` for the server to close the pull request. The
/// server closes it at `wait`; this only matters when the server stopped answering.
const FETCH_GRACE: Duration = Duration::from_secs(3);

/// How often a waiting `fetch` checks that the client is still connected: a pull request does
/// not survive a server restart, so there is nothing left to wait for once the connection
/// dropped.
const CONNECTION_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Room for the headers (`Nats-Msg-Id` and the ones JetStream adds on redelivery) on top of
/// the payload in the stream's `max_message_size`, which counts headers and payload.
const HEADER_ALLOWANCE_BYTES: usize = 4 * 1024;

/// The consumer's `max_ack_pending`: deliveries handed out and not yet settled, across every
/// client of the consumer. A message waiting out a `retry_after` delay counts as pending, so a
/// tight limit would let a backlog of delayed retries stall new work; concurrency is bounded
/// by the callers' `fetch(max, …)` instead.
const MAX_ACK_PENDING: i64 = -1;

/// `max_deliver` without limit: giving up after N attempts is the caller's decision
/// (`dead_letter`), which keeps a record of the message; the server would drop it silently.
const UNLIMITED_DELIVERIES: i64 = -1;

/// A work queue on a JetStream stream.
pub struct JetStreamQueue {
    client: Client,
    jetstream: Context,
    /// The work-queue stream, to look messages up by sequence.
    stream: stream::Stream,
    consumer: PullConsumer,
    dead_letters: DeadLetters,
    /// `None`: the ledger is off.
    ledger: Option<Ledger>,
    config: QueueConfig,
}

impl fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamQueue")
            .field("stream", &self.config.stream)
            .field("subject", &self.config.subject)
            .field("consumer", &self.config.consumer)
            .field("state", &self.client.connection_state())
            .finish()
    }
}

impl JetStreamQueue {
    /// Checks the size and hands `message` to the connection, marked with `ledger_state` when
    /// its ledger row is written with it; the returned future is its acknowledgement (bounded
    /// by [`REQUEST_TIMEOUT`]).
    async fn send_publish(
        &self,
        message: Message,
        ledger_state: Option<&str>,
    ) -> Result<(Sent, impl Future<Output = AckResult> + use<>)> {
        let size = message.payload.len();
        if size > self.config.max_payload_bytes {
            return Err(Error::TooLarge {
                size,
                limit: self.config.max_payload_bytes,
            });
        }
        ensure_connected(&self.client, "publish")?;
        let sent = Sent {
            size,
            headers: message_id_header_bytes(&message.id)
                + ledger_state.map_or(0, |state| header_bytes(LEDGER_STATE_HEADER, state)),
        };
        let publish = PublishMessage::build()
            .payload(message.payload)
            .message_id(&message.id);
        let publish = match ledger_state {
            Some(state) => publish.header(LEDGER_STATE_HEADER, state),
            None => publish,
        };
        let ack = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.jetstream
                .send_publish(self.config.subject.clone(), publish),
        )
        .await
        {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => return Err(self.publish_error(sent, e)),
            Err(_) => return Err(Error::unavailable("publish", timed_out(REQUEST_TIMEOUT))),
        };
        Ok((
            sent,
            tokio::time::timeout(REQUEST_TIMEOUT, ack.into_future()),
        ))
    }

    /// Waits for the acknowledgement of a message sent and, with the ledger on, writes `row`
    /// for it meanwhile (created only if the call has no row: a duplicate keeps the
    /// original's). The row of a message the server refused is removed again; that of a
    /// message whose fate is unknown (no answer in time) stays, for the caller's retry.
    async fn recorded(
        &self,
        id: &str,
        sent: Sent,
        ack: impl Future<Output = AckResult>,
        row: Option<LedgerRow>,
    ) -> Result<Receipt> {
        let (Some(ledger), Some(row)) = (&self.ledger, row) else {
            return self.receipt(sent, ack.await);
        };
        let (ack, created) = tokio::join!(ack, ledger.create(id, &row));
        let refused = match &ack {
            Ok(Ok(_)) | Err(_) => false,
            Ok(Err(e)) => !matches!(
                e.kind(),
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
            ),
        };
        let receipt = self.receipt(sent, ack);
        match created {
            Ok(Created::Now(revision)) if refused => ledger.forget(id, revision).await,
            Ok(_) => {}
            // The call is queued all the same, and its message says it has a row: the row goes
            // to the journal instead, where its first attempt finds it.
            Err(e) if receipt.is_ok() => ledger.stand_in(id, &row, &e).await,
            Err(_) => {}
        }
        receipt
    }

    /// The receipt for the acknowledgement (or the failure) of a message sent.
    fn receipt(&self, sent: Sent, ack: AckResult) -> Result<Receipt> {
        let ack = match ack {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => return Err(self.publish_error(sent, e)),
            Err(_) => return Err(Error::unavailable("publish", timed_out(REQUEST_TIMEOUT))),
        };
        Ok(Receipt {
            published: if ack.duplicate {
                Published::Duplicate
            } else {
                Published::Stored
            },
            // JetStream answers a duplicate with the sequence of the message it duplicates.
            seq: Some(ack.sequence),
        })
    }

    /// A publish refused by the server: too large for its `max_payload`, or unavailable.
    fn publish_error(&self, sent: Sent, e: jetstream::context::PublishError) -> Error {
        if e.kind() == PublishErrorKind::MaxPayloadExceeded {
            return Error::TooLarge {
                size: sent.size,
                // The server's limit counts the headers (the message id) too.
                limit: self
                    .client
                    .server_info()
                    .max_payload
                    .saturating_sub(sent.headers),
            };
        }
        Error::unavailable("publish", e)
    }

    /// Connects to the NATS server at `url` (or, given several comma-separated seed URLs of
    /// one cluster, to one of them) and creates the stream, the consumer and the dead-letter
    /// stream if they are missing, with `config.replicas` copies (an existing stream gets
    /// `config`'s dedup window and size limit, and its copies raised to `config.replicas`).
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self> {
        let seeds = cluster::seeds(url)?;
        let server = redact_credentials(url);
        let events_server = server.clone();
        let client = ConnectOptions::new()
            .name("courier-queue")
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                let server = events_server.clone();
                async move { log_connection_event(&server, &event) }
            })
            .connect(seeds)
            .await
            .map_err(|e| Error::unavailable(format_args!("connect to NATS at {server}"), e))?;

        // A message (payload and headers) must also fit the server's max_payload (1 MiB by
        // default); a larger payload is refused as `TooLarge` with the server's limit.
        let max_payload = client.server_info().max_payload;
        if config.max_payload_bytes > max_payload {
            warn!(
                server = %server,
                server_max_payload = max_payload,
                max_payload_bytes = config.max_payload_bytes,
                "The NATS server's max_payload is below the queue's payload limit; \
                 larger messages will be refused."
            );
        }

        let jetstream = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let stream = ensure_stream(&jetstream, &config).await?;
        let consumer = stream
            .create_consumer(consumer_config(&config))
            .await
            .map_err(|e| {
                Error::unavailable(
                    format_args!(
                        "create consumer {:?} on stream {:?}",
                        config.consumer, config.stream
                    ),
                    e,
                )
            })?;
        let dead_letters = DeadLetters::open(client.clone(), jetstream.clone(), &config).await?;
        let ledger = Ledger::open(client.clone(), &jetstream, &config).await?;
        info!(
            server = %server,
            stream = %config.stream,
            subject = %config.subject,
            consumer = %config.consumer,
            replicas = config.replicas,
            ledger = ledger.is_some(),
            "JetStream queue ready."
        );
        Ok(Self {
            client,
            jetstream,
            stream,
            consumer,
            dead_letters,
            ledger,
            config,
        })
    }
}

#[async_trait]
impl WorkQueue for JetStreamQueue {
    async fn publish_tracked(&self, message: Message) -> Result<Receipt> {
        let (sent, ack) = self.send_publish(message, None).await?;
        self.receipt(sent, ack.await)
    }

    /// The message is sent first; the row's `create` goes out while its acknowledgement is
    /// on its way (see [`JetStreamQueue::recorded`]).
    async fn publish_recorded(&self, message: Message, row: Option<LedgerRow>) -> Result<Receipt> {
        let id = message.id.clone();
        let (sent, ack) = self
            .send_publish(message, self.ledger_state(row.as_ref()))
            .await?;
        self.recorded(&id, sent, ack, row).await
    }

    /// Sends the messages one after the other (so the stream stores them in their order), then
    /// awaits their acknowledgements together while their rows are written: one round trip's
    /// wait for the whole batch.
    async fn publish_batch(
        &self,
        messages: Vec<(Message, Option<LedgerRow>)>,
    ) -> Vec<Result<Receipt>> {
        let mut sent = Vec::with_capacity(messages.len());
        for (message, row) in messages {
            let id = message.id.clone();
            let ledger_state = self.ledger_state(row.as_ref());
            sent.push((id, self.send_publish(message, ledger_state).await, row));
        }
        futures_util::future::join_all(sent.into_iter().map(|(id, sent, row)| async move {
            let (sent, ack) = sent?;
            self.recorded(&id, sent, ack, row).await
        }))
        .await
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let fetched = self.fetch_marked(max, wait).await?;
        Ok(fetched.into_iter().map(|(delivery, _)| delivery).collect())
    }

    /// [`WorkQueue::fetch`], and the first attempt of a call whose publish wrote its row starts
    /// in the ledger without a read (`Ledger::begin_unread`); every other attempt is a
    /// [`WorkQueue::ledger_update`]. The updates of one fetch go out together.
    async fn fetch_begun(
        &self,
        max: usize,
        wait: Duration,
        begin: LedgerBegin,
    ) -> Result<Vec<Begun>> {
        let fetched = self.fetch_marked(max, wait).await?;
        let Some(ledger) = &self.ledger else {
            return Ok(fetched
                .into_iter()
                .map(|(delivery, _)| Begun {
                    delivery,
                    row: Err(Error::LedgerOff),
                })
                .collect());
        };
        // Each update boxed on its own: side by side in one allocation, a fetch's worth of
        // them made a block large enough for the allocator to take fresh pages from the
        // kernel for every fetch (zeroing them was 7 % of the worker's time on JetStream).
        let rows = futures_util::future::join_all(fetched.iter().map(|(delivery, recorded)| {
            let update = crate::ledger::begin_for(&begin, &delivery.message);
            Box::pin(async move {
                match recorded {
                    Some(recorded) if delivery.attempt == 1 => {
                        ledger
                            .begin_unread(&delivery.message.id, recorded, &update)
                            .await
                    }
                    _ => ledger.update(&delivery.message.id, &update).await,
                }
            })
        }))
        .await;
        Ok(fetched
            .into_iter()
            .zip(rows)
            .map(|((delivery, _), row)| Begun { delivery, row })
            .collect())
    }

    async fn pending(&self) -> Result<u64> {
        ensure_connected(&self.client, "read the consumer's state")?;
        let info = within("read the consumer's state", self.consumer.get_info()).await?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    async fn is_outstanding(&self, seq: u64) -> Result<bool> {
        ensure_connected(&self.client, "look up a message")?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.stream.get_raw_message(seq)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(false),
            Ok(Err(e)) => Err(Error::unavailable("look up a message", e)),
            Err(_) => Err(Error::unavailable(
                "look up a message",
                timed_out(REQUEST_TIMEOUT),
            )),
        }
    }

    async fn put_dead_letter(&self, letter: DeadLetter) -> Result<()> {
        self.dead_letters.put(letter).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.dead_letters.all().await
    }

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        self.dead_letters.get(id).await
    }

    async fn remove_dead_letter(&self, id: &str) -> Result<bool> {
        self.dead_letters.remove(id).await
    }

    async fn purge_dead_letters(&self) -> Result<u64> {
        self.dead_letters.purge().await
    }

    /// Compare-and-swap on the row's revision, retried after a conflict. `durable` changes
    /// nothing: every write is stored by the server before it is acknowledged.
    async fn ledger_update(
        &self,
        id: &str,
        update: LedgerUpdate,
        _durable: bool,
    ) -> Result<Option<LedgerRow>> {
        self.ledger()?.update(id, &update).await
    }

    async fn ledger_get(&self, id: &str) -> Result<Option<LedgerRow>> {
        self.ledger()?.get(id).await
    }

    /// Reads every row in the bucket (the server cannot filter on a row's tags or order by
    /// creation): the cost grows with the bucket, not with `query.limit`.
    async fn ledger_list(&self, query: &LedgerQuery) -> Result<Vec<LedgerRow>> {
        self.ledger()?.list(query).await
    }

    async fn ledger_result(&self, id: &str) -> Result<Option<bytes::Bytes>> {
        self.ledger()?.result(id).await
    }

    async fn ledger_watch(&self, id: &str) -> Result<LedgerWatch> {
        self.ledger()?.watch(id).await
    }
}

impl JetStreamQueue {
    /// The ledger, or [`Error::LedgerOff`].
    fn ledger(&self) -> Result<&Ledger> {
        self.ledger.as_ref().ok_or(Error::LedgerOff)
    }

    /// The state to mark a published message with: its row's, when the ledger writes it.
    fn ledger_state<'a>(&self, row: Option<&'a LedgerRow>) -> Option<&'a str> {
        row.filter(|_| self.ledger.is_some())
            .map(|row| row.state.as_str())
    }

    /// Up to `max` deliveries, each with what its publish said of its ledger row when it wrote
    /// one ([`LEDGER_STATE_HEADER`]).
    async fn fetch_marked(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(Delivery, Option<Recorded>)>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        ensure_connected(&self.client, "fetch")?;
        let request = self.consumer.fetch().max_messages(max);
        // A wait under a millisecond means "what is there now": without `expires`, a
        // `no_wait` pull answers at once.
        let request = if wait >= Duration::from_millis(1) {
            request.expires(wait)
        } else {
            request
        };
        let mut batch = within("fetch", request.messages()).await?;

        let deadline = tokio::time::Instant::now() + wait + FETCH_GRACE;
        let mut deliveries = Vec::new();
        loop {
            let look_again = tokio::time::Instant::now() + CONNECTION_CHECK_INTERVAL;
            match tokio::time::timeout_at(deadline.min(look_again), batch.next()).await {
                Ok(Some(Ok(message))) => {
                    if let Some(delivery) = self.delivery(message) {
                        deliveries.push(delivery);
                    }
                }
                Ok(Some(Err(e))) if deliveries.is_empty() => {
                    return Err(Error::unavailable("fetch", e));
                }
                Ok(Some(Err(e))) => {
                    // Keep what arrived; the next fetch reports the failure if it persists.
                    debug!(
                        consumer = %self.config.consumer,
                        error = %e,
                        "Pull request ended early."
                    );
                    break;
                }
                Ok(None) => break,
                // The server forgets pull requests when it restarts: stop waiting for this one
                // once the connection is gone, or when it was not closed in time.
                Err(_) => {
                    let gone = match self.client.connection_state() {
                        State::Connected if tokio::time::Instant::now() < deadline => continue,
                        State::Connected => timed_out(wait + FETCH_GRACE),
                        state => not_connected(&state),
                    };
                    if deliveries.is_empty() {
                        return Err(Error::unavailable("fetch", gone));
                    }
                    break;
                }
            }
        }
        Ok(deliveries)
    }

    /// A delivery of a message the consumer handed out, with what it says of its ledger row,
    /// or `None` (logged) for anything that is not a JetStream message.
    fn delivery(&self, message: jetstream::Message) -> Option<(Delivery, Option<Recorded>)> {
        let (attempt, sequence, published_at_ms) = match message.info() {
            Ok(info) => (
                u64::try_from(info.delivered).unwrap_or(1).max(1),
                info.stream_sequence,
                u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            ),
            Err(e) => {
                warn!(
                    consumer = %self.config.consumer,
                    subject = %message.subject,
                    error = %e,
                    "Ignoring a message without JetStream metadata."
                );
                return None;
            }
        };
        let headers = message.headers.as_ref();
        let id = headers
            .and_then(|headers| headers.get(header::NATS_MESSAGE_ID))
            .map(|id| id.as_str().to_owned())
            .unwrap_or_else(|| sequence.to_string());
        let recorded = headers
            .and_then(|headers| headers.get(LEDGER_STATE_HEADER))
            .map(|state| Recorded {
                state: state.as_str().to_owned(),
                published_at_ms,
            });
        let (message, acker) = message.split();
        let settle = JetStreamSettle {
            acker,
            client: self.client.clone(),
            sequence,
        };
        let delivery = Delivery::new(
            Message {
                id,
                payload: message.payload,
            },
            attempt,
            Box::new(settle),
        );
        Some((delivery, recorded))
    }
}

/// Settles one delivery through its ack subject.
struct JetStreamSettle {
    acker: Acker,
    client: Client,
    /// The message's stream sequence, for error messages.
    sequence: u64,
}

impl JetStreamSettle {
    /// Sends `kind` and waits for the server's confirmation.
    async fn send(&self, kind: AckKind, doing: &str) -> Result<()> {
        let doing = format!("{doing} (stream sequence {})", self.sequence);
        ensure_connected(&self.client, &doing)?;
        within(&doing, self.acker.double_ack_with(kind)).await
    }
}

#[async_trait]
impl Settle for JetStreamSettle {
    async fn ack(&self) -> Result<()> {
        self.send(AckKind::Ack, "ack").await
    }

    async fn retry_after(&self, delay: Duration) -> Result<()> {
        self.send(AckKind::Nak(Some(delay)), "retry").await
    }

    async fn keep_alive(&self) -> Result<()> {
        self.send(AckKind::Progress, "keep alive").await
    }

    async fn dead_letter(&self) -> Result<()> {
        self.send(AckKind::Term, "dead-letter").await
    }
}

/// Gets the stream, creating it if missing; gives an existing stream `config`'s dedup window
/// and size limit, and raises its copies to `config.replicas`.
async fn ensure_stream(jetstream: &Context, config: &QueueConfig) -> Result<stream::Stream> {
    let wanted = stream_config(config);
    let stream = cluster::get_or_create(jetstream, &wanted, "stream").await?;
    let current = &stream.cached_info().config;
    if current.retention != RetentionPolicy::WorkQueue {
        warn!(
            stream = %config.stream,
            retention = ?current.retention,
            "The stream exists without work-queue retention: acknowledged messages stay in it."
        );
    }
    if current.duplicate_window == wanted.duplicate_window
        && current.max_message_size == wanted.max_message_size
    {
        return Ok(stream);
    }
    let updated = stream::Config {
        duplicate_window: wanted.duplicate_window,
        max_message_size: wanted.max_message_size,
        ..current.clone()
    };
    jetstream
        .update_stream(updated)
        .await
        .map_err(|e| Error::unavailable(format_args!("update stream {:?}", config.stream), e))?;
    info!(
        stream = %config.stream,
        dedup_window = ?wanted.duplicate_window,
        max_message_size = wanted.max_message_size,
        "Stream limits updated."
    );
    Ok(stream)
}

fn stream_config(config: &QueueConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        subjects: vec![config.subject.clone()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: config.dedup_window,
        max_message_size: i32::try_from(config.max_payload_bytes + HEADER_ALLOWANCE_BYTES)
            .unwrap_or(i32::MAX),
        num_replicas: config.replicas,
        ..Default::default()
    }
}

fn consumer_config(config: &QueueConfig) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(config.consumer.clone()),
        description: Some("Courier queue workers".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: UNLIMITED_DELIVERIES,
        max_ack_pending: MAX_ACK_PENDING,
        filter_subject: config.subject.clone(),
        ..Default::default()
    }
}

/// Fails with [`Error::Unavailable`] unless the client is connected: while it reconnects,
/// requests would only queue up in the client and time out.
fn ensure_connected(client: &Client, doing: &str) -> Result<()> {
    match client.connection_state() {
        State::Connected => Ok(()),
        state => Err(Error::unavailable(doing, not_connected(&state))),
    }
}

fn not_connected(state: &State) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("not connected to the NATS server ({state:?})"),
    )
}

/// Runs one network call with [`REQUEST_TIMEOUT`]; any failure is [`Error::Unavailable`].
async fn within<T, E>(doing: &str, call: impl IntoFuture<Output = Result<T, E>>) -> Result<T>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(REQUEST_TIMEOUT, call.into_future()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::unavailable(doing, e)),
        Err(_) => Err(Error::unavailable(doing, timed_out(REQUEST_TIMEOUT))),
    }
}

/// The size of the header block that carries `Nats-Msg-Id: <id>` on the wire.
/// What a publish error needs to know of the message sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// The payload's size.
    size: usize,
    /// The size of the headers that carry its id.
    headers: usize,
}

/// The bytes of a header block holding only `Nats-Msg-Id: id`.
fn message_id_header_bytes(id: &str) -> usize {
    "NATS/1.0\r\n\r\n".len() + header_bytes(header::NATS_MESSAGE_ID.as_ref(), id)
}

/// The bytes one header line `name: value` adds to a header block.
fn header_bytes(name: &str, value: &str) -> usize {
    name.len() + ": \r\n".len() + value.len()
}

fn timed_out(after: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer from the NATS server within {after:?}"),
    )
}

fn log_connection_event(server: &str, event: &Event) {
    match event {
        Event::Connected => info!(server = %server, "Connected to NATS."),
        Event::Disconnected => warn!(server = %server, "Disconnected from NATS; reconnecting."),
        Event::SlowConsumer(_) => debug!(server = %server, event = %event, "NATS slow consumer."),
        _ => warn!(server = %server, event = %event, "NATS connection event."),
    }
}

/// `url` without a `user:password@` part, for logs and errors.
fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_left_out_of_the_server_name() {
        assert_eq!(
            redact_credentials("nats://user:secret@nats:4222"),
            "nats://***@nats:4222"
        );
        assert_eq!(redact_credentials("nats://nats:4222"), "nats://nats:4222");
        assert_eq!(redact_credentials("tls://token@nats"), "tls://***@nats");
    }

    #[test]
    fn the_stream_is_a_file_backed_work_queue_with_the_configured_dedup_window() {
        let config = QueueConfig {
            dedup_window: Duration::from_secs(60),
            max_payload_bytes: 1000,
            ..QueueConfig::default()
        };
        let stream = stream_config(&config);
        assert_eq!(stream.name, "OF_faas-request");
        assert_eq!(stream.subjects, ["faas-request"]);
        assert_eq!(stream.retention, RetentionPolicy::WorkQueue);
        assert_eq!(stream.storage, StorageType::File);
        assert_eq!(stream.duplicate_window, Duration::from_secs(60));
        assert_eq!(stream.max_message_size, 1000 + 4096);
        assert_eq!(stream.num_replicas, 1);
        let replicated = stream_config(&QueueConfig {
            replicas: 3,
            ..QueueConfig::default()
        });
        assert_eq!(replicated.num_replicas, 3);
    }

    #[test]
    fn the_consumer_acks_explicitly_and_never_gives_up_on_its_own() {
        let config = QueueConfig {
            ack_wait: Duration::from_secs(7),
            ..QueueConfig::default()
        };
        let consumer = consumer_config(&config);
        assert_eq!(
            consumer.durable_name.as_deref(),
            Some("courier-queue-worker")
        );
        assert_eq!(consumer.ack_policy, AckPolicy::Explicit);
        assert_eq!(consumer.ack_wait, Duration::from_secs(7));
        assert_eq!(consumer.max_deliver, -1);
        assert_eq!(consumer.filter_subject, "faas-request");
    }
}
