//! `courier secret create|list|remove`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use courier_core::SecretSummary;
use reqwest::{Method, StatusCode};

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Create a secret (value from --from-literal, --from-file, or stdin).
    Create {
        /// The secret's name.
        name: String,
        /// The value.
        #[arg(long, conflicts_with = "from_file")]
        from_literal: Option<String>,
        /// A file holding the value (bytes kept exactly).
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// Replace the value if the secret exists.
        #[arg(long)]
        update: bool,
    },
    /// List secret names (values are never shown).
    #[command(alias = "ls")]
    List,
    /// Remove a secret.
    #[command(alias = "rm")]
    Remove {
        /// The secret's name.
        name: String,
    },
}

pub(crate) async fn run(args: SecretArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    let ns = gateway.namespace.clone();
    match args.command {
        SecretCommand::Create {
            name,
            from_literal,
            from_file,
            update,
        } => {
            let value = match (from_literal, from_file) {
                (Some(v), _) => v.into_bytes(),
                (None, Some(path)) => {
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
                }
                (None, None) => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("reading the value from stdin")?;
                    buf
                }
            };
            let body = serde_json::json!({
                "name": name,
                "namespace": ns,
                "rawValue": base64::engine::general_purpose::STANDARD.encode(&value),
            });
            let method = if update { Method::PUT } else { Method::POST };
            let resp = gateway
                .send(
                    gateway.request(method, "/system/secrets").json(&body),
                    Some(std::time::Duration::from_secs(30)),
                )
                .await?;
            match resp.status() {
                s if s.is_success() => println!(
                    "Secret {name} {}.",
                    if update { "updated" } else { "created" }
                ),
                StatusCode::CONFLICT => {
                    bail!("secret {name} already exists (use --update to replace it)")
                }
                s => bail!(
                    "creating secret {name}: {s}: {}",
                    resp.text().await.unwrap_or_default().trim()
                ),
            }
        }
        SecretCommand::List => {
            let resp = gateway
                .expect_ok(
                    gateway.request(Method::GET, &format!("/system/secrets?namespace={ns}")),
                    "listing secrets",
                )
                .await?;
            let secrets: Vec<SecretSummary> = resp.json().await?;
            for s in secrets {
                println!("{}", s.name);
            }
        }
        SecretCommand::Remove { name } => {
            let body = serde_json::json!({"name": name, "namespace": ns});
            let resp = gateway
                .send(
                    gateway
                        .request(Method::DELETE, "/system/secrets")
                        .json(&body),
                    Some(std::time::Duration::from_secs(30)),
                )
                .await?;
            match resp.status() {
                s if s.is_success() => println!("Secret {name} removed."),
                StatusCode::NOT_FOUND => bail!("no secret {name} in namespace {ns}"),
                s => bail!(
                    "removing secret {name}: {s}: {}",
                    resp.text().await.unwrap_or_default().trim()
                ),
            }
        }
    }
    Ok(())
}
