//! The autoscaler's rules, without IO: the `com.openfaas.scale.*` labels read into a
//! [`ScalePolicy`] (or refused with a [`ScaleLabelError`] whose text is the deploy's 400), and
//! the per-function decision [`Stabilizer::decide`]: desired replicas from a load sample, up at
//! once, down only after a stabilization window, to zero after an idle period.
//!
//! It owns what the labels mean and how a load becomes a replica count. It must not know where
//! the load comes from (the gateway's counters), how often it is sampled, or how a provider
//! changes the replica count; time is given to it as a [`Duration`] on a monotonic clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::duration::parse_go_duration;
use crate::function::{LABEL_SCALE_MAX, LABEL_SCALE_MIN};

/// Label: what the target counts (`rps`, `capacity` or `cpu`).
pub const LABEL_SCALE_TYPE: &str = "com.openfaas.scale.type";
/// Label: the load one replica is meant to carry.
pub const LABEL_SCALE_TARGET: &str = "com.openfaas.scale.target";
/// Label: the share of the target a replica is sized for (headroom), in `(0, 1]`.
pub const LABEL_SCALE_TARGET_PROPORTION: &str = "com.openfaas.scale.target-proportion";
/// Label: `true` lets an idle function go to zero replicas.
pub const LABEL_SCALE_ZERO: &str = "com.openfaas.scale.zero";
/// Label: how long a function must be idle before it goes to zero (Go duration).
pub const LABEL_SCALE_ZERO_DURATION: &str = "com.openfaas.scale.zero-duration";
/// Label: `external` hands the function's replica count to another autoscaler (HPA, KEDA).
pub const LABEL_SCALE_AUTOSCALER: &str = "com.openfaas.scale.autoscaler";

/// `com.openfaas.scale.min` when absent.
pub const DEFAULT_MIN: u64 = 1;
/// `com.openfaas.scale.max` when absent (before the provider's limit caps it).
pub const DEFAULT_MAX: u64 = 20;
/// `com.openfaas.scale.target` when absent.
pub const DEFAULT_TARGET: u64 = 50;
/// `com.openfaas.scale.target-proportion` when absent.
pub const DEFAULT_TARGET_PROPORTION: f64 = 0.9;
/// `com.openfaas.scale.zero-duration` when absent.
pub const DEFAULT_ZERO_DURATION: Duration = Duration::from_secs(15 * 60);

/// What a provider offers the autoscaler ([`crate::Provider::scaling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderScaling {
    /// Most replicas one function may have; caps `com.openfaas.scale.max`.
    pub max_replicas: u64,
    /// Whether the provider can read its functions' CPU use (`com.openfaas.scale.type: cpu`).
    pub cpu_metrics: bool,
}

impl Default for ProviderScaling {
    fn default() -> Self {
        Self {
            max_replicas: crate::function::MAX_REPLICAS,
            cpu_metrics: false,
        }
    }
}

/// What `com.openfaas.scale.target` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleType {
    /// Requests started per second, across replicas (the default, as in OpenFaaS Pro).
    Rps,
    /// Requests in flight, across replicas.
    Capacity,
    /// CPU use (millicores per replica), from the orchestrator's metrics API.
    Cpu,
}

impl ScaleType {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rps => "rps",
            Self::Capacity => "capacity",
            Self::Cpu => "cpu",
        }
    }
}

/// Who decides a function's replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Courier's autoscaler.
    Courier,
    /// `com.openfaas.scale.autoscaler: external`: another autoscaler (HPA, KEDA); left alone.
    External,
    /// `min == max`: nothing to decide; left alone.
    Fixed,
}

