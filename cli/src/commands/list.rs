//! `courier list`: one line per function, name first (a header only on a terminal).

use anyhow::Result;
use clap::Args;
use courier_core::FunctionStatus;
use reqwest::Method;

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print names only.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    gateway: GatewayArgs,
}

pub(crate) async fn run(args: ListArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    let path = format!("/system/functions?namespace={}", gateway.namespace);
    let resp = gateway
        .expect_ok(gateway.request(Method::GET, &path), "listing functions")
        .await?;
    let functions: Vec<FunctionStatus> = resp.json().await?;
    if args.quiet {
        for f in &functions {
            println!("{}", f.name);
        }
        return Ok(());
    }
    let width = functions
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        println!(
            "{:<width$}  {:>11}  {:>8}  {:>9}  IMAGE",
            "FUNCTION", "INVOCATIONS", "REPLICAS", "AVAILABLE"
        );
    }
    for f in &functions {
        println!(
            "{:<width$}  {:>11}  {:>8}  {:>9}  {}",
            f.name, f.invocation_count as u64, f.replicas, f.available_replicas, f.image
        );
    }
    Ok(())
}
