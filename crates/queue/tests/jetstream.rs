//! The JetStream backend against a real nats-server (2.10+, see
//! `courier_test_support::nats`): the WorkQueue conformance suite, and what only JetStream
//! has: a server that crashes and comes back, and the OpenFaaS subject on the wire.

mod conformance;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_trait::async_trait;
use bytes::Bytes;
use courier_queue::jetstream::JetStreamQueue;
use courier_queue::{
    DeadLetter, Error, LedgerConfig, LedgerQuery, Message, Published, QueueConfig, WorkQueue,
};

use conformance::{Backend, append, ledger_row, message, row, with_lines};
use courier_test_support::nats::NatsServer;

/// An environment: one nats-server with its own store, and the stream, subject and consumer
/// names every client of this environment uses.
struct JetStreamBackend {
    server: NatsServer,
    stream: String,
    subject: String,
    consumer: String,
}

impl JetStreamBackend {
    fn on(server: NatsServer) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Self {
            server,
            stream: format!("COURIER_TEST_{pid}_{n}"),
            subject: format!("courier-test-{pid}-{n}"),
            consumer: format!("courier-test-worker-{pid}-{n}"),
        }
    }

    fn config(&self, config: QueueConfig) -> QueueConfig {
        QueueConfig {
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            consumer: self.consumer.clone(),
            ..config
        }
    }

    async fn connect(&self, config: QueueConfig) -> JetStreamQueue {
        JetStreamQueue::connect(&self.server.url(), self.config(config))
            .await
            .expect("connect to nats-server")
    }
}

#[async_trait]
impl Backend for JetStreamBackend {
    async fn new() -> Self {
        // The suite cannot skip a test, so a missing nats-server is a failure here.
        Self::on(NatsServer::start_required().await)
    }

    async fn open(&self, config: QueueConfig) -> Arc<dyn WorkQueue> {
        Arc::new(self.connect(config).await)
    }
}

conformance_tests!(JetStreamBackend);

/// A backend for one JetStream-only test, or a skip (see `courier_test_support::nats`).
async fn environment() -> Option<JetStreamBackend> {
    NatsServer::start().await.map(JetStreamBackend::on)
}

/// A lease longer than any test: nothing comes back unless a test shortens it.
fn config() -> QueueConfig {
    QueueConfig {
        ack_wait: Duration::from_secs(30),
        ..QueueConfig::default()
    }
}

/// Fetches until `want` deliveries arrived or `within` passed; acks none of them.
async fn fetch_ids(queue: &dyn WorkQueue, want: usize, within: Duration) -> BTreeSet<String> {
    let deadline = Instant::now() + within;
    let mut ids = BTreeSet::new();
    let mut held = Vec::new();
    while ids.len() < want && Instant::now() < deadline {
        match queue.fetch(want, Duration::from_millis(500)).await {
            Ok(deliveries) => {
                for delivery in deliveries {
                    ids.insert(delivery.message.id.clone());
                    held.push(delivery);
                }
            }
            // The client may still be reconnecting.
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("fetch failed: {e}"),
        }
    }
    ids
}

