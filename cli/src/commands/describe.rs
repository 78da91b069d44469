//! `courier describe NAME`: one function in detail.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use clap::Args;
use courier_core::FunctionStatus;
use courier_core::autoscale::{Owner, ProviderScaling, ScalePolicy};
use reqwest::{Method, StatusCode};

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    /// The function's name.
    name: String,
    /// Print the raw JSON status.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gateway: GatewayArgs,
}

pub(crate) async fn run(args: DescribeArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    let path = format!(
        "/system/function/{}?namespace={}",
        args.name, gateway.namespace
    );
    let resp = gateway
        .send(
            gateway.request(Method::GET, &path),
            Some(std::time::Duration::from_secs(30)),
        )
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        bail!(
            "no function {} in namespace {}",
            args.name,
            gateway.namespace
        );
    }
    let status: FunctionStatus = resp.error_for_status()?.json().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let ready = if status.available_replicas > 0 {
        "Ready"
    } else {
        "Not ready"
    };
    println!("Name:          {}", status.name);
    println!("Namespace:     {}", status.namespace);
    println!("Status:        {ready}");
    println!("Replicas:      {} desired", status.replicas);
    println!("Available:     {} ready now", status.available_replicas);
    println!("Autoscaling:   {}", autoscaling(&status.labels));
    println!("Image:         {}", status.image);
    println!("Process:       {}", status.env_process);
    println!("Created:       {}", status.created_at);
    println!(
        "URL:           {}/function/{}.{}",
        args.gateway.gateway.trim_end_matches('/'),
        status.name,
        status.namespace
    );
    let maps = [
        ("Labels", Some(&status.labels)),
        ("Annotations", Some(&status.annotations)),
        ("Environment", status.env_vars.as_ref()),
    ];
    for (title, map) in maps {
        let Some(map) = map.filter(|m| !m.is_empty()) else {
            continue;
        };
        println!("{title}:");
        for (k, v) in map {
            println!("  {k}: {v}");
        }
    }
    if let Some(secrets) = status.secrets.filter(|s| !s.is_empty()) {
        println!("Secrets:       {}", secrets.join(", "));
    }
    Ok(())
}

/// The function's scaling policy in one line, as the autoscaler reads its labels (with the
/// default provider limit; the gateway caps `max` by its own provider's).
fn autoscaling(labels: &BTreeMap<String, String>) -> String {
    let policy = match ScalePolicy::from_labels(labels, ProviderScaling::default().max_replicas) {
        Ok(policy) => policy,
        Err(e) => return format!("invalid labels ({e})"),
    };
    let zero = if policy.zero {
        format!(", to zero after {:?} idle", policy.zero_duration)
    } else {
        String::new()
    };
    let owner = match policy.owner {
        Owner::Courier => "",
        Owner::External => " (external: left to another autoscaler)",
        Owner::Fixed => " (min = max: left alone)",
    };
    format!(
        "min {}, max {}, target {} {} (proportion {}){zero}{owner}",
        policy.min,
        policy.max,
        policy.target,
        policy.kind.as_str(),
        policy.target_proportion
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn autoscaling_line_shows_the_policy_the_labels_make() {
        assert_eq!(
            autoscaling(&labels(&[])),
            "min 1, max 20, target 50 rps (proportion 0.9)"
        );
        assert_eq!(
            autoscaling(&labels(&[
                ("com.openfaas.scale.type", "capacity"),
                ("com.openfaas.scale.target", "2"),
                ("com.openfaas.scale.max", "5"),
                ("com.openfaas.scale.zero", "true"),
                ("com.openfaas.scale.zero-duration", "3s"),
            ])),
            "min 1, max 5, target 2 capacity (proportion 0.9), to zero after 3s idle"
        );
        assert!(
            autoscaling(&labels(&[("com.openfaas.scale.autoscaler", "external")]))
                .ends_with("(external: left to another autoscaler)")
        );
        assert!(autoscaling(&labels(&[("com.openfaas.scale.min", "x")])).starts_with("invalid"));
    }
}
