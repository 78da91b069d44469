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
            env.retain(|(existing, _)| existing != k);
            env.push((k.clone(), v.clone()));
        }
        Ok(Self {
            argv,
            env,
            mode,
            exec_timeout,
            content_type: spec.env_var("content_type").map(str::to_owned),
            secrets_dir,
            scratch_dir,
        })
    }
}

#[derive(Debug)]
struct ReplicaHandle {
    cancel: CancellationToken,
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
    replicas: Mutex<Vec<ReplicaHandle>>,
    /// Ready replicas: id and address, pre-rendered as an authority for the hot path.
    ready: RwLock<Vec<(u64, Authority)>>,
    next: AtomicUsize,
    next_id: AtomicU64,
    stop: CancellationToken,
}

impl FunctionRuntime {
    pub(crate) fn new(
        shared: Arc<Shared>,
        function: FunctionRef,
        spec: FunctionDeployment,
        created_at: String,
        plan: LaunchPlan,
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
            ready: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
        })
    }

    /// Desired replicas.
    pub(crate) fn desired(&self) -> u64 {
        self.desired.load(Ordering::Relaxed)
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

    /// Starts or stops replicas until `replicas` are running (stopping ones finish in the
    /// background).
    pub(crate) fn scale_to(self: &Arc<Self>, replicas: u64) {
        self.desired.store(replicas, Ordering::Relaxed);
        let mut running = self.replicas.lock().expect("replicas lock");
        while (running.len() as u64) < replicas {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let cancel = self.stop.child_token();
            let task = tokio::spawn(crate::replica::supervise(self.clone(), id, cancel.clone()));
            running.push(ReplicaHandle { cancel, task });
        }
        while (running.len() as u64) > replicas {
            if let Some(handle) = running.pop() {
                handle.cancel.cancel();
            }
        }
    }

    /// Stops every replica and waits until their processes are gone.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let handles: Vec<ReplicaHandle> =
            std::mem::take(&mut *self.replicas.lock().expect("replicas lock"));
        for handle in handles {
            let _ = handle.task.await;
        }
    }
}
