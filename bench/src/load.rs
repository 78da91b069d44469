//! The closed-loop load generator: N persistent HTTP/1.1 keep-alive
//! connections, each sending a small POST, awaiting the whole response and
//! sending the next one. A warm-up period is run but not recorded.
//!
//! A request is recorded when it starts after the warm-up and finishes
//! before the end of the window; throughput is recorded 2xx responses over
//! the window length. Non-2xx answers, transport errors and timeouts count as
//! errors (a broken connection is re-established).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    time::{Instant, timeout_at},
};

/// How long a request in flight at the end of the window may still take
/// before the connection gives up on it.
const GRACE: Duration = Duration::from_secs(2);

/// One load run against one target.
pub(crate) struct LoadConfig {
    pub(crate) addr: SocketAddr,
    /// Origin-form request target, e.g. `/function/bench`.
    pub(crate) path: Uri,
    pub(crate) connections: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) body: Bytes,
}

/// The outcome of one load run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stats {
    /// Recorded 2xx responses.
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) rps: f64,
    pub(crate) p50_us: u32,
    pub(crate) p99_us: u32,
}

impl Stats {
    pub(crate) fn p50_ms(&self) -> f64 {
        f64::from(self.p50_us) / 1000.0
    }

    pub(crate) fn p99_ms(&self) -> f64 {
        f64::from(self.p99_us) / 1000.0
    }
}

#[derive(Default)]
struct ConnectionLog {
    latencies_us: Vec<u32>,
    errors: u64,
}

pub(crate) async fn run(config: LoadConfig) -> anyhow::Result<Stats> {
    anyhow::ensure!(config.connections > 0, "at least one connection is needed");
    anyhow::ensure!(!config.duration.is_zero(), "the duration must not be zero");
    let host = HeaderValue::from_str(&config.addr.to_string())?;
    let config = Arc::new(config);
    let record_from = Instant::now() + config.warmup;
    let end = record_from + config.duration;

    let tasks: Vec<_> = (0..config.connections)
        .map(|_| tokio::spawn(connection(config.clone(), host.clone(), record_from, end)))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let log = task.await?;
        latencies.extend_from_slice(&log.latencies_us);
        errors += log.errors;
    }
    latencies.sort_unstable();

    let requests = latencies.len() as u64;
    Ok(Stats {
        requests,
        errors,
        rps: requests as f64 / config.duration.as_secs_f64(),
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
    })
}

/// Nearest-rank percentile of sorted samples (0 when there are none).
fn percentile(sorted: &[u32], p: f64) -> u32 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0;
    };
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(last)]
}

async fn connection(
    config: Arc<LoadConfig>,
    host: HeaderValue,
    record_from: Instant,
    end: Instant,
) -> ConnectionLog {
    let deadline = end + GRACE;
    let mut log = ConnectionLog {
        latencies_us: Vec::with_capacity(64 * 1024),
        errors: 0,
    };
    'connect: while Instant::now() < end {
        let Ok(Ok(mut sender)) = timeout_at(deadline, connect(config.addr)).await else {
            log.errors += u64::from(Instant::now() >= record_from);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        loop {
            let started = Instant::now();
            if started >= end {
                break 'connect;
            }
            let recorded = started >= record_from;
            let outcome = timeout_at(deadline, send(&mut sender, &config, &host)).await;
            let finished = Instant::now();
            match outcome {
                Ok(Ok(status)) if status.is_success() => {
                    if recorded && finished <= end {
                        let micros = (finished - started).as_micros();
                        log.latencies_us
                            .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                }
                Ok(Ok(_)) => log.errors += u64::from(recorded),
                Ok(Err(_)) | Err(_) => {
                    log.errors += u64::from(recorded);
                    continue 'connect;
                }
            }
        }
    }
    log
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; either way the
        // next `send` reports it.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    config: &LoadConfig,
    host: &HeaderValue,
) -> Result<StatusCode, hyper::Error> {
    sender.ready().await?;
    let mut request = Request::new(Full::new(config.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = config.path.clone();
    let headers = request.headers_mut();
    headers.insert(header::HOST, host.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let response = sender.send_request(request).await?;
    let status = response.status();
    crate::upstream::drain(response.into_body()).await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.50), 50);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
