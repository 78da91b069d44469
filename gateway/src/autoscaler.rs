//! The autoscaler loop: every interval, sample the gateway's own per-function counters
//! (invocations started, for `rps`; in flight, for `capacity`) or, for `cpu`, the provider's
//! CPU figure ([`courier_core::Provider::cpu_millicores`]), ask the pure decision
//! (`courier_core::autoscale`) what each function should have, and change it through
//! [`courier_core::Provider::scale`]. Every call through this gateway counts, whoever made it:
//! callers of `/function/`, the queue worker and the triggers (they use the same proxy path).
//!
//! Only while the provider says this process leads
//! ([`courier_core::Provider::autoscaler_leader`]: on Kubernetes, the holder of a Lease) does
//! a round decide and scale; otherwise it stands by, forgets what it remembered, and starts
//! afresh (a whole stabilization window before any scale-down) once it leads.
//!
//! It owns the sampling and the per-function memory. It must not know how a provider runs
//! replicas or how the decision is made; functions labelled `external`, with `min == max`,
//! with `cpu` scaling on a provider without CPU metrics, or with labels it cannot read are
//! left alone. A function at zero replicas is woken by its next call (`readiness`), never by
//! this loop.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use courier_core::FunctionStatus;
use courier_core::autoscale::{Direction, Owner, Sample, ScalePolicy, ScaleType, Stabilizer};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::Gateway;

/// How the autoscaler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscaleConfig {
    /// How often functions are sampled and decided on (more than zero).
    pub interval: Duration,
    /// The stabilization window: how long the load must stay lower before replicas are
    /// removed (scale-up is immediate).
    pub down_delay: Duration,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            down_delay: Duration::from_secs(60),
        }
    }
}

/// Longest a provider call of the loop may take before it is given up for this round.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the loop remembers of one function between rounds.
#[derive(Debug, Default)]
struct Tracked {
    stabilizer: Stabilizer,
    /// `gateway_function_invocation_started` at the previous round.
    started: u64,
    /// A scale-up is being held because the function is short of CPU (logged once): the
    /// load of the last round held.
    held: Option<f64>,
}

/// Runs the autoscaler until `stop` is cancelled.
pub(crate) async fn run(gateway: &Gateway, config: AutoscaleConfig, stop: CancellationToken) {
    let interval = config.interval.max(Duration::from_millis(10));
    let origin = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut previous = Instant::now();
    let mut leading = false;
    tracing::info!(
        interval = ?interval,
        down_delay = ?config.down_delay,
        "Autoscaler started."
    );
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let elapsed = now.duration_since(previous);
        previous = now;
        let leader = gateway.provider.autoscaler_leader();
        if leader != leading {
            leading = leader;
            if leader {
                tracing::info!("Autoscaler leading: this gateway scales functions now.");
            } else {
                tracing::info!("Autoscaler standing by: another gateway scales functions.");
            }
        }
        if !leader {
            for name in tracked.keys() {
                gateway.metrics.forget_autoscaler(name);
            }
            tracked.clear();
            continue;
        }
        let Some(functions) = list_all(gateway).await else {
            continue;
        };
        round(
            gateway,
            &config,
            &mut tracked,
            functions,
            now.duration_since(origin),
            elapsed,
        )
        .await;
    }
}

/// Every function of every namespace; `None` (and a warning) when the provider cannot say.
async fn list_all(gateway: &Gateway) -> Option<Vec<FunctionStatus>> {
    let provider = &gateway.provider;
    let namespaces = match tokio::time::timeout(PROVIDER_TIMEOUT, provider.namespaces()).await {
        Ok(Ok(namespaces)) => namespaces,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Autoscaler: cannot list namespaces.");
            return None;
        }
        Err(_) => {
            tracing::warn!("Autoscaler: listing namespaces timed out.");
            return None;
        }
    };
    let mut functions = Vec::new();
    for namespace in namespaces {
        match tokio::time::timeout(PROVIDER_TIMEOUT, provider.list(&namespace)).await {
            Ok(Ok(list)) => functions.extend(list),
            Ok(Err(e)) => {
                tracing::warn!(namespace, error = %e, "Autoscaler: cannot list functions.");
                return None;
            }
            Err(_) => {
                tracing::warn!(namespace, "Autoscaler: listing functions timed out.");
                return None;
            }
        }
    }
    Some(functions)
}

