//! A real Kafka-compatible broker for one test: tansu (a Kafka broker in Rust) with in-memory
//! storage on its own free port of 127.0.0.1, killed when dropped.
//!
//! The binary is `$COURIER_TANSU` if set, else `~/.cargo/bin/tansu`, else the first `tansu` on
//! `PATH`. Install it with `cargo install tansu --locked --features dynostore` (takes about
//! 20 minutes; `scripts/test.sh` does it).
//!
//! Without one, [`TansuBroker::start`] prints a skip line and the test returns early, unless
//! `COURIER_TEST_REQUIRE_BROKERS=1` (set by `scripts/test.sh`), which makes it a failure.
//!
//! Topics are not created here (this crate does not build a Kafka client): tests create them
//! with their own client's admin API.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::server::{brokers_required, on_free_port, print_skip};

/// How long a broker may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between two connection attempts while it starts.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One tansu broker process; killed when this is dropped.
pub struct TansuBroker {
    // Declared first so the process dies before its log directory is removed.
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl TansuBroker {
    /// Starts a broker, or returns `None` after printing why the calling test is skipped.
    ///
    /// # Panics
    /// If no binary is found and `COURIER_TEST_REQUIRE_BROKERS=1`, or if the broker does not
    /// start.
    pub async fn start() -> Option<Self> {
        match binary() {
            Some(binary) => Some(Self::start_with(binary).await),
            None if brokers_required() => panic!("{}", missing_binary_message()),
            None => {
                print_skip(&missing_binary_message());
                None
            }
        }
    }

    /// Starts a broker for a test that cannot be skipped.
    ///
    /// # Panics
    /// If no binary is found or the broker does not start.
    pub async fn start_required() -> Self {
        match binary() {
            Some(binary) => Self::start_with(binary).await,
            None => panic!("{}", missing_binary_message()),
        }
    }

    async fn start_with(binary: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("courier-tansu-")
            .tempdir()
            .expect("create a temporary directory for tansu");
        let (child, port) = on_free_port("tansu", |port| spawn(binary, port, dir.path())).await;
        Self {
            child: Some(child),
            port,
            dir,
        }
    }

    /// The bootstrap servers, `127.0.0.1:<port>`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Kills the broker (SIGKILL) and waits until it is gone. Its in-memory data is lost.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill tansu");
            child.wait().await.expect("wait for tansu to exit");
        }
    }
}

/// Runs tansu on `127.0.0.1:<port>` with memory storage, logging to `dir/tansu.log`, and waits
/// until it accepts connections. On failure, the log of this run.
async fn spawn(binary: &Path, port: u16, dir: &Path) -> Result<Child, String> {
    let log_path = dir.join("tansu.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    let stdout = log
        .try_clone()
        .map_err(|e| format!("clone the log file handle: {e}"))?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new(binary)
        .arg("broker")
        .args(["--storage-engine", "memory://tansu/"])
        .args(["--listener-url", &url])
        .args(["--advertised-listener-url", &url])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let output = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("tansu exited ({status}):\n{output}"));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            let output = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "tansu not accepting connections within {STARTUP_TIMEOUT:?}:\n{output}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn missing_binary_message() -> String {
    "no tansu binary found; install one with `cargo install tansu --locked --features dynostore` \
     (scripts/test.sh does), or point COURIER_TANSU at the binary"
        .to_owned()
}

/// The tansu binary the tests run, found once per test process.
pub fn binary() -> Option<&'static Path> {
    static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINARY.get_or_init(find_binary).as_deref()
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COURIER_TANSU") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "COURIER_TANSU={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|cargo| cargo.join("bin"));
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    cargo_bin
        .into_iter()
        .chain(path_dirs)
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file())
}
