//! Wall-clock time for the timer loop, and the tokio instant at which a wall-clock time is due.
//!
//! Fire times are wall-clock times; tokio sleeps on its monotonic clock. [`Clock::system`]
//! reads the system clock each time, so a stepped system clock (NTP) is noticed at the next
//! wake-up (the loop never sleeps longer than [`MAX_SLEEP`]). [`Clock::following_tokio`] is a
//! wall clock that advances with tokio's clock, so tests with paused time (and simulations)
//! see fire times come due without waiting.
//!
//! A tokio sleep wakes on a 1 ms tick and is up to about a millisecond late; [`Clock::wait_until`]
//! is the precise wait the timer loop uses for the instant a burst of fires goes out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// The longest the timer loop sleeps before looking at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How long before the instant [`Clock::wait_until`] stops sleeping and starts yielding: more
/// than a tokio sleep can be late on an idle machine.
pub const SPIN_LEAD: Duration = Duration::from_millis(2);

/// Where the scheduler reads the time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// `(wall, tokio)` at the same moment, for a clock that follows tokio's.
    anchor: Option<(DateTime<Utc>, Instant)>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self { anchor: None }
    }

    /// A wall clock that reads `start` now and advances with tokio's clock (which a test may
    /// pause and advance).
    pub fn following_tokio(start: DateTime<Utc>) -> Self {
        Self {
            anchor: Some((start, Instant::now())),
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> DateTime<Utc> {
        match self.anchor {
            None => Utc::now(),
            Some((wall, tokio)) => wall + Instant::now().saturating_duration_since(tokio),
        }
    }

    /// The tokio instant at which the wall clock reads `at` (now when it has passed), capped at
    /// [`MAX_SLEEP`] from now.
    pub fn deadline(&self, at: DateTime<Utc>) -> Instant {
        let wait = (at - self.now()).to_std().unwrap_or(Duration::ZERO);
        Instant::now() + wait.min(MAX_SLEEP)
    }

    /// Waits until the wall clock reads `at`, to within a few microseconds with the system
    /// clock: sleeps until [`SPIN_LEAD`] before, then yields to the runtime until the instant
    /// (on monotonic time, so a clock stepped meanwhile cannot stretch the yielding). A clock
    /// that follows tokio's sleeps exactly until the instant (paused time advances only while
    /// every task sleeps).
    pub async fn wait_until(&self, at: DateTime<Utc>) {
        let end = self.deadline(at);
        if self.anchor.is_some() {
            tokio::time::sleep_until(end).await;
            return;
        }
        if let Some(coarse) = end.checked_sub(SPIN_LEAD)
            && coarse > Instant::now()
        {
            tokio::time::sleep_until(coarse).await;
        }
        while Instant::now() < end {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_system_clock_never_wakes_before_the_instant() {
        let clock = Clock::system();
        for wait_ms in [0, 1, 2, 3, 5, 8] {
            let at = clock.now() + chrono::Duration::milliseconds(wait_ms);
            clock.wait_until(at).await;
            let now = clock.now();
            assert!(now >= at, "woke at {now}, before {at}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_past_instant_does_not_wait() {
        let clock = Clock::system();
        let before = Instant::now();
        clock
            .wait_until(clock.now() - chrono::Duration::seconds(5))
            .await;
        // Paused time moves only when something sleeps: nothing did.
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_following_tokio_wakes_exactly_at_the_instant() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .to_utc();
        let clock = Clock::following_tokio(start);
        let at = start + chrono::Duration::milliseconds(1_500);
        clock.wait_until(at).await;
        assert_eq!(clock.now(), at);
    }
}
