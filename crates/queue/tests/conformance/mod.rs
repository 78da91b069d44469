//! The WorkQueue conformance suite: one set of behaviours every backend must show, written
//! once and instantiated per backend with [`conformance_tests!`].
//!
//! A backend test file declares `mod conformance;`, implements [`Backend`] and calls
//! `conformance_tests!(MyBackend);`, which generates one `#[tokio::test]` per behaviour below.
//! The behaviours are plain generic functions so they read (and fail) as ordinary code.
//!
//! Timings are short (a lease of [`ACK_WAIT`], delays of a few hundred milliseconds) and
//! measured rather than slept where possible: "not early" is asserted exactly (less
//! [`CLOCK_SLACK`]), "promptly" with a generous [`PROMPTLY`] so a loaded machine does not
//! fail the suite.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use courier_queue::{
    DeadLetter, Delivery, Error, LedgerBegin, LedgerChange, LedgerConfig, LedgerQuery, LedgerRow,
    LedgerUpdate, Message, Published, QueueConfig, Settlement, WorkQueue,
};
use futures_util::StreamExt as _;
use tokio::time::Instant;

/// A place a queue lives in for one test: a temporary file, or a NATS server with its store.
#[async_trait]
pub trait Backend: Send + Sync + Sized + 'static {
    /// A fresh, empty environment.
    async fn new() -> Self;
    /// Opens a queue client on this environment. Opening again after dropping the previous
    /// client is a process restart; the stored state must still be there.
    async fn open(&self, config: QueueConfig) -> Arc<dyn WorkQueue>;
}

/// Generates one `#[tokio::test]` per conformance behaviour for `$backend`.
///
/// The tests are generated where the macro is called; to run the suite for two backends in
/// one file, call it inside a module per backend.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ty) => {
        $crate::conformance_tests!(@each $backend;
            published_messages_are_delivered_with_id_payload_and_attempt_one,
            a_duplicate_id_within_the_dedup_window_is_stored_once,
            a_batch_is_answered_per_message_in_order_and_delivered_oldest_first,
            fetch_waits_for_a_publish_instead_of_returning_empty,
            fetch_returns_empty_after_its_wait_when_nothing_is_queued,
            an_acked_message_is_never_delivered_again,
            an_unsettled_delivery_is_redelivered_after_its_lease_with_attempt_two,
            a_retry_after_delay_is_not_delivered_early_and_then_is_delivered,
            keep_alive_prevents_redelivery_of_a_long_running_delivery,
            a_dead_lettered_message_is_never_delivered_again,
            pending_counts_stored_unsettled_messages,
            a_tracked_message_is_outstanding_until_acked_or_dead_lettered,
            nothing_published_is_lost_across_a_restart,
            an_acked_message_stays_gone_after_a_restart,
            deliveries_held_by_a_dead_process_are_handed_out_again_after_their_lease,
            oversized_payloads_are_refused,
            concurrent_consumers_never_get_the_same_message_at_once,
            a_dead_letter_is_kept_and_listed_newest_first,
            a_dead_letter_with_the_same_id_replaces_the_earlier_one,
            removing_and_purging_dead_letters,
            dead_letters_survive_a_restart,
            a_recorded_publish_writes_its_row_once_and_a_duplicate_leaves_it,
            a_batch_writes_the_rows_of_the_messages_it_stored,
            concurrent_ledger_updates_all_land,
            an_update_sees_the_current_row_and_may_keep_it,
            ledger_lists_are_newest_first_filtered_and_limited,
            a_ledger_watch_wakes_on_a_change_of_its_row,
            an_expired_row_is_gone_from_get_list_and_result,
            beyond_max_records_the_oldest_rows_are_dropped,
            kept_results_read_back_byte_for_byte,
            ledger_rows_and_results_survive_a_restart,
            with_the_ledger_off_every_ledger_call_says_so,
            a_begun_fetch_updates_each_delivered_row_before_answering,
            appended_changes_join_the_record_and_a_cancel_excludes_a_begin,
            a_recorded_settle_writes_the_row_and_settles,
        );
    };
    (@each $backend:ty; $($behaviour:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $behaviour() {
                $crate::conformance::$behaviour::<$backend>().await;
            }
        )*
    };
}

/// The lease every test uses unless it says otherwise.
pub const ACK_WAIT: Duration = Duration::from_secs(1);

/// How early a "not before" deadline may be observed: clocks tick in milliseconds.
pub const CLOCK_SLACK: Duration = Duration::from_millis(10);

/// How late something that is due may arrive and still count as prompt.
pub const PROMPTLY: Duration = Duration::from_millis(1500);

/// How long a test waits for deliveries it expects.
pub const EXPECTED_WITHIN: Duration = Duration::from_secs(5);

/// The suite's queue settings: a short lease, a dedup window longer than any test.
pub fn config() -> QueueConfig {
    QueueConfig {
        ack_wait: ACK_WAIT,
        dedup_window: Duration::from_secs(60),
        ..QueueConfig::default()
    }
}

/// A message whose payload names its id.
pub fn message(id: &str) -> Message {
    Message {
        id: id.to_owned(),
        payload: Bytes::from(format!("payload of {id}")),
    }
}

/// Publishes `message(id)` and asserts it was stored.
pub async fn publish_new(queue: &dyn WorkQueue, id: &str) {
    let published = queue.publish(message(id)).await;
    assert!(
        matches!(published, Ok(Published::Stored)),
        "publish of {id}: {published:?}"
    );
}

/// Fetches until `want` deliveries arrived or `within` passed; settles none of them.
pub async fn fetch_n(queue: &dyn WorkQueue, want: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut deliveries = Vec::new();
    while deliveries.len() < want {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let batch = queue
            .fetch(want - deliveries.len(), deadline - now)
            .await
            .expect("fetch");
        deliveries.extend(batch);
    }
    deliveries
}

/// Fetches exactly one delivery within `within`, or fails the test.
pub async fn fetch_one(queue: &dyn WorkQueue, within: Duration) -> Delivery {
    let mut deliveries = fetch_n(queue, 1, within).await;
    assert_eq!(
        deliveries.len(),
        1,
        "expected one delivery within {within:?}"
    );
    deliveries.remove(0)
}

/// Asserts that fetching for `period` delivers nothing.
pub async fn assert_nothing_delivered_for(queue: &dyn WorkQueue, period: Duration) {
    let deadline = Instant::now() + period;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let deliveries = queue.fetch(10, deadline - now).await.expect("fetch");
        let unexpected: Vec<(String, u64)> = deliveries
            .iter()
            .map(|d| (d.message.id.clone(), d.attempt))
            .collect();
        assert!(
            unexpected.is_empty(),
            "expected nothing for {period:?}, got (id, attempt) {unexpected:?}"
        );
    }
}

/// Fetches and acks everything delivered during `period`; returns (id, attempt) in order.
pub async fn ack_everything_for(queue: &dyn WorkQueue, period: Duration) -> Vec<(String, u64)> {
    let deadline = Instant::now() + period;
    let mut seen = Vec::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return seen;
        }
        for delivery in queue.fetch(10, deadline - now).await.expect("fetch") {
            seen.push((delivery.message.id.clone(), delivery.attempt));
            delivery.ack().await.expect("ack");
        }
    }
}

