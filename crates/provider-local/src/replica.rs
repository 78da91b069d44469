//! One replica's life: start, become ready, serve, and restart with backoff when it dies.
//! HTTP-mode replicas are child processes; fork-mode replicas are loopback listeners that fork
//! the command per request (see [`crate::replica::fork`]).

mod fork;
mod port;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use courier_core::headers::X_CALL_ID;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::logbook::FunctionLog;
use crate::process::GroupGuard;
use crate::runtime::{FunctionRuntime, Mode, StopSignals};
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

/// How long a retired HTTP-mode replica keeps running after it stopped taking new requests,
/// so calls the gateway already sent it can finish.
const HTTP_DRAIN: Duration = Duration::from_secs(2);
/// Longest a retired fork-mode replica waits for its in-flight requests.
const FORK_DRAIN: Duration = Duration::from_secs(30);
/// How long a retired fork-mode replica still accepts connections after it left the ready
/// list, for calls that resolved its address just before (as [`HTTP_DRAIN`] in HTTP mode):
/// without it such a call would be refused (502) by an autoscaler's scale-down.
const FORK_ACCEPT_GRACE: Duration = Duration::from_secs(2);

/// Runs replica `id` until it is retired or stopped, restarting it with backoff.
pub(crate) async fn supervise(rt: Arc<FunctionRuntime>, id: u64, signals: StopSignals) {
    let instance: Arc<str> = format!("{}-{}", rt.function.name, id).into();
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        let ended = match rt.plan.mode {
            Mode::Http => run_http(&rt, id, &instance, &signals).await,
            Mode::Fork => run_fork(&rt, id, &instance, &signals).await,
        };
        rt.mark_unready(id);
        rt.set_pid(id, None);
        if ended == Ended::Stopped || signals.retire.is_cancelled() {
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
            () = signals.retire.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn run_http(
    rt: &Arc<FunctionRuntime>,
    id: u64,
    instance: &str,
    signals: &StopSignals,
) -> Ended {
    let port = match port::free_port() {
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
    rt.set_pid(id, child.id());
    pump_lines(child.stdout.take(), rt.log.clone(), instance);
    pump_lines(child.stderr.take(), rt.log.clone(), instance);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + rt.shared.start_timeout;
    loop {
        tokio::select! {
            () = signals.retire.cancelled() => {
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
        () = signals.retire.cancelled() => {
            rt.mark_unready(id);
            if !signals.hard.is_cancelled() {
                // Calls already sent to this replica get a moment to finish.
                tokio::select! {
                    () = signals.hard.cancelled() => {}
                    () = tokio::time::sleep(HTTP_DRAIN) => {}
                    _ = child.wait() => {}
                }
            }
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
    signals: &StopSignals,
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
    let max = rt.plan.max_inflight;
    let inflight = Arc::new(Semaphore::new(max));
    // Closes this replica's connections once it has drained (or on a hard stop).
    let connections = signals.hard.child_token();
    let accept = |stream: tokio::net::TcpStream| {
        let _ = stream.set_nodelay(true);
        tokio::spawn(fork::serve_connection(
            rt.clone(),
            instance.clone(),
            stream,
            inflight.clone(),
            connections.clone(),
        ));
    };
    rt.mark_ready(id, addr);
    loop {
        tokio::select! {
            () = signals.retire.cancelled() => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    accept(stream);
                }
            }
        }
    }
    rt.mark_unready(id);
    // No new calls are routed here now; those already routed still get in.
    let grace = tokio::time::sleep(FORK_ACCEPT_GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = signals.hard.cancelled() => break,
            () = &mut grace => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    accept(stream);
                }
            }
        }
    }
    drop(listener);
    let drained = async {
        while inflight.available_permits() < max {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = signals.hard.cancelled() => {}
        () = drained => {}
        () = tokio::time::sleep(FORK_DRAIN) => {}
    }
    connections.cancel();
    Ended::Stopped
}

/// Longest log line kept; the rest of a longer line is dropped.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Copies a child's output into the function log, line by line, in the background.
fn pump_lines<R>(reader: Option<R>, log: Arc<FunctionLog>, instance: &str)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let Some(reader) = reader else { return };
    let instance = instance.to_owned();
    tokio::spawn(async move { copy_lines(reader, &log, &instance).await });
}

/// Copies output into the function log until EOF. Invalid UTF-8 is replaced and long lines are
/// cut, but the pipe is always drained so the function never blocks or dies on a write.
pub(crate) async fn copy_lines<R>(reader: R, log: &FunctionLog, instance: &str)
where
    R: AsyncRead + Unpin,
{
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut chunk = (&mut reader).take(MAX_LINE_BYTES as u64);
        match chunk.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let complete = line.ends_with(b"\n");
        let text = String::from_utf8_lossy(&line);
        log.write(instance, text.trim_end_matches(['\n', '\r']));
        if !complete {
            // Over-long line: skip to its end.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let mut chunk = (&mut reader).take(MAX_LINE_BYTES as u64);
                match chunk.read_until(b'\n', &mut rest).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if rest.ends_with(b"\n") => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// The call id of a request, for log lines.
fn call_id(headers: &http::HeaderMap) -> &str {
    headers
        .get(X_CALL_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}
