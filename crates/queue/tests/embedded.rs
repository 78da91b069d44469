//! The embedded backend: the WorkQueue conformance suite in both durability modes, and what
//! only a file in this process has: exclusive opening, stale settles, the URL form.

mod conformance;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_queue::embedded::EmbeddedQueue;
use courier_queue::{DeadLetter, Error, Message, Published, QueueConfig, WorkQueue};
use tempfile::TempDir;
use tokio::time::Instant;

use conformance::{
    Backend, assert_nothing_delivered_for, config, dead_letter, fetch_n, fetch_one, message,
    publish_new,
};

/// A temporary directory holding one queue file, reopened at the same path each time.
struct EmbeddedBackend {
    dir: TempDir,
    sync_publish: bool,
}

impl EmbeddedBackend {
    fn in_temp_dir(sync_publish: bool) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
            sync_publish,
        }
    }

    fn path(&self) -> PathBuf {
        // A directory that does not exist yet: open creates it.
        self.dir.path().join("state").join("queue.redb")
    }

    async fn open_queue(&self, config: QueueConfig) -> EmbeddedQueue {
        let config = QueueConfig {
            sync_publish: self.sync_publish,
            ..config
        };
        EmbeddedQueue::open(&self.path(), config)
            .await
            .expect("open the embedded queue")
    }
}

/// Publishes are synced on an interval (`sync_publish = false`).
struct IntervalSync(EmbeddedBackend);

/// Every publish is fsynced before it returns (the default).
struct SyncPublish(EmbeddedBackend);

#[async_trait]
impl Backend for IntervalSync {
    async fn new() -> Self {
        Self(EmbeddedBackend::in_temp_dir(false))
    }

    async fn open(&self, config: QueueConfig) -> Arc<dyn WorkQueue> {
        Arc::new(self.0.open_queue(config).await)
    }
}

#[async_trait]
impl Backend for SyncPublish {
    async fn new() -> Self {
        Self(EmbeddedBackend::in_temp_dir(true))
    }

    async fn open(&self, config: QueueConfig) -> Arc<dyn WorkQueue> {
        Arc::new(self.0.open_queue(config).await)
    }
}

mod interval_sync {
    crate::conformance_tests!(super::IntervalSync);
}

