//! `courier invoke NAME`: POST stdin to the function and print its answer; with `--async`,
//! queue the call and print its id, or (`--async --wait`) wait for it to end and print the
//! answer the ledger kept for it.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result, bail};
use clap::Args;
use courier_core::ledger::CallState;
use reqwest::Method;
use tokio::time::Instant;

use crate::client::{Gateway, GatewayArgs};
use crate::commands::calls::{self, WaitEnded};

/// The header that asks the ledger to keep this call's answer.
const KEEP_RESULT: &str = "X-Courier-Keep-Result";

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
    /// With --async: wait for the queued call to end and print the function's answer (kept
    /// for this call with `X-Courier-Keep-Result: true`); exit status 0 when it succeeded, 1
    /// when it failed, was dead-lettered or cancelled, 2 when --timeout ends first.
    #[arg(long, requires = "asynchronous")]
    wait: bool,
    /// Timeout for the call, including the wait of --async --wait (Go duration).
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
    if args.wait {
        rb = rb.header(KEEP_RESULT, "true");
    }
    for h in &args.headers {
        let (k, v) = split_pair(h, "--header")?;
        rb = rb.header(k, v);
    }
    let started = Instant::now();
    let resp = gateway.send(rb, Some(args.timeout)).await?;
    let status = resp.status();
    if args.asynchronous && status == reqwest::StatusCode::ACCEPTED {
        let id = resp
            .headers()
            .get("x-call-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if args.wait {
            if id.is_empty() {
                bail!("the gateway queued the call but sent no X-Call-Id to wait on");
            }
            let remaining = args.timeout.saturating_sub(started.elapsed());
            eprintln!(
                "Queued {} as call {id}; waiting for it (at most {:?}).",
                args.name, args.timeout
            );
            return wait_and_print(&gateway, &args.name, &id, args.timeout, remaining).await;
        }
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

/// Waits (at most `remaining`) for queued call `id` to end, then prints the function's kept
/// answer like a synchronous invoke: the body on stdout when it succeeded, on stderr with an
/// error otherwise. A timeout prints the call id on stdout, to wait on later.
async fn wait_and_print(
    gateway: &Gateway,
    name: &str,
    id: &str,
    timeout: std::time::Duration,
    remaining: std::time::Duration,
) -> Result<()> {
    let fetched = calls::wait_final(gateway, id, remaining).await?;
    let record = &fetched.record;
    let ended = WaitEnded::check(record, timeout);
    if !record.state.is_final() {
        println!("{id}");
        return ended.map_err(Into::into);
    }
    if record.state == CallState::Cancelled {
        return ended.map_err(Into::into);
    }
    let kept = match calls::result(gateway, id).await {
        Ok(kept) => kept,
        Err(e) => {
            // The call ended but its answer is not there (it never got one, or the ledger
            // did not keep it): the record is all there is to show.
            fetched.print()?;
            eprintln!("courier: no answer kept for call {id}: {e:#}");
            return ended.map_err(Into::into);
        }
    };
    if let Some(note) = kept.note() {
        eprintln!("{note}");
    }
    if ended.is_ok() {
        std::io::stdout().write_all(&kept.body)?;
        return Ok(());
    }
    std::io::stderr().write_all(&kept.body)?;
    eprintln!("courier: {name} answered {}", kept.status);
    ended.map_err(Into::into)
}

/// Percent-encodes everything but the URL-unreserved characters (a query value, a path
/// segment).
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