/// A dead letter whose record names its id and time, with bytes that are not UTF-8 (the record
/// is opaque: stored and returned exactly).
pub fn dead_letter(id: &str, failed_at_ms: u64) -> DeadLetter {
    let mut record = format!("{{\"id\":\"{id}\",\"failed_at\":{failed_at_ms}}}").into_bytes();
    record.extend_from_slice(&[0x00, 0xff, 0xfe, b'\n']);
    DeadLetter {
        id: id.to_owned(),
        failed_at_ms,
        record: Bytes::from(record),
    }
}

/// Keeps `letter`, or fails the test.
pub async fn put_letter(queue: &dyn WorkQueue, letter: &DeadLetter) {
    queue
        .put_dead_letter(letter.clone())
        .await
        .unwrap_or_else(|e| panic!("put_dead_letter {}: {e:?}", letter.id));
}

/// The ids of every dead letter, in listing order.
pub async fn dead_letter_ids(queue: &dyn WorkQueue) -> Vec<String> {
    queue
        .dead_letters()
        .await
        .expect("dead_letters")
        .into_iter()
        .map(|letter| letter.id)
        .collect()
}

/// Asserts `delivery` is the first delivery of `message(id)`.
fn assert_first_delivery_of(delivery: &Delivery, id: &str) {
    assert_eq!(delivery.message, message(id), "delivered message");
    assert_eq!(delivery.attempt, 1, "attempt of {id}");
}

pub async fn published_messages_are_delivered_with_id_payload_and_attempt_one<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    for id in ["call-a", "call-b", "call-c"] {
        publish_new(&*queue, id).await;
    }

    let deliveries = fetch_n(&*queue, 3, EXPECTED_WITHIN).await;

    let ids: Vec<&str> = deliveries.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["call-a", "call-b", "call-c"], "oldest first");
    for (delivery, id) in deliveries.iter().zip(["call-a", "call-b", "call-c"]) {
        assert_first_delivery_of(delivery, id);
    }
    for delivery in deliveries {
        delivery.ack().await.expect("ack");
    }
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

pub async fn a_duplicate_id_within_the_dedup_window_is_stored_once<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let first = Message {
        id: "call-1".into(),
        payload: Bytes::from_static(b"first"),
    };
    let second = Message {
        id: "call-1".into(),
        payload: Bytes::from_static(b"second"),
    };

    assert_eq!(
        queue.publish(first.clone()).await.expect("publish"),
        Published::Stored
    );
    assert_eq!(
        queue.publish(second.clone()).await.expect("publish"),
        Published::Duplicate
    );
    assert_eq!(queue.pending().await.expect("pending"), 1);

    let delivery = fetch_one(&*queue, EXPECTED_WITHIN).await;
    assert_eq!(
        delivery.message, first,
        "the first publish is the one stored"
    );
    assert_eq!(delivery.attempt, 1);
    delivery.ack().await.expect("ack");

    // The window, not the message's presence, decides: acked, the id is still remembered.
    assert_eq!(
        queue.publish(second).await.expect("publish"),
        Published::Duplicate
    );
    assert_eq!(queue.pending().await.expect("pending"), 0);
    assert_nothing_delivered_for(&*queue, Duration::from_millis(300)).await;
}

pub async fn a_batch_is_answered_per_message_in_order_and_delivered_oldest_first<B: Backend>() {
    let env = B::new().await;
    let limit = 1024;
    let queue = env
        .open(QueueConfig {
            max_payload_bytes: limit,
            ..config()
        })
        .await;
    publish_new(&*queue, "call-earlier").await;
    let too_large = Message {
        id: "call-too-large".into(),
        payload: Bytes::from(vec![b'x'; limit + 1]),
    };
    let batch = vec![
        (message("call-b1"), None),
        (message("call-earlier"), None),
        (too_large, None),
        (message("call-b2"), None),
        (message("call-b1"), None),
    ];

    let answers = queue.publish_batch(batch).await;

    let shown: Vec<String> = answers
        .iter()
        .map(|answer| match answer {
            Ok(receipt) => format!("{:?}", receipt.published),
            Err(Error::TooLarge { .. }) => "TooLarge".to_owned(),
            Err(e) => format!("unexpected error: {e}"),
        })
        .collect();
    assert_eq!(
        shown,
        ["Stored", "Duplicate", "TooLarge", "Stored", "Duplicate"],
        "one answer per message, in order (a repeat inside the batch is a duplicate too)"
    );
    let seq = |i: usize| answers[i].as_ref().ok().and_then(|r| r.seq);
    assert!(seq(0).is_some() && seq(3).is_some() && seq(0) < seq(3));
    assert!(
        queue
            .is_outstanding(seq(3).unwrap())
            .await
            .expect("outstanding"),
        "a message of the batch is tracked like any other"
    );
    assert_eq!(queue.pending().await.expect("pending"), 3);
    let ids: Vec<String> = fetch_n(&*queue, 3, EXPECTED_WITHIN)
        .await
        .into_iter()
        .map(|d| d.message.id)
        .collect();
    assert_eq!(ids, ["call-earlier", "call-b1", "call-b2"], "oldest first");
    assert!(queue.publish_batch(Vec::new()).await.is_empty());
}

pub async fn fetch_waits_for_a_publish_instead_of_returning_empty<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let wait = Duration::from_secs(2);
    let fetcher = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            let deliveries = queue.fetch(1, wait).await.expect("fetch");
            (deliveries, Instant::now())
        })
    };
    // Let the fetch start waiting before anything is published.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let published_at = Instant::now();
    publish_new(&*queue, "call-late").await;
    let (deliveries, returned_at) = fetcher.await.expect("fetch task");

    assert_eq!(deliveries.len(), 1, "the waiting fetch gets the message");
    assert_first_delivery_of(&deliveries[0], "call-late");
    let after_publish = returned_at - published_at;
    assert!(
        after_publish < Duration::from_secs(1),
        "fetch returned {after_publish:?} after the publish: it should wake on the publish, \
         not at the end of its {wait:?} wait"
    );
}

pub async fn fetch_returns_empty_after_its_wait_when_nothing_is_queued<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let wait = Duration::from_millis(500);

    let started = Instant::now();
    let deliveries = queue.fetch(10, wait).await.expect("fetch");
    let waited = started.elapsed();

    assert!(deliveries.is_empty());
    assert!(
        waited + CLOCK_SLACK >= wait,
        "returned after {waited:?}, before its {wait:?} wait"
    );
    assert!(
        waited < wait + PROMPTLY,
        "returned after {waited:?}, long after its {wait:?} wait"
    );
}

pub async fn an_acked_message_is_never_delivered_again<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    publish_new(&*queue, "call-done").await;

    let delivery = fetch_one(&*queue, EXPECTED_WITHIN).await;
    assert_first_delivery_of(&delivery, "call-done");
    delivery.ack().await.expect("ack");

    assert_eq!(queue.pending().await.expect("pending"), 0);
    // Longer than the lease it had: an unacked message would be back by now.
    assert_nothing_delivered_for(&*queue, ACK_WAIT + ACK_WAIT / 2).await;
}

pub async fn an_unsettled_delivery_is_redelivered_after_its_lease_with_attempt_two<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    publish_new(&*queue, "call-slow").await;

    let leased_at = Instant::now();
    let first = fetch_one(&*queue, EXPECTED_WITHIN).await;
    assert_first_delivery_of(&first, "call-slow");

    // `first` is held, unsettled, while its lease runs out.
    let second = fetch_one(&*queue, ACK_WAIT + PROMPTLY + EXPECTED_WITHIN).await;
    let after = leased_at.elapsed();
    assert!(
        after + CLOCK_SLACK >= ACK_WAIT,
        "redelivered after {after:?}, within the lease"
    );
    assert!(
        after < ACK_WAIT + PROMPTLY + EXPECTED_WITHIN,
        "redelivered after {after:?}"
    );
    assert_eq!(second.message, message("call-slow"));
    assert_eq!(second.attempt, 2);

    second.ack().await.expect("ack");
    assert_eq!(queue.pending().await.expect("pending"), 0);
    drop(first);
}

