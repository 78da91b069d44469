//! Reading a metric off a registry the way tests assert on it.

use prometheus::Registry;
use prometheus::proto::MetricType;

/// The sum over the series of `name` whose labels include `labels`: a counter's or gauge's
/// value, a histogram's sample count. `None` when no such series exists.
pub fn sample(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if matches {
                let value = match family.get_field_type() {
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                    _ => m.get_counter().get_value(),
                };
                *total.get_or_insert(0.0) += value;
            }
        }
    }
    total
}