/// A refused scaling label; the text names the label and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScaleLabelError {
    /// A count label that is not a whole number.
    #[error("label {label}: {value:?} is not a whole number")]
    NotANumber {
        /// The label.
        label: &'static str,
        /// Its value.
        value: String,
    },
    /// A number outside what the label allows.
    #[error("label {label}: {value:?} is out of range: {allowed}")]
    OutOfRange {
        /// The label.
        label: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// `com.openfaas.scale.type` is none of `rps`, `capacity`, `cpu`.
    #[error("label {LABEL_SCALE_TYPE}: {0:?} is not a scaling type (use rps, capacity or cpu)")]
    UnknownType(String),
    /// `com.openfaas.scale.zero` is not a boolean.
    #[error("label {LABEL_SCALE_ZERO}: {0:?} is not true or false")]
    NotABool(String),
    /// `com.openfaas.scale.autoscaler` is not `external`.
    #[error("label {LABEL_SCALE_AUTOSCALER}: {0:?} is not supported (only \"external\")")]
    UnknownAutoscaler(String),
    /// `com.openfaas.scale.zero-duration` is not a positive Go duration.
    #[error("label {LABEL_SCALE_ZERO_DURATION}: {0}")]
    ZeroDuration(String),
    /// `min` is above `max` (after the provider's limit capped `max`).
    #[error("label {LABEL_SCALE_MIN}: {min} is more than {LABEL_SCALE_MAX} ({max})")]
    MinAboveMax {
        /// The minimum asked for.
        min: u64,
        /// The maximum in force.
        max: u64,
    },
}

/// A function's scaling policy, read from its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePolicy {
    /// Fewest replicas while the function is awake (`com.openfaas.scale.min`). `0` is
    /// accepted (the function starts at zero and is woken by its first call); the autoscaler
    /// itself keeps at least one replica unless [`Self::zero`] allows zero.
    pub min: u64,
    /// Most replicas (`com.openfaas.scale.max`, capped by the provider's limit).
    pub max: u64,
    /// Load per replica (`com.openfaas.scale.target`), at least 1.
    pub target: u64,
    /// What the target counts (`com.openfaas.scale.type`).
    pub kind: ScaleType,
    /// Share of the target a replica is sized for (`com.openfaas.scale.target-proportion`).
    pub target_proportion: f64,
    /// Whether an idle function goes to zero (`com.openfaas.scale.zero`).
    pub zero: bool,
    /// How long idle before zero (`com.openfaas.scale.zero-duration`).
    pub zero_duration: Duration,
    /// Who decides the replica count.
    pub owner: Owner,
}

impl ScalePolicy {
    /// Reads the scaling labels; `max_limit` is the provider's most replicas per function.
    /// Absent labels take their defaults; present but invalid ones are refused, never
    /// defaulted.
    pub fn from_labels(
        labels: &BTreeMap<String, String>,
        max_limit: u64,
    ) -> Result<Self, ScaleLabelError> {
        let get = |label: &str| labels.get(label).map(|v| v.trim());
        let min = count(LABEL_SCALE_MIN, get(LABEL_SCALE_MIN), DEFAULT_MIN)?;
        if min > max_limit {
            return Err(ScaleLabelError::OutOfRange {
                label: LABEL_SCALE_MIN,
                value: min.to_string(),
                allowed: "at most the provider's replica limit",
            });
        }
        let max = count(LABEL_SCALE_MAX, get(LABEL_SCALE_MAX), DEFAULT_MAX)?;
        if max == 0 {
            return Err(ScaleLabelError::OutOfRange {
                label: LABEL_SCALE_MAX,
                value: max.to_string(),
                allowed: "at least 1",
            });
        }
        let max = max.min(max_limit);
        if min > max {
            return Err(ScaleLabelError::MinAboveMax { min, max });
        }
        let target = count(LABEL_SCALE_TARGET, get(LABEL_SCALE_TARGET), DEFAULT_TARGET)?;
        if target == 0 {
            return Err(ScaleLabelError::OutOfRange {
                label: LABEL_SCALE_TARGET,
                value: "0".into(),
                allowed: "at least 1",
            });
        }
        let kind = match get(LABEL_SCALE_TYPE) {
            None | Some("rps") => ScaleType::Rps,
            Some("capacity") => ScaleType::Capacity,
            Some("cpu") => ScaleType::Cpu,
            Some(other) => return Err(ScaleLabelError::UnknownType(other.to_owned())),
        };
        let target_proportion = match get(LABEL_SCALE_TARGET_PROPORTION) {
            None => DEFAULT_TARGET_PROPORTION,
            Some(text) => match text.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 1.0 => p,
                _ => {
                    return Err(ScaleLabelError::OutOfRange {
                        label: LABEL_SCALE_TARGET_PROPORTION,
                        value: text.to_owned(),
                        allowed: "a number above 0 and at most 1",
                    });
                }
            },
        };
        let zero = match get(LABEL_SCALE_ZERO) {
            None => false,
            Some(text) => {
                parse_go_bool(text).ok_or_else(|| ScaleLabelError::NotABool(text.into()))?
            }
        };
        let zero_duration = match get(LABEL_SCALE_ZERO_DURATION) {
            None => DEFAULT_ZERO_DURATION,
            Some(text) => {
                let d = parse_go_duration(text)
                    .map_err(|e| ScaleLabelError::ZeroDuration(e.to_string()))?;
                if d.is_zero() {
                    return Err(ScaleLabelError::ZeroDuration(format!(
                        "{text:?} must be longer than zero"
                    )));
                }
                d
            }
        };
        let owner = match get(LABEL_SCALE_AUTOSCALER) {
            Some("external") => Owner::External,
            Some(other) => return Err(ScaleLabelError::UnknownAutoscaler(other.to_owned())),
            None if min == max => Owner::Fixed,
            None => Owner::Courier,
        };
        Ok(Self {
            min,
            max,
            target,
            kind,
            target_proportion,
            zero,
            zero_duration,
            owner,
        })
    }

    /// Replicas the load asks for: `ceil(load / (target × proportion))`, clamped to
    /// `[max(min, 1), max]`.
    pub fn replicas_for(&self, load: f64) -> u64 {
        let per_replica = self.target as f64 * self.target_proportion;
        let raw = if load.is_finite() && load > 0.0 {
            (load / per_replica).ceil()
        } else {
            0.0
        };
        // `as` saturates; the clamp bounds it anyway.
        (raw as u64).clamp(self.min.max(1), self.max.max(1))
    }
}

