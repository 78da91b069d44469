//! Wall-clock time for the timer loop, and the tokio instant at which a wall-clock time is due.
//!
//! Fire times are wall-clock times; tokio sleeps on its monotonic clock. [`Clock::system`]
//! reads the system clock each time, so a stepped system clock (NTP) is noticed at the next
//! wake-up (the loop never sleeps longer than [`MAX_SLEEP`]). [`Clock::following_tokio`] is a
//! wall clock that advances with tokio's clock, so tests with paused time (and simulations)
//! see fire times come due without waiting.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// The longest the timer loop sleeps before looking at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

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
}
