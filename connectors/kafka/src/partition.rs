//! One partition's worker: runs its messages through the pipeline in the configured order and
//! stores the commit position once every message below it reached its outcome.
//!
//! `partition` ordering runs one message at a time; `key` ordering runs one message per key at
//! a time, keys in parallel. Either way at most `max_in_flight` messages are held (running or
//! waiting for their key); the consumer loop stops feeding (and pauses the partition) beyond.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use courier_connector::{Message, Outcome, Pipeline, Stop};
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};

use crate::args::Ordering;
use crate::offsets::OffsetTracker;

/// One message on its way to the worker.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// Its offset in the partition.
    pub(crate) offset: i64,
    /// The translated message.
    pub(crate) message: Message,
}

/// Where commit positions go (the consumer's offset store; a recorder in tests).
pub(crate) trait OffsetStore: Send + Sync + 'static {
    /// Stores `position` (the next offset to consume) of `topic`/`partition` for the next
    /// commit.
    fn store(&self, topic: &str, partition: i32, position: i64) -> Result<(), String>;
}

/// What the worker is for.
#[derive(Debug, Clone)]
pub(crate) struct PartitionWork {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) ordering: Ordering,
    pub(crate) max_in_flight: usize,
}

/// Messages that must run one after the other.
type Group = Option<Bytes>;

fn group_of(ordering: Ordering, incoming: &Incoming) -> Group {
    match ordering {
        Ordering::Partition => None,
        Ordering::Key => incoming.message.key.clone(),
    }
}