pub async fn a_retry_after_delay_is_not_delivered_early_and_then_is_delivered<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    publish_new(&*queue, "call-retry").await;
    let delivery = fetch_one(&*queue, EXPECTED_WITHIN).await;
    assert_first_delivery_of(&delivery, "call-retry");
    let delay = Duration::from_millis(500);

    let retried_at = Instant::now();
    delivery.retry_after(delay).await.expect("retry_after");
    let again = fetch_one(&*queue, delay + PROMPTLY).await;
    let after = retried_at.elapsed();

    assert!(
        after + CLOCK_SLACK >= delay,
        "redelivered {after:?} after a {delay:?} retry"
    );
    assert!(
        after < delay + PROMPTLY,
        "redelivered only {after:?} after a {delay:?} retry"
    );
    assert_eq!(again.message, message("call-retry"));
    assert_eq!(again.attempt, 2);
    again.ack().await.expect("ack");
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

pub async fn keep_alive_prevents_redelivery_of_a_long_running_delivery<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    publish_new(&*queue, "call-long").await;
    let delivery = fetch_one(&*queue, EXPECTED_WITHIN).await;
    assert_first_delivery_of(&delivery, "call-long");

    // Three leases long, renewed every third of one; fetching is how the test waits.
    for _ in 0..9 {
        assert_nothing_delivered_for(&*queue, ACK_WAIT / 3).await;
        delivery.keep_alive().await.expect("keep_alive");
    }

    delivery.ack().await.expect("ack");
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

pub async fn a_dead_lettered_message_is_never_delivered_again<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    publish_new(&*queue, "call-poison").await;

    let delivery = fetch_one(&*queue, EXPECTED_WITHIN).await;
    assert_first_delivery_of(&delivery, "call-poison");
    delivery.dead_letter().await.expect("dead_letter");

    assert_eq!(queue.pending().await.expect("pending"), 0);
    assert_nothing_delivered_for(&*queue, ACK_WAIT + ACK_WAIT / 2).await;
}

pub async fn a_tracked_message_is_outstanding_until_acked_or_dead_lettered<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let outstanding = |seq| {
        let queue = queue.clone();
        async move { queue.is_outstanding(seq).await.expect("is_outstanding") }
    };
    let acked = queue
        .publish_tracked(message("call-acked"))
        .await
        .expect("publish");
    assert_eq!(acked.published, Published::Stored);
    let acked_seq = acked.seq.expect("a stored message has a sequence");
    let poison = queue
        .publish_tracked(message("call-poison"))
        .await
        .expect("publish");
    let poison_seq = poison.seq.expect("a stored message has a sequence");
    assert_ne!(acked_seq, poison_seq);
    assert!(
        outstanding(acked_seq).await,
        "waiting counts as outstanding"
    );

    let duplicate = queue
        .publish_tracked(message("call-acked"))
        .await
        .expect("publish");
    assert_eq!(duplicate.published, Published::Duplicate);
    if let Some(seq) = duplicate.seq {
        assert_eq!(
            seq, acked_seq,
            "a duplicate names the message it duplicates"
        );
    }

    for delivery in fetch_n(&*queue, 2, EXPECTED_WITHIN).await {
        let retried = delivery.message.id == "call-acked";
        if retried {
            delivery
                .retry_after(Duration::from_millis(200))
                .await
                .expect("retry");
        } else {
            delivery.dead_letter().await.expect("dead_letter");
        }
    }
    assert!(outstanding(acked_seq).await, "waiting for a retry counts");
    assert!(!outstanding(poison_seq).await, "a dead letter is settled");

    let again = fetch_one(&*queue, EXPECTED_WITHIN).await;
    assert_eq!(again.message.id, "call-acked");
    assert!(outstanding(acked_seq).await, "leased counts");
    again.ack().await.expect("ack");
    assert!(!outstanding(acked_seq).await, "an acked message is settled");
}

pub async fn pending_counts_stored_unsettled_messages<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let pending = || async { queue.pending().await.expect("pending") };
    assert_eq!(pending().await, 0);

    for id in ["call-a", "call-b", "call-c"] {
        publish_new(&*queue, id).await;
    }
    assert_eq!(pending().await, 3);
    assert_eq!(
        queue.publish(message("call-a")).await.expect("publish"),
        Published::Duplicate
    );
    assert_eq!(pending().await, 3, "a duplicate is not stored");

    let mut deliveries = fetch_n(&*queue, 2, EXPECTED_WITHIN).await;
    assert_eq!(deliveries.len(), 2);
    assert_eq!(pending().await, 3, "in flight is still pending");

    let b = deliveries.pop().expect("second delivery");
    let a = deliveries.pop().expect("first delivery");
    a.ack().await.expect("ack");
    assert_eq!(pending().await, 2, "acked");
    b.dead_letter().await.expect("dead_letter");
    assert_eq!(pending().await, 1, "dead-lettered");

    let c = fetch_one(&*queue, EXPECTED_WITHIN).await;
    assert_first_delivery_of(&c, "call-c");
    c.retry_after(Duration::from_secs(30))
        .await
        .expect("retry_after");
    assert_eq!(pending().await, 1, "waiting for a retry is still pending");
}

