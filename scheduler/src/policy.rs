//! Which functions are scheduled, and how: the annotations, read into a [`ScheduleSpec`], and
//! [`validate`], the deploy-time check.

use std::collections::BTreeMap;
use std::fmt;

use chrono::Utc;

use crate::expression::Expression;

/// The annotation listing a function's topics (comma-separated).
pub const TOPIC_ANNOTATION: &str = "topic";
/// The topic that makes a function scheduled.
pub const CRON_TOPIC: &str = "cron-function";
/// The annotation holding the schedule expression.
pub const SCHEDULE_ANNOTATION: &str = "schedule";
/// The annotation choosing the overlap policy: `forbid` (default) or `allow`.
pub const CONCURRENCY_ANNOTATION: &str = "com.courier.schedule.concurrency";
/// The annotation choosing the missed-fire policy: `skip` (default) or `once`.
pub const MISSED_ANNOTATION: &str = "com.courier.schedule.missed";

/// What happens when a fire is due while the previous fire of the same schedule is still
/// outstanding (queued or running).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// Skip the fire (and count it as an `overlap` skip).
    #[default]
    Forbid,
    /// Fire anyway.
    Allow,
}

/// What happens to fires that fell due while the scheduler was not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Missed {
    /// Skip them (each counted as a `missed` skip).
    #[default]
    Skip,
    /// Fire one catch-up run (for the latest missed time), skip the others.
    Once,
}

impl Concurrency {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "forbid" => Ok(Self::Forbid),
            "allow" => Ok(Self::Allow),
            other => Err(format!(
                "annotation {CONCURRENCY_ANNOTATION}: {other:?} is not allow or forbid"
            )),
        }
    }

    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbid => "forbid",
            Self::Allow => "allow",
        }
    }
}

impl Missed {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "skip" => Ok(Self::Skip),
            "once" => Ok(Self::Once),
            other => Err(format!(
                "annotation {MISSED_ANNOTATION}: {other:?} is not skip or once"
            )),
        }
    }

    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Once => "once",
        }
    }
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scheduled function's schedule and policies, read from its annotations.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// When it fires.
    pub expression: Expression,
    /// Whether fires may overlap.
    pub concurrency: Concurrency,
    /// What happens to fires missed while the scheduler was down.
    pub missed: Missed,
}

/// Whether the `topic` annotation lists `cron-function`.
pub fn has_cron_topic(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(TOPIC_ANNOTATION)
        .is_some_and(|topics| topics.split(',').any(|t| t.trim() == CRON_TOPIC))
}

impl ScheduleSpec {
    /// The function's schedule: `None` when it is not scheduled (no `cron-function` topic or no
    /// `schedule` annotation), `Some(Err)` when an annotation is invalid.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
    ) -> Option<Result<Self, String>> {
        if !has_cron_topic(annotations) {
            return None;
        }
        let schedule = annotations.get(SCHEDULE_ANNOTATION)?;
        Some(Self::parse(schedule, annotations))
    }

    fn parse(schedule: &str, annotations: &BTreeMap<String, String>) -> Result<Self, String> {
        let (concurrency, missed) = policies(annotations)?;
        let expression = Expression::parse(schedule).map_err(|e| e.to_string())?;
        Ok(Self {
            expression,
            concurrency,
            missed,
        })
    }
}

fn policies(annotations: &BTreeMap<String, String>) -> Result<(Concurrency, Missed), String> {
    let concurrency = annotations
        .get(CONCURRENCY_ANNOTATION)
        .map(|v| Concurrency::parse(v))
        .transpose()?
        .unwrap_or_default();
    let missed = annotations
        .get(MISSED_ANNOTATION)
        .map(|v| Missed::parse(v))
        .transpose()?
        .unwrap_or_default();
    Ok((concurrency, missed))
}

