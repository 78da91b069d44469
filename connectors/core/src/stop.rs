//! When a message's work must stop: on shutdown no new retry is waited for, and at the drain
//! deadline (or when the source loses the message, e.g. a revoked partition or a dead channel)
//! calls in flight are dropped. Either way the message is left unsettled and comes back.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The two ways handling a message is cut short.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    shutdown: CancellationToken,
    abandon: CancellationToken,
}

impl Stop {
    /// Stops with `shutdown`, and abandons calls in flight `drain` after it.
    pub fn with_drain(shutdown: &CancellationToken, drain: Duration) -> Self {
        let abandon = CancellationToken::new();
        let watcher = (shutdown.clone(), abandon.clone());
        tokio::spawn(async move {
            let (shutdown, abandon) = watcher;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = abandon.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(drain) => abandon.cancel(),
                () = abandon.cancelled() => {}
            }
        });
        Self {
            shutdown: shutdown.clone(),
            abandon,
        }
    }

    /// A stop that never comes (tests).
    pub fn never() -> Self {
        Self::default()
    }

    /// A stop of its own that also follows this one; [`Stop::abandon_now`] on it leaves this
    /// one running (a revoked partition, a lost channel).
    pub fn child(&self) -> Self {
        Self {
            shutdown: self.shutdown.child_token(),
            abandon: self.abandon.child_token(),
        }
    }

    /// Stops at once: no retry waits, calls in flight dropped.
    pub fn abandon_now(&self) {
        self.shutdown.cancel();
        self.abandon.cancel();
    }

    /// Whether shutdown has begun (no new work, no retry waits).
    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when shutdown begins.
    pub async fn stopping(&self) {
        self.shutdown.cancelled().await;
    }

    /// Resolves when calls in flight must be dropped.
    pub async fn abandoned(&self) {
        self.abandon.cancelled().await;
    }

    /// Whether calls in flight must be dropped.
    pub fn is_abandoned(&self) -> bool {
        self.abandon.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_in_flight_are_abandoned_a_drain_after_shutdown() {
        let shutdown = CancellationToken::new();
        let stop = Stop::with_drain(&shutdown, Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!stop.is_stopping() && !stop.is_abandoned());
        shutdown.cancel();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(stop.is_stopping() && !stop.is_abandoned());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(stop.is_abandoned());
    }

    #[tokio::test]
    async fn a_child_stops_alone() {
        let parent = Stop::with_drain(&CancellationToken::new(), Duration::from_secs(1));
        let child = parent.child();
        child.abandon_now();
        assert!(child.is_abandoned());
        assert!(!parent.is_stopping() && !parent.is_abandoned());
        let other = parent.child();
        parent.abandon_now();
        assert!(other.is_abandoned());
    }
}
