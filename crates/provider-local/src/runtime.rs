//! A deployed function at run time: how to launch it, its replicas, and which of them are
//! ready. `resolve` is on every invocation's path, so it only reads a small locked list.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use courier_core::duration::parse_go_duration;
use courier_core::{FunctionDeployment, FunctionRef, ProviderError};
use http::uri::Authority;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::logbook::{FunctionLog, LogBook};
use crate::sandbox::{Sandbox, find_in_path};
use crate::store::Store;

/// What the provider's replicas share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) sandbox: Sandbox,
    pub(crate) store: Store,
    pub(crate) logs: LogBook,
    /// Probes `/_/health` of HTTP-mode replicas.
    pub(crate) health: Client<HttpConnector, Empty<Bytes>>,
    /// Fork-mode exec timeout when the function sets none.
    pub(crate) exec_timeout: Duration,
    /// How long an HTTP-mode replica may take to become ready.
    pub(crate) start_timeout: Duration,
    /// `PATH` given to functions that set none.
    pub(crate) path: String,
}

/// Fork mode: concurrent requests per replica unless `envVars.max_inflight` says otherwise.
pub(crate) const DEFAULT_MAX_INFLIGHT: usize = 100;

/// How a function's replicas serve requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A process per request (classic watchdog).
    Fork,
    /// A long-running HTTP server per replica (of-watchdog `http` mode).
    Http,
}

/// Everything needed to start the function's process, derived once per deploy.
#[derive(Debug)]
pub(crate) struct LaunchPlan {
    pub(crate) argv: Vec<String>,
    /// The full environment (nothing is inherited from Courier).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) mode: Mode,
    /// Fork mode: kill a request's process after this long (`None` = never).
    pub(crate) exec_timeout: Option<Duration>,
    /// Fork mode: the response Content-Type (`content_type` env var).
    pub(crate) content_type: Option<String>,
    /// Fork mode: requests one replica runs at once before answering 429
    /// (`envVars.max_inflight`, `0` = no limit).
    pub(crate) max_inflight: usize,
    pub(crate) secrets_dir: PathBuf,
    pub(crate) scratch_dir: PathBuf,
}

impl LaunchPlan {
    /// Checks a deployment and derives its launch plan; errors are the caller's (400).
    pub(crate) fn new(
        shared: &Shared,
        function: &FunctionRef,
        spec: &FunctionDeployment,
    ) -> Result<Self, ProviderError> {
        let invalid = |msg: String| ProviderError::Invalid(msg);
        if spec.env_process.trim().is_empty() {
            return Err(invalid(
                "envProcess is required: the local provider runs it as the function's command"
                    .into(),
            ));
        }
        let argv = shell_words::split(&spec.env_process)
            .map_err(|e| invalid(format!("envProcess {:?}: {e}", spec.env_process)))?;
        if argv.is_empty() {
            return Err(invalid("envProcess is empty".into()));
        }
        if find_in_path(&argv[0]).is_none() {
            return Err(invalid(format!(
                "envProcess: command {:?} not found or not executable",
                argv[0]
            )));
        }
        let mode = match spec.env_var("mode") {
            Some("http") => Mode::Http,
            None | Some("" | "fork" | "streaming" | "serializing") => Mode::Fork,
            Some(other) => {
                return Err(invalid(format!(
                    "envVars.mode {other:?} is not supported (use \"http\", or leave it unset for fork mode)"
                )));
            }
        };
        let exec_timeout = match spec.env_var("exec_timeout") {
            None => Some(shared.exec_timeout),
            Some(text) => {
                let d = parse_go_duration(text)
                    .map_err(|e| invalid(format!("envVars.exec_timeout: {e}")))?;
                (!d.is_zero()).then_some(d)
            }
        };
        let max_inflight = match spec.env_var("max_inflight") {
            None => DEFAULT_MAX_INFLIGHT,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(0) => tokio::sync::Semaphore::MAX_PERMITS,
                Ok(n) => n.min(tokio::sync::Semaphore::MAX_PERMITS),
                Err(_) => {
                    return Err(invalid(format!(
                        "envVars.max_inflight: {text:?} is not a whole number"
                    )));
                }
            },
        };
        let secrets = spec.secrets.clone().unwrap_or_default();
        for secret in &secrets {
            courier_core::names::validate_name("secret", secret)
                .map_err(|e| invalid(e.to_string()))?;
            if !shared.store.secret_exists(&function.namespace, secret) {
                return Err(invalid(format!(
                    "unable to fetch secrets: secret {secret:?} not found in namespace {}",
                    function.namespace
                )));
            }
        }
        let run_dir = shared.store.run_dir(function);
        let secrets_dir = run_dir.join("secrets");
        let scratch_dir = run_dir.join("tmp");
        let sandbox = &shared.sandbox;
        let tmp = sandbox
            .tmp_dir_in_function(&scratch_dir)
            .to_string_lossy()
            .into_owned();
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), shared.path.clone()),
            ("LANG".into(), "C.UTF-8".into()),
            ("HOME".into(), tmp.clone()),
            ("TMPDIR".into(), tmp),
            ("fprocess".into(), spec.env_process.clone()),
            (
                "COURIER_SECRETS_DIR".into(),
                sandbox
                    .secrets_dir_in_function(&secrets_dir)
                    .to_string_lossy()
                    .into_owned(),
            ),
        ];
        for (k, v) in spec.env_vars.iter().flatten() {
            check_env_var(
                k,
                v,
                matches!(shared.sandbox, crate::sandbox::Sandbox::Bubblewrap { .. }),
            )?;
            env.retain(|(existing, _)| existing != k);
            env.push((k.clone(), v.clone()));
        }
        Ok(Self {
            argv,
            env,
            mode,
            exec_timeout,
            content_type: spec.env_var("content_type").map(str::to_owned),
            max_inflight,
            secrets_dir,
            scratch_dir,
        })
    }
}

