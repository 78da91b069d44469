//! What the per-test servers share: the switch that turns a missing server into a failure,
//! the notice of a skipped test, and starting a server on a free port.

use std::future::Future;
use std::io::Write;
use std::net::TcpListener;

use tokio::process::Child;

/// How many free ports a server is tried on before the test gives up.
const PORT_ATTEMPTS: usize = 5;

/// Whether a missing server fails the test (`COURIER_TEST_REQUIRE_BROKERS=1`, which
/// scripts/test.sh sets) instead of skipping it.
pub(crate) fn brokers_required() -> bool {
    std::env::var("COURIER_TEST_REQUIRE_BROKERS").is_ok_and(|v| v == "1")
}

/// Says why a test is skipped, straight to stderr: the test harness would swallow
/// `eprintln!` of a test that passes.
pub(crate) fn print_skip(reason: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED: {reason}\n*** (COURIER_TEST_REQUIRE_BROKERS=1 makes this a failure)\n"
    );
}

/// A port free on 127.0.0.1 right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

/// Starts `name` with `spawn` on a free port and returns it with that port. When another
/// process took the port between the probe and the server's bind (its log says "in use"),
/// another port is tried.
///
/// # Panics
/// When the server fails for another reason, or finds no free port.
pub(crate) async fn on_free_port<F, Fut>(name: &str, mut spawn: F) -> (Child, u16)
where
    F: FnMut(u16) -> Fut,
    Fut: Future<Output = Result<Child, String>>,
{
    let mut failures = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        match spawn(port).await {
            Ok(child) => return (child, port),
            Err(log) if log.contains("in use") => failures.push(log),
            Err(log) => panic!("{name} did not start:\n{log}"),
        }
    }
    panic!("{name} found no free port:\n{}", failures.join("\n---\n"));
}