/// A whole-number label, or its default when absent.
fn count(label: &'static str, value: Option<&str>, default: u64) -> Result<u64, ScaleLabelError> {
    match value {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| ScaleLabelError::NotANumber {
            label,
            value: text.to_owned(),
        }),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One sample of a function, taken by the caller at `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Time on a monotonic clock (any origin, the same for every sample).
    pub now: Duration,
    /// The load, in the unit of the policy's [`ScaleType`].
    pub load: f64,
    /// Whether any call started or was in flight since the previous sample.
    pub active: bool,
    /// The replica count the provider reports as desired now.
    pub current: u64,
}

/// Which way a decision moves the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas (zero included).
    Down,
}

impl Direction {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// What to do after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The replica count the function should have.
    pub desired: u64,
    /// `None` when `desired` is the current count (nothing to do).
    pub change: Option<Direction>,
}

/// One function's memory between samples: the recommendations of the stabilization window
/// and when it was last active.
#[derive(Debug, Clone, Default)]
pub struct Stabilizer {
    /// `(time, replicas recommended)`, oldest first, none older than the window.
    window: VecDeque<(Duration, u64)>,
    /// When a call was last seen (or the first sample, so a function idle since it was
    /// deployed also goes to zero).
    last_active: Option<Duration>,
    /// The replica count the previous decision left; a different current count was set by
    /// someone else (the scale API, a wake from zero) and counts as a recommendation.
    expected: Option<u64>,
}

impl Stabilizer {
    /// Decides after `sample`: up at once to what the load asks; down only to the highest
    /// recommendation of the last `down_delay` (so a sawtooth does not flap); zero after
    /// `zero_duration` without a call when the policy allows it. A function at zero stays
    /// there: waking it is the call path's work, on the next call.
    pub fn decide(
        &mut self,
        policy: &ScalePolicy,
        sample: Sample,
        down_delay: Duration,
    ) -> Decision {
        let decision = self.recommend(policy, sample, down_delay);
        self.expected = Some(decision.desired);
        decision
    }

    fn recommend(
        &mut self,
        policy: &ScalePolicy,
        sample: Sample,
        down_delay: Duration,
    ) -> Decision {
        let now = sample.now;
        if self.expected != Some(sample.current) {
            // First sight, or set by someone else: the replicas it has count as a
            // recommendation, so nothing scales down before a whole window was observed.
            self.window.push_back((now, sample.current));
        }
        if sample.active || self.last_active.is_none() {
            self.last_active = Some(now);
        }
        let recommended = policy.replicas_for(sample.load);
        self.window.push_back((now, recommended));
        while let Some(&(at, _)) = self.window.front() {
            if now.saturating_sub(at) > down_delay {
                self.window.pop_front();
            } else {
                break;
            }
        }
        let hold = Decision {
            desired: sample.current,
            change: None,
        };
        if sample.current == 0 {
            return hold;
        }
        let idle_for = self
            .last_active
            .map_or(Duration::ZERO, |at| now.saturating_sub(at));
        if policy.zero && !sample.active && idle_for >= policy.zero_duration {
            self.window.clear();
            return Decision {
                desired: 0,
                change: Some(Direction::Down),
            };
        }
        if recommended > sample.current {
            return Decision {
                desired: recommended,
                change: Some(Direction::Up),
            };
        }
        let stable = self
            .window
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(recommended)
            .clamp(policy.min.max(1), policy.max.max(1));
        if stable < sample.current {
            Decision {
                desired: stable,
                change: Some(Direction::Down),
            }
        } else {
            hold
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn policy(pairs: &[(&str, &str)]) -> ScalePolicy {
        ScalePolicy::from_labels(&labels(pairs), 100).expect("valid labels")
    }

    #[test]
    fn no_labels_give_the_openfaas_defaults() {
        assert_eq!(
            policy(&[]),
            ScalePolicy {
                min: 1,
                max: 20,
                target: 50,
                kind: ScaleType::Rps,
                target_proportion: 0.9,
                zero: false,
                zero_duration: Duration::from_secs(900),
                owner: Owner::Courier,
            }
        );
    }

    #[test]
    fn each_label_is_read() {
        let p = policy(&[
            (LABEL_SCALE_MIN, "2"),
            (LABEL_SCALE_MAX, "7"),
            (LABEL_SCALE_TARGET, "10"),
            (LABEL_SCALE_TYPE, "capacity"),
            (LABEL_SCALE_TARGET_PROPORTION, "0.5"),
            (LABEL_SCALE_ZERO, "true"),
            (LABEL_SCALE_ZERO_DURATION, "3s"),
        ]);
        assert_eq!((p.min, p.max, p.target), (2, 7, 10));
        assert_eq!(p.kind, ScaleType::Capacity);
        assert_eq!(p.target_proportion, 0.5);
        assert!(p.zero);
        assert_eq!(p.zero_duration, Duration::from_secs(3));
        assert_eq!(p.owner, Owner::Courier);
        assert_eq!(policy(&[(LABEL_SCALE_TYPE, "rps")]).kind, ScaleType::Rps);
        assert_eq!(policy(&[(LABEL_SCALE_TYPE, "cpu")]).kind, ScaleType::Cpu);
        assert!(!policy(&[(LABEL_SCALE_ZERO, "false")]).zero);
        assert!(policy(&[(LABEL_SCALE_ZERO, "1")]).zero);
    }

    #[test]
    fn max_is_capped_by_the_provider_limit() {
        let p = ScalePolicy::from_labels(&labels(&[(LABEL_SCALE_MAX, "500")]), 100).unwrap();
        assert_eq!(p.max, 100);
        let p = ScalePolicy::from_labels(&labels(&[]), 10).unwrap();
        assert_eq!(p.max, 10);
    }

    #[test]
    fn external_and_fixed_functions_are_left_alone() {
        assert_eq!(
            policy(&[(LABEL_SCALE_AUTOSCALER, "external")]).owner,
            Owner::External
        );
        assert_eq!(
            policy(&[(LABEL_SCALE_MIN, "3"), (LABEL_SCALE_MAX, "3")]).owner,
            Owner::Fixed
        );
    }

    #[test]
    fn invalid_labels_are_refused_with_the_label_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(LABEL_SCALE_MIN, "two")], LABEL_SCALE_MIN),
            (&[(LABEL_SCALE_MIN, "-1")], LABEL_SCALE_MIN),
            (&[(LABEL_SCALE_MIN, "101")], LABEL_SCALE_MIN),
            (&[(LABEL_SCALE_MAX, "0")], LABEL_SCALE_MAX),
            (&[(LABEL_SCALE_MAX, "1.5")], LABEL_SCALE_MAX),
            (
                &[(LABEL_SCALE_MIN, "5"), (LABEL_SCALE_MAX, "2")],
                LABEL_SCALE_MIN,
            ),
            (&[(LABEL_SCALE_TARGET, "0")], LABEL_SCALE_TARGET),
            (&[(LABEL_SCALE_TARGET, "lots")], LABEL_SCALE_TARGET),
            (&[(LABEL_SCALE_TYPE, "memory")], LABEL_SCALE_TYPE),
            (
                &[(LABEL_SCALE_TARGET_PROPORTION, "0")],
                LABEL_SCALE_TARGET_PROPORTION,
            ),
            (
                &[(LABEL_SCALE_TARGET_PROPORTION, "1.5")],
                LABEL_SCALE_TARGET_PROPORTION,
            ),
            (
                &[(LABEL_SCALE_TARGET_PROPORTION, "NaN")],
                LABEL_SCALE_TARGET_PROPORTION,
            ),
            (&[(LABEL_SCALE_ZERO, "yes")], LABEL_SCALE_ZERO),
            (
                &[(LABEL_SCALE_ZERO_DURATION, "soon")],
                LABEL_SCALE_ZERO_DURATION,
            ),
            (
                &[(LABEL_SCALE_ZERO_DURATION, "0s")],
                LABEL_SCALE_ZERO_DURATION,
            ),
            (&[(LABEL_SCALE_AUTOSCALER, "keda")], LABEL_SCALE_AUTOSCALER),
        ];
        for (pairs, label) in cases {
            let err = ScalePolicy::from_labels(&labels(pairs), 100)
                .expect_err(&format!("{pairs:?} must be refused"));
            assert!(
                err.to_string().contains(label),
                "{pairs:?}: {err} should name {label}"
            );
        }
    }

    #[test]
    fn desired_is_load_over_target_times_proportion_clamped() {
        let p = policy(&[
            (LABEL_SCALE_MIN, "1"),
            (LABEL_SCALE_MAX, "5"),
            (LABEL_SCALE_TARGET, "2"),
            (LABEL_SCALE_TYPE, "capacity"),
        ]);
        for (load, want) in [
            (0.0, 1),
            (1.0, 1),
            (1.8, 1),
            (1.9, 2),
            (3.6, 2),
            (3.7, 3),
            (8.0, 5),
            (1000.0, 5),
            (f64::NAN, 1),
            (f64::INFINITY, 1),
            (-3.0, 1),
        ] {
            assert_eq!(p.replicas_for(load), want, "load {load}");
        }
        let p = policy(&[(LABEL_SCALE_MIN, "3"), (LABEL_SCALE_TARGET, "10")]);
        assert_eq!(p.replicas_for(0.0), 3);
        assert_eq!(p.replicas_for(100.0), 12);
        let p = policy(&[(LABEL_SCALE_MIN, "0")]);
        assert_eq!(
            p.replicas_for(0.0),
            1,
            "the autoscaler keeps one unless zero is allowed"
        );
    }

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn sample(now: u64, load: f64, current: u64) -> Sample {
        Sample {
            now: at(now),
            load,
            active: load > 0.0,
            current,
        }
    }

    const DELAY: Duration = Duration::from_secs(60);

    #[test]
    fn scale_up_is_immediate_and_scale_down_waits_for_the_window() {
        let p = policy(&[
            (LABEL_SCALE_TARGET, "10"),
            (LABEL_SCALE_TARGET_PROPORTION, "1"),
        ]);
        let mut s = Stabilizer::default();
        // (time, load, current replicas) -> desired, change
        let steps: &[(u64, f64, u64, u64, Option<Direction>)] = &[
            (0, 0.0, 1, 1, None),
            (1, 45.0, 1, 5, Some(Direction::Up)),
            (2, 45.0, 5, 5, None),
            (3, 0.0, 5, 5, None),
            (30, 25.0, 5, 5, None),
            (60, 0.0, 5, 5, None),
            // 5 recommended at t=2 leaves the window after t=62.
            (62, 0.0, 5, 5, None),
            (63, 0.0, 5, 3, Some(Direction::Down)),
            (90, 0.0, 3, 3, None),
            (91, 0.0, 3, 1, Some(Direction::Down)),
            (92, 0.0, 1, 1, None),
        ];
        for &(now, load, current, desired, change) in steps {
            let d = s.decide(&p, sample(now, load, current), DELAY);
            assert_eq!(d, Decision { desired, change }, "at {now}s load {load}");
        }
    }

    #[test]
    fn a_sawtooth_load_does_not_flap() {
        let p = policy(&[
            (LABEL_SCALE_TARGET, "10"),
            (LABEL_SCALE_TARGET_PROPORTION, "1"),
        ]);
        let mut s = Stabilizer::default();
        let mut current = 1;
        let mut changes = 0;
        for t in 0..50 {
            let load = if t % 2 == 0 { 40.0 } else { 0.0 };
            let d = s.decide(&p, sample(t, load, current), DELAY);
            if d.change.is_some() {
                changes += 1;
            }
            current = d.desired;
        }
        assert_eq!(current, 4);
        assert_eq!(
            changes, 1,
            "one scale-up, no scale-down while the peaks recur"
        );
    }

    #[test]
    fn nothing_scales_down_before_a_whole_window_was_seen() {
        let p = policy(&[]);
        let mut s = Stabilizer::default();
        // A gateway restarting finds a function at 4 replicas with no load.
        assert_eq!(s.decide(&p, sample(100, 0.0, 4), DELAY).change, None);
        assert_eq!(s.decide(&p, sample(160, 0.0, 4), DELAY).change, None);
        assert_eq!(
            s.decide(&p, sample(161, 0.0, 4), DELAY),
            Decision {
                desired: 1,
                change: Some(Direction::Down)
            }
        );
    }

    #[test]
    fn a_count_set_by_hand_is_kept_for_a_whole_window() {
        let p = policy(&[]);
        let mut s = Stabilizer::default();
        assert_eq!(s.decide(&p, sample(0, 0.0, 1), DELAY).change, None);
        // `POST /system/scale-function` to 3 at t=5.
        for now in 5..=65 {
            assert_eq!(
                s.decide(&p, sample(now, 0.0, 3), DELAY).change,
                None,
                "at {now}s"
            );
        }
        assert_eq!(s.decide(&p, sample(66, 0.0, 3), DELAY).desired, 1);
    }

    #[test]
    fn an_idle_function_goes_to_zero_only_when_allowed() {
        let zero = policy(&[
            (LABEL_SCALE_ZERO, "true"),
            (LABEL_SCALE_ZERO_DURATION, "3s"),
        ]);
        let mut s = Stabilizer::default();
        let steps: &[(u64, f64, u64, u64, Option<Direction>)] = &[
            (0, 1.0, 1, 1, None),
            (2, 0.0, 1, 1, None),
            (3, 0.0, 1, 0, Some(Direction::Down)),
            // At zero it stays there; the next call wakes it, not the autoscaler.
            (4, 0.0, 0, 0, None),
            // Woken by a call: active again, the idle clock restarts.
            (10, 1.0, 1, 1, None),
            (12, 0.0, 1, 1, None),
            (13, 0.0, 1, 0, Some(Direction::Down)),
        ];
        for &(now, load, current, desired, change) in steps {
            let d = s.decide(&zero, sample(now, load, current), DELAY);
            assert_eq!(d, Decision { desired, change }, "at {now}s");
        }

        let no_zero = policy(&[(LABEL_SCALE_ZERO_DURATION, "3s")]);
        let mut s = Stabilizer::default();
        for now in 0..20 {
            let d = s.decide(&no_zero, sample(now, 0.0, 1), DELAY);
            assert_eq!(d.desired, 1, "at {now}s");
        }
    }

    #[test]
    fn a_function_idle_since_deploy_goes_to_zero_after_the_duration() {
        let p = policy(&[
            (LABEL_SCALE_ZERO, "true"),
            (LABEL_SCALE_ZERO_DURATION, "3s"),
        ]);
        let mut s = Stabilizer::default();
        assert_eq!(s.decide(&p, sample(50, 0.0, 1), DELAY).desired, 1);
        assert_eq!(s.decide(&p, sample(52, 0.0, 1), DELAY).desired, 1);
        assert_eq!(s.decide(&p, sample(53, 0.0, 1), DELAY).desired, 0);
    }

    #[test]
    fn in_flight_calls_keep_a_function_awake() {
        let p = policy(&[
            (LABEL_SCALE_ZERO, "true"),
            (LABEL_SCALE_ZERO_DURATION, "3s"),
            (LABEL_SCALE_TYPE, "capacity"),
        ]);
        let mut s = Stabilizer::default();
        for now in 0..10 {
            // One long call, still running: load 1, active.
            let d = s.decide(&p, sample(now, 1.0, 1), DELAY);
            assert_eq!(d.desired, 1, "at {now}s");
        }
    }
}