/// The deploy-time check (the gateway answers 400 with the message): `Ok` for a function that
/// is not scheduled; otherwise the schedule must parse and fire at least once more, and the
/// policy annotations (checked whenever present) must hold known values.
///
/// ```
/// # use std::collections::BTreeMap;
/// let annotations = BTreeMap::from([
///     ("topic".to_owned(), "cron-function".to_owned()),
///     ("schedule".to_owned(), "0 9 * *".to_owned()),
/// ]);
/// assert_eq!(
///     courier_scheduler::validate(&annotations).unwrap_err(),
///     r#"schedule "0 9 * *": expected 5 or 6 fields, got 4"#
/// );
/// ```
pub fn validate(annotations: &BTreeMap<String, String>) -> Result<(), String> {
    policies(annotations)?;
    let Some(spec) = ScheduleSpec::from_annotations(annotations) else {
        return Ok(());
    };
    let spec = spec?;
    if spec.expression.next_after(Utc::now()).is_none() {
        return Err(format!(
            "schedule {:?}: never fires (no such date)",
            spec.expression.source
        ));
    }
    Ok(())
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
    fn a_function_is_scheduled_when_its_topics_contain_cron_function() {
        let a = annotations(&[("topic", "orders, cron-function"), ("schedule", "@hourly")]);
        assert!(ScheduleSpec::from_annotations(&a).is_some());
        let a = annotations(&[("topic", "cron-functions"), ("schedule", "@hourly")]);
        assert!(ScheduleSpec::from_annotations(&a).is_none());
        let a = annotations(&[("topic", "cron-function")]);
        assert!(ScheduleSpec::from_annotations(&a).is_none());
        let a = annotations(&[("schedule", "@hourly")]);
        assert!(ScheduleSpec::from_annotations(&a).is_none());
    }

    #[test]
    fn policies_default_to_forbid_and_skip() {
        let a = annotations(&[("topic", "cron-function"), ("schedule", "@hourly")]);
        let spec = ScheduleSpec::from_annotations(&a).unwrap().unwrap();
        assert_eq!(spec.concurrency, Concurrency::Forbid);
        assert_eq!(spec.missed, Missed::Skip);
        let a = annotations(&[
            ("topic", "cron-function"),
            ("schedule", "@hourly"),
            (CONCURRENCY_ANNOTATION, "allow"),
            (MISSED_ANNOTATION, "once"),
        ]);
        let spec = ScheduleSpec::from_annotations(&a).unwrap().unwrap();
        assert_eq!(spec.concurrency, Concurrency::Allow);
        assert_eq!(spec.missed, Missed::Once);
    }

    #[test]
    fn validate_accepts_unscheduled_functions_and_good_schedules() {
        assert_eq!(validate(&annotations(&[])), Ok(()));
        assert_eq!(
            validate(&annotations(&[(
                "schedule",
                "not checked without the topic"
            )])),
            Ok(())
        );
        assert_eq!(
            validate(&annotations(&[
                ("topic", "cron-function"),
                ("schedule", "CRON_TZ=Europe/Berlin */5 9-17 * * MON-FRI"),
            ])),
            Ok(())
        );
    }

    #[test]
    fn validate_explains_what_is_wrong() {
        let bad = |pairs: &[(&str, &str)]| validate(&annotations(pairs)).unwrap_err();
        assert_eq!(
            bad(&[("topic", "cron-function"), ("schedule", "0 9 * *")]),
            r#"schedule "0 9 * *": expected 5 or 6 fields, got 4"#
        );
        assert_eq!(
            bad(&[("topic", "cron-function"), ("schedule", "0 0 30 2 *")]),
            r#"schedule "0 0 30 2 *": never fires (no such date)"#
        );
        assert!(bad(&[(CONCURRENCY_ANNOTATION, "sometimes")]).contains("is not allow or forbid"));
        assert!(bad(&[(MISSED_ANNOTATION, "all")]).contains("is not skip or once"));
    }
}
