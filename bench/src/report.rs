//! Summaries of a `sync` run: medians over rounds per variant, and ratios
//! between variants taken per round (the runs of one round are adjacent in
//! time, so they share the machine's noise) and then their median.

use serde_json::{Value, json};

use crate::load::Stats;

/// Courier must reach at least this fraction of the minimal proxy's throughput.
const MIN_COURIER_OVER_PROXY: f64 = 0.8;
/// Courier must add less than this to the direct p50, in milliseconds.
const MAX_COURIER_ADDED_P50_MS: f64 = 0.5;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Variant {
    Direct,
    Proxy,
    Courier,
}

impl Variant {
    pub(crate) const ALL: [Self; 3] = [Self::Direct, Self::Proxy, Self::Courier];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Proxy => "proxy",
            Self::Courier => "courier",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Direct => "a direct",
            Self::Proxy => "b proxy",
            Self::Courier => "c courier",
        }
    }
}

/// One load run of one variant in one round (rounds count from 1).
pub(crate) struct Run {
    pub(crate) round: usize,
    pub(crate) variant: Variant,
    pub(crate) stats: Stats,
}

pub(crate) fn run_line(run: &Run, rounds: usize) -> String {
    let s = &run.stats;
    format!(
        "round {}/{rounds}  {:<9}  {:>9.0} rps  p50 {:.3} ms  p99 {:.3} ms  errors {}",
        run.round,
        run.variant.label(),
        s.rps,
        s.p50_ms(),
        s.p99_ms(),
        s.errors,
    )
}

/// Medians over rounds for one variant.
struct Summary {
    variant: Variant,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

/// Medians of the per-round comparisons (`None` when a variant was not run).
struct Ratios {
    proxy_over_direct_rps: Option<f64>,
    courier_over_proxy_rps: Option<f64>,
    proxy_minus_direct_p50_ms: Option<f64>,
    courier_minus_direct_p50_ms: Option<f64>,
}

impl Ratios {
    fn targets_met(&self) -> Option<bool> {
        Some(
            self.courier_over_proxy_rps? >= MIN_COURIER_OVER_PROXY
                && self.courier_minus_direct_p50_ms? < MAX_COURIER_ADDED_P50_MS,
        )
    }
}

pub(crate) struct Report {
    summaries: Vec<Summary>,
    ratios: Ratios,
}

impl Report {
    pub(crate) fn new(runs: &[Run]) -> Self {
        let summaries = Variant::ALL
            .into_iter()
            .filter_map(|variant| {
                let stats: Vec<&Stats> = runs
                    .iter()
                    .filter(|run| run.variant == variant)
                    .map(|run| &run.stats)
                    .collect();
                Some(Summary {
                    variant,
                    rps: median(stats.iter().map(|s| s.rps))?,
                    p50_ms: median(stats.iter().map(|s| s.p50_ms()))?,
                    p99_ms: median(stats.iter().map(|s| s.p99_ms()))?,
                    requests: stats.iter().map(|s| s.requests).sum(),
                    errors: stats.iter().map(|s| s.errors).sum(),
                })
            })
            .collect();
        let per_round = |f: &dyn Fn(&Stats, &Stats) -> f64, a: Variant, b: Variant| {
            median(runs.iter().filter(|run| run.variant == a).filter_map(|ra| {
                let rb = runs
                    .iter()
                    .find(|rb| rb.variant == b && rb.round == ra.round)?;
                Some(f(&ra.stats, &rb.stats))
            }))
        };
        let rps_ratio = |a: &Stats, b: &Stats| a.rps / b.rps;
        let p50_delta = |a: &Stats, b: &Stats| a.p50_ms() - b.p50_ms();
        let ratios = Ratios {
            proxy_over_direct_rps: per_round(&rps_ratio, Variant::Proxy, Variant::Direct),
            courier_over_proxy_rps: per_round(&rps_ratio, Variant::Courier, Variant::Proxy),
            proxy_minus_direct_p50_ms: per_round(&p50_delta, Variant::Proxy, Variant::Direct),
            courier_minus_direct_p50_ms: per_round(&p50_delta, Variant::Courier, Variant::Direct),
        };
        Self { summaries, ratios }
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::from(
            "| variant | rps | p50 (ms) | p99 (ms) | errors |\n|---|---:|---:|---:|---:|\n",
        );
        for s in &self.summaries {
            out += &format!(
                "| {} | {:.0} | {:.3} | {:.3} | {} |\n",
                s.variant.label(),
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.errors
            );
        }
        let r = &self.ratios;
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        out += "\n| comparison (median of per-round values) | value | target |\n|---|---:|---|\n";
        out += &row_ratio(
            "proxy / direct throughput",
            r.proxy_over_direct_rps,
            String::new(),
        );
        out += &row_ratio(
            "courier / proxy throughput",
            r.courier_over_proxy_rps,
            r.courier_over_proxy_rps.map_or(String::new(), |v| {
                format!(
                    "≥ {MIN_COURIER_OVER_PROXY:.2}×: {}",
                    verdict(v >= MIN_COURIER_OVER_PROXY)
                )
            }),
        );
        out += &row_delta(
            "proxy p50 − direct p50",
            r.proxy_minus_direct_p50_ms,
            String::new(),
        );
        out += &row_delta(
            "courier p50 − direct p50",
            r.courier_minus_direct_p50_ms,
            r.courier_minus_direct_p50_ms.map_or(String::new(), |v| {
                format!(
                    "< {MAX_COURIER_ADDED_P50_MS:.2} ms: {}",
                    verdict(v < MAX_COURIER_ADDED_P50_MS)
                )
            }),
        );
        out
    }

    pub(crate) fn json(&self, runs: &[Run], config: Value) -> Value {
        let runs: Vec<Value> = runs
            .iter()
            .map(|run| {
                let mut value = stats_json(&run.stats);
                value["round"] = json!(run.round);
                value["variant"] = json!(run.variant.name());
                value
            })
            .collect();
        let summary: serde_json::Map<String, Value> = self
            .summaries
            .iter()
            .map(|s| {
                let value = json!({
                    "rps": s.rps,
                    "p50_ms": s.p50_ms,
                    "p99_ms": s.p99_ms,
                    "requests": s.requests,
                    "errors": s.errors,
                });
                (s.variant.name().to_owned(), value)
            })
            .collect();
        let r = &self.ratios;
        json!({
            "config": config,
            "runs": runs,
            "summary": summary,
            "ratios": {
                "proxy_over_direct_rps": r.proxy_over_direct_rps,
                "courier_over_proxy_rps": r.courier_over_proxy_rps,
                "proxy_minus_direct_p50_ms": r.proxy_minus_direct_p50_ms,
                "courier_minus_direct_p50_ms": r.courier_minus_direct_p50_ms,
            },
            "targets": {
                "courier_over_proxy_rps_min": MIN_COURIER_OVER_PROXY,
                "courier_minus_direct_p50_ms_max": MAX_COURIER_ADDED_P50_MS,
                "met": r.targets_met(),
            },
        })
    }
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "rps": s.rps,
        "p50_ms": s.p50_ms(),
        "p99_ms": s.p99_ms(),
        "requests": s.requests,
        "errors": s.errors,
    })
}

fn row_ratio(name: &str, value: Option<f64>, target: String) -> String {
    let value = value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}×"));
    format!("| {name} | {value} | {target} |\n")
}

fn row_delta(name: &str, value: Option<f64>, target: String) -> String {
    let value = value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:+.3} ms"));
    format!("| {name} | {value} | {target} |\n")
}

/// Median (mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }
}
