//! What users see of schedules: the `GET /system/schedules` objects ([`schedules`]) and the
//! `courier schedules` table ([`table`]).

use chrono::{DateTime, SecondsFormat, Utc};
use courier_core::FunctionStatus;
use serde::{Deserialize, Serialize};

use crate::policy::ScheduleSpec;

/// How many fire times a view lists.
pub const UPCOMING: usize = 5;

/// One scheduled function, as `GET /system/schedules` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// The function's name.
    pub function: String,
    /// Its namespace.
    pub namespace: String,
    /// The `schedule` annotation as written.
    pub schedule: String,
    /// The zone its local times are read in: an IANA name, or `UTC`.
    pub timezone: String,
    /// The next fire times (up to five), RFC 3339 in UTC; empty when it never fires again or
    /// the schedule is invalid.
    pub next: Vec<String>,
    /// Why the function does not fire, when an annotation is invalid (deployed before
    /// validation existed, or edited outside the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// RFC 3339 in UTC with whole seconds (`2026-03-29T01:00:00Z`), as views and the
/// `X-Scheduled-Time` header show fire times.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The scheduled functions among `functions`, sorted by namespace then name, with their next
/// fire times after `now`.
pub fn schedules(functions: &[FunctionStatus], now: DateTime<Utc>) -> Vec<ScheduleView> {
    let mut views: Vec<ScheduleView> = functions
        .iter()
        .filter_map(|f| {
            let spec = ScheduleSpec::from_annotations(&f.annotations)?;
            let schedule = f
                .annotations
                .get(crate::policy::SCHEDULE_ANNOTATION)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let view = match spec {
                Ok(spec) => ScheduleView {
                    function: f.name.clone(),
                    namespace: f.namespace.clone(),
                    schedule,
                    timezone: spec.expression.zone.name().to_owned(),
                    next: spec
                        .expression
                        .upcoming(now, UPCOMING)
                        .into_iter()
                        .map(format_time)
                        .collect(),
                    error: None,
                },
                Err(error) => ScheduleView {
                    function: f.name.clone(),
                    namespace: f.namespace.clone(),
                    schedule,
                    timezone: String::new(),
                    next: Vec::new(),
                    error: Some(error),
                },
            };
            Some(view)
        })
        .collect();
    views.sort_by(|a, b| (&a.namespace, &a.function).cmp(&(&b.namespace, &b.function)));
    views
}

/// The `courier schedules` table: a header, then one line per schedule with its next fire time
/// (or why it does not fire). Columns are padded to their widest cell.
pub fn table(views: &[ScheduleView]) -> String {
    let header = ["FUNCTION", "NAMESPACE", "SCHEDULE", "TIMEZONE", "NEXT"];
    let rows: Vec<[String; 5]> = views
        .iter()
        .map(|v| {
            let next = match (&v.error, v.next.first()) {
                (Some(error), _) => format!("invalid: {error}"),
                (None, Some(next)) => next.clone(),
                (None, None) => "never".to_owned(),
            };
            [
                v.function.clone(),
                v.namespace.clone(),
                v.schedule.clone(),
                v.timezone.clone(),
                next,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn function(name: &str, namespace: &str, annotations: &[(&str, &str)]) -> FunctionStatus {
        FunctionStatus {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..FunctionStatus::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn only_scheduled_functions_are_listed_with_five_next_times() {
        let functions = [
            function(
                "report",
                "openfaas-fn",
                &[
                    ("topic", "cron-function"),
                    ("schedule", "CRON_TZ=Europe/Berlin 0 12 * * *"),
                ],
            ),
            function("echo", "openfaas-fn", &[]),
            function(
                "tick",
                "dev",
                &[("topic", "cron-function"), ("schedule", "*/2 * * * * *")],
            ),
        ];
        let views = schedules(&functions, now());
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].function, "tick");
        assert_eq!(views[0].timezone, "UTC");
        assert_eq!(
            views[0].next,
            [
                "2026-01-01T10:00:02Z",
                "2026-01-01T10:00:04Z",
                "2026-01-01T10:00:06Z",
                "2026-01-01T10:00:08Z",
                "2026-01-01T10:00:10Z"
            ]
        );
        assert_eq!(views[1].function, "report");
        assert_eq!(views[1].schedule, "CRON_TZ=Europe/Berlin 0 12 * * *");
        assert_eq!(views[1].timezone, "Europe/Berlin");
        assert_eq!(views[1].next[0], "2026-01-01T11:00:00Z");
        assert_eq!(views[1].next.len(), 5);
    }

    #[test]
    fn the_json_uses_the_documented_names() {
        let views = schedules(
            &[function(
                "tick",
                "openfaas-fn",
                &[("topic", "cron-function"), ("schedule", "@hourly")],
            )],
            now(),
        );
        let json = serde_json::to_value(&views).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "function": "tick",
                "namespace": "openfaas-fn",
                "schedule": "@hourly",
                "timezone": "UTC",
                "next": [
                    "2026-01-01T11:00:00Z",
                    "2026-01-01T12:00:00Z",
                    "2026-01-01T13:00:00Z",
                    "2026-01-01T14:00:00Z",
                    "2026-01-01T15:00:00Z"
                ]
            }])
        );
    }

    #[test]
    fn an_invalid_schedule_is_listed_with_its_error() {
        let views = schedules(
            &[function(
                "bad",
                "openfaas-fn",
                &[("topic", "cron-function"), ("schedule", "0 9 * *")],
            )],
            now(),
        );
        assert!(views[0].next.is_empty());
        assert_eq!(
            views[0].error.as_deref(),
            Some(r#"schedule "0 9 * *": expected 5 or 6 fields, got 4"#)
        );
    }

    #[test]
    fn the_table_aligns_columns_and_shows_the_next_time() {
        let functions = [
            function(
                "report",
                "openfaas-fn",
                &[("topic", "cron-function"), ("schedule", "@daily")],
            ),
            function(
                "bad",
                "openfaas-fn",
                &[("topic", "cron-function"), ("schedule", "0 9 * *")],
            ),
        ];
        let text = table(&schedules(&functions, now()));
        assert_eq!(
            text,
            "FUNCTION  NAMESPACE    SCHEDULE  TIMEZONE  NEXT\n\
             bad       openfaas-fn  0 9 * *             invalid: schedule \"0 9 * *\": expected 5 or 6 fields, got 4\n\
             report    openfaas-fn  @daily    UTC       2026-01-02T00:00:00Z\n"
        );
    }
}
