//! The `schedule` annotation's grammar and its translation to the `cron` crate's format.
//!
//! Users write what OpenFaaS's cron-connector (robfig/cron v3) accepts: a 5-field crontab
//! (`minute hour day-of-month month day-of-week`), descriptors (`@hourly`, `@every 30s`, …)
//! and an optional `CRON_TZ=<zone> ` / `TZ=<zone> ` prefix. Courier also accepts 6 fields with
//! seconds first. The `cron` crate parses neither the 5-field form nor crontab weekdays (its
//! numeric weekday 1 is Sunday, and 0 is refused; see rust-stack A.8), so every field is parsed
//! here into the set of values it names, and the set is written back in a form the `cron`
//! crate cannot misread: numbers for seconds to months, weekday **names** (`MON-FRI`), seconds
//! `0` prepended for the 5-field form.
//!
//! Two more crontab rules are kept on purpose:
//!
//! - Day-of-month and day-of-week: when both are restricted (neither starts with `*` or `?`),
//!   a day matches if **either** matches (Vixie cron, robfig/cron). The `cron` crate requires
//!   both, so such an expression becomes two `cron` schedules whose fire times are merged.
//! - `N/step` means `N-max/step`.
//!
//! What cannot be translated faithfully is refused with a message naming the field: `L`, `W`,
//! `#`, a 7th (year) field, a backwards range, a step of 0, values out of range.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;

/// A `schedule` annotation, parsed: what fires when, in which zone.
#[derive(Debug, Clone)]
pub struct Expression {
    /// The annotation value as written (trimmed).
    pub source: String,
    /// The zone local times are read in (`UTC` unless a `CRON_TZ=`/`TZ=` prefix names one).
    pub zone: Tz,
    /// When it fires.
    pub kind: Kind,
}

/// The two shapes of a schedule.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Calendar fields; a day matches when any of the schedules matches (one schedule unless
    /// both day fields are restricted).
    Calendar(Vec<cron::Schedule>),
    /// `@every <duration>`: whole seconds, aligned to the Unix epoch so that every replica and
    /// every restart agree on the fire times.
    Every(Duration),
}

/// Why an expression was refused; displayed as `schedule "<source>": <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule {expression:?}: {reason}")]
pub struct ExpressionError {
    /// The refused annotation value.
    pub expression: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Expression {
    /// Parses a `schedule` annotation value.
    pub fn parse(input: &str) -> Result<Self, ExpressionError> {
        let source = input.trim().to_owned();
        let refuse = |reason: String| ExpressionError {
            expression: source.clone(),
            reason,
        };
        let (zone, spec) = split_zone(&source).map_err(refuse)?;
        let kind = parse_spec(spec).map_err(refuse)?;
        Ok(Self { source, zone, kind })
    }

    /// The expressions handed to the `cron` crate (empty for `@every`): for tests, logs and docs.
    pub fn translated(&self) -> Vec<String> {
        match &self.kind {
            Kind::Calendar(schedules) => schedules.iter().map(|s| s.source().to_owned()).collect(),
            Kind::Every(_) => Vec::new(),
        }
    }
}

/// Splits a `CRON_TZ=<zone> ` or `TZ=<zone> ` prefix off; UTC when there is none.
fn split_zone(source: &str) -> Result<(Tz, &str), String> {
    let prefixed = ["CRON_TZ=", "TZ="]
        .iter()
        .find_map(|prefix| source.strip_prefix(prefix));
    let Some(rest) = prefixed else {
        return Ok((Tz::UTC, source));
    };
    let (name, spec) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| "a time zone prefix must be followed by an expression".to_owned())?;
    let zone = Tz::from_str(name).map_err(|_| {
        format!("unknown time zone {name:?} (use an IANA name such as Europe/Berlin, or UTC)")
    })?;
    Ok((zone, spec.trim_start()))
}

