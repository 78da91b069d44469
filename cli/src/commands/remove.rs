//! `courier remove NAME`.

use anyhow::{Result, bail};
use clap::Args;
use reqwest::{Method, StatusCode};

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The function's name.
    name: String,
    #[command(flatten)]
    gateway: GatewayArgs,
}

pub(crate) async fn run(args: RemoveArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    let body = serde_json::json!({"functionName": args.name, "namespace": gateway.namespace});
    let rb = gateway
        .request(Method::DELETE, "/system/functions")
        .json(&body);
    let resp = gateway
        .send(rb, Some(std::time::Duration::from_secs(30)))
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        bail!("no existing function {} to remove", args.name);
    }
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "removing {}: {status}: {}",
            args.name,
            resp.text().await.unwrap_or_default().trim()
        );
    }
    println!("Removed {}.", args.name);
    Ok(())
}
