//! `courier dlq list|show|replay|purge`: the dead letters of queued calls, through the
//! gateway's `/system/dead-letters` routes.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use courier_core::queue::DeadLetterRecord;
use reqwest::{Method, StatusCode};

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// One line per dead letter, newest first: call id, function, attempts, last status, error.
    #[command(alias = "ls")]
    List,
    /// One dead letter in full, with its request, as JSON.
    Show {
        /// The call id.
        call_id: String,
    },
    /// Queue the call again (its callback keeps the call id; the ledger records it under a new
    /// id, printed); the dead letter is removed.
    Replay {
        /// The call id.
        call_id: String,
    },
    /// Remove one dead letter, or all of them.
    Purge {
        /// The call id; all dead letters when omitted.
        call_id: Option<String>,
    },
}

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

pub(crate) async fn run(args: DlqArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    match args.command {
        DlqCommand::List => {
            let resp = gateway
                .expect_ok(
                    gateway.request(Method::GET, "/system/dead-letters"),
                    "listing dead letters",
                )
                .await?;
            let letters: Vec<DeadLetterRecord> = resp.json().await?;
            for l in letters {
                let status = l.last_status.map_or("-".to_owned(), |s| s.to_string());
                println!(
                    "{}  {}.{}  attempts={}  status={}  {}  {}",
                    l.call_id, l.function, l.namespace, l.attempts, status, l.failed_at, l.error
                );
            }
        }
        DlqCommand::Show { call_id } => {
            let resp = gateway
                .send(
                    gateway.request(Method::GET, &format!("/system/dead-letters/{call_id}")),
                    TIMEOUT,
                )
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                bail!("no dead letter {call_id}");
            }
            let record: DeadLetterRecord = resp.error_for_status()?.json().await?;
            println!("{}", serde_json::to_string_pretty(&record)?);
        }
        DlqCommand::Replay { call_id } => {
            let path = format!("/system/dead-letters/{call_id}/replay");
            let resp = gateway
                .send(gateway.request(Method::POST, &path), TIMEOUT)
                .await?;
            match resp.status() {
                s if s.is_success() => {
                    // The replay is a call of its own in the ledger (its callback still
                    // carries the original call id).
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    match body["replayId"].as_str() {
                        Some(replay) => println!(
                            "Replayed {call_id} as call {replay} (follow it with `courier calls wait {replay}`)."
                        ),
                        None => println!("Replayed {call_id}."),
                    }
                }
                StatusCode::NOT_FOUND => bail!("no dead letter {call_id}"),
                s => bail!(
                    "replaying {call_id}: {s}: {}",
                    resp.text().await.unwrap_or_default().trim()
                ),
            }
        }
        DlqCommand::Purge { call_id } => {
            let path = match &call_id {
                Some(id) => format!("/system/dead-letters/{id}"),
                None => "/system/dead-letters".to_owned(),
            };
            let resp = gateway
                .send(gateway.request(Method::DELETE, &path), TIMEOUT)
                .await?;
            match (resp.status(), &call_id) {
                (StatusCode::NOT_FOUND, Some(id)) => bail!("no dead letter {id}"),
                (s, Some(id)) if s.is_success() => println!("Removed {id}."),
                (s, None) if s.is_success() => {
                    let body: serde_json::Value = resp.json().await?;
                    println!("Removed {} dead letter(s).", body["removed"]);
                }
                (s, _) => bail!("purging dead letters: {s}"),
            }
        }
    }
    Ok(())
}