pub async fn nothing_published_is_lost_across_a_restart<B: Backend>() {
    let env = B::new().await;
    let ids: Vec<String> = (0..20).map(|i| format!("call-{i:02}")).collect();
    {
        let queue = env.open(config()).await;
        for id in &ids {
            publish_new(&*queue, id).await;
        }
    }

    let queue = env.open(config()).await;
    assert_eq!(queue.pending().await.expect("pending"), ids.len() as u64);
    let deliveries = fetch_n(&*queue, ids.len(), EXPECTED_WITHIN).await;

    let delivered: BTreeSet<&str> = deliveries.iter().map(|d| d.message.id.as_str()).collect();
    let published: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(delivered, published);
    assert_eq!(deliveries.len(), ids.len(), "each delivered once");
    for delivery in &deliveries {
        assert_first_delivery_of(delivery, &delivery.message.id);
    }
    for delivery in deliveries {
        delivery.ack().await.expect("ack");
    }
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

pub async fn an_acked_message_stays_gone_after_a_restart<B: Backend>() {
    let env = B::new().await;
    {
        let queue = env.open(config()).await;
        publish_new(&*queue, "call-done").await;
        let done = fetch_one(&*queue, EXPECTED_WITHIN).await;
        assert_first_delivery_of(&done, "call-done");
        done.ack().await.expect("ack");
        publish_new(&*queue, "call-queued").await;
    }

    let queue = env.open(config()).await;
    assert_eq!(queue.pending().await.expect("pending"), 1);
    // Longer than a lease, so anything that came back would be seen.
    let seen = ack_everything_for(&*queue, ACK_WAIT + ACK_WAIT / 2).await;
    assert_eq!(seen, [("call-queued".to_owned(), 1)]);
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

pub async fn deliveries_held_by_a_dead_process_are_handed_out_again_after_their_lease<
    B: Backend,
>() {
    let env = B::new().await;
    let leased_at;
    {
        let queue = env.open(config()).await;
        publish_new(&*queue, "call-orphaned").await;
        leased_at = Instant::now();
        let delivery = fetch_one(&*queue, EXPECTED_WITHIN).await;
        assert_first_delivery_of(&delivery, "call-orphaned");
        // The process dies holding it: neither the delivery nor the client is settled.
        drop(delivery);
    }

    let queue = env.open(config()).await;
    assert_eq!(queue.pending().await.expect("pending"), 1);
    let again = fetch_one(&*queue, ACK_WAIT + PROMPTLY + EXPECTED_WITHIN).await;
    let after = leased_at.elapsed();

    assert!(
        after + CLOCK_SLACK >= ACK_WAIT,
        "handed out again {after:?} after, within its lease"
    );
    assert_eq!(again.message, message("call-orphaned"));
    assert_eq!(again.attempt, 2);
    again.ack().await.expect("ack");
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

pub async fn oversized_payloads_are_refused<B: Backend>() {
    let env = B::new().await;
    let limit = 1024;
    let queue = env
        .open(QueueConfig {
            max_payload_bytes: limit,
            ..config()
        })
        .await;
    let sized = |id: &str, size: usize| Message {
        id: id.to_owned(),
        payload: Bytes::from(vec![b'x'; size]),
    };

    let refused = queue.publish(sized("call-big", limit + 1)).await;
    assert!(
        matches!(refused, Err(Error::TooLarge { size, limit: l }) if size == limit + 1 && l == limit),
        "publish of {} bytes: {refused:?}",
        limit + 1
    );
    assert_eq!(
        queue
            .publish(sized("call-fits", limit))
            .await
            .expect("publish at the limit"),
        Published::Stored
    );
    assert_eq!(queue.pending().await.expect("pending"), 1);
    // The refused message was not remembered for deduplication either.
    assert_eq!(
        queue.publish(sized("call-big", 10)).await.expect("publish"),
        Published::Stored
    );
    assert_eq!(queue.pending().await.expect("pending"), 2);
}

pub async fn concurrent_consumers_never_get_the_same_message_at_once<B: Backend>() {
    let env = B::new().await;
    // A lease no prompt ack comes near, so any second delivery is a bug.
    let queue = env
        .open(QueueConfig {
            ack_wait: Duration::from_secs(10),
            ..config()
        })
        .await;
    let ids: Vec<String> = (0..50).map(|i| format!("call-{i:02}")).collect();
    for id in &ids {
        publish_new(&*queue, id).await;
    }

    let delivered = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let delivered = Arc::clone(&delivered);
            let total = ids.len();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if delivered.lock().expect("lock").len() >= total {
                        return;
                    }
                    let batch = queue
                        .fetch(5, Duration::from_millis(500))
                        .await
                        .expect("fetch");
                    for delivery in batch {
                        delivered
                            .lock()
                            .expect("lock")
                            .push((delivery.message.id.clone(), delivery.attempt));
                        delivery.ack().await.expect("ack");
                    }
                }
            })
        })
        .collect();
    for consumer in consumers {
        consumer.await.expect("consumer task");
    }

    let delivered = delivered.lock().expect("lock").clone();
    let unique: BTreeSet<&str> = delivered.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(delivered.len(), ids.len(), "deliveries: {delivered:?}");
    assert_eq!(
        unique,
        ids.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    assert!(
        delivered.iter().all(|(_, attempt)| *attempt == 1),
        "{delivered:?}"
    );
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

pub async fn a_dead_letter_is_kept_and_listed_newest_first<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    assert!(queue.dead_letters().await.expect("dead_letters").is_empty());
    // Put in neither id nor time order.
    let middle = dead_letter("call-b", 1_700_000_002_000);
    let oldest = dead_letter("call-c", 1_700_000_001_000);
    let newest = dead_letter("call-a", 1_700_000_003_000);
    for letter in [&middle, &oldest, &newest] {
        put_letter(&*queue, letter).await;
    }

    let listed = queue.dead_letters().await.expect("dead_letters");
    assert_eq!(
        listed,
        [newest.clone(), middle.clone(), oldest.clone()],
        "newest first, each exactly as put"
    );
    assert_eq!(
        queue.dead_letter("call-b").await.expect("dead_letter"),
        Some(middle)
    );
    assert_eq!(
        queue
            .dead_letter("call-unknown")
            .await
            .expect("dead_letter"),
        None
    );
    // The letters are beside the queue, not in it.
    assert_eq!(queue.pending().await.expect("pending"), 0);
    assert_nothing_delivered_for(&*queue, Duration::from_millis(200)).await;
}

pub async fn a_dead_letter_with_the_same_id_replaces_the_earlier_one<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let other = dead_letter("call-other", 1_700_000_002_000);
    let first = DeadLetter {
        record: Bytes::from_static(b"first record"),
        ..dead_letter("call-1", 1_700_000_001_000)
    };
    put_letter(&*queue, &first).await;
    put_letter(&*queue, &other).await;
    // Put again later (a redelivery given up on again): newer, with a different record.
    let second = DeadLetter {
        record: Bytes::from_static(b"second record"),
        ..dead_letter("call-1", 1_700_000_003_000)
    };
    put_letter(&*queue, &second).await;

    assert_eq!(
        queue.dead_letters().await.expect("dead_letters"),
        [second.clone(), other],
        "one letter per id, listed at its new time"
    );
    assert_eq!(
        queue.dead_letter("call-1").await.expect("dead_letter"),
        Some(second)
    );
}

pub async fn removing_and_purging_dead_letters<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    assert_eq!(
        queue.purge_dead_letters().await.expect("purge"),
        0,
        "nothing to purge"
    );
    for (i, id) in ["call-a", "call-b", "call-c", "call-d"]
        .into_iter()
        .enumerate()
    {
        put_letter(&*queue, &dead_letter(id, 1_700_000_000_000 + i as u64)).await;
    }

    assert!(queue.remove_dead_letter("call-b").await.expect("remove"));
    assert!(
        !queue.remove_dead_letter("call-b").await.expect("remove"),
        "already removed"
    );
    assert!(
        !queue
            .remove_dead_letter("call-unknown")
            .await
            .expect("remove"),
        "never there"
    );
    assert_eq!(
        queue.dead_letter("call-b").await.expect("dead_letter"),
        None
    );
    assert_eq!(
        dead_letter_ids(&*queue).await,
        ["call-d", "call-c", "call-a"]
    );

    assert_eq!(queue.purge_dead_letters().await.expect("purge"), 3);
    assert!(dead_letter_ids(&*queue).await.is_empty());
    assert_eq!(
        queue.dead_letter("call-a").await.expect("dead_letter"),
        None
    );
    assert_eq!(queue.purge_dead_letters().await.expect("purge"), 0);

    // The store is usable after a purge.
    let after = dead_letter("call-e", 1_700_000_009_000);
    put_letter(&*queue, &after).await;
    assert_eq!(queue.dead_letters().await.expect("dead_letters"), [after]);
}

