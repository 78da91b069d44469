//! Fork mode, the classic watchdog contract: one process per request, the body on stdin,
//! stdout as the response, `Http_*` environment variables, non-zero exit → 500, exec timeout →
//! the process group is killed and the caller gets 408 `Killed process.`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use courier_core::headers::{X_DURATION_SECONDS, cgi_env_name};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::process::GroupGuard;
use crate::runtime::FunctionRuntime;
use crate::sandbox::Launch;

/// Largest response a fork-mode function may write (the classic watchdog buffers it too).
const MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Serves one loopback connection from the gateway until it closes or `close` fires; a hard
/// stop drops in-flight requests, which kills their processes.
pub(super) async fn serve_connection(
    rt: Arc<FunctionRuntime>,
    instance: Arc<str>,
    stream: TcpStream,
    inflight: Arc<Semaphore>,
    close: CancellationToken,
) {
    let service = service_fn(move |req| {
        let rt = rt.clone();
        let instance = instance.clone();
        let inflight = inflight.clone();
        async move {
            let Ok(_permit) = inflight.try_acquire() else {
                let max = rt.plan.max_inflight;
                let mut resp = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Concurrent request limit exceeded. Max concurrent requests: {max}\n"),
                );
                resp.headers_mut().insert(
                    "x-openfaas-internal",
                    HeaderValue::from_static("courier-fork"),
                );
                return Ok::<_, Infallible>(resp);
            };
            Ok::<_, Infallible>(handle(&rt, &instance, req).await)
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        () = close.cancelled() => {}
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    rt: &FunctionRuntime,
    instance: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let log = &rt.log;
    log.write(instance, "Forking fprocess.");
    let (parts, body) = req.into_parts();
    let mut env = rt.plan.env.clone();
    for name in parts.headers.keys() {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            env.push((cgi_env_name(name.as_str()), value.to_owned()));
        }
    }
    // After the headers, so a `Path:` or `Method:` header cannot shadow them.
    env.push(("Http_Method".into(), parts.method.to_string()));
    if let Some(query) = parts.uri.query() {
        env.push(("Http_Query".into(), query.to_owned()));
    }
    env.push(("Http_Path".into(), parts.uri.path().to_owned()));
    let launch = Launch {
        argv: &rt.plan.argv,
        env: &env,
        secrets_dir: &rt.plan.secrets_dir,
        scratch_dir: &rt.plan.scratch_dir,
    };
    let mut child = match rt.shared.sandbox.command(&launch).spawn() {
        Ok(child) => child,
        Err(e) => {
            log.write(instance, format!("Failed to start fprocess: {e}"));
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to start fprocess: {e}\n"),
            );
        }
    };
    let group = GroupGuard::new(child.id());
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fprocess pipes unavailable\n",
        );
    };
    let feed = async move {
        let mut body = body;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && stdin.write_all(&data).await.is_err()
            {
                break; // The function stopped reading; that is its right.
            }
        }
        drop(stdin);
    };
    let collect = async move {
        let mut out = Vec::new();
        let read = (&mut stdout)
            .take(MAX_OUTPUT_BYTES + 1)
            .read_to_end(&mut out)
            .await;
        let complete = read.is_ok() && out.len() as u64 <= MAX_OUTPUT_BYTES;
        (out, complete)
    };
    let errors = super::copy_lines(stderr, log, instance);
    let run = async {
        let ((), (out, complete), ()) = tokio::join!(feed, collect, errors);
        if !complete {
            // Stop it rather than wait: nobody will read the rest of its output.
            let _ = child.start_kill();
        }
        (out, complete, child.wait().await)
    };
    let outcome = match rt.plan.exec_timeout {
        Some(limit) => tokio::time::timeout(limit, run).await.ok(),
        None => Some(run.await),
    };
    let Some((out, complete, status)) = outcome else {
        drop(group); // kills the whole process group
        log.write(
            instance,
            format!(
                "Killed process: exec timeout {:?} exceeded.",
                rt.plan.exec_timeout.unwrap_or_default()
            ),
        );
        return text(StatusCode::REQUEST_TIMEOUT, "Killed process.\n");
    };
    let seconds = started.elapsed().as_secs_f64();
    log.write(
        instance,
        format!("Wrote {} Bytes - Duration: {seconds:.6}s", out.len()),
    );
    if !complete {
        log.write(
            instance,
            format!("Output exceeded {MAX_OUTPUT_BYTES} bytes; process killed."),
        );
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("function output exceeded {MAX_OUTPUT_BYTES} bytes\n"),
        );
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("wait failed: {e}\n"),
            );
        }
    };
    if !status.success() {
        tracing::debug!(function = %rt.function, call_id = super::call_id(&parts.headers), %status, "Function exited with an error.");
        let mut body = out;
        body.extend_from_slice(format!("\n{status}\n").as_bytes());
        return text(StatusCode::INTERNAL_SERVER_ERROR, body);
    }
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    let content_type = rt
        .plan
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .or_else(|| parts.headers.get(header::CONTENT_TYPE).cloned())
        .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    if let Ok(v) = HeaderValue::from_str(&format!("{seconds:.6}")) {
        resp.headers_mut().insert(X_DURATION_SECONDS, v);
    }
    resp
}
