//! When a schedule fires: the next fire time after an instant, in UTC, with the daylight-saving
//! rule applied.
//!
//! Calendar schedules name local (wall-clock) times in their zone. Every matching local time
//! fires **once**:
//!
//! - a local time that exists once fires at that instant;
//! - a local time repeated by a fall-back transition fires at its **first** occurrence only;
//! - a local time skipped by a spring-forward transition fires at the **first instant after the
//!   gap** (e.g. 02:30 on the day Berlin jumps from 02:00 to 03:00 fires at 03:00 CEST). All
//!   skipped times of one gap collapse into that single fire, which also coincides with a
//!   regular 03:00 fire when the schedule has one.
//!
//! The `cron` crate alone does neither: in a `chrono_tz` zone it silently drops local times in a
//! gap and fires repeated local times twice. So the `cron` crate is only asked for matching
//! local times (it walks naive wall-clock time, presented as UTC, where no transition exists),
//! and this module maps each one onto the time line. Because that mapping never goes backwards
//! (a later local time never fires earlier), the first mapped instant after `after` is the
//! answer.
//!
//! `@every` schedules ignore the zone: they fire at multiples of their period since the Unix
//! epoch.

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::expression::{Expression, Kind};

/// At most this many local times are examined for one answer (a per-second schedule restarted
/// inside a repeated hour walks 3,600 of them).
const MAX_LOCAL_STEPS: usize = 100_000;

impl Expression {
    /// The first fire time strictly after `after`; `None` when it never fires again (e.g.
    /// `0 0 30 2 *`, or past the year 2100 where the `cron` crate stops).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(period) => every_next(after, period.as_secs()),
            Kind::Calendar(schedules) => calendar_next(schedules, self.zone, after),
        }
    }

    /// The next `count` fire times after `after`, earliest first.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count);
        let mut cursor = after;
        while out.len() < count {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            out.push(next);
            cursor = next;
        }
        out
    }
}

fn every_next(after: DateTime<Utc>, period_secs: u64) -> Option<DateTime<Utc>> {
    let period = i64::try_from(period_secs).ok()?;
    // The smallest multiple of the period strictly after `after` (which may have a fraction).
    let next = after
        .timestamp()
        .div_euclid(period)
        .checked_add(1)?
        .checked_mul(period)?;
    DateTime::from_timestamp(next, 0)
}

fn calendar_next(
    schedules: &[cron::Schedule],
    zone: Tz,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut cursor = after.with_timezone(&zone).naive_local();
    for _ in 0..MAX_LOCAL_STEPS {
        let local = next_local(schedules, cursor)?;
        let instant = match zone.from_local_datetime(&local) {
            LocalResult::Single(t) => t.to_utc(),
            LocalResult::Ambiguous(first, _) => first.to_utc(),
            LocalResult::None => gap_end(zone, local)?,
        };
        if instant > after {
            return Some(instant);
        }
        cursor = local;
    }
    None
}

/// The earliest local time after `cursor` (second granularity) any of the schedules names.
fn next_local(schedules: &[cron::Schedule], cursor: NaiveDateTime) -> Option<NaiveDateTime> {
    let as_utc = cursor.and_utc();
    schedules
        .iter()
        .filter_map(|s| s.after(&as_utc).next())
        .min()
        .map(|t| t.naive_utc())
}

