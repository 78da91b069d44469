//! Retry policy of queued calls: which outcomes are retried, how often, and how long to wait,
//! configured globally and per function with OpenFaaS Pro's annotations
//! (`com.openfaas.retry.attempts`, `.codes`, `.min_wait`, `.max_wait`).

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::duration::parse_go_duration;

/// Annotation: attempts in all (first call included).
pub const ANNOTATION_ATTEMPTS: &str = "com.openfaas.retry.attempts";
/// Annotation: comma-separated status codes to retry.
pub const ANNOTATION_CODES: &str = "com.openfaas.retry.codes";
/// Annotation: first delay (Go duration).
pub const ANNOTATION_MIN_WAIT: &str = "com.openfaas.retry.min_wait";
/// Annotation: longest delay (Go duration).
pub const ANNOTATION_MAX_WAIT: &str = "com.openfaas.retry.max_wait";

/// How a queued call is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub attempts: u64,
    /// Function statuses that are retried (an unreachable function always is).
    pub codes: Vec<u16>,
    /// Delay before the first retry; doubles per attempt.
    pub min_wait: Duration,
    /// Longest delay.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 10,
            codes: vec![408, 429, 500, 502, 503, 504],
            min_wait: Duration::from_millis(500),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// An annotation that could not be used; the default is kept for that setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredAnnotation {
    /// The annotation.
    pub key: &'static str,
    /// Its value.
    pub value: String,
}

impl RetryPolicy {
    /// This policy overridden by a function's annotations. Invalid values keep the default
    /// for that setting and are reported, as OpenFaaS Pro does.
    pub fn with_annotations(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> (Self, Vec<IgnoredAnnotation>) {
        let mut policy = self.clone();
        let mut ignored = Vec::new();
        let mut ignore = |key: &'static str, value: &str| {
            ignored.push(IgnoredAnnotation {
                key,
                value: value.to_owned(),
            });
        };
        if let Some(v) = annotations.get(ANNOTATION_ATTEMPTS) {
            match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => policy.attempts = n,
                _ => ignore(ANNOTATION_ATTEMPTS, v),
            }
        }
        if let Some(v) = annotations.get(ANNOTATION_CODES) {
            let codes: Result<Vec<u16>, _> = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| match c.parse::<u16>() {
                    Ok(n) if (100..600).contains(&n) => Ok(n),
                    _ => Err(()),
                })
                .collect();
            match codes {
                Ok(codes) => policy.codes = codes,
                Err(()) => ignore(ANNOTATION_CODES, v),
            }
        }
        for (key, slot) in [
            (ANNOTATION_MIN_WAIT, &mut policy.min_wait),
            (ANNOTATION_MAX_WAIT, &mut policy.max_wait),
        ] {
            if let Some(v) = annotations.get(key) {
                match parse_go_duration(v) {
                    Ok(d) => *slot = d,
                    Err(_) => ignore(key, v),
                }
            }
        }
        if policy.max_wait < policy.min_wait {
            policy.max_wait = policy.min_wait;
        }
        (policy, ignored)
    }

    /// Whether a call that ended with `status` (`None`: the function could not be reached)
    /// after `attempt` attempts should be tried again.
    pub fn should_retry(&self, status: Option<u16>, attempt: u64) -> bool {
        attempt < self.attempts && status.is_none_or(|s| self.codes.contains(&s))
    }

    /// The delay before the attempt after `attempt`: exponential from `min_wait`, capped at
    /// `max_wait`, with "equal" jitter (between half and all of it; `jitter` in [0, 1)). A
    /// `Retry-After` from the function replaces it, floored at `min_wait` and capped at
    /// `max_wait`.
    pub fn delay(&self, attempt: u64, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(after) = retry_after {
            return after.clamp(self.min_wait, self.max_wait);
        }
        let exponent = attempt.saturating_sub(1).min(32) as i32;
        let full =
            (self.min_wait.as_secs_f64() * 2f64.powi(exponent)).min(self.max_wait.as_secs_f64());
        let jitter = jitter.clamp(0.0, 1.0);
        Duration::from_secs_f64(full * (0.5 + 0.5 * jitter))
    }
}

/// Parses a `Retry-After` value: whole seconds, or an HTTP date (relative to `now`).
/// Unparsable values give `None`, and are ignored.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let wait = at - now;
    Some(if wait.is_negative() {
        Duration::ZERO
    } else {
        Duration::try_from(wait).ok()?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn annotations_override_the_default_policy() {
        let (p, ignored) = RetryPolicy::default().with_annotations(&annotations(&[
            (ANNOTATION_ATTEMPTS, "3"),
            (ANNOTATION_CODES, "429, 503"),
            (ANNOTATION_MIN_WAIT, "100ms"),
            (ANNOTATION_MAX_WAIT, "2s"),
        ]));
        assert!(ignored.is_empty());
        assert_eq!(p.attempts, 3);
        assert_eq!(p.codes, vec![429, 503]);
        assert_eq!(p.min_wait, Duration::from_millis(100));
        assert_eq!(p.max_wait, Duration::from_secs(2));
    }

    #[test]
    fn invalid_annotations_keep_the_default_and_are_reported() {
        let base = RetryPolicy::default();
        let (p, ignored) = base.with_annotations(&annotations(&[
            (ANNOTATION_ATTEMPTS, "zero"),
            (ANNOTATION_CODES, "500,abc"),
            (ANNOTATION_MIN_WAIT, "soon"),
        ]));
        assert_eq!(p, base);
        assert_eq!(ignored.len(), 3);
    }

    #[test]
    fn retried_statuses_and_unreachable_functions_retry_until_attempts_run_out() {
        let p = RetryPolicy {
            attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.should_retry(Some(503), 1));
        assert!(p.should_retry(None, 2));
        assert!(!p.should_retry(Some(503), 3));
        assert!(!p.should_retry(Some(400), 1));
        assert!(!p.should_retry(Some(200), 1));
    }

    #[test]
    fn delays_grow_exponentially_with_jitter_and_stay_under_max_wait() {
        let p = RetryPolicy {
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1, None, 0.999_999).as_millis(), 99);
        assert_eq!(p.delay(2, None, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, None, 0.0), Duration::from_millis(200));
        assert_eq!(p.delay(20, None, 0.999_999).as_millis(), 999);
        for attempt in 1..40 {
            for jitter in [0.0, 0.5, 0.99] {
                let d = p.delay(attempt, None, jitter);
                assert!(
                    d <= p.max_wait && d >= Duration::from_millis(50),
                    "{attempt} {d:?}"
                );
            }
        }
    }

    #[test]
    fn retry_after_replaces_the_backoff_within_bounds() {
        let p = RetryPolicy {
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3)), 0.0),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(1, Some(Duration::ZERO), 0.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(60)), 0.0),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = OffsetDateTime::from_unix_timestamp(784_111_777).unwrap(); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
