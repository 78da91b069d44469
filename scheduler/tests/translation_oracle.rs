//! The crontab translation, checked against an independent implementation: for random valid
//! 5- and 6-field expressions, Courier's next fire times (the `cron` crate behind the
//! translation) must equal croner's, which reads crontab weekdays natively (0/7 = Sunday).
//!
//! The generator stays inside the grammar both accept with the same meaning. Left out on
//! purpose: `N/step` (croner's strict mode refuses it), and in the day fields `*` mixed into a
//! list or `*/1`, which robfig/cron (and so Courier) counts as "unrestricted" for the
//! day-of-month OR day-of-week rule while croner does not.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use courier_scheduler::expression::Expression;
use proptest::prelude::*;

const FIRES: usize = 12;

#[derive(Debug, Clone, Copy)]
struct Span {
    lo: u32,
    hi: u32,
    names: Option<&'static [&'static str]>,
    /// Names start at this value (1 for months, 0 for weekdays).
    name_base: u32,
}

const SECOND: Span = Span {
    lo: 0,
    hi: 59,
    names: None,
    name_base: 0,
};
const MINUTE: Span = SECOND;
const HOUR: Span = Span {
    lo: 0,
    hi: 23,
    names: None,
    name_base: 0,
};
const DAY: Span = Span {
    lo: 1,
    hi: 31,
    names: None,
    name_base: 0,
};
const MONTH: Span = Span {
    lo: 1,
    hi: 12,
    names: Some(&[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ]),
    name_base: 1,
};
const WEEKDAY: Span = Span {
    lo: 0,
    hi: 7,
    names: Some(&["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
    name_base: 0,
};

/// A value as a number or, where the field has names (not for weekday 7), as a name.
fn value(span: Span) -> impl Strategy<Value = (u32, String)> {
    (span.lo..=span.hi, any::<bool>()).prop_map(move |(v, named)| {
        let text = match span.names {
            Some(names) if named && ((v - span.name_base) as usize) < names.len() => {
                let name = names[(v - span.name_base) as usize];
                if v % 2 == 0 {
                    name.to_lowercase()
                } else {
                    name.to_owned()
                }
            }
            _ => v.to_string(),
        };
        (v, text)
    })
}

/// One list element that restricts the field: `n`, `a-b`, `a-b/s`, `*/s` (s >= 2).
fn restricting_part(span: Span) -> impl Strategy<Value = String> {
    let width = span.hi - span.lo + 1;
    prop_oneof![
        value(span).prop_map(|(_, t)| t),
        (value(span), value(span)).prop_map(|((a, ta), (b, tb))| if a <= b {
            format!("{ta}-{tb}")
        } else {
            format!("{tb}-{ta}")
        }),
        (value(span), value(span), 1..=width).prop_map(|((a, ta), (b, tb), s)| if a <= b {
            format!("{ta}-{tb}/{s}")
        } else {
            format!("{tb}-{ta}/{s}")
        }),
        (2..=width).prop_map(|s| format!("*/{s}")),
    ]
    .prop_map(move |part| {
        // `SUN` closing a range from Sunday (`0-SUN`) is Sunday alone for robfig/cron and
        // Courier, but the whole week for croner; only `X-SUN` with X > 0 is shared.
        if span.name_base == 0 && span.names.is_some() {
            part.replace("0-sun", "0-0")
                .replace("0-SUN", "0-0")
                .replace("sun-sun", "0-0")
                .replace("sun-SUN", "0-0")
        } else {
            part
        }
    })
}

/// Weekday ranges closed by the name SUN (`FRI-SUN`), which run to the end of the week.
fn weekday_to_sunday() -> impl Strategy<Value = String> {
    (1u32..=6, prop::option::of(1u32..=7)).prop_map(|(a, step)| match step {
        Some(s) => format!("{a}-SUN/{s}"),
        None => format!("{a}-SUN"),
    })
}

/// A whole field: `*`, or a list of one to three restricting elements.
fn field(span: Span) -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_owned()),
        3 => prop::collection::vec(restricting_part(span), 1..=3).prop_map(|parts| parts.join(",")),
    ]
}

fn day_field(span: Span) -> impl Strategy<Value = String> {
    let part = if span.name_base == 0 && span.names.is_some() {
        prop_oneof![4 => restricting_part(span).boxed(), 1 => weekday_to_sunday().boxed()].boxed()
    } else {
        restricting_part(span).boxed()
    };
    prop_oneof![
        2 => Just("*".to_owned()),
        1 => Just("?".to_owned()),
        3 => prop::collection::vec(part, 1..=3).prop_map(|parts| parts.join(",")),
    ]
}

fn five_fields() -> impl Strategy<Value = String> {
    (
        field(MINUTE),
        field(HOUR),
        day_field(DAY),
        field(MONTH),
        day_field(WEEKDAY),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"))
}

fn six_fields() -> impl Strategy<Value = String> {
    (field(SECOND), five_fields()).prop_map(|(s, rest)| format!("{s} {rest}"))
}

fn start() -> impl Strategy<Value = DateTime<Utc>> {
    // 2020-01-01 .. 2030-01-01, at any second.
    (1_577_836_800i64..1_893_456_000).prop_map(|secs| {
        Utc.timestamp_opt(secs, 0)
            .single()
            .expect("a valid timestamp")
    })
}

fn courier_fires(expression: &str, after: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    Expression::parse(expression)
        .unwrap_or_else(|e| panic!("Courier refused a valid expression: {e}"))
        .upcoming(after, FIRES)
}

fn croner_fires(expression: &str, after: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let cron = croner::Cron::from_str(expression)
        .unwrap_or_else(|e| panic!("croner refused {expression:?}: {e}"));
    let mut out = Vec::new();
    let mut cursor = after;
    while out.len() < FIRES {
        // croner gives up (an error) where the `cron` crate stops (`None`): no further fire.
        let Ok(next) = cron.find_next_occurrence(&cursor, false) else {
            break;
        };
        if next.timestamp() >= 4_102_444_800 {
            // The `cron` crate's calendar ends with the year 2100.
            break;
        }
        out.push(next);
        cursor = next;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn five_field_expressions_fire_when_croner_says(expression in five_fields(), after in start()) {
        prop_assert_eq!(courier_fires(&expression, after), croner_fires(&expression, after), "{}", expression);
    }

    #[test]
    fn six_field_expressions_fire_when_croner_says(expression in six_fields(), after in start()) {
        prop_assert_eq!(courier_fires(&expression, after), croner_fires(&expression, after), "{}", expression);
    }
}

#[test]
fn the_oracle_reads_weekday_one_as_monday() {
    // Guards the oracle itself: if croner ever read 1 as Sunday, the property would prove
    // nothing about weekdays.
    let after = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(); // a Thursday
    let fires = croner_fires("0 9 * * 1", after);
    assert_eq!(fires[0], Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap());
}
