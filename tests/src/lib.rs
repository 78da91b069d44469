//! End-to-end harness for Courier: it starts the real `courier` binary (`courier up`) on a free
//! port with a fresh data directory, talks to it over HTTP like any OpenFaaS client would, and
//! inspects `/proc` to check that function processes come and go.
//!
//! The harness knows only the external contract: command-line flags, environment variables,
//! HTTP routes and the files `courier up` promises to write. It never links product crates.
//!
//! The binary is `$COURIER_BIN` if set, else `target/debug/courier` in the workspace.
//! Run the suite with:
//!
//! ```text
//! cargo build --bin courier && cargo nextest run -p courier-e2e
//! ```
//!
//! Every test starts its own `courier up` (own port, own temporary data dir), so tests run in
//! parallel. HTTP-mode functions run `fixtures/http_fn.py` (python3, standard library only).

pub mod callback;
pub mod kafka;
pub mod ledger;
pub mod otlp;
pub mod webdriver;

use std::fs;
use std::future::Future;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

/// The namespace functions land in when none is named.
pub const DEFAULT_NAMESPACE: &str = "openfaas-fn";

/// The only user the gateway accepts.
pub const ADMIN_USER: &str = "admin";

/// Environment variables of `courier` that must not leak from the developer's shell into a test.
const COURIER_ENV_VARS: &[&str] = &[
    "COURIER_LISTEN",
    "COURIER_DATA_DIR",
    "COURIER_BASIC_AUTH_PASSWORD",
    "COURIER_UPSTREAM_TIMEOUT",
    "COURIER_GATEWAY",
    "COURIER_QUEUE",
    "COURIER_QUEUE_REPLICAS",
    "COURIER_ACK_WAIT",
    "COURIER_LEDGER_RETENTION",
    "COURIER_LEDGER_MAX_RECORDS",
    "COURIER_LEDGER_MAX_RESULT_BYTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// How long `courier up` may take to answer `GET /healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `courier` may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a failed test waits for a graceful exit before SIGKILL, when the harness is dropped.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// How long a CLI command may run.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Absolute path of the `courier` binary under test.
pub fn courier_bin() -> PathBuf {
    // A test binary lives in `<target>/<profile>/deps/`; `courier` is built next to `deps/`,
    // wherever the target directory is (CARGO_TARGET_DIR included).
    let beside_tests = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("courier")));
    let path = match std::env::var_os("COURIER_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => beside_tests.filter(|p| p.is_file()).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/courier")
        }),
    };
    assert!(
        path.is_file(),
        "courier binary not found at {}; build it first: cargo build --bin courier \
         (or point COURIER_BIN at it)",
        path.display()
    );
    path.canonicalize()
        .expect("canonicalize the courier binary path")
}

/// Absolute path of `tests/fixtures/<file>`.
pub fn fixture(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(file);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path.canonicalize().expect("canonicalize the fixture path")
}

/// The Python interpreter for fixtures: a real binary (not a pyenv shim), so it also runs in
/// the sandbox.
pub fn python() -> String {
    for candidate in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(candidate).is_file() {
            return candidate.to_owned();
        }
    }
    "python3".to_owned()
}

/// Whether bubblewrap is installed, i.e. whether `--sandbox auto` must sandbox functions.
pub fn bubblewrap_installed() -> bool {
    let present = ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"]
        .iter()
        .any(|p| Path::new(p).is_file());
    // CI (scripts/test.sh) sets this: a missing sandbox is a failure there, never a skip.
    if !present && std::env::var("COURIER_TEST_REQUIRE_SANDBOX").is_ok_and(|v| v == "1") {
        panic!("bubblewrap is required (COURIER_TEST_REQUIRE_SANDBOX=1) but not installed");
    }
    present
}