/// Variables the dynamic loader or libc act on before a program's `main`: bubblewrap itself
/// runs with the function's environment, outside the sandbox, so these are refused there.
const LOADER_VARS: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
];

/// Checks one `envVars` entry: a usable name and value, and nothing that would act on the
/// sandbox's own launcher.
fn check_env_var(name: &str, value: &str, sandboxed: bool) -> Result<(), ProviderError> {
    if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
        return Err(ProviderError::Invalid(format!(
            "envVars: {name:?} is not a valid environment variable"
        )));
    }
    if sandboxed && (name.starts_with("LD_") || LOADER_VARS.contains(&name)) {
        return Err(ProviderError::Invalid(format!(
            "envVars.{name} is not allowed in the sandbox: it would act on the sandbox launcher; \
             set it inside the command instead, e.g. sh -c '{name}=... exec your-program'"
        )));
    }
    Ok(())
}

/// How a replica is told to stop.
#[derive(Debug, Clone)]
pub(crate) struct StopSignals {
    /// Retire gracefully: take no new requests, let in-flight ones finish (bounded), then
    /// stop. A child of `hard`, so it also fires on a hard stop.
    pub(crate) retire: CancellationToken,
    /// Stop at once (delete, shutdown).
    pub(crate) hard: CancellationToken,
}

#[derive(Debug)]
struct ReplicaHandle {
    retire: CancellationToken,
    task: JoinHandle<()>,
}

/// A deployed function and its replicas.
#[derive(Debug)]
pub(crate) struct FunctionRuntime {
    pub(crate) function: FunctionRef,
    pub(crate) spec: FunctionDeployment,
    pub(crate) created_at: String,
    pub(crate) plan: LaunchPlan,
    pub(crate) log: Arc<FunctionLog>,
    pub(crate) shared: Arc<Shared>,
    desired: AtomicU64,
    /// Replicas counted in `desired`.
    replicas: Mutex<Vec<ReplicaHandle>>,
    /// Replicas scaled away and still draining.
    retiring: Mutex<Vec<ReplicaHandle>>,
    /// Ready replicas: id and address, pre-rendered as an authority for the hot path.
    ready: RwLock<Vec<(u64, Authority)>>,
    next: AtomicUsize,
    next_id: AtomicU64,
    hard_stop: CancellationToken,
    /// The root process of each running HTTP-mode replica, by replica id (for its CPU use).
    pids: Mutex<std::collections::HashMap<u64, u32>>,
    /// The last CPU reading of those processes, where the next CPU answer starts.
    pub(crate) cpu_reading: Mutex<Option<crate::cpu::Reading>>,
}

