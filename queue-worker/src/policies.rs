//! Each function's settings for queued calls — its retry policy and whether the ledger keeps
//! its results — read from its labels and annotations through the gateway's API and cached
//! briefly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use courier_core::FunctionRef;
use courier_core::FunctionStatus;
use courier_core::ledger::KEEP_RESULT_ANNOTATION;
use courier_core::retry::RetryPolicy;
use tokio::time::Instant;

use crate::config::WorkerConfig;

/// How long a function's settings are reused before they are read again.
const TTL: Duration = Duration::from_secs(5);

/// How the worker treats one function's calls.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FunctionPolicy {
    /// When and how often a failed call is tried again.
    pub(crate) retry: RetryPolicy,
    /// Whether every call's result is kept in the ledger (label or annotation
    /// `com.courier.ledger.result: "true"`).
    pub(crate) keep_result: bool,
}

/// Whether `status` opts the function in to kept results: label or annotation
/// [`KEEP_RESULT_ANNOTATION`] is `true` (any case).
pub(crate) fn keeps_results(status: &FunctionStatus) -> bool {
    [&status.labels, &status.annotations]
        .into_iter()
        .filter_map(|map| map.get(KEEP_RESULT_ANNOTATION))
        .any(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// Cached policies by function (`NAME` or `NAME.NAMESPACE` as queued).
#[derive(Debug, Default)]
pub(crate) struct Policies {
    cache: Mutex<HashMap<String, (Instant, FunctionPolicy)>>,
}

impl Policies {
    /// The policy of `function`; the default (and no kept results) when its settings cannot
    /// be read.
    pub(crate) async fn get(
        &self,
        client: &reqwest::Client,
        config: &WorkerConfig,
        function: &str,
    ) -> FunctionPolicy {
        if let Some((at, policy)) = self.cache.lock().expect("policy cache").get(function)
            && at.elapsed() < TTL
        {
            return policy.clone();
        }
        let policy = match read_annotations(client, config, function).await {
            Ok(status) => {
                let (retry, ignored) = config.retry.with_annotations(&status.annotations);
                for i in ignored {
                    tracing::warn!(function, annotation = i.key, value = %i.value, "Invalid retry annotation ignored.");
                }
                FunctionPolicy {
                    retry,
                    keep_result: keeps_results(&status),
                }
            }
            Err(e) => {
                tracing::debug!(function, error = %e, "Function settings unavailable; using the default policy.");
                FunctionPolicy {
                    retry: config.retry.clone(),
                    keep_result: false,
                }
            }
        };
        let mut cache = self.cache.lock().expect("policy cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(function.to_owned(), (Instant::now(), policy.clone()));
        policy
    }
}

async fn read_annotations(
    client: &reqwest::Client,
    config: &WorkerConfig,
    function: &str,
) -> Result<FunctionStatus, String> {
    let f = FunctionRef::parse_invocation(function).map_err(|e| e.to_string())?;
    let url = format!(
        "{}/system/function/{}?namespace={}",
        config.gateway.trim_end_matches('/'),
        f.name,
        f.namespace
    );
    let mut rb = client.get(url).timeout(Duration::from_secs(10));
    if let Some(password) = &config.password {
        rb = rb.basic_auth("admin", Some(password));
    }
    let resp = rb.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    resp.json::<FunctionStatus>()
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> FunctionStatus {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        FunctionStatus {
            labels: map(labels),
            annotations: map(annotations),
            ..FunctionStatus::default()
        }
    }

    #[test]
    fn a_label_or_an_annotation_set_to_true_keeps_results() {
        assert!(keeps_results(&status(
            &[(KEEP_RESULT_ANNOTATION, "true")],
            &[]
        )));
        assert!(keeps_results(&status(
            &[],
            &[(KEEP_RESULT_ANNOTATION, "True")]
        )));
        assert!(!keeps_results(&status(
            &[(KEEP_RESULT_ANNOTATION, "yes")],
            &[]
        )));
        assert!(!keeps_results(&status(
            &[],
            &[(KEEP_RESULT_ANNOTATION, "false")]
        )));
        assert!(!keeps_results(&status(&[("other", "true")], &[])));
    }
}