/// A random lower-case hex token (16 characters), e.g. for passwords and process markers.
pub fn random_token() -> String {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fork-mode function: `cmd` runs once per request, body on stdin, stdout is the response.
pub fn fork_function(name: &str, cmd: &str) -> Value {
    serde_json::json!({
        "service": name,
        "image": format!("courier/{name}:test"),
        "envProcess": cmd,
    })
}

/// An HTTP-mode function running `tests/fixtures/http_fn.py`; `marker` is appended to its
/// command line so [`count_processes`] can find it.
pub fn http_function(name: &str, marker: &str) -> Value {
    serde_json::json!({
        "service": name,
        "image": format!("courier/{name}:test"),
        "envProcess": http_fn_command(marker),
        "envVars": { "mode": "http" },
    })
}

/// The command line that runs the HTTP fixture, tagged with `marker`. The script travels
/// inline (hex-encoded), not as a path: the checkout may live under `/tmp`, which the sandbox
/// replaces with a private one.
pub fn http_fn_command(marker: &str) -> String {
    let path = fixture("http_fn.py");
    let code = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let hex: String = code.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{} -c 'exec(bytes.fromhex(\"{hex}\").decode())' --marker {marker}",
        python()
    )
}

/// Command lines (argument vectors) of every live process except this one.
fn process_command_lines() -> Vec<Vec<String>> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own_pid = std::process::id().to_string();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.bytes().all(|b| b.is_ascii_digit()) && name != own_pid.as_str()
        })
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|cmdline| {
            cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .filter(|args| !args.is_empty())
        .collect()
}

fn is_sandbox_launcher(args: &[String]) -> bool {
    args.first()
        .and_then(|a0| Path::new(a0).file_name())
        .is_some_and(|f| f == "bwrap")
}

/// Counts live processes whose command line contains `marker`, leaving out sandbox launchers
/// (`bwrap`), which carry the function's command line in their own arguments.
pub fn count_processes(marker: &str) -> usize {
    process_command_lines()
        .iter()
        .filter(|args| !is_sandbox_launcher(args) && args.iter().any(|a| a.contains(marker)))
        .count()
}

/// Counts `bwrap` processes whose command line contains `marker`.
pub fn count_sandbox_launchers(marker: &str) -> usize {
    process_command_lines()
        .iter()
        .filter(|args| is_sandbox_launcher(args) && args.iter().any(|a| a.contains(marker)))
        .count()
}

/// Polls `check` every 100 ms until it yields `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until no process carries `marker` any more.
pub async fn wait_processes_gone(marker: &str, timeout: Duration) {
    let what = format!("processes tagged {marker} to exit");
    eventually(timeout, &what, || async {
        (count_processes(marker) == 0).then_some(())
    })
    .await;
}

/// Waits until exactly `expected` processes carry `marker`.
pub async fn wait_process_count(marker: &str, expected: usize, timeout: Duration) {
    let what = format!("{expected} processes tagged {marker}");
    eventually(timeout, &what, || async {
        (count_processes(marker) == expected).then_some(())
    })
    .await;
}

/// A reqwest client that never follows redirects and gives up after 30 s.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

/// Percent-encodes a string for a query or form value.
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Encodes pairs as an `application/x-www-form-urlencoded` body.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Parses NDJSON into one JSON value per non-empty line, panicking on a line that is not JSON.
pub fn parse_ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}"))
        })
        .collect()
}

/// Sums the samples of Prometheus metric `name` whose labels include all of `labels`;
/// `None` when no sample matches.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some(sample) = parse_sample(line) else {
            continue;
        };
        if sample.name != name {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v));
        if matches {
            *total.get_or_insert(0.0) += sample.value;
        }
    }
    total
}

