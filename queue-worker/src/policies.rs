//! Each function's retry policy, read from its annotations through the gateway's API and
//! cached briefly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use courier_core::FunctionRef;
use courier_core::FunctionStatus;
use courier_core::retry::RetryPolicy;
use tokio::time::Instant;

use crate::config::WorkerConfig;

/// How long a function's policy is reused before it is read again.
const TTL: Duration = Duration::from_secs(5);

/// Cached retry policies by function (`NAME` or `NAME.NAMESPACE` as queued).
#[derive(Debug, Default)]
pub(crate) struct Policies {
    cache: Mutex<HashMap<String, (Instant, RetryPolicy)>>,
}

impl Policies {
    /// The policy of `function`; the default when its annotations cannot be read.
    pub(crate) async fn get(
        &self,
        client: &reqwest::Client,
        config: &WorkerConfig,
        function: &str,
    ) -> RetryPolicy {
        if let Some((at, policy)) = self.cache.lock().expect("policy cache").get(function)
            && at.elapsed() < TTL
        {
            return policy.clone();
        }
        let policy = match read_annotations(client, config, function).await {
            Ok(status) => {
                let (policy, ignored) = config.retry.with_annotations(&status.annotations);
                for i in ignored {
                    tracing::warn!(function, annotation = i.key, value = %i.value, "Invalid retry annotation ignored.");
                }
                policy
            }
            Err(e) => {
                tracing::debug!(function, error = %e, "Retry annotations unavailable; using the default policy.");
                config.retry.clone()
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
