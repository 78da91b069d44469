//! `courier deploy -f stack.yml`: PUT each function (POST when it does not exist yet, as
//! faas-cli does), then wait for every one to be ready, showing progress.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use courier_core::{FunctionDeployment, FunctionStatus};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// The faas-cli stack file.
    #[arg(short = 'f', long = "file", default_value = "stack.yml")]
    file: PathBuf,
    /// Only these functions of the stack (repeatable).
    #[arg(long = "filter")]
    only: Vec<String>,
    /// Do not wait for the functions to become ready.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for readiness (Go duration, e.g. `90s`).
    #[arg(long, default_value = "60s", value_parser = crate::up::duration)]
    wait_timeout: Duration,
    #[command(flatten)]
    gateway: GatewayArgs,
}

pub(crate) async fn run(args: DeployArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    let mut functions = crate::stack::load(&args.file)?;
    if !args.only.is_empty() {
        functions.retain(|f| args.only.contains(&f.service));
    }
    for f in &mut functions {
        if f.namespace.is_empty() {
            f.namespace = gateway.namespace.clone();
        }
        deploy_one(&gateway, f).await?;
    }
    if !args.no_wait {
        wait_ready(&gateway, &functions, args.wait_timeout).await?;
    }
    Ok(())
}

async fn deploy_one(gateway: &Gateway, f: &FunctionDeployment) -> Result<()> {
    let put = gateway.request(Method::PUT, "/system/functions").json(f);
    let resp = gateway.send(put, Some(Duration::from_secs(30))).await?;
    let resp = if resp.status() == StatusCode::NOT_FOUND {
        let post = gateway.request(Method::POST, "/system/functions").json(f);
        gateway.send(post, Some(Duration::from_secs(30))).await?
    } else {
        resp
    };
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "deploying {}: {status}: {}",
            f.service,
            resp.text().await.unwrap_or_default().trim()
        );
    }
    println!("Deployed {} ({}).", f.service, resp.status());
    Ok(())
}

async fn wait_ready(
    gateway: &Gateway,
    functions: &[FunctionDeployment],
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    loop {
        let mut pending = Vec::new();
        for f in functions {
            let path = format!("/system/function/{}?namespace={}", f.service, f.namespace);
            let resp = gateway
                .expect_ok(gateway.request(Method::GET, &path), "reading status")
                .await?;
            let status: FunctionStatus = resp.json().await?;
            // A function scaled to 0 on purpose counts as ready: it wakes on its first call.
            if status.available_replicas < status.replicas {
                pending.push(format!(
                    "{} {}/{}",
                    f.service, status.available_replicas, status.replicas
                ));
            }
        }
        let elapsed = started.elapsed().as_secs_f32();
        if pending.is_empty() {
            if tty {
                eprint!("\r\x1b[2K");
            }
            println!(
                "All {} function(s) ready in {elapsed:.1}s.",
                functions.len()
            );
            return Ok(());
        }
        let line = format!(
            "Waiting for {} to be ready ({elapsed:.0}s)",
            pending.join(", ")
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if line.split(" (").next() != last_line.split(" (").next() {
            eprintln!("{line}");
        }
        last_line = line;
        if started.elapsed() > timeout {
            if tty {
                eprintln!();
            }
            bail!(
                "not ready after {timeout:?}: {} (see `courier logs NAME`)",
                pending.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