/// The first instant whose wall-clock time is past `local`, a local time inside a gap: the
/// moment the clocks jumped. Found by bisection over ±26 hours (offsets stay within -12 h and
/// +14 h, and a gap is never longer than a day).
fn gap_end(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    const SPAN_SECS: i64 = 26 * 3600;
    let wall =
        |secs: i64| DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&zone).naive_local());
    let base = local.and_utc().timestamp();
    let (mut lo, mut hi) = (base - SPAN_SECS, base + SPAN_SECS);
    if wall(lo)? > local || wall(hi)? <= local {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall(mid)? > local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .to_utc()
    }

    fn next(expression: &str, after: &str) -> String {
        fires(expression, after, 1).remove(0)
    }

    fn fires(expression: &str, after: &str, count: usize) -> Vec<String> {
        Expression::parse(expression)
            .unwrap_or_else(|e| panic!("{e}"))
            .upcoming(at(after), count)
            .iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    // 2026-01-01 is a Thursday.

    #[test]
    fn five_field_weekday_one_means_monday() {
        assert_eq!(
            next("0 9 * * 1", "2026-01-01T00:00:00Z"),
            "2026-01-05T09:00:00Z"
        );
    }

    #[test]
    fn five_field_weekdays_zero_and_seven_mean_sunday() {
        assert_eq!(
            next("0 9 * * 0", "2026-01-01T00:00:00Z"),
            "2026-01-04T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * 7", "2026-01-01T00:00:00Z"),
            "2026-01-04T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * SUN", "2026-01-01T00:00:00Z"),
            "2026-01-04T09:00:00Z"
        );
    }

    #[test]
    fn mon_fri_skips_the_weekend() {
        assert_eq!(
            fires("0 9 * * MON-FRI", "2026-01-02T10:00:00Z", 2),
            ["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z"]
        );
        assert_eq!(
            fires("0 9 * * 1-5", "2026-01-02T10:00:00Z", 2),
            ["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 13th, or any Friday.
        assert_eq!(
            fires("0 0 13 * 5", "2026-01-01T00:00:00Z", 4),
            [
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-13T00:00:00Z",
                "2026-01-16T00:00:00Z"
            ]
        );
    }

    #[test]
    fn the_31st_skips_shorter_months() {
        assert_eq!(
            fires("0 0 31 * *", "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-31T00:00:00Z",
                "2026-03-31T00:00:00Z",
                "2026-05-31T00:00:00Z"
            ]
        );
        assert_eq!(
            fires("0 12 30 * *", "2026-01-31T00:00:00Z", 2),
            ["2026-03-30T12:00:00Z", "2026-04-30T12:00:00Z"]
        );
    }

    #[test]
    fn february_29_fires_only_in_leap_years() {
        assert_eq!(
            fires("0 0 29 2 *", "2024-03-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
        );
    }

    #[test]
    fn an_impossible_date_never_fires() {
        let e = Expression::parse("0 0 30 2 *").unwrap();
        assert_eq!(e.next_after(at("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn six_fields_fire_on_seconds() {
        assert_eq!(
            fires("*/2 * * * * *", "2026-01-01T10:00:00.500Z", 3),
            [
                "2026-01-01T10:00:02Z",
                "2026-01-01T10:00:04Z",
                "2026-01-01T10:00:06Z"
            ]
        );
        assert_eq!(
            next("15 30 9 * * 1", "2026-01-01T00:00:00Z"),
            "2026-01-05T09:30:15Z"
        );
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        assert_eq!(
            fires("@every 30s", "2026-01-01T10:00:10Z", 2),
            ["2026-01-01T10:00:30Z", "2026-01-01T10:01:00Z"]
        );
        // 1m30s: multiples of 90 s since 1970 (2026-01-01T00:00:00Z is 1767225600 = 90 × 19635840).
        assert_eq!(
            fires("@every 1m30s", "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T00:01:30Z", "2026-01-01T00:03:00Z"]
        );
        assert_eq!(
            next("CRON_TZ=Europe/Berlin @every 1h", "2026-03-29T00:59:59Z"),
            "2026-03-29T01:00:00Z"
        );
    }

    #[test]
    fn a_zone_shifts_local_times() {
        // Berlin is UTC+1 in winter, UTC+2 in summer.
        assert_eq!(
            next("CRON_TZ=Europe/Berlin 0 9 * * *", "2026-01-01T00:00:00Z"),
            "2026-01-01T08:00:00Z"
        );
        assert_eq!(
            next("TZ=Europe/Berlin 0 9 * * *", "2026-07-01T00:00:00Z"),
            "2026-07-01T07:00:00Z"
        );
    }

    // Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z).
    // New York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z).

    #[test]
    fn berlin_spring_forward_fires_a_skipped_time_once_when_the_gap_ends() {
        assert_eq!(
            fires(
                "CRON_TZ=Europe/Berlin 30 2 * * *",
                "2026-03-28T12:00:00Z",
                2
            ),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
    }

    #[test]
    fn berlin_spring_forward_collapses_every_skipped_time_into_one_fire() {
        assert_eq!(
            fires(
                "CRON_TZ=Europe/Berlin */15 * * * *",
                "2026-03-29T00:40:00Z",
                3
            ),
            [
                "2026-03-29T00:45:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:15:00Z"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fires_a_repeated_time_only_the_first_time() {
        assert_eq!(
            fires(
                "CRON_TZ=Europe/Berlin 30 2 * * *",
                "2026-10-24T12:00:00Z",
                2
            ),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        assert_eq!(
            fires(
                "CRON_TZ=Europe/Berlin */30 * * * *",
                "2026-10-24T23:45:00Z",
                3
            ),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }

    #[test]
    fn starting_inside_the_repeated_hour_does_not_fire_it_again() {
        // 01:10Z is 02:10 CET, the second pass; 02:30 already fired at 00:30Z.
        assert_eq!(
            next("CRON_TZ=Europe/Berlin 30 2 * * *", "2026-10-25T01:10:00Z"),
            "2026-10-26T01:30:00Z"
        );
    }

    #[test]
    fn new_york_spring_forward_fires_a_skipped_time_once_when_the_gap_ends() {
        assert_eq!(
            fires(
                "CRON_TZ=America/New_York 30 2 * * *",
                "2026-03-07T12:00:00Z",
                2
            ),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
        );
    }

    #[test]
    fn new_york_fall_back_fires_a_repeated_time_only_the_first_time() {
        assert_eq!(
            fires(
                "CRON_TZ=America/New_York 30 1 * * *",
                "2026-10-31T12:00:00Z",
                2
            ),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
    }

    #[test]
    fn a_half_hour_gap_and_a_skipped_day_end_where_the_clocks_land() {
        // Lord Howe moves 02:00 -> 02:30 (+10:30 -> +11) on 2026-10-04.
        assert_eq!(
            next(
                "CRON_TZ=Australia/Lord_Howe 15 2 * * *",
                "2026-10-03T12:00:00Z"
            ),
            "2026-10-03T15:30:00Z"
        );
        // Samoa skipped 2011-12-30 entirely (-10 -> +14).
        assert_eq!(
            next("CRON_TZ=Pacific/Apia 0 12 30 12 *", "2011-12-01T00:00:00Z"),
            "2011-12-30T10:00:00Z"
        );
    }

    #[test]
    fn the_cron_crate_alone_gets_daylight_saving_wrong() {
        // What this module corrects: in a zone, `cron` drops the skipped 02:30 and fires the
        // repeated 02:30 twice.
        use std::str::FromStr;
        let berlin = chrono_tz::Europe::Berlin;
        let daily = cron::Schedule::from_str("0 30 2 * * *").unwrap();
        let spring: Vec<_> = daily
            .after(&at("2026-03-28T12:00:00Z").with_timezone(&berlin))
            .take(1)
            .map(|t| t.to_utc())
            .collect();
        assert_eq!(spring, [at("2026-03-30T00:30:00Z")]);
        let fall: Vec<_> = daily
            .after(&at("2026-10-24T12:00:00Z").with_timezone(&berlin))
            .take(2)
            .map(|t| t.to_utc())
            .collect();
        assert_eq!(
            fall,
            [at("2026-10-25T00:30:00Z"), at("2026-10-25T01:30:00Z")]
        );
    }

    #[test]
    fn upcoming_lists_the_next_times_in_order() {
        assert_eq!(
            fires("@hourly", "2026-01-01T00:30:00Z", 3),
            [
                "2026-01-01T01:00:00Z",
                "2026-01-01T02:00:00Z",
                "2026-01-01T03:00:00Z"
            ]
        );
    }
}
