//! CPU use of a function's pods for `com.openfaas.scale.type: cpu`, from the resource metrics
//! API (`metrics.k8s.io/v1beta1` PodMetrics, served by metrics-server): every container's
//! `usage.cpu` of the pods labelled `faas_function=<name>`, summed, in millicores.
//!
//! The unit is OpenFaaS Pro's: with `scale.type=cpu` the target is millicores per replica
//! (`com.openfaas.scale.target: 500` = half a core each; docs.openfaas.com,
//! architecture/autoscaling), not a percentage of the pods' requests as an HPA's
//! `averageUtilization` is. The autoscaler compares the sum with `target × replicas`.

use std::collections::BTreeMap;
use std::time::Duration;

use courier_core::function::LABEL_FUNCTION;
use kube::api::ListParams;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde::Deserialize;

use crate::error::{Result, within};

/// The PodMetrics resource of `metrics.k8s.io/v1beta1`.
fn pod_metrics() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    )
}

/// What is read of one PodMetrics.
#[derive(Debug, Deserialize)]
struct PodUsage {
    #[serde(default)]
    containers: Vec<ContainerUsage>,
}

#[derive(Debug, Deserialize)]
struct ContainerUsage {
    #[serde(default)]
    usage: BTreeMap<String, String>,
}

/// The CPU use of `name`'s pods in millicores; `None` when the metrics API reports no pod of
/// it (none running, or not measured yet).
pub(crate) async fn function_millicores(
    client: Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Option<f64>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &pod_metrics());
    let selector = format!("{LABEL_FUNCTION}={name}");
    let list = within(timeout, api.list(&ListParams::default().labels(&selector))).await?;
    if list.items.is_empty() {
        return Ok(None);
    }
    let mut total = 0.0;
    for item in list.items {
        let Ok(pod) = serde_json::from_value::<PodUsage>(item.data) else {
            continue;
        };
        for container in pod.containers {
            if let Some(cpu) = container.usage.get("cpu").and_then(|q| millicores(q)) {
                total += cpu;
            }
        }
    }
    Ok(Some(total))
}

/// A CPU quantity (`250m`, `1`, `0.5`, `1234567n`, `12u`) in millicores; `None` when it is
/// not one.
pub(crate) fn millicores(quantity: &str) -> Option<f64> {
    let quantity = quantity.trim();
    let (number, scale) = match quantity.char_indices().last()? {
        (i, 'n') => (&quantity[..i], 1e-6),
        (i, 'u') => (&quantity[..i], 1e-3),
        (i, 'm') => (&quantity[..i], 1.0),
        (i, 'k') => (&quantity[..i], 1e6),
        _ => (quantity, 1e3),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_read_as_millicores() {
        let cases = [
            ("250m", Some(250.0)),
            ("1", Some(1000.0)),
            ("0.5", Some(500.0)),
            ("1500000n", Some(1.5)),
            ("12000u", Some(12.0)),
            ("2k", Some(2_000_000.0)),
            ("", None),
            ("lots", None),
            ("-1", None),
        ];
        for (text, want) in cases {
            assert_eq!(millicores(text), want, "{text:?}");
        }
    }
}
