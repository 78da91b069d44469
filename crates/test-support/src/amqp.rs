//! The RabbitMQ broker the AMQP tests use, and a TCP proxy in front of it whose connections a
//! test can cut (a broker restart or network loss as the client sees it, without disturbing
//! other tests sharing the broker).
//!
//! The broker is `$COURIER_TEST_AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672/%2f` (a
//! local `rabbitmq-server`; `scripts/test.sh` starts it when it is not running). Tests share
//! it, so each uses its own queue names ([`unique_name`]).
//!
//! When it cannot be reached, [`broker_url`] prints a skip line and the test returns early,
//! unless `COURIER_TEST_REQUIRE_BROKERS=1`, which makes it a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::server::{brokers_required, print_skip};

/// The broker used when `COURIER_TEST_AMQP_URL` is not set.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long to try reaching the broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The configured broker URL (reachable or not).
pub fn configured_url() -> String {
    std::env::var("COURIER_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The broker URL if its port accepts connections; otherwise `None` after printing why the
/// calling test is skipped.
///
/// # Panics
/// If the broker cannot be reached and `COURIER_TEST_REQUIRE_BROKERS=1`.
pub async fn broker_url() -> Option<String> {
    let url = configured_url();
    let addr = host_port(&url);
    let reachable = matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await,
        Ok(Ok(_))
    );
    if reachable {
        return Some(url);
    }
    let reason = format!(
        "RabbitMQ is not reachable at {addr} ({}); start it with `rabbitmq-server -detached` \
         (scripts/test.sh does) or point COURIER_TEST_AMQP_URL at one",
        redact(&url)
    );
    if brokers_required() {
        panic!("{reason}");
    }
    print_skip(&reason);
    None
}

/// A name no other test (or earlier run) uses: `<prefix>-<pid>-<counter>-<nanos>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `host:port` of an `amqp://` or `amqps://` URL (default port 5672 / 5671).
pub fn host_port(url: &str) -> String {
    let (default_port, rest) = match url.split_once("://") {
        Some(("amqps", rest)) => (5671, rest),
        Some((_, rest)) => (5672, rest),
        None => (5672, url),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    }
}

/// The URL with `host:port` replaced (credentials and vhost kept).
pub fn with_host_port(url: &str, new_host_port: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let credentials = authority
        .rsplit_once('@')
        .map(|(c, _)| format!("{c}@"))
        .unwrap_or_default();
    format!("{scheme}://{credentials}{new_host_port}{path}")
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (credentials, tail) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{tail}")
        }
        _ => url.to_owned(),
    }
}

/// A TCP proxy on 127.0.0.1 in front of the broker; [`CuttableProxy::cut`] drops every
/// connection it carries (new ones are accepted again right away). Stopped when dropped.
pub struct CuttableProxy {
    port: u16,
    target: String,
    generation: watch::Sender<u64>,
    connections: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Starts a proxy to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (generation, _) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            target.to_owned(),
            generation.clone(),
            connections.clone(),
        ));
        Self {
            port,
            target: target.to_owned(),
            generation,
            connections,
            accept,
        }
    }

    /// `127.0.0.1:<port>`, to put in a URL with [`with_host_port`].
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The proxied broker (`host:port`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Drops every connection open now.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    generation: watch::Sender<u64>,
    connections: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let mut cut = generation.subscribe();
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let mut client = client;
            cut.borrow_and_update();
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = cut.changed() => {}
            }
            // Dropping both ends closes them: the client sees its connection reset.
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_and_put_back_together() {
        assert_eq!(host_port(DEFAULT_URL), "127.0.0.1:5672");
        assert_eq!(host_port("amqps://h/v"), "h:5671");
        assert_eq!(host_port("amqp://u:p@h:1234"), "h:1234");
        assert_eq!(
            with_host_port(DEFAULT_URL, "127.0.0.1:9"),
            "amqp://guest:guest@127.0.0.1:9/%2f"
        );
        assert_eq!(redact(DEFAULT_URL), "amqp://guest:***@127.0.0.1:5672/%2f");
    }
}