/// Publishes until the server takes it (the client reconnects with back-off), within `within`.
async fn publish_eventually(
    queue: &dyn WorkQueue,
    message: Message,
    within: Duration,
) -> Published {
    let deadline = Instant::now() + within;
    loop {
        match queue.publish(message.clone()).await {
            Ok(published) => return published,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publish of {} failed: {e}", message.id),
        }
    }
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_across_a_nats_server_restart() {
    let Some(mut env) = environment().await else {
        return;
    };
    let queue = env.connect(config()).await;
    let ids: Vec<String> = (0..20).map(|i| format!("call-{i:02}")).collect();
    for id in &ids {
        assert_eq!(queue.publish(message(id)).await.unwrap(), Published::Stored);
    }
    // Five are done before the crash, two are in flight (delivered, not settled).
    let done = queue.fetch(5, Duration::from_secs(2)).await.unwrap();
    assert_eq!(done.len(), 5);
    let done_ids: BTreeSet<String> = done.iter().map(|d| d.message.id.clone()).collect();
    for delivery in done {
        delivery.ack().await.unwrap();
    }
    let in_flight = queue.fetch(2, Duration::from_secs(2)).await.unwrap();
    assert_eq!(in_flight.len(), 2);
    drop(in_flight);
    drop(queue);

    env.server.restart().await;

    let queue = env
        .connect(QueueConfig {
            // The two in flight come back once their lease runs out.
            ack_wait: Duration::from_secs(1),
            ..config()
        })
        .await;
    let unacked: BTreeSet<String> = ids
        .iter()
        .filter(|id| !done_ids.contains(*id))
        .cloned()
        .collect();
    assert!(queue.pending().await.unwrap() >= unacked.len() as u64);
    let delivered = fetch_ids(&queue, ids.len(), Duration::from_secs(10)).await;
    let lost: Vec<&String> = unacked.difference(&delivered).collect();
    assert!(lost.is_empty(), "lost across the restart: {lost:?}");
}

/// Lists the dead letters until the server answers (the client reconnects with back-off).
async fn dead_letters_eventually(queue: &dyn WorkQueue, within: Duration) -> Vec<DeadLetter> {
    let deadline = Instant::now() + within;
    loop {
        match queue.dead_letters().await {
            Ok(letters) => return letters,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("dead_letters failed: {e}"),
        }
    }
}

#[tokio::test]
async fn dead_letters_survive_a_nats_server_restart() {
    let Some(mut env) = environment().await else {
        return;
    };
    // A gateway and a worker: two clients of the same server share the letters. The ids hold
    // what a subject token may not.
    let gateway = env.connect(config()).await;
    let worker = env.connect(config()).await;
    let letter = |id: &str, failed_at_ms: u64| DeadLetter {
        id: id.to_owned(),
        failed_at_ms,
        record: Bytes::from(format!("{{\"id\":{id:?}}}\u{0}\u{ff}").into_bytes()),
    };
    let letters = [
        letter("call.one", 1_000),
        letter("call two *>", 3_000),
        letter("", 2_000),
        letter("ünïcödé/\\", 3_000),
    ];
    for letter in &letters {
        worker.put_dead_letter(letter.clone()).await.unwrap();
    }
    let newest_first = vec![
        letters[1].clone(),
        letters[3].clone(),
        letters[2].clone(),
        letters[0].clone(),
    ];
    assert_eq!(gateway.dead_letters().await.unwrap(), newest_first);

    env.server.restart().await;

    // The clients that were connected get them back once they reconnected, and so does a
    // new one.
    for queue in [&gateway, &worker] {
        assert_eq!(
            dead_letters_eventually(queue, Duration::from_secs(15)).await,
            newest_first
        );
    }
    let later = env.connect(config()).await;
    assert_eq!(later.dead_letters().await.unwrap(), newest_first);
    assert_eq!(
        later.dead_letter("call two *>").await.unwrap().as_ref(),
        Some(&letters[1])
    );
    assert_eq!(
        later.dead_letter("").await.unwrap().as_ref(),
        Some(&letters[2])
    );

    // Removing and purging after the restart see exactly what was kept.
    assert!(gateway.remove_dead_letter("call.one").await.unwrap());
    assert!(!worker.remove_dead_letter("call.one").await.unwrap());
    assert_eq!(worker.purge_dead_letters().await.unwrap(), 3);
    assert!(later.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn publish_fails_with_unavailable_while_the_server_is_down_and_works_after_it_returns() {
    let Some(mut env) = environment().await else {
        return;
    };
    let queue = env.connect(config()).await;
    assert_eq!(
        queue.publish(message("before")).await.unwrap(),
        Published::Stored
    );

    env.server.stop().await;

    let outcome = tokio::time::timeout(Duration::from_secs(10), queue.publish(message("during")))
        .await
        .expect("publish must not hang while the server is down");
    assert!(
        matches!(outcome, Err(Error::Unavailable { .. })),
        "publish while down: {outcome:?}"
    );
    let fetched = tokio::time::timeout(
        Duration::from_secs(10),
        queue.fetch(1, Duration::from_millis(200)),
    )
    .await
    .expect("fetch must not hang while the server is down");
    assert!(
        matches!(fetched, Err(Error::Unavailable { .. })),
        "fetch while down: {fetched:?}"
    );
    let pending = tokio::time::timeout(Duration::from_secs(10), queue.pending())
        .await
        .expect("pending must not hang while the server is down");
    assert!(matches!(pending, Err(Error::Unavailable { .. })));

    env.server.start_again().await;

    // The same client reconnects; the caller's retry of "during" is stored (or was already,
    // if the failed attempt reached the server after all).
    let retried = publish_eventually(&queue, message("during"), Duration::from_secs(20)).await;
    assert!(matches!(retried, Published::Stored | Published::Duplicate));
    assert_eq!(
        queue.publish(message("after")).await.unwrap(),
        Published::Stored
    );
    let delivered = fetch_ids(&queue, 3, Duration::from_secs(10)).await;
    assert_eq!(
        delivered,
        BTreeSet::from(["before".into(), "during".into(), "after".into()])
    );
}

#[tokio::test]
async fn the_default_queue_is_the_openfaas_faas_request_subject() {
    let Some(env) = environment().await else {
        return;
    };
    // No per-test names: the defaults, as `courier up --queue nats://…` uses them.
    let queue = JetStreamQueue::connect(&env.server.url(), config())
        .await
        .unwrap();
    queue.publish(message("call-1")).await.unwrap();

    let client = async_nats::connect(env.server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("OF_faas-request").await.unwrap();
    let stored = stream.get_raw_message(1).await.unwrap();
    assert_eq!(stored.subject.as_str(), "faas-request");
    assert_eq!(
        stored
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str()),
        Some("call-1")
    );
    assert_eq!(stored.payload, Bytes::from("payload of call-1"));

    // A plain NATS publish on the subject is queued too; without a Nats-Msg-Id its id is the
    // stream sequence.
    client
        .publish("faas-request", Bytes::from("from a plain client"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    // Fetching waits for the stream to store it: a core publish is not acknowledged.
    let deliveries = conformance::fetch_n(&queue, 2, Duration::from_secs(5)).await;
    let ids: Vec<&str> = deliveries.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["call-1", "2"]);
    assert_eq!(
        deliveries[1].message.payload,
        Bytes::from("from a plain client")
    );
    assert!(deliveries.iter().all(|d| d.attempt == 1));
}

#[tokio::test]
async fn connecting_with_new_settings_updates_the_existing_stream_and_consumer() {
    let Some(env) = environment().await else {
        return;
    };
    drop(env.connect(config()).await);
    drop(
        env.connect(QueueConfig {
            ack_wait: Duration::from_secs(3),
            dedup_window: Duration::from_secs(10),
            max_payload_bytes: 2048,
            ..config()
        })
        .await,
    );

    let js = jetstream::new(async_nats::connect(env.server.url()).await.unwrap());
    let mut stream = js.get_stream(&env.stream).await.unwrap();
    let stream_config = stream.info().await.unwrap().config.clone();
    assert_eq!(stream_config.duplicate_window, Duration::from_secs(10));
    assert!(stream_config.max_message_size >= 2048);
    assert_eq!(
        stream_config.retention,
        jetstream::stream::RetentionPolicy::WorkQueue
    );
    let consumer = stream.consumer_info(&env.consumer).await.unwrap();
    assert_eq!(consumer.config.ack_wait, Duration::from_secs(3));
}

#[tokio::test]
async fn every_call_fails_with_unavailable_instead_of_hanging_when_the_server_stops_answering() {
    let Some(env) = environment().await else {
        return;
    };
    let queue = env
        .connect(QueueConfig {
            // Short, so what a frozen pull request took comes back soon (see below).
            ack_wait: Duration::from_secs(1),
            ..config()
        })
        .await;
    queue.publish(message("held")).await.unwrap();
    let held = queue.fetch(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(held.len(), 1);

    // Frozen, the server keeps the connection open: only deadlines can end the calls.
    env.server.pause().await;
    let bound = Duration::from_secs(15);
    let frozen_letter = DeadLetter {
        id: "frozen".into(),
        failed_at_ms: 1,
        record: Bytes::from_static(b"{}"),
    };
    let ((published, fetched, pending, kept_alive), dead_letter_calls) =
        tokio::time::timeout(bound, async {
            tokio::join!(
                async {
                    tokio::join!(
                        queue.publish(message("frozen")),
                        queue.fetch(1, Duration::from_millis(200)),
                        queue.pending(),
                        held[0].keep_alive(),
                    )
                },
                async {
                    tokio::join!(
                        queue.put_dead_letter(frozen_letter),
                        queue.dead_letters(),
                        queue.dead_letter("frozen"),
                        queue.remove_dead_letter("frozen"),
                        queue.purge_dead_letters(),
                    )
                },
            )
        })
        .await
        .expect("calls to a frozen server must end within their deadlines");
    env.server.resume();

    let (put, listed, got, removed, purged) = dead_letter_calls;
    assert!(
        matches!(put, Err(Error::Unavailable { .. })),
        "put_dead_letter: {put:?}"
    );
    assert!(
        matches!(listed, Err(Error::Unavailable { .. })),
        "dead_letters: {listed:?}"
    );
    assert!(
        matches!(got, Err(Error::Unavailable { .. })),
        "dead_letter: {got:?}"
    );
    assert!(
        matches!(removed, Err(Error::Unavailable { .. })),
        "remove_dead_letter: {removed:?}"
    );
    assert!(
        matches!(purged, Err(Error::Unavailable { .. })),
        "purge_dead_letters: {purged:?}"
    );

    assert!(
        matches!(published, Err(Error::Unavailable { .. })),
        "publish: {published:?}"
    );
    assert!(
        matches!(fetched, Err(Error::Unavailable { .. })),
        "fetch: {fetched:?}"
    );
    assert!(
        matches!(pending, Err(Error::Unavailable { .. })),
        "pending: {pending:?}"
    );
    assert!(
        matches!(kept_alive, Err(Error::Unavailable { .. })),
        "keep_alive: {kept_alive:?}"
    );

    // Thawed, the same client goes on. The server now runs what the client sent meanwhile:
    // the publish (hence "Duplicate" is fine) and the pull request the fetch gave up on,
    // which may take a message to nobody; that one comes back after its lease.
    for delivery in held {
        delivery.ack().await.unwrap();
    }
    let retried = publish_eventually(&queue, message("frozen"), Duration::from_secs(10)).await;
    assert!(matches!(retried, Published::Stored | Published::Duplicate));
    let delivered = fetch_ids(&queue, 2, Duration::from_secs(5)).await;
    assert!(
        delivered.contains("frozen"),
        "delivered after the thaw: {delivered:?}"
    );
}

#[tokio::test]
async fn a_message_over_the_servers_max_payload_is_refused_as_too_large_with_its_limit() {
    let Some(env) = environment().await else {
        return;
    };
    // The queue allows 2 MiB; the server (default max_payload 1 MiB) counts the headers too.
    let queue = env
        .connect(QueueConfig {
            max_payload_bytes: 2 * 1024 * 1024,
            ..config()
        })
        .await;
    let header_bytes = "NATS/1.0\r\nNats-Msg-Id: big\r\n\r\n".len();
    let limit = 1024 * 1024 - header_bytes;
    let sized = |size: usize| Message {
        id: "big".into(),
        payload: Bytes::from(vec![b'x'; size]),
    };

    match queue.publish(sized(limit + 1)).await {
        Err(Error::TooLarge { size, limit: told }) => {
            assert_eq!((size, told), (limit + 1, limit));
        }
        other => panic!("publish over the server's limit: {other:?}"),
    }
    assert_eq!(
        queue.publish(sized(limit)).await.unwrap(),
        Published::Stored
    );
    let delivered = queue.fetch(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(delivered[0].message.payload.len(), limit);
}

#[tokio::test]
async fn the_ledger_buckets_drop_their_oldest_rows_when_full_and_expire_them() {
    let Some(env) = environment().await else {
        return;
    };
    let ledger = LedgerConfig {
        retention: Duration::from_secs(600),
        max_records: 1000,
        ..LedgerConfig::default()
    };
    drop(env.connect(QueueConfig { ledger, ..config() }).await);
    // Connecting with other limits gives the existing buckets those.
    drop(
        env.connect(QueueConfig {
            ledger: LedgerConfig {
                retention: Duration::from_secs(60),
                max_records: 10,
                ..ledger
            },
            ..config()
        })
        .await,
    );

    let js = jetstream::new(async_nats::connect(env.server.url()).await.unwrap());
    // The journals may hold twice as many as the rows: the rows' cap drops a call.
    for (bucket, max_age, max_messages) in [
        // A row stays twice the retention: a call is shown until `retention` after its last
        // change, which the journal holds.
        (
            format!("{}_ledger", env.stream),
            Duration::from_secs(120),
            10,
        ),
        (
            format!("{}_ledger_journal", env.stream),
            Duration::from_secs(60),
            20,
        ),
        (
            format!("{}_ledger_results", env.stream),
            Duration::from_secs(60 + 3600),
            10,
        ),
    ] {
        let mut stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
        let info = stream.info().await.unwrap().config.clone();
        assert_eq!(info.max_age, max_age, "{bucket}");
        assert_eq!(info.max_messages, max_messages, "{bucket}");
        assert_eq!(info.max_messages_per_subject, 1, "{bucket}");
        assert_eq!(
            info.discard,
            jetstream::stream::DiscardPolicy::Old,
            "{bucket}"
        );
        assert_eq!(info.storage, jetstream::stream::StorageType::File);
        js.get_key_value(bucket).await.expect("a key-value bucket");
    }
}

#[tokio::test]
async fn with_the_ledger_off_no_bucket_is_created() {
    let Some(env) = environment().await else {
        return;
    };
    let queue = env
        .connect(QueueConfig {
            ledger: LedgerConfig {
                retention: Duration::ZERO,
                ..LedgerConfig::default()
            },
            ..config()
        })
        .await;
    queue
        .publish_recorded(message("call-1"), Some(row("call-1", 1)))
        .await
        .unwrap();

    let js = jetstream::new(async_nats::connect(env.server.url()).await.unwrap());
    for bucket in ["_ledger", "_ledger_results"] {
        let stream = format!("KV_{}{bucket}", env.stream);
        assert!(js.get_stream(&stream).await.is_err(), "{stream} exists");
    }
}

#[tokio::test]
async fn the_row_of_a_message_the_server_refused_is_removed_again() {
    let Some(env) = environment().await else {
        return;
    };
    let queue = env.connect(config()).await;
    // The work-queue stream is gone (deleted by an operator): nothing stores the message.
    let js = jetstream::new(async_nats::connect(env.server.url()).await.unwrap());
    js.delete_stream(&env.stream).await.unwrap();

    let refused = queue
        .publish_recorded(message("call-1"), Some(row("call-1", 1)))
        .await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    assert_eq!(queue.ledger_get("call-1").await.unwrap(), None);
    let everything = LedgerQuery {
        function: None,
        state: None,
        limit: 10,
    };
    assert!(queue.ledger_list(&everything).await.unwrap().is_empty());
}

#[tokio::test]
async fn ledger_calls_fail_with_unavailable_instead_of_hanging_when_the_server_stops_answering() {
    let Some(env) = environment().await else {
        return;
    };
    let queue = env.connect(config()).await;
    conformance::publish_recorded(&queue, "call-1", row("call-1", 1)).await;

    env.server.pause().await;
    let everything = LedgerQuery {
        function: None,
        state: None,
        limit: 10,
    };
    let (published, got, listed, updated, result, watched) =
        tokio::time::timeout(Duration::from_secs(15), async {
            tokio::join!(
                queue.publish_recorded(message("call-2"), Some(row("call-2", 2))),
                queue.ledger_get("call-1"),
                queue.ledger_list(&everything),
                queue.ledger_update("call-1", conformance::put(row("call-1", 1), None), true),
                queue.ledger_result("call-1"),
                queue.ledger_watch("call-1"),
            )
        })
        .await
        .expect("calls to a frozen server must end within their deadlines");
    env.server.resume();

    let unavailable = |e: &Error| matches!(e, Error::Unavailable { .. });
    assert!(published.as_ref().is_err_and(unavailable), "{published:?}");
    assert!(got.as_ref().is_err_and(unavailable), "{got:?}");
    assert!(listed.as_ref().is_err_and(unavailable), "{listed:?}");
    assert!(updated.as_ref().is_err_and(unavailable), "{updated:?}");
    assert!(result.as_ref().is_err_and(unavailable), "{result:?}");
    assert!(
        watched.as_ref().err().is_some_and(unavailable),
        "ledger_watch did not fail"
    );
}

/// The key a call's ledger entries are under: `x` and the id's bytes in hex.
fn ledger_key(id: &str) -> String {
    id.bytes()
        .fold(String::from("x"), |key, byte| key + &format!("{byte:02x}"))
}

#[tokio::test]
async fn a_call_changed_past_its_rows_age_keeps_its_whole_record_in_the_journal() {
    let Some(env) = environment().await else {
        return;
    };
    let retention = Duration::from_secs(2);
    let queue = env
        .connect(QueueConfig {
            ledger: LedgerConfig {
                retention,
                ..LedgerConfig::default()
            },
            ..config()
        })
        .await;
    let created = row("call-1", 1_700_000_000_000);
    let published = queue
        .publish_recorded(message("call-1"), Some(created.clone()))
        .await
        .expect("publish_recorded");
    assert_eq!(published.published, Published::Stored);

    // The first attempt starts without reading: its journal holds a line.
    let begin = append("queued", "running", b"\nbegun");
    let begun = queue
        .fetch_begun(
            1,
            Duration::from_secs(5),
            Arc::new(move |_: &Message, current: Option<&courier_queue::LedgerRow>| begin(current)),
        )
        .await
        .expect("fetch_begun");
    assert_eq!(begun.len(), 1);
    let js = jetstream::new(async_nats::connect(env.server.url()).await.unwrap());
    let journals = js
        .get_key_value(format!("{}_ledger_journal", env.stream))
        .await
        .expect("the journal bucket");
    let journal = || async {
        journals
            .get(ledger_key("call-1"))
            .await
            .expect("read the journal")
            .expect("a journal")
    };
    assert_eq!(journal().await[0], 2, "a journal of lines");

    // A change within the retention keeps the call; once the row is older than the retention,
    // the next change reads it and the journal takes the whole record: the row may go, the
    // call stays.
    tokio::time::sleep(retention / 2).await;
    queue
        .ledger_update(
            "call-1",
            append("running", "retrying", b"\nfailed once"),
            false,
        )
        .await
        .expect("ledger_update");
    assert_eq!(journal().await[0], 2, "still lines");
    tokio::time::sleep(retention / 2 + Duration::from_millis(300)).await;
    queue
        .ledger_update(
            "call-1",
            append("retrying", "running", b"\nbegun again"),
            false,
        )
        .await
        .expect("ledger_update");
    assert_eq!(journal().await[0], 1, "the journal holds the whole row");
    let expected = with_lines(
        &created,
        "running",
        &[b"\nbegun", b"\nfailed once", b"\nbegun again"],
    );
    assert_eq!(ledger_row(&queue, "call-1").await, Some(expected.clone()));
    let rows = js
        .get_key_value(format!("{}_ledger", env.stream))
        .await
        .expect("the rows bucket");
    rows.purge(ledger_key("call-1"))
        .await
        .expect("drop the row");
    assert_eq!(
        ledger_row(&queue, "call-1").await,
        Some(expected),
        "shown without its row"
    );
    drop(begun);
}
