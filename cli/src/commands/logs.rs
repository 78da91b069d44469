//! `courier logs NAME [--follow]`: a function's log lines as `timestamp instance text`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use courier_core::LogMessage;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The function's name.
    name: String,
    /// Keep printing new lines.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<u64>,
    /// Only lines newer than this (Go duration, e.g. `5m`).
    #[arg(long, value_parser = crate::up::duration)]
    since: Option<Duration>,
    #[command(flatten)]
    gateway: GatewayArgs,
}

pub(crate) async fn run(args: LogsArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    let mut path = format!(
        "/system/logs?name={}&namespace={}&follow={}",
        args.name, gateway.namespace, args.follow
    );
    if let Some(tail) = args.tail {
        path.push_str(&format!("&tail={tail}"));
    }
    if let Some(since) = args.since {
        let t = time::OffsetDateTime::now_utc() - since;
        let stamp = t.format(&time::format_description::well_known::Rfc3339)?;
        path.push_str(&format!("&since={}", stamp.replace('+', "%2B")));
    }
    let timeout = (!args.follow).then_some(Duration::from_secs(30));
    let resp = gateway
        .send(gateway.request(Method::GET, &path), timeout)
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        bail!(
            "no function {} in namespace {}",
            args.name,
            gateway.namespace
        );
    }
    if !resp.status().is_success() {
        bail!("reading logs: {}", resp.status());
    }
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.context("reading logs")?);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            if let Ok(m) = serde_json::from_slice::<LogMessage>(&line) {
                println!("{} {} {}", m.timestamp, m.instance, m.text);
            }
        }
    }
    Ok(())
}
