//! Who waits for which ledger row: `ledger_watch` subscribes to a call id, the writer tells
//! which rows each commit changed. Per id, so a change wakes only those waiting for that row.
//!
//! A subscription is registered before its caller reads the row, and the writer reports a
//! commit's changes after the commit: a change the caller's read did not see is always
//! reported to it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_util::StreamExt as _;
use tokio::sync::watch;

use crate::LedgerWatch;

/// Below this many ids, the map is not swept for ids nobody watches any more.
const MIN_SWEEP: usize = 64;

/// The watched ledger rows of one store.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// One channel per watched id; its value is meaningless, sending is the signal.
    by_id: HashMap<String, watch::Sender<()>>,
    /// Sweep ids without receivers when the map reaches this size (amortised cleanup).
    sweep_at: usize,
    /// The queue closed: watches have ended and no new ones start.
    closed: bool,
}

impl Watchers {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing can be left half-done under this lock: a panic elsewhere does not matter.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A stream that yields after each commit that changed the row of call `id`, from now on;
    /// `None` once the queue closed.
    pub(super) fn subscribe(&self, id: &str) -> Option<LedgerWatch> {
        let mut state = self.state();
        if state.closed {
            return None;
        }
        if state.by_id.len() >= state.sweep_at.max(MIN_SWEEP) {
            state.by_id.retain(|_, sender| sender.receiver_count() > 0);
            state.sweep_at = 2 * state.by_id.len();
        }
        let receiver = match state.by_id.get(id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(());
                state.by_id.insert(id.to_owned(), sender);
                receiver
            }
        };
        drop(state);
        let changes = futures_util::stream::unfold(receiver, |mut receiver| async move {
            // Ends when the sender is dropped: the queue closed.
            receiver.changed().await.ok().map(|()| ((), receiver))
        });
        Some(changes.boxed())
    }

    /// The rows of `ids` changed (a commit wrote or removed them).
    pub(super) fn changed(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let state = self.state();
        if state.by_id.is_empty() {
            return;
        }
        for id in ids {
            if let Some(sender) = state.by_id.get(id.as_str()) {
                sender.send_replace(());
            }
        }
    }

    /// Ends every watch; no new ones start.
    pub(super) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.by_id.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt as _;

    use super::*;

    #[tokio::test]
    async fn a_watch_wakes_for_its_own_id_only_and_ends_at_close() {
        let watchers = Watchers::default();
        let mut a = watchers.subscribe("a").expect("open");
        let mut b = watchers.subscribe("b").expect("open");

        watchers.changed(&["a".to_owned(), "c".to_owned()]);
        assert_eq!(a.next().now_or_never(), Some(Some(())));
        assert_eq!(a.next().now_or_never(), None, "one change, one wake");
        assert_eq!(b.next().now_or_never(), None);

        watchers.close();
        let ended = tokio::time::timeout(Duration::from_secs(1), b.next()).await;
        assert_eq!(ended, Ok(None));
        assert!(watchers.subscribe("a").is_none());
    }

    #[test]
    fn ids_nobody_watches_any_more_are_swept() {
        let watchers = Watchers::default();
        for i in 0..10 * MIN_SWEEP {
            drop(watchers.subscribe(&format!("call-{i}")));
        }
        let kept = watchers.subscribe("kept").expect("open");
        assert!(watchers.state().by_id.len() <= 2 * MIN_SWEEP);
        drop(kept);
    }
}