/// Runs until the sender is dropped (revocation, shutdown) or `stop` stops it, and every
/// message started has finished or been abandoned.
pub(crate) async fn run(
    work: PartitionWork,
    mut rx: mpsc::Receiver<Incoming>,
    pipeline: Pipeline,
    offsets: Arc<dyn OffsetStore>,
    stop: Stop,
) {
    let mut tracker = OffsetTracker::new();
    let mut running: JoinSet<Outcome> = JoinSet::new();
    let mut started: HashMap<Id, (i64, Group)> = HashMap::new();
    // A group is present while one of its messages runs; its queue holds the ones after.
    let mut groups: HashMap<Group, VecDeque<Incoming>> = HashMap::new();
    let mut held = 0usize;
    let mut open = true;
    let start = |running: &mut JoinSet<Outcome>,
                 started: &mut HashMap<Id, (i64, Group)>,
                 group: Group,
                 incoming: Incoming| {
        let pipeline = pipeline.clone();
        let stop = stop.clone();
        let handle = running.spawn(async move { pipeline.handle(incoming.message, &stop).await });
        started.insert(handle.id(), (incoming.offset, group));
    };
    loop {
        let intake = open && held < work.max_in_flight && !stop.is_stopping();
        if !intake && running.is_empty() && (!open || stop.is_stopping()) {
            break;
        }
        tokio::select! {
            incoming = rx.recv(), if intake => {
                let Some(incoming) = incoming else {
                    open = false;
                    continue;
                };
                if let Err(e) = tracker.dispatched(incoming.offset) {
                    tracing::warn!(topic = %work.topic, partition = work.partition, error = %e, "Message delivered twice; skipped.");
                    continue;
                }
                held += 1;
                let group = group_of(work.ordering, &incoming);
                match groups.get_mut(&group) {
                    Some(queue) => queue.push_back(incoming),
                    None => {
                        groups.insert(group.clone(), VecDeque::new());
                        start(&mut running, &mut started, group, incoming);
                    }
                }
            }
            Some(done) = running.join_next_with_id() => {
                held -= 1;
                let (id, outcome) = match done {
                    Ok((id, outcome)) => (id, Some(outcome)),
                    Err(e) => {
                        tracing::error!(topic = %work.topic, partition = work.partition, error = %e, "Message task failed; its offset stays uncommitted.");
                        (e.id(), None)
                    }
                };
                let Some((offset, group)) = started.remove(&id) else {
                    continue;
                };
                match outcome {
                    Some(Outcome::Settle | Outcome::Reject) => {
                        if let Some(position) = tracker.completed(offset)
                            && let Err(e) = offsets.store(&work.topic, work.partition, position)
                        {
                            tracing::warn!(topic = %work.topic, partition = work.partition, position, error = %e, "Could not store the offset (partition revoked?); it will be delivered again.");
                        }
                    }
                    Some(Outcome::Unsettled) | None => {
                        tracing::debug!(topic = %work.topic, partition = work.partition, offset, "Message left unsettled; it will be delivered again.");
                    }
                }
                let next = if stop.is_stopping() {
                    None
                } else {
                    groups.get_mut(&group).and_then(VecDeque::pop_front)
                };
                match next {
                    Some(incoming) => start(&mut running, &mut started, group, incoming),
                    None => {
                        groups.remove(&group);
                    }
                }
            }
            else => break,
        }
    }
    running.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    use courier_connector::testing::{RecordingInvoker, pipeline_for};
    use http::HeaderMap;

    #[derive(Default)]
    struct Positions(Mutex<Vec<i64>>);

    impl OffsetStore for Positions {
        fn store(&self, _topic: &str, _partition: i32, position: i64) -> Result<(), String> {
            self.0.lock().unwrap().push(position);
            Ok(())
        }
    }

    fn incoming(offset: i64, key: Option<&str>) -> Incoming {
        Incoming {
            offset,
            message: Message {
                topic: "t".into(),
                body: Bytes::from(format!("{offset}")),
                headers: HeaderMap::new(),
                key: key.map(|k| Bytes::from(k.to_owned())),
                source_id: Some(format!("kafka/t/0/{offset}")),
                origin: None,
            },
        }
    }

    fn work(ordering: Ordering) -> PartitionWork {
        PartitionWork {
            topic: "t".into(),
            partition: 0,
            ordering,
            max_in_flight: 16,
        }
    }

    #[tokio::test]
    async fn partition_order_runs_one_message_at_a_time_in_offset_order() {
        let invoker = RecordingInvoker::new();
        invoker.set_delay(Duration::from_millis(5));
        let pipeline = pipeline_for(&invoker, &[("f", "t")]);
        let positions = Arc::new(Positions::default());
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(run(
            work(Ordering::Partition),
            rx,
            pipeline,
            positions.clone(),
            Stop::never(),
        ));
        for o in 0..10 {
            tx.send(incoming(o, Some(if o % 2 == 0 { "a" } else { "b" })))
                .await
                .unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let bodies: Vec<String> = invoker.calls().iter().map(|c| c.body_text()).collect();
        assert_eq!(bodies, (0..10).map(|o| o.to_string()).collect::<Vec<_>>());
        assert_eq!(invoker.max_concurrency(), 1);
        assert_eq!(positions.0.lock().unwrap().last(), Some(&10));
    }

    #[tokio::test]
    async fn key_order_runs_keys_in_parallel_and_each_key_in_order() {
        let invoker = RecordingInvoker::new();
        invoker.set_delay(Duration::from_millis(20));
        let pipeline = pipeline_for(&invoker, &[("f", "t")]);
        let positions = Arc::new(Positions::default());
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(run(
            work(Ordering::Key),
            rx,
            pipeline,
            positions.clone(),
            Stop::never(),
        ));
        for o in 0..12 {
            let key = ["a", "b", "c"][o as usize % 3];
            tx.send(incoming(o, Some(key))).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let calls = invoker.calls();
        assert_eq!(calls.len(), 12);
        assert_eq!(invoker.max_concurrency(), 3);
        for key in 0..3 {
            let offsets: Vec<i64> = calls
                .iter()
                .map(|c| c.body_text().parse::<i64>().unwrap())
                .filter(|o| o % 3 == key)
                .collect();
            let mut sorted = offsets.clone();
            sorted.sort_unstable();
            assert_eq!(offsets, sorted, "key {key}");
        }
        let stored = positions.0.lock().unwrap().clone();
        assert_eq!(stored.last(), Some(&12));
        assert!(stored.windows(2).all(|w| w[0] < w[1]), "{stored:?}");
    }

    #[tokio::test]
    async fn an_unsettled_message_holds_the_commit_position() {
        let invoker = RecordingInvoker::new();
        invoker.set_delay(Duration::from_millis(200));
        let pipeline = pipeline_for(&invoker, &[("f", "t")]);
        let positions = Arc::new(Positions::default());
        let (tx, rx) = mpsc::channel(16);
        let stop = Stop::never().child();
        let task = tokio::spawn(run(
            work(Ordering::Key),
            rx,
            pipeline,
            positions.clone(),
            stop.clone(),
        ));
        tx.send(incoming(0, Some("slow"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        invoker.set_delay(Duration::ZERO);
        tx.send(incoming(1, Some("fast"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Offset 1 finished, offset 0 did not: nothing may be committed yet.
        assert!(positions.0.lock().unwrap().is_empty());
        stop.abandon_now();
        task.await.unwrap();
        assert!(positions.0.lock().unwrap().is_empty());
    }
}
