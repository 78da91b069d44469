//! `courier invoke NAME`: POST stdin to the function and print its answer.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result, bail};
use clap::Args;
use reqwest::Method;

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct InvokeArgs {
    /// The function's name.
    name: String,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "POST")]
    method: String,
    /// Extra request header `Name=Value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Query parameter `key=value` (repeatable).
    #[arg(long = "query")]
    query: Vec<String>,
    /// Queue the call (`/async-function`): prints the call id instead of the answer.
    #[arg(long = "async")]
    asynchronous: bool,
    /// With --async: where the result is posted when the call completes (`X-Callback-Url`).
    #[arg(long, requires = "asynchronous")]
    callback: Option<String>,
    /// Timeout for the call (Go duration).
    #[arg(long, default_value = "60s", value_parser = crate::up::duration)]
    timeout: std::time::Duration,
    #[command(flatten)]
    gateway: GatewayArgs,
}

fn split_pair(pair: &str, what: &str) -> Result<(String, String)> {
    let (k, v) = pair
        .split_once('=')
        .with_context(|| format!("{what} {pair:?} must look like name=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

pub(crate) async fn run(args: InvokeArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    let method: Method = args
        .method
        .to_uppercase()
        .parse()
        .context("invalid --method")?;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Reading from stdin - hit (Control + D) to stop.");
    }
    let mut body = Vec::new();
    stdin
        .lock()
        .read_to_end(&mut body)
        .context("reading stdin")?;
    let query: Vec<(String, String)> = args
        .query
        .iter()
        .map(|q| split_pair(q, "--query"))
        .collect::<Result<_>>()?;
    let route = if args.asynchronous {
        "async-function"
    } else {
        "function"
    };
    let mut path = format!("/{route}/{}.{}", args.name, gateway.namespace);
    if !query.is_empty() {
        let encoded: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect();
        path = format!("{path}?{}", encoded.join("&"));
    }
    let mut rb = gateway.function_request(method, &path).body(body);
    if let Some(url) = &args.callback {
        rb = rb.header("X-Callback-Url", url);
    }
    for h in &args.headers {
        let (k, v) = split_pair(h, "--header")?;
        rb = rb.header(k, v);
    }
    let resp = gateway.send(rb, Some(args.timeout)).await?;
    let status = resp.status();
    if args.asynchronous && status == reqwest::StatusCode::ACCEPTED {
        let id = resp
            .headers()
            .get("x-call-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        println!("{id}");
        eprintln!("Queued {} as call {id}.", args.name);
        return Ok(());
    }
    let bytes = resp
        .bytes()
        .await
        .context("reading the function's answer")?;
    if status.is_success() || status.is_redirection() {
        std::io::stdout().write_all(&bytes)?;
        return Ok(());
    }
    std::io::stderr().write_all(&bytes)?;
    bail!("{} answered {status}", args.name)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
