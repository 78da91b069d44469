//! Waiting for a function to have a ready replica: a function still starting is waited for,
//! and a function scaled to zero is scaled up by the first caller while concurrent callers wait
//! with it. Both waits are bounded by [`crate::GatewayConfig::ready_timeout`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_core::{Endpoint, FunctionRef, ProviderError};
use tokio::time::Instant;

use crate::Gateway;
use crate::error::ApiError;

/// How often a waiting caller checks for a ready replica.
const POLL: Duration = Duration::from_millis(10);

/// One lock per function being woken, so one caller scales and the others wait.
#[derive(Debug, Default)]
pub(crate) struct Waking {
    locks: Mutex<HashMap<FunctionRef, Arc<tokio::sync::Mutex<()>>>>,
}

impl Waking {
    fn lock_for(&self, function: &FunctionRef) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("waking lock")
            .entry(function.clone())
            .or_default()
            .clone()
    }

    fn forget(&self, function: &FunctionRef) {
        let mut locks = self.locks.lock().expect("waking lock");
        if locks
            .get(function)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(function);
        }
    }
}

/// A ready endpoint of `function`, waking it from zero replicas if needed.
pub(crate) async fn endpoint(
    gateway: &Gateway,
    function: &FunctionRef,
) -> Result<Endpoint, ApiError> {
    let provider = &gateway.provider;
    match provider.resolve(function) {
        Ok(endpoint) => return Ok(endpoint),
        Err(ProviderError::NotReady(_)) => {}
        Err(ProviderError::NotFound { .. }) => {
            return Err(ApiError::NotFound(format!(
                "error finding function {function}: not found"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + gateway.config.ready_timeout;
    wake_if_scaled_to_zero(gateway, function).await?;
    loop {
        match provider.resolve(function) {
            Ok(endpoint) => return Ok(endpoint),
            Err(ProviderError::NotReady(_)) if Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(ProviderError::NotReady(_)) => {
                return Err(ApiError::NotReady(format!(
                    "function {function} has no ready replica after {:?}",
                    gateway.config.ready_timeout
                )));
            }
            Err(ProviderError::NotFound { .. }) => {
                return Err(ApiError::NotFound(format!(
                    "error finding function {function}: not found"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn wake_if_scaled_to_zero(gateway: &Gateway, function: &FunctionRef) -> Result<(), ApiError> {
    let provider = &gateway.provider;
    let status = provider.status(&function.namespace, &function.name).await?;
    if status.replicas > 0 {
        return Ok(());
    }
    let lock = gateway.waking.lock_for(function);
    let result = async {
        let _guard = lock.lock().await;
        // Another caller may have woken it while this one waited for the lock.
        let status = provider.status(&function.namespace, &function.name).await?;
        if status.replicas == 0 {
            let replicas = status
                .labels
                .get(courier_core::function::LABEL_SCALE_MIN)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
                .max(1);
            tracing::info!(function = %function, replicas, "Scaling up from zero.");
            provider
                .scale(&function.namespace, &function.name, replicas)
                .await?;
        }
        Ok::<_, ApiError>(())
    }
    .await;
    drop(lock);
    gateway.waking.forget(function);
    result
}