fn parse_spec(spec: &str) -> Result<Kind, String> {
    if spec.is_empty() {
        return Err("empty expression".to_owned());
    }
    if let Some(descriptor) = spec.strip_prefix('@') {
        return parse_descriptor(descriptor);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    let (seconds, rest) = match fields.len() {
        5 => (None, &fields[..]),
        6 => (Some(fields[0]), &fields[1..]),
        n => return Err(format!("expected 5 or 6 fields, got {n}")),
    };
    let seconds = match seconds {
        Some(text) => Field::parse(Unit::Second, text)?,
        None => Field::single(Unit::Second, 0),
    };
    let minutes = Field::parse(Unit::Minute, rest[0])?;
    let hours = Field::parse(Unit::Hour, rest[1])?;
    let days = Field::parse(Unit::DayOfMonth, rest[2])?;
    let months = Field::parse(Unit::Month, rest[3])?;
    let weekdays = Field::parse(Unit::DayOfWeek, rest[4])?;
    calendar(&seconds, &minutes, &hours, &days, &months, &weekdays)
}

fn parse_descriptor(descriptor: &str) -> Result<Kind, String> {
    let (word, arg) = match descriptor.split_once(char::is_whitespace) {
        Some((word, arg)) => (word, arg.trim()),
        None => (descriptor, ""),
    };
    let word = word.to_ascii_lowercase();
    let fixed = match word.as_str() {
        "yearly" | "annually" => "0 0 0 1 1 *",
        "monthly" => "0 0 0 1 * *",
        "weekly" => "0 0 0 * * SUN",
        "daily" | "midnight" => "0 0 0 * * *",
        "hourly" => "0 0 * * * *",
        "every" => return parse_every(arg),
        _ => {
            return Err(format!(
                "unknown descriptor @{word} (use @yearly, @annually, @monthly, @weekly, @daily, \
                 @midnight, @hourly or @every <duration>)"
            ));
        }
    };
    if !arg.is_empty() {
        return Err(format!("@{word} takes no argument"));
    }
    let schedule = cron::Schedule::from_str(fixed).map_err(|e| e.to_string())?;
    Ok(Kind::Calendar(vec![schedule]))
}

fn parse_every(arg: &str) -> Result<Kind, String> {
    if arg.is_empty() {
        return Err("@every needs a duration, e.g. @every 30s or @every 1m30s".to_owned());
    }
    let period = courier_core::duration::parse_go_duration(arg).map_err(|e| e.to_string())?;
    if period < Duration::from_secs(1) {
        return Err(format!("@every {arg}: the period must be at least 1s"));
    }
    if period.subsec_nanos() != 0 {
        return Err(format!(
            "@every {arg}: the period must be a whole number of seconds"
        ));
    }
    Ok(Kind::Every(period))
}

/// Builds the `cron` schedules for parsed fields, applying the day-of-month OR day-of-week rule.
fn calendar(
    seconds: &Field,
    minutes: &Field,
    hours: &Field,
    days: &Field,
    months: &Field,
    weekdays: &Field,
) -> Result<Kind, String> {
    let time = format!(
        "{} {} {}",
        seconds.render(),
        minutes.render(),
        hours.render()
    );
    let month = months.render();
    let texts = if days.star || weekdays.star {
        vec![format!(
            "{time} {} {month} {}",
            days.render(),
            weekdays.render()
        )]
    } else {
        vec![
            format!("{time} {} {month} *", days.render()),
            format!("{time} * {month} {}", weekdays.render()),
        ]
    };
    let schedules = texts
        .iter()
        .map(|text| {
            cron::Schedule::from_str(text)
                .map_err(|e| format!("internal translation {text:?} refused by cron: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Kind::Calendar(schedules))
}

/// One of the calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Unit {
    /// The values a number may take (day of week: 0 and 7 are both Sunday).
    fn bounds(self) -> (u32, u32) {
        match self {
            Unit::Second | Unit::Minute => (0, 59),
            Unit::Hour => (0, 23),
            Unit::DayOfMonth => (1, 31),
            Unit::Month => (1, 12),
            Unit::DayOfWeek => (0, 7),
        }
    }

    /// The span `*` covers (day of week: 0-6, as robfig/cron, so `*/2` is SUN,TUE,THU,SAT).
    fn star_span(self) -> (u32, u32) {
        match self {
            Unit::DayOfWeek => (0, 6),
            other => other.bounds(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::DayOfMonth => "day-of-month",
            Unit::Month => "month",
            Unit::DayOfWeek => "day-of-week",
        }
    }

    fn value(self, text: &str) -> Result<u32, String> {
        let (lo, hi) = self.bounds();
        if let Ok(n) = text.parse::<u32>() {
            return if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "{} field: {n} is out of range {lo}-{hi}",
                    self.name()
                ))
            };
        }
        let upper = text.to_ascii_uppercase();
        let names: &[&str] = match self {
            Unit::Month => &MONTH_NAMES,
            Unit::DayOfWeek => &WEEKDAY_NAMES,
            _ => &[],
        };
        let offset = if self == Unit::Month { 1 } else { 0 };
        match names.iter().position(|n| *n == upper) {
            Some(i) => Ok(i as u32 + offset),
            None if upper.contains(['L', 'W']) => Err(unsupported(self, text)),
            None => Err(format!("{} field: {text:?} is not a value", self.name())),
        }
    }
}

fn unsupported(unit: Unit, text: &str) -> String {
    format!(
        "{} field {text:?}: `L`, `W` and `#` are not supported",
        unit.name()
    )
}

/// A parsed field: the values it names, and whether it counts as unrestricted (`*`, `?`) for
/// the day-of-month / day-of-week rule.
#[derive(Debug, Clone)]
struct Field {
    unit: Unit,
    values: BTreeSet<u32>,
    star: bool,
}

impl Field {
    fn single(unit: Unit, value: u32) -> Self {
        Self {
            unit,
            values: BTreeSet::from([value]),
            star: false,
        }
    }

    fn parse(unit: Unit, text: &str) -> Result<Self, String> {
        let mut field = Self {
            unit,
            values: BTreeSet::new(),
            star: false,
        };
        for part in text.split(',') {
            field.add_part(part)?;
        }
        if unit == Unit::DayOfWeek && field.values.remove(&7) {
            field.values.insert(0);
        }
        Ok(field)
    }

    fn add_part(&mut self, part: &str) -> Result<(), String> {
        let unit = self.unit;
        let name = unit.name();
        if part.is_empty() {
            return Err(format!("{name} field: empty list element"));
        }
        if part.contains('#') {
            return Err(unsupported(unit, part));
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("{name} field: step {step:?} is not a number"))?;
                if step == 0 {
                    return Err(format!("{name} field {part:?}: a step must be at least 1"));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            if range == "?" && !matches!(unit, Unit::DayOfMonth | Unit::DayOfWeek) {
                return Err(format!(
                    "{name} field: `?` is only allowed in the day fields"
                ));
            }
            if step.unwrap_or(1) == 1 {
                self.star = true;
            }
            unit.star_span()
        } else if let Some((a_text, b_text)) = range.split_once('-') {
            let (a, mut b) = (unit.value(a_text)?, unit.value(b_text)?);
            // `FRI-SUN` runs to the end of the week: SUN closing a range is 7.
            if unit == Unit::DayOfWeek && b == 0 && a > 0 && b_text.eq_ignore_ascii_case("SUN") {
                b = 7;
            }
            if a > b {
                return Err(format!("{name} field: range {range:?} is backwards"));
            }
            (a, b)
        } else {
            let a = unit.value(range)?;
            // `N/step` means `N-max/step`.
            let hi = if step.is_some() {
                unit.star_span().1
            } else {
                a
            };
            (a, hi.max(a))
        };
        let step = step.unwrap_or(1) as usize;
        self.values.extend((lo..=hi).step_by(step));
        Ok(())
    }

    /// Writes the value set in the `cron` crate's syntax: `*`, runs `a-b`, single values,
    /// weekdays by name.
    fn render(&self) -> String {
        let (lo, hi) = self.unit.star_span();
        if self.values.len() == (hi - lo + 1) as usize {
            return "*".to_owned();
        }
        let show = |v: u32| match self.unit {
            Unit::DayOfWeek => WEEKDAY_NAMES[v as usize].to_owned(),
            _ => v.to_string(),
        };
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for &v in &self.values {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == v => *end = v,
                _ => runs.push((v, v)),
            }
        }
        runs.iter()
            .map(|&(a, b)| {
                if a == b {
                    show(a)
                } else {
                    format!("{}-{}", show(a), show(b))
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(text: &str) -> Vec<String> {
        Expression::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .translated()
    }

    fn refusal(text: &str) -> String {
        Expression::parse(text)
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn five_fields_get_zero_seconds_and_weekday_names() {
        assert_eq!(translate("0 9 * * 1"), ["0 0 9 * * MON"]);
        assert_eq!(translate("0 9 * * 1-5"), ["0 0 9 * * MON-FRI"]);
        assert_eq!(translate("0 9 * * 0"), ["0 0 9 * * SUN"]);
        assert_eq!(translate("0 9 * * 7"), ["0 0 9 * * SUN"]);
        assert_eq!(translate("0 9 * * 5-7"), ["0 0 9 * * SUN,FRI-SAT"]);
        assert_eq!(translate("0 9 * * */2"), ["0 0 9 * * SUN,TUE,THU,SAT"]);
        assert_eq!(translate("0 9 * * 1-5/2"), ["0 0 9 * * MON,WED,FRI"]);
        assert_eq!(translate("0 9 * * mon-fri"), ["0 0 9 * * MON-FRI"]);
        assert_eq!(translate("0 9 * * FRI-SUN"), ["0 0 9 * * SUN,FRI-SAT"]);
        assert_eq!(translate("0 9 * * SUN-SUN"), ["0 0 9 * * SUN"]);
        assert_eq!(translate("0 9 * * 0-7"), ["0 0 9 * * *"]);
    }

    #[test]
    fn other_fields_become_plain_numbers() {
        assert_eq!(translate("*/15 * * * *"), ["0 0,15,30,45 * * * *"]);
        assert_eq!(translate("5/20 1-3 * jan-mar *"), ["0 5,25,45 1-3 * 1-3 *"]);
        assert_eq!(translate("0 0 1,15 * *"), ["0 0 0 1,15 * *"]);
        assert_eq!(translate("*/90 * * * *"), ["0 0 * * * *"]);
    }

    #[test]
    fn six_fields_take_seconds_first_and_the_same_weekday_numbers() {
        let even: Vec<String> = (0..60).step_by(2).map(|s| s.to_string()).collect();
        assert_eq!(
            translate("*/2 * * * * *"),
            [format!("{} * * * * *", even.join(","))]
        );
        assert_eq!(translate("30 0 9 * * 1"), ["30 0 9 * * MON"]);
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        assert_eq!(translate("0 0 1 * 1"), ["0 0 0 1 * *", "0 0 0 * * MON"]);
        // A `*` in either day field keeps the plain AND.
        assert_eq!(translate("0 0 * * 1"), ["0 0 0 * * MON"]);
        assert_eq!(translate("0 0 1 * ?"), ["0 0 0 1 * *"]);
    }

    #[test]
    fn descriptors_translate_to_fixed_schedules() {
        assert_eq!(translate("@hourly"), ["0 0 * * * *"]);
        assert_eq!(translate("@daily"), ["0 0 0 * * *"]);
        assert_eq!(translate("@midnight"), ["0 0 0 * * *"]);
        assert_eq!(translate("@weekly"), ["0 0 0 * * SUN"]);
        assert_eq!(translate("@monthly"), ["0 0 0 1 * *"]);
        assert_eq!(translate("@yearly"), ["0 0 0 1 1 *"]);
        assert_eq!(translate("@annually"), ["0 0 0 1 1 *"]);
        let every = Expression::parse("@every 1m30s").unwrap();
        assert!(matches!(every.kind, Kind::Every(d) if d == Duration::from_secs(90)));
    }

    #[test]
    fn a_zone_prefix_names_the_zone() {
        let e = Expression::parse("CRON_TZ=Europe/Berlin 0 9 * * *").unwrap();
        assert_eq!(e.zone, chrono_tz::Europe::Berlin);
        assert_eq!(e.source, "CRON_TZ=Europe/Berlin 0 9 * * *");
        let e = Expression::parse("TZ=America/New_York @daily").unwrap();
        assert_eq!(e.zone, chrono_tz::America::New_York);
        assert_eq!(Expression::parse("0 9 * * *").unwrap().zone, Tz::UTC);
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert_eq!(
            refusal("0 9 * *"),
            r#"schedule "0 9 * *": expected 5 or 6 fields, got 4"#
        );
        assert!(refusal("0 0 9 * * * 2030").contains("expected 5 or 6 fields, got 7"));
        assert!(refusal("60 * * * *").contains("minute field: 60 is out of range 0-59"));
        assert!(refusal("0 24 * * *").contains("hour field: 24 is out of range 0-23"));
        assert!(refusal("0 0 0 * *").contains("day-of-month field: 0 is out of range 1-31"));
        assert!(refusal("0 0 * 13 *").contains("month field: 13 is out of range 1-12"));
        assert!(refusal("0 0 * * 8").contains("day-of-week field: 8 is out of range 0-7"));
        assert!(refusal("0 0 L * *").contains("`L`, `W` and `#` are not supported"));
        assert!(refusal("0 0 * * 1#2").contains("`L`, `W` and `#` are not supported"));
        assert!(refusal("0 0 15W * *").contains("not supported"));
        assert!(refusal("5-3 * * * *").contains("range \"5-3\" is backwards"));
        assert!(refusal("0 0 * * 5-0").contains("range \"5-0\" is backwards"));
        assert!(refusal("*/0 * * * *").contains("a step must be at least 1"));
        assert!(refusal("? * * * *").contains("only allowed in the day fields"));
        assert!(refusal("0 0 * * FOO").contains("\"FOO\" is not a value"));
        assert!(refusal("CRON_TZ=Mars/Olympus 0 9 * * *").contains("unknown time zone"));
        assert!(refusal("CRON_TZ=UTC").contains("must be followed by an expression"));
        assert!(refusal("@fortnightly").contains("unknown descriptor"));
        assert!(refusal("@every").contains("needs a duration"));
        assert!(refusal("@every 500ms").contains("at least 1s"));
        assert!(refusal("@every 1.5s").contains("whole number of seconds"));
        assert!(refusal("@every soon").contains("invalid duration"));
        assert!(refusal("@daily 5").contains("takes no argument"));
        assert!(refusal("").contains("empty expression"));
    }

    #[test]
    fn month_and_weekday_names_with_l_and_w_are_names_not_operators() {
        assert_eq!(translate("0 0 * jul wed"), ["0 0 0 * 7 WED"]);
    }
}