pub async fn dead_letters_survive_a_restart<B: Backend>() {
    let env = B::new().await;
    let kept = dead_letter("call-kept", 1_700_000_002_000);
    let older = dead_letter("call-older", 1_700_000_001_000);
    {
        let queue = env.open(config()).await;
        put_letter(&*queue, &older).await;
        put_letter(&*queue, &kept).await;
        put_letter(&*queue, &dead_letter("call-removed", 1_700_000_003_000)).await;
        assert!(
            queue
                .remove_dead_letter("call-removed")
                .await
                .expect("remove")
        );
    }

    let queue = env.open(config()).await;
    assert_eq!(
        queue.dead_letters().await.expect("dead_letters"),
        [kept.clone(), older],
        "the letters kept, and not the one removed"
    );
    assert_eq!(
        queue.dead_letter("call-kept").await.expect("dead_letter"),
        Some(kept)
    );
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

/// A ledger row of function `echo.fns` in state `queued`, whose record names its id and holds
/// bytes that are not UTF-8 (the record is opaque).
pub fn row(id: &str, created_at_ms: u64) -> LedgerRow {
    let mut record = format!("{{\"id\":\"{id}\"}}").into_bytes();
    record.extend_from_slice(&[0x00, 0xff, b'\n']);
    LedgerRow {
        created_at_ms,
        function: "echo.fns".into(),
        state: "queued".into(),
        record: Bytes::from(record),
    }
}

/// Every row, newest first.
pub fn everything() -> LedgerQuery {
    LedgerQuery {
        function: None,
        state: None,
        limit: 1000,
    }
}

/// An update that writes `row` whatever is there.
pub fn put(row: LedgerRow, result: Option<Bytes>) -> LedgerUpdate {
    Arc::new(move |_| LedgerChange::Put {
        row: row.clone(),
        result: result.clone(),
    })
}

/// Publishes `message(id)` with its row, or fails the test.
pub async fn publish_recorded(queue: &dyn WorkQueue, id: &str, row: LedgerRow) -> Published {
    queue
        .publish_recorded(message(id), Some(row))
        .await
        .unwrap_or_else(|e| panic!("publish_recorded {id}: {e:?}"))
        .published
}

/// The row of `id`, or fails the test.
pub async fn ledger_row(queue: &dyn WorkQueue, id: &str) -> Option<LedgerRow> {
    queue
        .ledger_get(id)
        .await
        .unwrap_or_else(|e| panic!("ledger_get {id}: {e:?}"))
}

/// The creation times of the rows `query` lists, in listing order.
pub async fn listed_times(queue: &dyn WorkQueue, query: &LedgerQuery) -> Vec<u64> {
    queue
        .ledger_list(query)
        .await
        .expect("ledger_list")
        .iter()
        .map(|row| row.created_at_ms)
        .collect()
}

pub async fn a_recorded_publish_writes_its_row_once_and_a_duplicate_leaves_it<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let original = row("call-1", 1_700_000_000_000);
    assert_eq!(ledger_row(&*queue, "call-1").await, None);

    assert_eq!(
        publish_recorded(&*queue, "call-1", original.clone()).await,
        Published::Stored
    );
    assert_eq!(ledger_row(&*queue, "call-1").await, Some(original.clone()));

    let other = LedgerRow {
        state: "running".into(),
        ..row("call-1", 1_700_000_009_000)
    };
    assert_eq!(
        publish_recorded(&*queue, "call-1", other).await,
        Published::Duplicate
    );
    assert_eq!(
        ledger_row(&*queue, "call-1").await,
        Some(original.clone()),
        "a duplicate leaves the original's row"
    );
    assert_eq!(
        queue.ledger_list(&everything()).await.expect("ledger_list"),
        [original],
        "one row"
    );

    // A publish without a row writes none; the message is queued all the same.
    let receipt = queue
        .publish_recorded(message("call-2"), None)
        .await
        .expect("publish_recorded");
    assert_eq!(receipt.published, Published::Stored);
    assert_eq!(ledger_row(&*queue, "call-2").await, None);
    assert_eq!(queue.pending().await.expect("pending"), 2);
    let ids: Vec<String> = fetch_n(&*queue, 2, EXPECTED_WITHIN)
        .await
        .into_iter()
        .map(|d| d.message.id)
        .collect();
    assert_eq!(ids, ["call-1", "call-2"]);
}

pub async fn a_batch_writes_the_rows_of_the_messages_it_stored<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let earlier = row("call-earlier", 1_700_000_000_000);
    publish_recorded(&*queue, "call-earlier", earlier.clone()).await;

    let answers = queue
        .publish_batch(vec![
            (message("call-b1"), Some(row("call-b1", 1_700_000_001_000))),
            (message("call-b2"), None),
            (
                message("call-earlier"),
                Some(row("call-earlier", 1_700_000_002_000)),
            ),
            (message("call-b3"), Some(row("call-b3", 1_700_000_003_000))),
        ])
        .await;

    let published: Vec<Published> = answers
        .into_iter()
        .map(|answer| answer.expect("publish").published)
        .collect();
    assert_eq!(
        published,
        [
            Published::Stored,
            Published::Stored,
            Published::Duplicate,
            Published::Stored
        ]
    );
    assert_eq!(
        ledger_row(&*queue, "call-b1").await,
        Some(row("call-b1", 1_700_000_001_000))
    );
    assert_eq!(ledger_row(&*queue, "call-b2").await, None);
    assert_eq!(ledger_row(&*queue, "call-earlier").await, Some(earlier));
    assert_eq!(
        listed_times(&*queue, &everything()).await,
        [1_700_000_003_000, 1_700_000_001_000, 1_700_000_000_000]
    );
}

/// A row whose record is a counter.
fn counter(value: u64) -> LedgerRow {
    LedgerRow {
        created_at_ms: 1_700_000_000_000,
        function: "echo.fns".into(),
        state: "running".into(),
        record: Bytes::from(value.to_string()),
    }
}

fn counted(row: &LedgerRow) -> u64 {
    std::str::from_utf8(&row.record)
        .expect("a counter")
        .parse()
        .expect("a counter")
}

