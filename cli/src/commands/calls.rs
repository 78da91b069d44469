//! `courier calls list|show|wait|result|cancel`: the invocation ledger's records of queued
//! calls, through the gateway's `/system/calls` routes. `courier invoke --async --wait` uses
//! the same wait and result reads.
//!
//! Exit status: 0 when the command did what it was asked (for `wait`: the call succeeded), 1
//! for an error or a call that ended in `failed`, `dead-lettered` or `cancelled`, 2 when a
//! wait's `--timeout` ended first ([`WaitEnded::exit_code`], mapped in `main.rs`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use courier_core::ledger::{CallRecord, CallState};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize as _;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{Gateway, GatewayArgs};
use crate::commands::invoke::urlencode;

#[derive(Debug, Args)]
pub(crate) struct CallsArgs {
    #[command(subcommand)]
    command: CallsCommand,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Debug, Subcommand)]
enum CallsCommand {
    /// A table of calls, newest first: call id, function, state, attempts, when it was
    /// accepted, what queued it.
    #[command(alias = "ls")]
    List {
        /// Only the calls of this function (`name`, in --namespace, or `name.namespace`).
        #[arg(long)]
        function: Option<String>,
        /// Only the calls in this state: queued, running, retrying, succeeded, failed,
        /// dead-lettered or cancelled.
        #[arg(long)]
        state: Option<CallState>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Print the JSON of `GET /system/calls` instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One call's record, as JSON: state, source, every attempt, the callback's outcome.
    Show {
        /// The call id (`X-Call-Id`).
        call_id: String,
    },
    /// Wait until the call ends, then print its record; exit status 0 when it succeeded, 1
    /// when it failed, was dead-lettered or cancelled, 2 when --timeout ends first.
    Wait {
        /// The call id (`X-Call-Id`).
        call_id: String,
        /// How long to wait (Go duration).
        #[arg(long, default_value = "30s", value_parser = crate::up::duration)]
        timeout: Duration,
    },
    /// Print the function's answer kept for the call (the body, as it was sent), when results
    /// are kept for it (label `com.courier.ledger.result: "true"`, or the call was sent with
    /// `X-Courier-Keep-Result: true`).
    Result {
        /// The call id (`X-Call-Id`).
        call_id: String,
    },
    /// Cancel a call that has not started yet (it will never run); print its record.
    Cancel {
        /// The call id (`X-Call-Id`).
        call_id: String,
    },
}

/// Timeout of one request that does not wait.
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

/// The longest `?wait=` asked of the gateway at once: a long wait is a series of these, so no
/// proxy in between sees a request idle for minutes.
const WAIT_SLICE: Duration = Duration::from_secs(30);

/// How much longer than its `?wait=` one request may take to answer.
const WAIT_SLACK: Duration = Duration::from_secs(15);

/// The pause before asking again when the gateway answered a wait early with a call that has
/// not ended (it is shutting down, or does not hold waits): no busy loop.
const EARLY_ANSWER_PAUSE: Duration = Duration::from_millis(250);

/// How a wait ended when the call did not succeed; the process exits with [`Self::exit_code`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum WaitEnded {
    /// The call ended `failed`, `dead-lettered` or `cancelled`.
    #[error("call {id} ended {state}{detail}")]
    Unsuccessful {
        /// The call id.
        id: String,
        /// Its final state.
        state: CallState,
        /// What its last attempt said (`: after 3 attempts, the last answered 500`).
        detail: String,
    },
    /// The timeout ended before the call did.
    #[error(
        "call {id} is still {state} after {waited:?}; wait again with `courier calls wait {id}`"
    )]
    TimedOut {
        /// The call id.
        id: String,
        /// Its state when the wait ended.
        state: CallState,
        /// How long was waited.
        waited: Duration,
    },
}