/// One round: sample, decide and scale every function the autoscaler owns.
async fn round(
    gateway: &Gateway,
    config: &AutoscaleConfig,
    tracked: &mut HashMap<String, Tracked>,
    functions: Vec<FunctionStatus>,
    now: Duration,
    elapsed: Duration,
) {
    let scaling = gateway.provider.scaling();
    let limit = scaling.max_replicas;
    let counters = gateway.metrics.load_sample();
    let mut seen = HashSet::with_capacity(functions.len());
    for status in functions {
        let qualified = format!("{}.{}", status.name, status.namespace);
        let policy = match ScalePolicy::from_labels(&status.labels, limit) {
            Ok(policy)
                if policy.owner == Owner::Courier
                    && (policy.kind != ScaleType::Cpu || scaling.cpu_metrics) =>
            {
                policy
            }
            // Left alone: someone else's, fixed, unreadable (deployed before labels were
            // checked) or CPU-driven on a provider without CPU metrics.
            _ => continue,
        };
        let cpu = match policy.kind {
            ScaleType::Cpu => match cpu_millicores(gateway, &status, &qualified).await {
                Some(millicores) => Some(millicores),
                // No figure this round: hold, and remember nothing.
                None => {
                    seen.insert(qualified);
                    continue;
                }
            },
            _ => None,
        };
        let (started, in_flight) = counters.get(&qualified).copied().unwrap_or_default();
        let entry = tracked.entry(qualified.clone()).or_insert_with(|| Tracked {
            stabilizer: Stabilizer::default(),
            started,
            held: None,
        });
        let calls = started.saturating_sub(entry.started);
        entry.started = started;
        let load = match policy.kind {
            ScaleType::Rps => calls as f64 / elapsed.as_secs_f64().max(1e-3),
            ScaleType::Capacity => in_flight.max(0) as f64,
            ScaleType::Cpu => cpu.unwrap_or_default(),
        };
        let sample = Sample {
            now,
            load,
            active: calls > 0 || in_flight > 0,
            current: status.replicas,
        };
        let decision = entry.stabilizer.decide(&policy, sample, config.down_delay);
        gateway
            .metrics
            .autoscaler_desired
            .with_label_values(&[qualified.as_str()])
            .set(i64::try_from(decision.desired).unwrap_or(i64::MAX));
        seen.insert(qualified.clone());
        let Some(direction) = decision.change else {
            entry.held = None;
            continue;
        };
        // On one machine, more processes of a function whose replicas are busy on CPU while
        // none is idle only compete for it (BENCHMARKS.md, "Sync path: how many replicas").
        // Once held, a load that has not grown keeps the hold without asking again: at the
        // end of a burst the round's load is part of it, and the CPU already idle.
        if direction == Direction::Up
            && policy.kind != ScaleType::Cpu
            && (entry.held.is_some_and(|held| load <= held)
                || gateway
                    .provider
                    .cpu_starved(&status.namespace, &status.name)
                    .await)
        {
            if entry.held.is_none() {
                tracing::info!(
                    function = %qualified,
                    replicas = status.replicas,
                    wanted = decision.desired,
                    load,
                    "Autoscaler holding: the replicas are busy on CPU and the machine has none idle, so more would only compete for it."
                );
            }
            entry.held = Some(load);
            continue;
        }
        entry.held = None;
        tracing::info!(
            function = %qualified,
            direction = direction.as_str(),
            from = status.replicas,
            to = decision.desired,
            load,
            kind = policy.kind.as_str(),
            target = policy.target,
            "Autoscaler scaling."
        );
        gateway
            .metrics
            .autoscaler_decisions
            .with_label_values(&[qualified.as_str(), direction.as_str()])
            .inc();
        let scaled = tokio::time::timeout(
            PROVIDER_TIMEOUT,
            gateway
                .provider
                .scale(&status.namespace, &status.name, decision.desired),
        )
        .await;
        match scaled {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(function = %qualified, error = %e, "Autoscaler: scaling failed.");
            }
            Err(_) => tracing::warn!(function = %qualified, "Autoscaler: scaling timed out."),
        }
    }
    tracked.retain(|name, _| {
        let keep = seen.contains(name);
        if !keep {
            gateway.metrics.forget_autoscaler(name);
        }
        keep
    });
}

/// The CPU use of a function's replicas in millicores, or `None` (and a warning when the
/// provider failed) when there is no figure this round.
async fn cpu_millicores(
    gateway: &Gateway,
    status: &FunctionStatus,
    qualified: &str,
) -> Option<f64> {
    let asked = gateway
        .provider
        .cpu_millicores(&status.namespace, &status.name);
    match tokio::time::timeout(PROVIDER_TIMEOUT, asked).await {
        Ok(Ok(figure)) => figure,
        Ok(Err(e)) => {
            tracing::warn!(function = %qualified, error = %e, "Autoscaler: cannot read CPU use.");
            None
        }
        Err(_) => {
            tracing::warn!(function = %qualified, "Autoscaler: reading CPU use timed out.");
            None
        }
    }
}