/// One line of the Prometheus text format.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Splits one Prometheus text sample into name, labels and value.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices().peekable();
        let end = loop {
            // label name
            while chars
                .peek()
                .is_some_and(|(_, c)| *c == ',' || c.is_whitespace())
            {
                chars.next();
            }
            let (start, c) = *chars.peek()?;
            if c == '}' {
                break start + 1;
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.push((key.trim().to_owned(), value));
        };
        rest = &after_brace[end..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Sends a raw HTTP/1.1 request over TCP and returns the status code of the answer, writing the
/// body while reading so that a server answering early (e.g. 413) is still heard.
pub async fn raw_request_status(port: u16, head: &str, body: Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to courier");
    let (mut reader, mut writer) = stream.into_split();
    let head = head.to_owned();
    let writer_task = tokio::spawn(async move {
        // Errors are expected once the server has answered and closed the connection.
        if writer.write_all(head.as_bytes()).await.is_ok() {
            let _ = writer.write_all(&body).await;
        }
        let _ = writer.flush().await;
        writer
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to raw request within 20 s");
    writer_task.abort();
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in answer: {text:?}"))
}

/// How to start `courier up` (or another serving subcommand, see [`CourierBuilder::command`]).
#[derive(Debug, Clone)]
pub struct CourierBuilder {
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    password: Option<String>,
    config_via_env: bool,
    data_files: Vec<(PathBuf, Vec<u8>)>,
    first_port: Option<u16>,
}

impl CourierBuilder {
    /// Runs `courier <command>` instead of `courier up`, e.g. `gateway`; it gets the same
    /// `--listen`, `--data-dir`, password and arguments, and must answer `GET /healthz`.
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = command.into();
        self
    }

    /// Appends an argument to `courier up --listen … --data-dir …`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for `courier up`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Does not set `COURIER_BASIC_AUTH_PASSWORD`: courier generates (or reads) the password
    /// file in its data directory.
    pub fn without_password_env(mut self) -> Self {
        self.password = None;
        self
    }

    /// Passes the listen address and data directory as `COURIER_LISTEN` / `COURIER_DATA_DIR`
    /// instead of flags.
    pub fn config_via_env(mut self) -> Self {
        self.config_via_env = true;
        self
    }

    /// Writes a file (mode 0600) into the data directory before the first start.
    pub fn data_file(mut self, relative: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        self.data_files.push((relative.into(), contents.into()));
        self
    }

    /// Tries `port` first instead of a free one (the harness's own test: a start on a port
    /// taken meanwhile moves to another).
    pub fn first_port(mut self, port: u16) -> Self {
        self.first_port = Some(port);
        self
    }

    /// Starts `courier up` and waits until `GET /healthz` answers 200.
    pub async fn start(self) -> Courier {
        let bin = courier_bin();
        let dir = tempfile::Builder::new()
            .prefix("courier-e2e-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = dir.path().join("data");
        fs::create_dir_all(&data_dir).expect("create data dir");
        for (relative, contents) in &self.data_files {
            let path = data_dir.join(relative);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create data file dir");
            }
            fs::write(&path, contents).expect("write data file");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod data file");
        }
        let mut courier = Courier {
            bin,
            dir,
            data_dir,
            port: self.first_port.unwrap_or_else(free_port),
            config: self,
            child: None,
            run: 0,
            client: http_client(),
        };
        // The port was free when picked, but it is released before courier binds it: a test
        // running beside this one may take it meanwhile. Then courier exits at once, saying
        // so, and starts again on another port.
        for _ in 1..PORT_ATTEMPTS {
            match courier.spawn_once().await {
                Started::Healthy => return courier,
                Started::PortTaken => courier.port = free_port(),
            }
        }
        courier.spawn().await;
        courier
    }
}

/// How long one start-up probe of `GET /healthz` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many ports a first start tries before it fails.
const PORT_ATTEMPTS: usize = 5;

/// What a first start came to.
enum Started {
    Healthy,
    /// Courier exited because another process had taken its port since it was picked.
    PortTaken,
}

/// A running `courier up` with its own data directory and port.
#[derive(Debug)]
pub struct Courier {
    bin: PathBuf,
    dir: TempDir,
    data_dir: PathBuf,
    port: u16,
    config: CourierBuilder,
    child: Option<Child>,
    run: u32,
    client: reqwest::Client,
}

impl Courier {
    /// A builder with a random `COURIER_BASIC_AUTH_PASSWORD` and no extra arguments.
    pub fn builder() -> CourierBuilder {
        CourierBuilder {
            command: "up".to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            password: Some(format!("pw{}", random_token())),
            config_via_env: false,
            data_files: Vec::new(),
            first_port: None,
        }
    }

    /// Starts `courier up` with the default builder.
    pub async fn start() -> Courier {
        Self::builder().start().await
    }

    /// Starts courier on its port; panics on any failure but a port taken meanwhile.
    async fn spawn_once(&mut self) -> Started {
        self.start_child();
        match self.wait_healthy(true).await {
            Ok(()) => Started::Healthy,
            Err(_) => Started::PortTaken,
        }
    }

    /// Starts courier on its port and waits until it is healthy; panics if it is not.
    async fn spawn(&mut self) {
        self.start_child();
        let _ = self.wait_healthy(false).await;
    }

    fn start_child(&mut self) {
        self.run += 1;
        let stdout = fs::File::create(self.stdout_path()).expect("create stdout file");
        let stderr = fs::File::create(self.stderr_path()).expect("create stderr file");
        let listen = format!("127.0.0.1:{}", self.port);
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg(&self.config.command);
        for var in COURIER_ENV_VARS {
            cmd.env_remove(var);
        }
        if self.config.config_via_env {
            cmd.env("COURIER_LISTEN", &listen)
                .env("COURIER_DATA_DIR", &self.data_dir);
        } else {
            cmd.arg("--listen")
                .arg(&listen)
                .arg("--data-dir")
                .arg(&self.data_dir);
        }
        cmd.args(&self.config.args);
        if let Some(password) = &self.config.password {
            cmd.env("COURIER_BASIC_AUTH_PASSWORD", password);
        }
        for (k, v) in &self.config.env {
            cmd.env(k, v);
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Own process group, so Drop can take down anything left behind.
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// Waits until `GET /healthz` answers 200, panicking when courier exits or does not
    /// answer in time; but when `port_may_be_taken` and courier exited because its port was
    /// in use, returns `Err` instead.
    async fn wait_healthy(&mut self, port_may_be_taken: bool) -> Result<(), PortInUse> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let url = self.url("/healthz");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let output = self.output();
                if port_may_be_taken && output.contains(ADDRESS_IN_USE) {
                    self.child = None;
                    eprintln!(
                        "courier could not listen on port {} (taken since it was picked); \
                         trying another",
                        self.port
                    );
                    return Err(PortInUse);
                }
                panic!(
                    "courier {} exited during start-up with {status}\n{}",
                    self.config.command, output
                );
            }
            // A short deadline per probe: another process on the port may accept and never
            // answer, and the loop must get back to seeing courier exit.
            if let Ok(resp) = self.client.get(&url).timeout(PROBE_TIMEOUT).send().await
                && resp.status() == StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!(
                    "courier {} did not answer GET /healthz with 200 within {STARTUP_TIMEOUT:?}\n{}",
                    self.config.command,
                    self.output()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops (SIGTERM, expecting exit 0) and starts again with the same data dir and port.
    pub async fn restart(&mut self) {
        let status = self.stop().await;
        assert!(
            status.success(),
            "courier exited with {status} on SIGTERM\n{}",
            self.output()
        );
        self.spawn().await;
    }

    /// Sends SIGTERM and waits for the exit (at most 15 s, else SIGKILL and panic).
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal_and_wait(Signal::SIGTERM).await
    }

    /// `POST /async-function/{path}` with `X-Callback-Url: callback` and `body`.
    pub async fn submit_async(&self, path: &str, callback: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/async-function/{path}")))
            .header("X-Callback-Url", callback)
            .body(body.to_owned())
            .send()
            .await
            .expect("submit an asynchronous call")
    }

    /// Kills courier with SIGKILL (no clean shutdown at all) and starts it again on the same
    /// data directory and port.
    pub async fn crash_and_restart(&mut self) {
        let status = self.signal_and_wait(Signal::SIGKILL).await;
        assert!(!status.success(), "SIGKILL must not look like a clean exit");
        self.spawn().await;
    }

    /// Sends `sig` and waits for the exit (at most 15 s, else SIGKILL and panic).
    pub async fn signal_and_wait(&mut self, sig: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("courier is not running");
        signal::kill(Pid::from_raw(child.id() as i32), sig).expect("signal courier");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for courier") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "courier did not exit within {SHUTDOWN_TIMEOUT:?} of {sig}\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The pid of the running `courier up`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("courier is not running").id()
    }

    /// The port courier listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT<path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The data directory given to `courier up`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A scratch directory that lives as long as this harness (holds the data dir and logs).
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where stdout of the current run is captured.
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.path().join(format!("stdout.{}.log", self.run))
    }

    /// Where stderr of the current run is captured.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join(format!("stderr.{}.log", self.run))
    }

    /// stdout and stderr of the current run so far.
    pub fn output(&self) -> String {
        let stdout = fs::read_to_string(self.stdout_path()).unwrap_or_default();
        let stderr = fs::read_to_string(self.stderr_path()).unwrap_or_default();
        format!("--- courier stdout ---\n{stdout}\n--- courier stderr ---\n{stderr}")
    }

    /// Waits until the captured output (stdout + stderr) satisfies `check`; returns it.
    pub async fn wait_output(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if check(&output) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "courier output never showed {what} within {timeout:?}\n{output}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The HTTP client (no redirects, 30 s timeout).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// The admin password: `COURIER_BASIC_AUTH_PASSWORD` if the harness set it, else the
    /// content of `<data-dir>/secrets/basic-auth-password`.
    pub fn password(&self) -> String {
        if let Some(password) = &self.config.password {
            return password.clone();
        }
        let path = self.password_file();
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// `<data-dir>/secrets/basic-auth-password`.
    pub fn password_file(&self) -> PathBuf {
        self.data_dir.join("secrets").join("basic-auth-password")
    }

    /// A request to `path` with basic auth `admin:<password>`.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .basic_auth(ADMIN_USER, Some(self.password()))
    }

    /// A request to `path` without credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// POSTs a FunctionDeployment and asserts 202.
    pub async fn deploy(&self, deployment: &Value) {
        let resp = self
            .admin(Method::POST, "/system/functions")
            .json(deployment)
            .send()
            .await
            .expect("POST /system/functions");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "deploy {deployment} answered {status}: {body}"
        );
    }

    /// POSTs a scale request and asserts a 2xx answer.
    pub async fn scale(&self, name: &str, replicas: u64) {
        let resp = self
            .admin(Method::POST, &format!("/system/scale-function/{name}"))
            .json(&serde_json::json!({
                "serviceName": name,
                "replicas": replicas,
                "namespace": DEFAULT_NAMESPACE,
            }))
            .send()
            .await
            .expect("POST /system/scale-function");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "scale {name} to {replicas} answered {status}: {body}"
        );
    }

    /// POSTs a secret (`value`) and asserts 202.
    pub async fn create_secret(&self, name: &str, value: &str) {
        let resp = self
            .admin(Method::POST, "/system/secrets")
            .json(&serde_json::json!({
                "name": name,
                "namespace": DEFAULT_NAMESPACE,
                "value": value,
            }))
            .send()
            .await
            .expect("POST /system/secrets");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::ACCEPTED, "create secret {name}: {body}");
    }

    /// GET /system/function/{name}?namespace=…: `None` on 404, panics on anything but 200/404.
    pub async fn status(&self, name: &str, namespace: &str) -> Option<Value> {
        let path = format!(
            "/system/function/{name}?namespace={}",
            url_encode(namespace)
        );
        let resp = self
            .admin(Method::GET, &path)
            .send()
            .await
            .expect("GET /system/function");
        match resp.status() {
            StatusCode::OK => Some(resp.json().await.expect("function status is JSON")),
            StatusCode::NOT_FOUND => None,
            other => panic!(
                "GET {path} answered {other}: {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }

    /// GET /system/functions?namespace=… as a JSON array.
    pub async fn list(&self, namespace: &str) -> Vec<Value> {
        let path = format!("/system/functions?namespace={}", url_encode(namespace));
        let resp = self
            .admin(Method::GET, &path)
            .send()
            .await
            .expect("GET /system/functions");
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        let value: Value = resp.json().await.expect("function list is JSON");
        value.as_array().expect("function list is an array").clone()
    }

    /// GET /system/secrets as a JSON array.
    pub async fn list_secrets(&self) -> Vec<Value> {
        let resp = self
            .admin(
                Method::GET,
                &format!("/system/secrets?namespace={DEFAULT_NAMESPACE}"),
            )
            .send()
            .await
            .expect("GET /system/secrets");
        assert_eq!(resp.status(), StatusCode::OK, "GET /system/secrets");
        let value: Value = resp.json().await.expect("secret list is JSON");
        value.as_array().expect("secret list is an array").clone()
    }

    /// Polls the function status until `availableReplicas >= 1`; returns the last status.
    pub async fn wait_ready(&self, name: &str, namespace: &str, timeout: Duration) -> Value {
        self.wait_available(name, namespace, 1, timeout).await
    }

    /// Polls the function status until `availableReplicas >= at_least`; returns the status.
    pub async fn wait_available(
        &self,
        name: &str,
        namespace: &str,
        at_least: u64,
        timeout: Duration,
    ) -> Value {
        let what = format!("{name}.{namespace} to have {at_least} available replica(s)");
        eventually(timeout, &what, || async {
            let status = self.status(name, namespace).await?;
            (replicas_field(&status, "availableReplicas") >= at_least).then_some(status)
        })
        .await
    }

    /// Invokes `/function/{path}` with `method` and optional body, without credentials.
    pub async fn invoke(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(&format!("/function/{path}")));
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await.expect("invoke function")
    }

    /// Invokes until the function answers 200 (e.g. right after deploy or restart); returns
    /// the body.
    pub async fn invoke_until_ok(&self, path: &str, body: &[u8], timeout: Duration) -> Vec<u8> {
        let what = format!("POST /function/{path} to answer 200");
        eventually(timeout, &what, || async {
            let resp = self
                .client
                .post(self.url(&format!("/function/{path}")))
                .body(body.to_vec())
                .send()
                .await
                .ok()?;
            if resp.status() != StatusCode::OK {
                return None;
            }
            resp.bytes().await.ok().map(|b| b.to_vec())
        })
        .await
    }

    /// GET /system/logs?name=…&namespace=openfaas-fn&follow=false plus `extra_query`
    /// (e.g. `&tail=2`); asserts 200 and NDJSON; returns the parsed lines.
    pub async fn logs(&self, name: &str, extra_query: &str) -> Vec<Value> {
        let path = format!(
            "/system/logs?name={name}&namespace={DEFAULT_NAMESPACE}&follow=false{extra_query}"
        );
        let resp = self
            .admin(Method::GET, &path)
            .send()
            .await
            .expect("GET /system/logs");
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/x-ndjson"),
            "logs content type is {content_type:?}"
        );
        parse_ndjson(&resp.text().await.expect("read logs"))
    }

    /// An authenticated request expected to answer 200 with JSON; returns the JSON.
    pub async fn admin_json(&self, method: Method, path: &str) -> Value {
        let resp = self
            .admin(method.clone(), path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(resp.status(), StatusCode::OK, "{method} {path}");
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"))
    }

    /// GET /metrics (no credentials) as text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), StatusCode::OK, "GET /metrics");
        resp.text().await.expect("read metrics")
    }

    /// Asserts the server still answers `GET /healthz` with 200.
    pub async fn assert_healthy(&self) {
        let resp = self
            .client
            .get(self.url("/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /healthz failed: {e}\n{}", self.output()));
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "GET /healthz\n{}",
            self.output()
        );
    }

    /// A `courier` client command pointed at this gateway through `COURIER_GATEWAY` and
    /// `COURIER_BASIC_AUTH_PASSWORD`.
    pub fn cli(&self) -> tokio::process::Command {
        let mut cmd = self.bare_cli();
        cmd.env("COURIER_GATEWAY", self.base_url())
            .env("COURIER_BASIC_AUTH_PASSWORD", self.password());
        cmd
    }

    /// A `courier` client command with no COURIER_* environment at all.
    pub fn bare_cli(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for var in COURIER_ENV_VARS {
            cmd.env_remove(var);
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let pid = Pid::from_raw(child.id() as i32);
        // Give courier a chance to stop its function processes, then make sure.
        let _ = signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + DROP_GRACE;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(POLL_INTERVAL);
        }
        // The group was created for this courier (`process_group(0)`); anything still in it
        // was started by it.
        let _ = signal::killpg(pid, Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Output of a finished CLI command.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

impl CliOutput {
    /// Panics with both streams unless the command exited 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed with {}\n{self}",
            self.status
        );
        self
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs a prepared CLI command with optional stdin, at most 60 s.
pub async fn run_cli(mut cmd: tokio::process::Command, stdin: Option<&[u8]>) -> CliOutput {
    use tokio::io::AsyncWriteExt;
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn courier CLI");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).await.expect("write CLI stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("CLI command did not finish within {CLI_TIMEOUT:?}"))
        .expect("wait for CLI command");
    CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Reads an OpenFaaS replica count field; a missing key means 0 (Go's `omitempty`).
pub fn replicas_field(status: &Value, key: &str) -> u64 {
    match status.get(key) {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().map(|f| f as u64))
            .unwrap_or_else(|| panic!("{key} is not a number in {status}")),
    }
}

/// What courier's start-up error says when its listen address is taken (the OS's text for
/// `EADDRINUSE`).
const ADDRESS_IN_USE: &str = "Address already in use";

/// Courier's listen port was taken by another process.
struct PortInUse;

/// Picks a free TCP port on 127.0.0.1 (bind to port 0, read it, release it).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Parses an RFC 3339 timestamp, panicking with the offending text.
pub fn parse_rfc3339(text: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not an RFC 3339 timestamp: {e}"))
}

/// Formats a time as RFC 3339 (UTC).
pub fn format_rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("format RFC 3339")
}

/// The `X-Call-Id` a 202 from `/async-function` carries.
pub fn call_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-call-id")
        .and_then(|v| v.to_str().ok())
        .expect("202 carries X-Call-Id")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP gateway_function_invocation_total Function metrics
# TYPE gateway_function_invocation_total counter
gateway_function_invocation_total{code="200",function_name="echo.openfaas-fn"} 2
gateway_function_invocation_total{code="500",function_name="echo.openfaas-fn"} 1
gateway_function_invocation_total{code="200",function_name="other.openfaas-fn"} 7
gateway_functions_seconds_bucket{code="200",function_name="echo.openfaas-fn",le="+Inf"} 2
gateway_service_count{function_name="odd \"quoted\" name"} 3
process_open_fds 12
"#;

    #[test]
    fn metric_sum_adds_every_sample_whose_labels_include_the_wanted_ones() {
        let echo = [("function_name", "echo.openfaas-fn")];
        let ok = [("function_name", "echo.openfaas-fn"), ("code", "200")];
        assert_eq!(
            metric_sum(METRICS, "gateway_function_invocation_total", &echo),
            Some(3.0)
        );
        assert_eq!(
            metric_sum(METRICS, "gateway_function_invocation_total", &ok),
            Some(2.0)
        );
        assert_eq!(
            metric_sum(METRICS, "gateway_function_invocation_total", &[]),
            Some(10.0)
        );
        assert_eq!(metric_sum(METRICS, "process_open_fds", &[]), Some(12.0));
    }

    #[test]
    fn metric_sum_is_none_when_nothing_matches() {
        let missing = [("function_name", "nope.openfaas-fn")];
        assert_eq!(
            metric_sum(METRICS, "gateway_function_invocation_total", &missing),
            None
        );
        assert_eq!(
            metric_sum(METRICS, "gateway_function_invocation", &[]),
            None
        );
    }

    #[test]
    fn label_values_are_unescaped_and_inf_is_a_value() {
        let quoted = [("function_name", "odd \"quoted\" name")];
        assert_eq!(
            metric_sum(METRICS, "gateway_service_count", &quoted),
            Some(3.0)
        );
        let sample = parse_sample(r#"x_bucket{le="+Inf"} +Inf"#).unwrap();
        assert_eq!(sample.labels, [("le".to_owned(), "+Inf".to_owned())]);
        assert!(sample.value.is_infinite());
    }

    #[test]
    fn form_bodies_percent_encode_reserved_characters() {
        assert_eq!(
            form_body(&[("service", "a b"), ("envProcess", "cat /x&y=z")]),
            "service=a%20b&envProcess=cat%20%2Fx%26y%3Dz"
        );
    }

    #[test]
    fn ndjson_lines_are_parsed_one_value_each() {
        let lines = parse_ndjson("{\"a\":1}\n\n{\"a\":2}\n");
        assert_eq!(
            lines,
            [serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]
        );
    }
}