impl WaitEnded {
    /// The process's exit status: 1 for a call that did not succeed, 2 for a timeout.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Unsuccessful { .. } => 1,
            Self::TimedOut { .. } => 2,
        }
    }

    /// `Ok` when `record` succeeded; otherwise how the wait ended.
    pub(crate) fn check(record: &CallRecord, waited: Duration) -> Result<(), Self> {
        match record.state {
            CallState::Succeeded => Ok(()),
            state if state.is_final() => Err(Self::Unsuccessful {
                id: record.id.clone(),
                state,
                detail: last_attempt(record),
            }),
            state => Err(Self::TimedOut {
                id: record.id.clone(),
                state,
                waited,
            }),
        }
    }
}

/// `: after 2 attempts, the last answered 500 (error text)`, or nothing for a call never run.
fn last_attempt(record: &CallRecord) -> String {
    let Some(last) = record.attempts.last() else {
        return String::new();
    };
    let count = record.attempts.len();
    let mut detail = format!(
        ": after {count} attempt{}",
        if count == 1 { "" } else { "s" }
    );
    match last.status {
        Some(status) => {
            let _ = write!(detail, ", the last answered {status}");
        }
        None => detail.push_str(", the last got no answer"),
    }
    if let Some(error) = last.error.as_deref().filter(|e| !e.is_empty()) {
        let _ = write!(detail, " ({error})");
    }
    detail
}

/// A record as the gateway sent it (printed as is, unknown fields included) and as read.
pub(crate) struct Fetched {
    /// The JSON the gateway answered.
    pub(crate) json: Value,
    /// The same, typed.
    pub(crate) record: CallRecord,
}

impl Fetched {
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let json: Value =
            serde_json::from_slice(bytes).context("the gateway's answer is not JSON")?;
        let record =
            CallRecord::deserialize(&json).context("the gateway's answer is not a call record")?;
        Ok(Self { json, record })
    }

    /// The record, pretty-printed, on stdout.
    pub(crate) fn print(&self) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(&self.json)?);
        Ok(())
    }
}

/// The path of call `id`'s record (the id percent-encoded: any byte but a control character
/// may be in it).
fn call_path(id: &str) -> String {
    format!("/system/calls/{}", urlencode(id))
}

/// The gateway's own words for a refusal (the ledger's routes answer in plain text), or the
/// status when it said nothing.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        text.to_owned()
    }
}

/// The error for a refusal: `what` and the gateway's message (with the status too, unless it
/// is one of the answers about the call itself: 400, 404, 409).
fn refused(what: &str, status: StatusCode, body: &[u8]) -> anyhow::Error {
    let message = refusal(status, body);
    match status {
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::CONFLICT => {
            anyhow::anyhow!("{what}: {message}")
        }
        _ => anyhow::anyhow!("{what}: the gateway answered {status}: {message}"),
    }
}

/// The body of a 2xx answer; otherwise an error carrying the gateway's message.
async fn body_of(resp: Response, what: &str) -> Result<Bytes> {
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("{what}: reading the gateway's answer"))?;
    if status.is_success() {
        return Ok(body);
    }
    Err(refused(what, status, &body))
}

/// The record of call `id`, as it is now.
pub(crate) async fn get(gateway: &Gateway, id: &str) -> Result<Fetched> {
    let resp = gateway
        .send(gateway.request(Method::GET, &call_path(id)), TIMEOUT)
        .await?;
    Fetched::from_bytes(&body_of(resp, &format!("reading call {id}")).await?)
}

/// Long-polls the record of call `id` until it is final or `timeout` has passed, in requests
/// of at most [`WAIT_SLICE`]; returns the record as it is then.
pub(crate) async fn wait_final(gateway: &Gateway, id: &str, timeout: Duration) -> Result<Fetched> {
    let deadline = Instant::now() + timeout;
    loop {
        let asked = Instant::now();
        let slice = deadline.saturating_duration_since(asked).min(WAIT_SLICE);
        let path = format!("{}?wait={}ms", call_path(id), slice.as_millis());
        let resp = gateway
            .send(
                gateway.request(Method::GET, &path),
                Some(slice + WAIT_SLACK),
            )
            .await?;
        let fetched =
            Fetched::from_bytes(&body_of(resp, &format!("waiting for call {id}")).await?)?;
        let now = Instant::now();
        if fetched.record.state.is_final() || now >= deadline {
            return Ok(fetched);
        }
        if now < asked + slice {
            tokio::time::sleep(EARLY_ANSWER_PAUSE.min(deadline - now)).await;
        }
    }
}

