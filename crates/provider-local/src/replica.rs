//! One replica's life: start, become ready, serve, and restart with backoff when it dies.
//! HTTP-mode replicas are child processes; fork-mode replicas are loopback listeners that fork
//! the command per request (see [`crate::replica::fork`]).

mod fork;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use courier_core::headers::X_CALL_ID;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::logbook::FunctionLog;
use crate::process::GroupGuard;
use crate::runtime::{FunctionRuntime, Mode};
use crate::sandbox::Launch;

/// First restart delay after a crash; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A replica that ran this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// How often a starting HTTP replica is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a replica's run ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// It was asked to stop.
    Stopped,
    /// It exited, failed to start or never became ready: restart it.
    Failed,
}

/// Runs replica `id` until `cancel`, restarting it with backoff.
pub(crate) async fn supervise(rt: Arc<FunctionRuntime>, id: u64, cancel: CancellationToken) {
    let instance: Arc<str> = format!("{}-{}", rt.function.name, id).into();
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        let ended = match rt.plan.mode {
            Mode::Http => run_http(&rt, id, &instance, &cancel).await,
            Mode::Fork => run_fork(&rt, id, &instance, &cancel).await,
        };
        rt.mark_unready(id);
        if ended == Ended::Stopped || cancel.is_cancelled() {
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = MIN_BACKOFF;
        }
        rt.log.write(
            &instance,
            format!("Restarting in {} ms.", backoff.as_millis()),
        );
        tracing::warn!(function = %rt.function, instance = %instance, backoff_ms = backoff.as_millis() as u64, "Replica failed; restarting.");
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn run_http(
    rt: &Arc<FunctionRuntime>,
    id: u64,
    instance: &str,
    cancel: &CancellationToken,
) -> Ended {
    let port = match free_port() {
        Ok(port) => port,
        Err(e) => {
            rt.log.write(instance, format!("No free port: {e}"));
            return Ended::Failed;
        }
    };
    let mut env = rt.plan.env.clone();
    env.push(("PORT".into(), port.to_string()));
    let launch = Launch {
        argv: &rt.plan.argv,
        env: &env,
        secrets_dir: &rt.plan.secrets_dir,
        scratch_dir: &rt.plan.scratch_dir,
    };
    let mut cmd = rt.shared.sandbox.command(&launch);
    cmd.stdin(Stdio::null());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            rt.log.write(
                instance,
                format!("Failed to start {:?}: {e}", rt.plan.argv[0]),
            );
            return Ended::Failed;
        }
    };
    let mut group = GroupGuard::new(child.id());
    pump_lines(child.stdout.take(), rt.log.clone(), instance);
    pump_lines(child.stderr.take(), rt.log.clone(), instance);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + rt.shared.start_timeout;
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                group.stop(&mut child).await;
                return Ended::Stopped;
            }
            status = child.wait() => {
                rt.log.write(instance, format!("Exited before it was ready: {}", describe(status)));
                return Ended::Failed;
            }
            () = tokio::time::sleep(PROBE_INTERVAL) => {
                if is_ready(rt, addr).await {
                    break;
                }
                if Instant::now() > deadline {
                    rt.log.write(instance, format!(
                        "Not ready within {:?} (no answer on 127.0.0.1:$PORT).",
                        rt.shared.start_timeout
                    ));
                    group.stop(&mut child).await;
                    return Ended::Failed;
                }
            }
        }
    }
    rt.mark_ready(id, addr);
    tracing::info!(function = %rt.function, instance, %addr, "Replica ready.");
    tokio::select! {
        () = cancel.cancelled() => {
            rt.mark_unready(id);
            group.stop(&mut child).await;
            Ended::Stopped
        }
        status = child.wait() => {
            rt.mark_unready(id);
            rt.log.write(instance, format!("Exited: {}", describe(status)));
            Ended::Failed
        }
    }
}

/// Ready when `/_/health` answers 2xx, or when the server answers at all but has no health
/// route (404/405). 5xx (e.g. a watchdog's 503 while starting) and refused connections are not
/// ready.
async fn is_ready(rt: &FunctionRuntime, addr: SocketAddr) -> bool {
    let uri = format!("http://{addr}/_/health");
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return false;
    };
    match tokio::time::timeout(PROBE_TIMEOUT, rt.shared.health.get(uri)).await {
        Ok(Ok(resp)) => {
            let s = resp.status();
            s.is_success()
                || s == http::StatusCode::NOT_FOUND
                || s == http::StatusCode::METHOD_NOT_ALLOWED
        }
        _ => false,
    }
}

async fn run_fork(
    rt: &Arc<FunctionRuntime>,
    id: u64,
    instance: &Arc<str>,
    cancel: &CancellationToken,
) -> Ended {
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
        Ok(l) => l,
        Err(e) => {
            rt.log
                .write(instance, format!("Cannot listen on loopback: {e}"));
            return Ended::Failed;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return Ended::Failed;
    };
    rt.mark_ready(id, addr);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ended::Stopped,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(fork::serve_connection(rt.clone(), instance.clone(), stream, cancel.clone()));
            }
        }
    }
}

/// Copies a child's output into the function log, line by line.
fn pump_lines<R>(reader: Option<R>, log: Arc<FunctionLog>, instance: &str)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let Some(reader) = reader else { return };
    let instance = instance.to_owned();
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.write(&instance, line);
        }
    });
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// A port that was free a moment ago (the process binds it itself).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The call id of a request, for log lines.
fn call_id(headers: &http::HeaderMap) -> &str {
    headers
        .get(X_CALL_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}