pub async fn concurrent_ledger_updates_all_land<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    publish_recorded(&*queue, "call-1", counter(0)).await;
    let increment: LedgerUpdate = Arc::new(|current: Option<&LedgerRow>| {
        let current = current.expect("the row is there");
        LedgerChange::Put {
            row: counter(counted(current) + 1),
            result: None,
        }
    });

    let updates: Vec<_> = (0..20)
        .map(|i| {
            let queue = Arc::clone(&queue);
            let increment = Arc::clone(&increment);
            tokio::spawn(async move {
                queue
                    .ledger_update("call-1", increment, i % 2 == 0)
                    .await
                    .expect("ledger_update")
                    .expect("a row after the update")
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for update in updates {
        seen.insert(counted(&update.await.expect("update task")));
    }

    assert_eq!(
        seen,
        (1..=20).collect::<BTreeSet<u64>>(),
        "each update saw the one before it"
    );
    assert_eq!(ledger_row(&*queue, "call-1").await, Some(counter(20)));
}

pub async fn an_update_sees_the_current_row_and_may_keep_it<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = {
        let seen = Arc::clone(&seen);
        let update: LedgerUpdate = Arc::new(move |current: Option<&LedgerRow>| {
            seen.lock().expect("lock").push(current.cloned());
            LedgerChange::Keep
        });
        update
    };

    // No row: the update is told so, and keeping nothing leaves nothing.
    assert_eq!(
        queue
            .ledger_update("call-1", Arc::clone(&keep), false)
            .await
            .expect("ledger_update"),
        None
    );
    assert_eq!(ledger_row(&*queue, "call-1").await, None);

    // An update may create the row (a call queued by another gateway, rebuilt by the worker).
    let created = row("call-1", 1_700_000_000_000);
    assert_eq!(
        queue
            .ledger_update("call-1", put(created.clone(), None), true)
            .await
            .expect("ledger_update"),
        Some(created.clone())
    );
    assert_eq!(
        queue
            .ledger_update("call-1", keep, false)
            .await
            .expect("ledger_update"),
        Some(created.clone()),
        "keep answers the row as it is"
    );
    assert_eq!(
        *seen.lock().expect("lock"),
        [None, Some(created.clone())],
        "each update was shown the row as it was"
    );
    assert_eq!(ledger_row(&*queue, "call-1").await, Some(created));
    // The row is beside the queue, not in it.
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

pub async fn ledger_lists_are_newest_first_filtered_and_limited<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let base = 1_700_000_000_000;
    // Published in neither time nor id order.
    let rows = [
        ("call-c", 3, "echo.fns", "queued"),
        ("call-a", 1, "echo.fns", "running"),
        ("call-e", 5, "other.fns", "queued"),
        ("call-b", 2, "other.fns", "succeeded"),
        ("call-d", 4, "echo.fns", "succeeded"),
        ("call-f", 6, "echo.fns", "queued"),
    ];
    for (id, at, function, state) in rows {
        let row = LedgerRow {
            function: function.into(),
            state: state.into(),
            ..row(id, base + at)
        };
        publish_recorded(&*queue, id, row).await;
    }
    let times = |ats: &[u64]| ats.iter().map(|at| base + at).collect::<Vec<_>>();

    assert_eq!(
        listed_times(&*queue, &everything()).await,
        times(&[6, 5, 4, 3, 2, 1])
    );
    let listed = queue.ledger_list(&everything()).await.expect("ledger_list");
    assert_eq!(listed[0], row("call-f", base + 6), "rows as written");
    let echo = LedgerQuery {
        function: Some("echo.fns".into()),
        ..everything()
    };
    assert_eq!(listed_times(&*queue, &echo).await, times(&[6, 4, 3, 1]));
    let queued = LedgerQuery {
        state: Some("queued".into()),
        ..everything()
    };
    assert_eq!(listed_times(&*queue, &queued).await, times(&[6, 5, 3]));
    let queued_echo = LedgerQuery {
        state: Some("queued".into()),
        ..echo.clone()
    };
    assert_eq!(listed_times(&*queue, &queued_echo).await, times(&[6, 3]));
    let newest_two = LedgerQuery {
        limit: 2,
        ..everything()
    };
    assert_eq!(listed_times(&*queue, &newest_two).await, times(&[6, 5]));
    let nobody = LedgerQuery {
        function: Some("nobody.fns".into()),
        ..everything()
    };
    assert!(listed_times(&*queue, &nobody).await.is_empty());

    // A state change moves the row between filters, not in the order.
    queue
        .ledger_update(
            "call-a",
            put(
                LedgerRow {
                    state: "queued".into(),
                    ..row("call-a", base + 1)
                },
                None,
            ),
            false,
        )
        .await
        .expect("ledger_update");
    assert_eq!(listed_times(&*queue, &queued_echo).await, times(&[6, 3, 1]));
    assert_eq!(
        listed_times(&*queue, &everything()).await,
        times(&[6, 5, 4, 3, 2, 1])
    );
}

/// Waits at most `within` for the next item of `watch`.
async fn woken(watch: &mut courier_queue::LedgerWatch, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, watch.next()).await,
        Ok(Some(()))
    )
}

pub async fn a_ledger_watch_wakes_on_a_change_of_its_row<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;

    // Watched before the row exists: its creation by a publish wakes it.
    let mut watch = queue.ledger_watch("call-1").await.expect("ledger_watch");
    let mut other = queue
        .ledger_watch("call-other")
        .await
        .expect("ledger_watch");
    publish_recorded(&*queue, "call-1", row("call-1", 1_700_000_000_000)).await;
    assert!(
        woken(&mut watch, EXPECTED_WITHIN).await,
        "woken by the publish"
    );

    // Then by an update from elsewhere, made while the watcher waits.
    let updater = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let running = LedgerRow {
                state: "running".into(),
                ..row("call-1", 1_700_000_000_000)
            };
            queue
                .ledger_update("call-1", put(running, None), false)
                .await
                .expect("ledger_update");
        })
    };
    assert!(
        woken(&mut watch, EXPECTED_WITHIN).await,
        "woken by the update"
    );
    updater.await.expect("updater");
    assert_eq!(
        ledger_row(&*queue, "call-1").await.map(|row| row.state),
        Some("running".to_owned())
    );
    // Nothing happened to the other row (a spurious wake would be allowed, but there is no
    // reason for one here).
    assert!(!woken(&mut other, Duration::from_millis(200)).await);
}

pub async fn an_expired_row_is_gone_from_get_list_and_result<B: Backend>() {
    let env = B::new().await;
    let retention = Duration::from_millis(1500);
    let queue = env
        .open(QueueConfig {
            ledger: LedgerConfig {
                retention,
                ..LedgerConfig::default()
            },
            ..config()
        })
        .await;
    publish_recorded(&*queue, "call-old", row("call-old", 1_700_000_000_000)).await;
    queue
        .ledger_update(
            "call-old",
            put(
                row("call-old", 1_700_000_000_000),
                Some(Bytes::from("kept")),
            ),
            false,
        )
        .await
        .expect("ledger_update");
    // "call-old" last changed before this instant.
    let old_changed = Instant::now();
    publish_recorded(
        &*queue,
        "call-changed",
        row("call-changed", 1_700_000_001_000),
    )
    .await;
    assert_eq!(
        queue
            .ledger_result("call-old")
            .await
            .expect("ledger_result"),
        Some(Bytes::from("kept"))
    );

    // Half-way, "call-changed" changes: its retention starts again.
    tokio::time::sleep_until(old_changed + retention / 2).await;
    let changed = LedgerRow {
        state: "running".into(),
        ..row("call-changed", 1_700_000_001_000)
    };
    // "call-changed" last changed after this instant.
    let changed_at = Instant::now();
    queue
        .ledger_update("call-changed", put(changed.clone(), None), false)
        .await
        .expect("ledger_update");

    tokio::time::sleep_until(old_changed + retention + Duration::from_millis(100)).await;
    assert_eq!(ledger_row(&*queue, "call-old").await, None, "expired");
    assert_eq!(
        queue
            .ledger_result("call-old")
            .await
            .expect("ledger_result"),
        None,
        "the result went with its row"
    );
    let changed_age = changed_at.elapsed();
    assert_eq!(
        ledger_row(&*queue, "call-changed").await,
        Some(changed.clone()),
        "changed {changed_age:?} ago, within its retention (unless the machine was too slow)"
    );
    assert_eq!(
        queue.ledger_list(&everything()).await.expect("ledger_list"),
        [changed]
    );
    // An update of an expired row is shown no row.
    let shown = Arc::new(Mutex::new(Vec::new()));
    let look: LedgerUpdate = {
        let shown = Arc::clone(&shown);
        Arc::new(move |current: Option<&LedgerRow>| {
            shown.lock().expect("lock").push(current.is_some());
            LedgerChange::Keep
        })
    };
    assert_eq!(
        queue
            .ledger_update("call-old", look, false)
            .await
            .expect("ledger_update"),
        None
    );
    assert_eq!(*shown.lock().expect("lock"), [false]);
}