/// A result kept for a call: the function's status and body, and whether it was cut.
pub(crate) struct KeptResult {
    /// The function's status.
    pub(crate) status: StatusCode,
    /// Only the first `--ledger-max-result-bytes` were kept.
    pub(crate) truncated: bool,
    /// The body, as kept.
    pub(crate) body: Bytes,
}

impl KeptResult {
    /// The truncation note for stderr, when there is one.
    pub(crate) fn note(&self) -> Option<String> {
        self.truncated.then(|| {
            format!(
                "note: the result is truncated: only its first {} bytes were kept \
                 (--ledger-max-result-bytes)",
                self.body.len()
            )
        })
    }
}

/// The result kept for call `id`.
pub(crate) async fn result(gateway: &Gateway, id: &str) -> Result<KeptResult> {
    let path = format!("{}/result", call_path(id));
    let resp = gateway
        .send(gateway.request(Method::GET, &path), TIMEOUT)
        .await?;
    let status = resp.status();
    let truncated = resp
        .headers()
        .get("x-courier-result-truncated")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("reading the result of call {id}"))?;
    let kept = KeptResult {
        status,
        truncated,
        body,
    };
    if status.is_success() || truncated {
        return Ok(kept);
    }
    // The route answers with the function's own status, so a 404 or 409 may be the function's
    // kept answer or the gateway saying there is none (yet). The record, read after it, tells:
    // a final call whose kept result has this status.
    let is_kept = get(gateway, id).await.is_ok_and(|f| {
        f.record.state.is_final() && f.record.result.is_some_and(|r| r.status == status.as_u16())
    });
    if is_kept {
        return Ok(kept);
    }
    Err(refused(
        &format!("reading the result of call {id}"),
        status,
        &kept.body,
    ))
}

pub(crate) async fn run(args: CallsArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    match args.command {
        CallsCommand::List {
            function,
            state,
            limit,
            json,
        } => {
            let path = list_path(function.as_deref(), &gateway.namespace, state, limit);
            let resp = gateway
                .send(gateway.request(Method::GET, &path), TIMEOUT)
                .await?;
            let body = body_of(resp, "listing calls").await?;
            let calls: Vec<Value> =
                serde_json::from_slice(&body).context("the gateway's answer is not a list")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&calls)?);
                return Ok(());
            }
            let records = calls
                .iter()
                .map(CallRecord::deserialize)
                .collect::<Result<Vec<_>, _>>()
                .context("the gateway's answer is not a list of call records")?;
            print!("{}", table(&records));
        }
        CallsCommand::Show { call_id } => get(&gateway, &call_id).await?.print()?,
        CallsCommand::Wait { call_id, timeout } => {
            let fetched = wait_final(&gateway, &call_id, timeout).await?;
            fetched.print()?;
            WaitEnded::check(&fetched.record, timeout)?;
        }
        CallsCommand::Result { call_id } => {
            let kept = result(&gateway, &call_id).await?;
            std::io::stdout().write_all(&kept.body)?;
            std::io::stdout().flush()?;
            if let Some(note) = kept.note() {
                eprintln!("{note}");
            }
            if !kept.status.is_success() {
                eprintln!("note: the function answered {}", kept.status);
            }
        }
        CallsCommand::Cancel { call_id } => {
            let resp = gateway
                .send(
                    gateway.request(Method::DELETE, &call_path(&call_id)),
                    TIMEOUT,
                )
                .await?;
            let body = body_of(resp, &format!("cancelling call {call_id}")).await?;
            Fetched::from_bytes(&body)?.print()?;
            eprintln!("Cancelled call {call_id}: it will not run.");
        }
    }
    Ok(())
}

/// `GET /system/calls` with the filters given: a bare function name is in `namespace`.
fn list_path(
    function: Option<&str>,
    namespace: &str,
    state: Option<CallState>,
    limit: u64,
) -> String {
    let mut query = vec![format!("limit={limit}")];
    if let Some(function) = function {
        let qualified = if function.contains('.') {
            function.to_owned()
        } else {
            format!("{function}.{namespace}")
        };
        query.push(format!("function={}", urlencode(&qualified)));
    }
    if let Some(state) = state {
        query.push(format!("state={}", state.as_str()));
    }
    format!("/system/calls?{}", query.join("&"))
}