mod sync_publish {
    crate::conformance_tests!(super::SyncPublish);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_sync_publishes_are_all_there_after_a_reopen() {
    let env = EmbeddedBackend::in_temp_dir(true);
    let ids: Vec<String> = (0..200).map(|i| format!("call-{i:03}")).collect();
    {
        let queue = Arc::new(env.open_queue(config()).await);
        let publishers: Vec<_> = ids
            .iter()
            .map(|id| {
                let queue = Arc::clone(&queue);
                let message = message(id);
                tokio::spawn(async move { queue.publish(message).await })
            })
            .collect();
        for publisher in publishers {
            assert_eq!(
                publisher.await.expect("publish task").expect("publish"),
                Published::Stored
            );
        }
    }

    let queue = env.open_queue(config()).await;
    assert_eq!(queue.pending().await.unwrap(), ids.len() as u64);
    let deliveries = fetch_n(&queue, ids.len(), Duration::from_secs(5)).await;
    let mut delivered: Vec<&str> = deliveries.iter().map(|d| d.message.id.as_str()).collect();
    delivered.sort_unstable();
    assert_eq!(delivered, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_the_same_file_twice_is_a_storage_error() {
    let env = EmbeddedBackend::in_temp_dir(false);
    let first = env.open_queue(config()).await;

    let second = EmbeddedQueue::open(&env.path(), config()).await;
    let error = second.expect_err("a second open of the same file");
    assert!(matches!(error, Error::Storage { .. }), "{error:?}");
    assert!(error.to_string().contains("already open"), "{error}");

    // The first is unaffected, and once it is closed the file opens again.
    publish_new(&first, "call-1").await;
    first.close().await;
    let reopened = env.open_queue(config()).await;
    assert_eq!(reopened.pending().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_settle_after_the_message_was_handed_out_again_changes_nothing() {
    let env = EmbeddedBackend::in_temp_dir(false);
    let ack_wait = Duration::from_millis(300);
    let queue = env
        .open_queue(QueueConfig {
            ack_wait,
            ..config()
        })
        .await;
    publish_new(&queue, "call-1").await;
    let stale = fetch_one(&queue, Duration::from_secs(5)).await;
    assert_eq!(stale.attempt, 1);
    let current = fetch_one(&queue, ack_wait + Duration::from_secs(5)).await;
    assert_eq!(current.attempt, 2);

    // Each is a no-op reported as success: the message stays leased to `current`.
    stale.keep_alive().await.expect("stale keep_alive");
    stale
        .retry_after(Duration::ZERO)
        .await
        .expect("stale retry_after");
    assert_nothing_delivered_for(&queue, ack_wait / 2).await;
    assert_eq!(queue.pending().await.unwrap(), 1);

    current.ack().await.expect("current ack");
    assert_eq!(queue.pending().await.unwrap(), 0);
    // Settling again after the ack changes nothing either.
    let third = fetch_n(&queue, 1, ack_wait * 2).await;
    assert!(third.is_empty(), "{third:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_ack_does_not_remove_the_redelivered_message() {
    let env = EmbeddedBackend::in_temp_dir(false);
    let ack_wait = Duration::from_millis(300);
    let queue = env
        .open_queue(QueueConfig {
            ack_wait,
            ..config()
        })
        .await;
    publish_new(&queue, "call-1").await;
    let stale = fetch_one(&queue, Duration::from_secs(5)).await;
    let current = fetch_one(&queue, ack_wait + Duration::from_secs(5)).await;

    stale.ack().await.expect("stale ack");
    assert_eq!(
        queue.pending().await.unwrap(),
        1,
        "still there for its current holder"
    );

    current
        .retry_after(Duration::ZERO)
        .await
        .expect("retry_after");
    let third = fetch_one(&queue, Duration::from_secs(5)).await;
    assert_eq!(third.message, message("call-1"));
    assert_eq!(third.attempt, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interval_synced_publish_survives_a_reopen_before_the_interval() {
    let env = EmbeddedBackend::in_temp_dir(false);
    {
        let queue = env.open_queue(config()).await;
        publish_new(&queue, "call-1").await;
        // Dropped at once: the close commits durably.
    }
    let queue = env.open_queue(config()).await;
    let delivery = fetch_one(&queue, Duration::from_secs(5)).await;
    assert_eq!(delivery.message, message("call-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_held_after_the_queue_closed_cannot_be_settled() {
    let env = EmbeddedBackend::in_temp_dir(false);
    let queue = env.open_queue(config()).await;
    publish_new(&queue, "call-1").await;
    let delivery = fetch_one(&queue, Duration::from_secs(5)).await;
    queue.close().await;

    let error = delivery.ack().await.expect_err("ack after close");
    assert!(matches!(error, Error::Storage { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_url_opens_the_embedded_queue_creating_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("queue.redb");
    let url = format!("file://{}", path.display());
    {
        let queue = courier_queue::open(&url, config()).await.expect("open");
        publish_new(&*queue, "call-1").await;
    }
    assert!(path.exists());
    let queue = courier_queue::open(&url, config()).await.expect("reopen");
    assert_eq!(queue.pending().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_is_stored_again_once_the_dedup_window_passed() {
    let env = EmbeddedBackend::in_temp_dir(false);
    let dedup_window = Duration::from_millis(300);
    let queue = env
        .open_queue(QueueConfig {
            dedup_window,
            ..config()
        })
        .await;
    publish_new(&queue, "call-1").await;
    assert_eq!(
        queue.publish(message("call-1")).await.unwrap(),
        Published::Duplicate
    );

    tokio::time::sleep(dedup_window + Duration::from_millis(50)).await;
    // This publish also prunes the expired entry; the id is new again.
    assert_eq!(
        queue.publish(message("call-1")).await.unwrap(),
        Published::Stored
    );
    assert_eq!(
        queue.publish(message("call-1")).await.unwrap(),
        Published::Duplicate
    );
    assert_eq!(queue.pending().await.unwrap(), 2);
}

/// Set in the child process of the kill test: the queue file it writes to.
const KILLED_CHILD_QUEUE: &str = "COURIER_QUEUE_TEST_KILLED_CHILD_QUEUE";

/// What the child prints once `put_dead_letter` returned.
const PUT_RETURNED: &str = "courier-queue-test: put_dead_letter returned";

/// The child of [`a_dead_letter_survives_a_kill_9_right_after_put_returns`]: leases (a
/// non-durable commit), puts a letter, says so and waits to be killed.
async fn killed_child(path: PathBuf) {
    let queue = EmbeddedQueue::open(
        &path,
        QueueConfig {
            sync_publish: false,
            ..config()
        },
    )
    .await
    .expect("open in the child");
    let delivery = fetch_one(&queue, Duration::from_secs(5)).await;
    delivery
        .keep_alive()
        .await
        .expect("keep_alive in the child");
    queue
        .put_dead_letter(dead_letter("call-1", 1_700_000_000_000))
        .await
        .expect("put_dead_letter in the child");
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{PUT_RETURNED}").expect("stdout");
        stdout.flush().expect("stdout");
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("the child was not killed");
}

/// `put_dead_letter` is durable when it returns, also with `sync_publish` off: the process is
/// killed (SIGKILL, nothing closes the queue) within the flush interval, and the letter is
/// still there. Runs this test binary again as the child.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_survives_a_kill_9_right_after_put_returns() {
    use std::io::BufRead as _;

    if let Some(path) = std::env::var_os(KILLED_CHILD_QUEUE) {
        killed_child(path.into()).await;
        return;
    }
    let env = EmbeddedBackend::in_temp_dir(false);
    {
        let queue = env.open_queue(config()).await;
        publish_new(&queue, "call-1").await;
    }
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_dead_letter_survives_a_kill_9_right_after_put_returns",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILLED_CHILD_QUEUE, env.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let returned = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains(PUT_RETURNED))
    })
    .await
    .expect("reading the child");
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    assert!(returned, "the child ended before put_dead_letter returned");

    let queue = env.open_queue(config()).await;
    assert_eq!(
        queue.dead_letters().await.unwrap(),
        [dead_letter("call-1", 1_700_000_000_000)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_records_of_any_size_and_content_are_kept_exactly() {
    let env = EmbeddedBackend::in_temp_dir(true);
    let empty = DeadLetter {
        id: "call-empty".into(),
        failed_at_ms: 0,
        record: bytes::Bytes::new(),
    };
    // Larger than the publish limit: the limit is on messages, not on letters.
    let large = DeadLetter {
        id: "call-large".into(),
        failed_at_ms: u64::MAX,
        record: (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect(),
    };
    {
        let queue = env.open_queue(config()).await;
        queue.put_dead_letter(empty.clone()).await.unwrap();
        queue.put_dead_letter(large.clone()).await.unwrap();
    }
    let queue = env.open_queue(config()).await;
    assert_eq!(queue.dead_letters().await.unwrap(), [large, empty]);
}

/// Not a benchmark (nothing is asserted about time): prints publish throughput in both
/// durability modes, with and without a ledger row per message, 32 concurrent publishers.
/// `--nocapture` to see it.
#[tokio::test(flavor = "multi_thread")]
async fn publish_throughput_is_reported_for_both_durability_modes() {
    const MESSAGES: usize = 4000;
    const PUBLISHERS: usize = 32;
    for (sync_publish, recorded) in [(false, false), (false, true), (true, false), (true, true)] {
        let env = EmbeddedBackend::in_temp_dir(sync_publish);
        let queue = Arc::new(env.open_queue(config()).await);
        let payload = bytes::Bytes::from(vec![b'x'; 512]);
        let started = Instant::now();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let queue = Arc::clone(&queue);
                let payload = payload.clone();
                tokio::spawn(async move {
                    for i in (p..MESSAGES).step_by(PUBLISHERS) {
                        let id = format!("call-{i}");
                        let row = recorded.then(|| conformance::row(&id, i as u64));
                        let message = Message {
                            id,
                            payload: payload.clone(),
                        };
                        let receipt = queue.publish_recorded(message, row).await.unwrap();
                        assert_eq!(receipt.published, Published::Stored);
                    }
                })
            })
            .collect();
        for publisher in publishers {
            publisher.await.unwrap();
        }
        let elapsed = started.elapsed();
        assert_eq!(queue.pending().await.unwrap(), MESSAGES as u64);
        if recorded {
            let everything = courier_queue::LedgerQuery {
                function: None,
                state: None,
                limit: MESSAGES,
            };
            assert_eq!(
                queue.ledger_list(&everything).await.unwrap().len(),
                MESSAGES
            );
        }
        eprintln!(
            "sync_publish={sync_publish} recorded={recorded}: {MESSAGES} publishes of 512 B by \
             {PUBLISHERS} publishers in {elapsed:?} = {:.0}/s",
            MESSAGES as f64 / elapsed.as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_watch_ends_when_the_queue_closes() {
    use futures_util::StreamExt as _;

    let env = EmbeddedBackend::in_temp_dir(true);
    let queue = env.open_queue(config()).await;
    let mut watch = queue.ledger_watch("call-1").await.unwrap();
    queue.close().await;

    let ended = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
    assert_eq!(ended, Ok(None));
}
