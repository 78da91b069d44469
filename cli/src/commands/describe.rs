//! `courier describe NAME`: one function in detail.

use anyhow::{Result, bail};
use clap::Args;
use courier_core::FunctionStatus;
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
    println!("Replicas:      {}", status.replicas);
    println!("Available:     {}", status.available_replicas);
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