impl FunctionRuntime {
    /// A runtime with no replicas yet; `parent` stops it at once when cancelled.
    pub(crate) fn new(
        shared: Arc<Shared>,
        function: FunctionRef,
        spec: FunctionDeployment,
        created_at: String,
        plan: LaunchPlan,
        parent: &CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            log: shared.logs.log(&function),
            function,
            spec,
            created_at,
            plan,
            shared,
            desired: AtomicU64::new(0),
            replicas: Mutex::new(Vec::new()),
            retiring: Mutex::new(Vec::new()),
            ready: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            hard_stop: parent.child_token(),
            pids: Mutex::new(std::collections::HashMap::new()),
            cpu_reading: Mutex::new(None),
        })
    }

    /// Desired replicas.
    pub(crate) fn desired(&self) -> u64 {
        self.desired.load(Ordering::Relaxed)
    }

    /// Replica `id`'s root process is `pid` (`None`: it has none now).
    pub(crate) fn set_pid(&self, id: u64, pid: Option<u32>) {
        let mut pids = self.pids.lock().expect("pids lock");
        match pid {
            Some(pid) => pids.insert(id, pid),
            None => pids.remove(&id),
        };
    }

    /// The root processes of the running HTTP-mode replicas.
    pub(crate) fn replica_pids(&self) -> Vec<u32> {
        self.pids
            .lock()
            .expect("pids lock")
            .values()
            .copied()
            .collect()
    }

    /// Ready replicas.
    pub(crate) fn available(&self) -> u64 {
        self.ready.read().expect("ready lock").len() as u64
    }

    /// A ready replica, round robin.
    pub(crate) fn resolve(&self) -> Option<Authority> {
        let ready = self.ready.read().expect("ready lock");
        if ready.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        Some(ready[i].1.clone())
    }

    pub(crate) fn mark_ready(&self, id: u64, addr: SocketAddr) {
        let authority: Authority = addr
            .to_string()
            .parse()
            .expect("a socket address is an authority");
        self.ready
            .write()
            .expect("ready lock")
            .push((id, authority));
    }

    pub(crate) fn mark_unready(&self, id: u64) {
        self.ready
            .write()
            .expect("ready lock")
            .retain(|(r, _)| *r != id);
    }

    /// Starts or retires replicas until `replicas` are running. Retired replicas take no new
    /// requests and finish the ones they have in the background.
    pub(crate) fn scale_to(self: &Arc<Self>, replicas: u64) {
        self.desired.store(replicas, Ordering::Relaxed);
        let mut running = self.replicas.lock().expect("replicas lock");
        while (running.len() as u64) < replicas {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let signals = StopSignals {
                retire: self.hard_stop.child_token(),
                hard: self.hard_stop.clone(),
            };
            let retire = signals.retire.clone();
            let task = tokio::spawn(crate::replica::supervise(self.clone(), id, signals));
            running.push(ReplicaHandle { retire, task });
        }
        let mut retiring = self.retiring.lock().expect("retiring lock");
        retiring.retain(|h| !h.task.is_finished());
        while (running.len() as u64) > replicas {
            if let Some(handle) = running.pop() {
                handle.retire.cancel();
                retiring.push(handle);
            }
        }
    }

    /// Retires every replica gracefully and waits until they are gone (a replaced version).
    pub(crate) async fn retire(&self) {
        let handles = self.take_handles();
        for handle in &handles {
            handle.retire.cancel();
        }
        for handle in handles {
            let _ = handle.task.await;
        }
    }

    /// Stops every replica at once and waits until their processes are gone.
    pub(crate) async fn stop(&self) {
        self.hard_stop.cancel();
        for handle in self.take_handles() {
            let _ = handle.task.await;
        }
    }

    fn take_handles(&self) -> Vec<ReplicaHandle> {
        let mut handles = std::mem::take(&mut *self.replicas.lock().expect("replicas lock"));
        handles.append(&mut self.retiring.lock().expect("retiring lock"));
        handles
    }
}