/// The calls as a table, one per line under a header: id, function, state, attempts,
/// created, source.
fn table(records: &[CallRecord]) -> String {
    const HEADER: [&str; 6] = [
        "CALL ID", "FUNCTION", "STATE", "ATTEMPTS", "CREATED", "SOURCE",
    ];
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.qualified_function(),
                r.state.to_string(),
                r.attempts.len().to_string(),
                r.created_at.clone(),
                r.source.kind().to_owned(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(HEADER);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use courier_core::ledger::{AttemptRecord, CallSource, ResultSummary};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        calls: CallsArgs,
    }

    fn parse(args: &[&str]) -> Result<CallsCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("calls").chain(args.iter().copied()))
            .map(|cli| cli.calls.command)
    }

    fn record(state: CallState, statuses: &[Option<u16>]) -> CallRecord {
        CallRecord {
            id: "call-1".into(),
            function: "echo".into(),
            namespace: "openfaas-fn".into(),
            state,
            source: CallSource::Cron {
                scheduled_at: "2026-01-01T00:00:00Z".into(),
            },
            created_at: "2026-01-01T00:00:00.120Z".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            attempts: statuses
                .iter()
                .map(|&status| AttemptRecord {
                    started_at: "2026-01-01T00:00:01Z".into(),
                    duration_seconds: Some(0.5),
                    status,
                    error: status.is_none().then(|| "connection refused".to_owned()),
                    next_delay_seconds: None,
                })
                .collect(),
            callback: None,
            result: None,
            updated_at: "2026-01-01T00:00:02Z".into(),
        }
    }

    #[test]
    fn list_takes_a_function_a_state_a_limit_and_json() {
        let CallsCommand::List {
            function,
            state,
            limit,
            json,
        } = parse(&[
            "list",
            "--function",
            "echo",
            "--state",
            "dead-lettered",
            "--limit",
            "7",
            "--json",
        ])
        .unwrap()
        else {
            panic!("not list")
        };
        assert_eq!(function.as_deref(), Some("echo"));
        assert_eq!(state, Some(CallState::DeadLettered));
        assert_eq!(limit, 7);
        assert!(json);
        let CallsCommand::List { limit, json, .. } = parse(&["ls"]).unwrap() else {
            panic!("not list")
        };
        assert_eq!((limit, json), (100, false));
    }

    #[test]
    fn list_refuses_unknown_states_and_limits_out_of_range() {
        let e = parse(&["list", "--state", "done"]).unwrap_err().to_string();
        assert!(e.contains("dead-lettered"), "{e}");
        assert!(parse(&["list", "--limit", "0"]).is_err());
        assert!(parse(&["list", "--limit", "1001"]).is_err());
        assert!(parse(&["list", "--limit", "1000"]).is_ok());
    }

    #[test]
    fn wait_takes_a_go_duration_timeout_defaulting_to_30s() {
        let CallsCommand::Wait { call_id, timeout } = parse(&["wait", "abc"]).unwrap() else {
            panic!("not wait")
        };
        assert_eq!(
            (call_id.as_str(), timeout),
            ("abc", Duration::from_secs(30))
        );
        let CallsCommand::Wait { timeout, .. } =
            parse(&["wait", "abc", "--timeout", "1m30s"]).unwrap()
        else {
            panic!("not wait")
        };
        assert_eq!(timeout, Duration::from_secs(90));
        assert!(parse(&["wait", "abc", "--timeout", "soon"]).is_err());
        assert!(parse(&["wait"]).is_err(), "the id is required");
    }

    #[test]
    fn show_result_and_cancel_take_one_call_id() {
        for command in ["show", "result", "cancel"] {
            assert!(parse(&[command, "abc"]).is_ok(), "{command}");
            assert!(parse(&[command]).is_err(), "{command} without an id");
        }
    }

    #[test]
    fn the_list_path_qualifies_a_bare_function_with_the_namespace() {
        assert_eq!(
            list_path(None, "openfaas-fn", None, 100),
            "/system/calls?limit=100"
        );
        assert_eq!(
            list_path(Some("echo"), "team", Some(CallState::Failed), 5),
            "/system/calls?limit=5&function=echo.team&state=failed"
        );
        assert_eq!(
            list_path(Some("echo.other"), "team", None, 5),
            "/system/calls?limit=5&function=echo.other"
        );
    }

    #[test]
    fn a_call_id_is_percent_encoded_in_the_path() {
        assert_eq!(call_path("a b/c?d"), "/system/calls/a%20b%2Fc%3Fd");
        assert_eq!(
            call_path("6aafc09f-e3b2-5e1a-8c46-65323537a1fc"),
            "/system/calls/6aafc09f-e3b2-5e1a-8c46-65323537a1fc"
        );
    }

    #[test]
    fn a_wait_exits_0_on_success_1_on_an_unsuccessful_end_2_on_timeout() {
        let waited = Duration::from_secs(1);
        assert!(WaitEnded::check(&record(CallState::Succeeded, &[Some(200)]), waited).is_ok());
        for state in [
            CallState::Failed,
            CallState::DeadLettered,
            CallState::Cancelled,
        ] {
            let e = WaitEnded::check(&record(state, &[]), waited).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{state}");
            assert!(e.to_string().contains(state.as_str()), "{e}");
        }
        for state in [CallState::Queued, CallState::Running, CallState::Retrying] {
            let e = WaitEnded::check(&record(state, &[]), waited).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{state}");
            assert!(e.to_string().contains("courier calls wait call-1"), "{e}");
        }
    }

    #[test]
    fn an_unsuccessful_end_says_what_the_last_attempt_got() {
        let e = WaitEnded::check(
            &record(CallState::DeadLettered, &[Some(500), Some(503)]),
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "call call-1 ended dead-lettered: after 2 attempts, the last answered 503"
        );
        let e = WaitEnded::check(&record(CallState::Failed, &[None]), Duration::ZERO).unwrap_err();
        assert_eq!(
            e.to_string(),
            "call call-1 ended failed: after 1 attempt, the last got no answer \
             (connection refused)"
        );
        let e = WaitEnded::check(&record(CallState::Cancelled, &[]), Duration::ZERO).unwrap_err();
        assert_eq!(e.to_string(), "call call-1 ended cancelled");
    }

    #[test]
    fn the_table_has_a_header_and_one_aligned_line_per_call() {
        let mut second = record(CallState::Retrying, &[Some(503)]);
        second.id = "a-much-longer-call-id".into();
        second.source = CallSource::Async;
        second.result = Some(ResultSummary {
            status: 503,
            content_type: None,
            bytes: 0,
            truncated: false,
        });
        let text = table(&[record(CallState::Queued, &[]), second]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("CALL ID "), "{text}");
        assert!(lines[1].starts_with("call-1 "), "{text}");
        let columns: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            columns,
            [
                "a-much-longer-call-id",
                "echo.openfaas-fn",
                "retrying",
                "1",
                "2026-01-01T00:00:00.120Z",
                "async"
            ]
        );
        assert_eq!(lines[0].find("FUNCTION"), lines[1].find("echo"), "{text}");
        assert!(lines[1].ends_with("cron"), "{text}");
    }

    #[test]
    fn an_empty_list_is_the_header_alone() {
        assert_eq!(table(&[]).lines().count(), 1);
    }

    #[test]
    fn refusals_carry_the_gateways_words_or_the_status() {
        assert_eq!(
            refused("reading call abc", StatusCode::NOT_FOUND, b"no call abc\n").to_string(),
            "reading call abc: no call abc"
        );
        assert_eq!(
            refused("cancelling call abc", StatusCode::CONFLICT, b"").to_string(),
            "cancelling call abc: 409 Conflict"
        );
        assert_eq!(
            refused(
                "listing calls",
                StatusCode::SERVICE_UNAVAILABLE,
                b"queue down"
            )
            .to_string(),
            "listing calls: the gateway answered 503 Service Unavailable: queue down"
        );
    }
}
