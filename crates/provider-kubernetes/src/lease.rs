//! One autoscaler at a time: the gateways sharing a cluster elect the one that scales
//! functions through a `coordination.k8s.io/v1` Lease ([`LeaseConfig::name`], in the default
//! function namespace), the way Kubernetes' own controllers do.
//!
//! - Absent: a candidate creates it naming itself (a second candidate's create fails with
//!   409 and it stands by).
//! - Held by this process: renewed every [`LeaseConfig::renew_every`] (an update carrying the
//!   resource version it read, so a concurrent writer makes it fail rather than both win).
//! - Held by another: the others watch it; one that has seen it unchanged for the lease's
//!   duration, *on its own clock* (no comparison of clocks between machines), takes it over
//!   with the same conditional update.
//!
//! This process leads only until the last successful renewal's start plus the duration
//! ([`Leadership::is_leader`]), so a holder that cannot reach the API server stops scaling by
//! itself before another may take over. On shutdown the holder releases the lease (empty
//! holder), so a standby takes over at its next try.
//!
//! [`decide`] is the pure rule; [`hold`] does the calls.

use std::sync::Mutex;
use std::time::Duration;

use courier_core::DEFAULT_NAMESPACE;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Result, within};

/// The Lease's name unless configured otherwise.
pub const DEFAULT_LEASE_NAME: &str = "courier-autoscaler";

/// How a gateway competes for the autoscaler's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's name, in the default function namespace ([`DEFAULT_LEASE_NAME`]).
    pub name: String,
    /// This process's name in `holderIdentity`: unique among the gateways (pod name + pid).
    pub identity: String,
    /// How long a holder leads after a renewal, and how long the others wait, unchanged, before
    /// taking over (`leaseDurationSeconds`, whole seconds, at least 1).
    pub duration: Duration,
    /// Time between two tries (renewals, or looks by a standby); well under `duration`.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// The defaults for `identity`: 15 s leases renewed every 5 s (client-go's lease
    /// duration, a renewal well inside it).
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            name: DEFAULT_LEASE_NAME.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// Whether this process leads, as the lease task last established it.
#[derive(Debug, Default)]
pub(crate) struct Leadership {
    /// Leads until then; `None`: does not lead.
    until: Mutex<Option<Instant>>,
}

impl Leadership {
    /// Whether this process leads now.
    pub(crate) fn is_leader(&self) -> bool {
        self.until
            .lock()
            .expect("leadership lock")
            .is_some_and(|until| Instant::now() < until)
    }

    fn hold_until(&self, until: Instant) {
        *self.until.lock().expect("leadership lock") = Some(until);
    }

    fn release(&self) {
        *self.until.lock().expect("leadership lock") = None;
    }
}

/// What to do with the lease after reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// There is none: create it, naming this process.
    Create,
    /// This process holds it: renew it.
    Renew,
    /// Another held it and let it lapse (or it names no holder): take it over.
    TakeOver,
    /// Another holds it: stand by.
    StandBy,
}

/// The rule: `lease` as read, this process's `identity`, and how long the lease has been
/// seen unchanged on this process's clock.
pub(crate) fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Action {
    let Some(spec) = lease else {
        return Action::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Action::Renew,
        None | Some("") => Action::TakeOver,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            if unchanged_for >= duration {
                Action::TakeOver
            } else {
                Action::StandBy
            }
        }
    }
}

/// Competes for the lease until `stop`, keeping `leadership` current; releases it at the end
/// when held.
pub(crate) async fn hold(
    api: Api<Lease>,
    config: LeaseConfig,
    request_timeout: Duration,
    leadership: std::sync::Arc<Leadership>,
    stop: CancellationToken,
) {
    let mut observed: Option<(String, Instant)> = None;
    let mut leading = false;
    loop {
        let started = Instant::now();
        match tokio::select! {
            () = stop.cancelled() => break,
            outcome = try_once(&api, &config, request_timeout, &mut observed) => outcome,
        } {
            Ok(true) => {
                leadership.hold_until(started + config.duration);
                if !leading {
                    tracing::info!(lease = %config.name, identity = %config.identity, "Holding the autoscaler lease.");
                }
                leading = true;
            }
            Ok(false) => {
                leadership.release();
                if leading {
                    tracing::warn!(lease = %config.name, "Lost the autoscaler lease; standing by.");
                }
                leading = false;
            }
            // Leadership runs out by itself if this goes on.
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "Autoscaler lease: call failed.")
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(config.renew_every) => {}
        }
    }
    if leadership.is_leader() {
        leadership.release();
        match release(&api, &config, request_timeout).await {
            Ok(()) => tracing::info!(lease = %config.name, "Released the autoscaler lease."),
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "Could not release the autoscaler lease; it lapses.");
            }
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One read and, when [`decide`] says so, one write. `Ok(true)`: this process holds the lease.
async fn try_once(
    api: &Api<Lease>,
    config: &LeaseConfig,
    timeout: Duration,
    observed: &mut Option<(String, Instant)>,
) -> Result<bool> {
    let current = within(timeout, api.get_opt(&config.name)).await?;
    let version = current
        .as_ref()
        .and_then(|l| l.metadata.resource_version.clone())
        .unwrap_or_default();
    let seen_at = match observed {
        Some((v, at)) if *v == version => *at,
        _ => {
            let at = Instant::now();
            *observed = Some((version, at));
            at
        }
    };
    let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
    let action = decide(
        spec.as_ref(),
        &config.identity,
        seen_at.elapsed(),
        config.duration,
    );
    let params = PostParams::default();
    let written = match action {
        Action::StandBy => return Ok(false),
        Action::Create => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(config.name.clone());
            lease.metadata.namespace = Some(DEFAULT_NAMESPACE.into());
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(config.duration_seconds()),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            });
            within(timeout, api.create(&params, &lease)).await
        }
        Action::Renew | Action::TakeOver => {
            let mut lease = current.expect("a lease to renew or take over");
            let spec = lease.spec.get_or_insert_default();
            if action == Action::TakeOver {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(config.duration_seconds());
            spec.renew_time = Some(now());
            within(timeout, api.replace(&config.name, &params, &lease)).await
        }
    };
    match written {
        Ok(_) => Ok(true),
        // Another candidate wrote first (create raced, or the version moved on).
        Err(e) if e.status_code() == Some(409) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Hands the lease back: no holder, so a standby takes it at its next try.
async fn release(api: &Api<Lease>, config: &LeaseConfig, timeout: Duration) -> Result<()> {
    let Some(mut lease) = within(timeout, api.get_opt(&config.name)).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    within(
        timeout,
        api.replace(&config.name, &PostParams::default(), &lease),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