pub async fn beyond_max_records_the_oldest_rows_are_dropped<B: Backend>() {
    let env = B::new().await;
    let queue = env
        .open(QueueConfig {
            ledger: LedgerConfig {
                max_records: 3,
                ..LedgerConfig::default()
            },
            ..config()
        })
        .await;
    let base = 1_700_000_000_000;
    for i in 1..=5 {
        let id = format!("call-{i}");
        publish_recorded(&*queue, &id, row(&id, base + i)).await;
    }

    assert_eq!(
        listed_times(&*queue, &everything()).await,
        [base + 5, base + 4, base + 3]
    );
    assert_eq!(ledger_row(&*queue, "call-1").await, None);
    assert_eq!(ledger_row(&*queue, "call-2").await, None);
    assert_eq!(
        ledger_row(&*queue, "call-3").await,
        Some(row("call-3", base + 3))
    );
    // Only the ledger is capped: every message is still queued.
    assert_eq!(queue.pending().await.expect("pending"), 5);
}

pub async fn kept_results_read_back_byte_for_byte<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let body: Bytes = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    publish_recorded(&*queue, "call-1", row("call-1", 1_700_000_000_000)).await;
    assert_eq!(
        queue.ledger_result("call-1").await.expect("ledger_result"),
        None
    );

    let done = LedgerRow {
        state: "succeeded".into(),
        ..row("call-1", 1_700_000_000_000)
    };
    queue
        .ledger_update("call-1", put(done.clone(), Some(body.clone())), false)
        .await
        .expect("ledger_update");
    assert_eq!(
        queue.ledger_result("call-1").await.expect("ledger_result"),
        Some(body.clone())
    );

    // A later change without a result (the callback's) keeps it.
    queue
        .ledger_update("call-1", put(done.clone(), None), false)
        .await
        .expect("ledger_update");
    assert_eq!(
        queue.ledger_result("call-1").await.expect("ledger_result"),
        Some(body)
    );
    // An empty result is a result.
    queue
        .ledger_update("call-1", put(done, Some(Bytes::new())), false)
        .await
        .expect("ledger_update");
    assert_eq!(
        queue.ledger_result("call-1").await.expect("ledger_result"),
        Some(Bytes::new())
    );
    assert_eq!(
        queue
            .ledger_result("call-unknown")
            .await
            .expect("ledger_result"),
        None
    );
}

pub async fn ledger_rows_and_results_survive_a_restart<B: Backend>() {
    let env = B::new().await;
    let queued = row("call-queued", 1_700_000_000_000);
    let done = LedgerRow {
        state: "succeeded".into(),
        ..row("call-done", 1_700_000_001_000)
    };
    let result = Bytes::from_static(b"{\"status\":200}\x00\xff");
    {
        let queue = env.open(config()).await;
        publish_recorded(&*queue, "call-queued", queued.clone()).await;
        publish_recorded(&*queue, "call-done", row("call-done", 1_700_000_001_000)).await;
        // Not durable: rides on the next durable commit (the close's, here).
        queue
            .ledger_update("call-done", put(done.clone(), Some(result.clone())), false)
            .await
            .expect("ledger_update");
    }

    let queue = env.open(config()).await;
    assert_eq!(
        ledger_row(&*queue, "call-queued").await,
        Some(queued.clone())
    );
    assert_eq!(ledger_row(&*queue, "call-done").await, Some(done.clone()));
    assert_eq!(
        queue
            .ledger_result("call-done")
            .await
            .expect("ledger_result"),
        Some(result)
    );
    assert_eq!(
        queue.ledger_list(&everything()).await.expect("ledger_list"),
        [done, queued]
    );
}

pub async fn with_the_ledger_off_every_ledger_call_says_so<B: Backend>() {
    let env = B::new().await;
    let queue = env
        .open(QueueConfig {
            ledger: LedgerConfig {
                retention: Duration::ZERO,
                ..LedgerConfig::default()
            },
            ..config()
        })
        .await;
    // Publishing with rows works; the rows are ignored.
    assert_eq!(
        publish_recorded(&*queue, "call-1", row("call-1", 1)).await,
        Published::Stored
    );
    let batch = queue
        .publish_batch(vec![(message("call-2"), Some(row("call-2", 2)))])
        .await;
    assert!(matches!(batch[..], [Ok(_)]), "{batch:?}");
    // Both were stored. (JetStream's consumer counts a message just published a moment
    // later, now and then: once seen in CI as 0 right after the two acks.)
    let until = tokio::time::Instant::now() + EXPECTED_WITHIN;
    let mut pending = queue.pending().await.expect("pending");
    while pending < 2 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        pending = queue.pending().await.expect("pending");
    }
    assert_eq!(pending, 2);

    let off = |outcome: &str, is_off: bool| assert!(is_off, "{outcome}");
    let got = queue.ledger_get("call-1").await;
    off(
        &format!("ledger_get: {got:?}"),
        matches!(got, Err(Error::LedgerOff)),
    );
    let listed = queue.ledger_list(&everything()).await;
    off(
        &format!("ledger_list: {listed:?}"),
        matches!(listed, Err(Error::LedgerOff)),
    );
    let result = queue.ledger_result("call-1").await;
    off(
        &format!("ledger_result: {result:?}"),
        matches!(result, Err(Error::LedgerOff)),
    );
    let updated = queue
        .ledger_update("call-1", put(row("call-1", 1), None), true)
        .await;
    off(
        &format!("ledger_update: {updated:?}"),
        matches!(updated, Err(Error::LedgerOff)),
    );
    let watched = queue.ledger_watch("call-1").await;
    off(
        "ledger_watch did not say the ledger is off",
        matches!(watched, Err(Error::LedgerOff)),
    );
    // A begun fetch still hands out every message; each row's answer says the ledger is off.
    let begun = fetch_begun_n(&*queue, 2).await;
    assert_eq!(begun.len(), 2, "every message is handed out");
    for begun in begun {
        off(
            &format!("fetch_begun row: {:?}", begun.row),
            matches!(begun.row, Err(Error::LedgerOff)),
        );
        let settled = begun
            .delivery
            .settle_recorded(
                &*queue,
                Settlement::Ack,
                "call-1",
                put(row("call-1", 1), None),
            )
            .await;
        off(
            &format!("settle_recorded row: {:?}", settled.row),
            matches!(settled.row, Err(Error::LedgerOff)),
        );
        settled
            .settled
            .expect("the settle works with the ledger off");
    }
    assert_eq!(queue.pending().await.expect("pending"), 0);
}

/// A begin update that marks a row `running` and appends the message's payload to its
/// record; a message without a row gets one whose record is the payload.
pub fn mark_running() -> LedgerBegin {
    Arc::new(|message: &Message, current: Option<&LedgerRow>| {
        let mut row = current
            .cloned()
            .unwrap_or_else(|| row(&message.id, 1_700_000_000_000));
        row.state = "running".into();
        let mut record = row.record.to_vec();
        record.extend_from_slice(&message.payload);
        row.record = Bytes::from(record);
        LedgerChange::Put { row, result: None }
    })
}

/// Fetches with [`mark_running`] until `want` deliveries arrived or [`EXPECTED_WITHIN`]
/// passed (a backend may hand out fewer than asked at once).
pub async fn fetch_begun_n(queue: &dyn WorkQueue, want: usize) -> Vec<courier_queue::Begun> {
    let mut begun = Vec::new();
    let deadline = Instant::now() + EXPECTED_WITHIN;
    while begun.len() < want && Instant::now() < deadline {
        begun.extend(
            queue
                .fetch_begun(want - begun.len(), EXPECTED_WITHIN, mark_running())
                .await
                .expect("fetch_begun"),
        );
    }
    begun
}

pub async fn a_begun_fetch_updates_each_delivered_row_before_answering<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let original = row("call-1", 1_700_000_000_000);
    publish_recorded(&*queue, "call-1", original.clone()).await;
    publish_new(&*queue, "call-2").await;

    let begun = fetch_begun_n(&*queue, 2).await;
    assert_eq!(begun.len(), 2, "both messages are handed out");
    for begun in &begun {
        let id = begun.delivery.message.id.as_str();
        let answered = begun
            .row
            .as_ref()
            .unwrap_or_else(|e| panic!("begin of {id}: {e:?}"))
            .clone()
            .unwrap_or_else(|| panic!("begin of {id} left no row"));
        assert_eq!(answered.state, "running", "{id}");
        assert!(
            answered
                .record
                .ends_with(format!("payload of {id}").as_bytes()),
            "{id}: the update saw the message"
        );
        assert_eq!(
            ledger_row(&*queue, id).await,
            Some(answered),
            "{id}: the answer is the stored row"
        );
    }
    let first = ledger_row(&*queue, "call-1").await.expect("row of call-1");
    assert!(
        first.record.starts_with(&original.record),
        "the update started from the stored row"
    );
}

/// An update that appends `line` and moves a row in state `from` to `to`; keeps any other.
pub fn append(from: &'static str, to: &'static str, line: &'static [u8]) -> LedgerUpdate {
    Arc::new(move |current: Option<&LedgerRow>| match current {
        Some(row) if row.state == from => LedgerChange::Append {
            state: to.into(),
            line: Bytes::from_static(line),
            result: None,
        },
        _ => LedgerChange::Keep,
    })
}

/// A record as stored after `lines` were appended to `created`'s.
pub fn with_lines(created: &LedgerRow, state: &str, lines: &[&[u8]]) -> LedgerRow {
    let mut record = created.record.to_vec();
    for line in lines {
        record.extend_from_slice(line);
    }
    LedgerRow {
        state: state.into(),
        record: Bytes::from(record),
        ..created.clone()
    }
}

pub async fn appended_changes_join_the_record_and_a_cancel_excludes_a_begin<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    let base = 1_700_000_000_000;
    let (first, second) = (row("call-1", base), row("call-2", base + 1));
    publish_recorded(&*queue, "call-1", first.clone()).await;
    publish_recorded(&*queue, "call-2", second.clone()).await;

    // call-2 is cancelled before it is handed out: the answer is the whole row.
    let cancel = append("queued", "cancelled", b"\ncancelled");
    let cancelled = queue
        .ledger_update("call-2", Arc::clone(&cancel), true)
        .await
        .expect("cancel");
    assert_eq!(
        cancelled,
        Some(with_lines(&second, "cancelled", &[b"\ncancelled"]))
    );

    // The begin of each delivery: call-1 starts, call-2 stays cancelled.
    let begin: LedgerBegin = {
        let update = append("queued", "running", b"\nbegun");
        Arc::new(move |_message: &Message, current: Option<&LedgerRow>| update(current))
    };
    let mut begun = Vec::new();
    let deadline = Instant::now() + EXPECTED_WITHIN;
    while begun.len() < 2 && Instant::now() < deadline {
        begun.extend(
            queue
                .fetch_begun(2 - begun.len(), EXPECTED_WITHIN, Arc::clone(&begin))
                .await
                .expect("fetch_begun"),
        );
    }
    assert_eq!(begun.len(), 2, "both messages are handed out");
    for begun in &begun {
        let id = begun.delivery.message.id.as_str();
        let state = begun
            .row
            .as_ref()
            .unwrap_or_else(|e| panic!("begin of {id}: {e:?}"))
            .as_ref()
            .map(|row| row.state.as_str());
        let expected = if id == "call-1" {
            "running"
        } else {
            "cancelled"
        };
        assert_eq!(state, Some(expected), "{id}");
    }
    assert_eq!(
        ledger_row(&*queue, "call-1").await,
        Some(with_lines(&first, "running", &[b"\nbegun"])),
        "the line joins the record as created"
    );

    // Once it runs, a cancel changes nothing and is answered with the whole row.
    let refused = queue
        .ledger_update("call-1", cancel, true)
        .await
        .expect("cancel");
    assert_eq!(refused, Some(with_lines(&first, "running", &[b"\nbegun"])));
    // The attempt's end, and a reader that remembers nothing sees it all.
    queue
        .ledger_update(
            "call-1",
            append("running", "succeeded", b"\nfinished"),
            false,
        )
        .await
        .expect("finish");
    // Opened again (the embedded store's file is one process's): nothing is remembered.
    drop(begun);
    drop(queue);
    let elsewhere = env.open(config()).await;
    let done = with_lines(&first, "succeeded", &[b"\nbegun", b"\nfinished"]);
    assert_eq!(ledger_row(&*elsewhere, "call-1").await, Some(done.clone()));
    let by_state = |state: &str| LedgerQuery {
        function: None,
        state: Some(state.into()),
        limit: 10,
    };
    assert_eq!(
        elsewhere
            .ledger_list(&by_state("succeeded"))
            .await
            .expect("ledger_list"),
        [done],
        "a listed row has its whole record"
    );
    assert_eq!(
        listed_times(&*elsewhere, &by_state("cancelled")).await,
        [base + 1]
    );
    assert!(
        listed_times(&*elsewhere, &by_state("queued"))
            .await
            .is_empty()
    );
}

pub async fn a_recorded_settle_writes_the_row_and_settles<B: Backend>() {
    let env = B::new().await;
    let queue = env.open(config()).await;
    for id in ["acked", "retried", "dead"] {
        publish_recorded(&*queue, id, row(id, 1_700_000_000_000)).await;
    }
    let deliveries = fetch_n(&*queue, 3, EXPECTED_WITHIN).await;
    assert_eq!(deliveries.len(), 3);
    let retry_delay = Duration::from_millis(300);
    let mut retried_at = None;
    for delivery in deliveries {
        let id = delivery.message.id.clone();
        let (settlement, state) = match id.as_str() {
            "acked" => (Settlement::Ack, "succeeded"),
            "retried" => (Settlement::RetryAfter(retry_delay), "retrying"),
            _ => (Settlement::DeadLetter, "dead-lettered"),
        };
        let written = LedgerRow {
            state: state.into(),
            ..row(&id, 1_700_000_000_000)
        };
        if id == "retried" {
            retried_at = Some(Instant::now());
        }
        let done = delivery
            .settle_recorded(&*queue, settlement, &id, put(written.clone(), None))
            .await;
        assert_eq!(done.row.expect("row"), Some(written.clone()), "{id}");
        done.settled.expect("settled");
        assert_eq!(ledger_row(&*queue, &id).await, Some(written), "{id}");
    }
    // Acked and dead-lettered are gone; the retry comes back, not early.
    let again = fetch_n(&*queue, 1, EXPECTED_WITHIN).await;
    let ids: Vec<&str> = again.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["retried"]);
    let waited = retried_at.expect("retried").elapsed();
    assert!(
        waited + CLOCK_SLACK >= retry_delay,
        "the retry came back after {waited:?}, before its {retry_delay:?}"
    );
    again
        .into_iter()
        .next()
        .expect("one")
        .ack()
        .await
        .expect("ack");
    assert_eq!(queue.pending().await.expect("pending"), 0);
}
