//! [`Catalog`]: the functions deployed, as triggers see them, refreshed so that a deploy, an
//! update or a removal reaches every trigger within a second.
//!
//! A source is polled every [`REFRESH_INTERVAL`] and, in `courier up`, also right after the
//! gateway changed a function (its change signal pokes the catalog). Subscribers see a new
//! list only when something they care about changed: the volatile fields (replica counts,
//! invocation counts) are zeroed, so scaling does not wake every trigger.

use std::sync::Arc;
use std::time::Duration;

use courier_core::{FunctionStatus, Provider};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::InvokeError;

/// The functions deployed, across namespaces, sorted by namespace then name.
pub type FunctionList = Arc<Vec<FunctionStatus>>;

/// How often a source is asked again when nothing pokes the catalog.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// How long one refresh may take before it counts as failed.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the function list comes from.
#[async_trait::async_trait]
pub trait FunctionSource: Send + Sync + 'static {
    /// Every function in every namespace functions may live in.
    async fn functions(&self) -> Result<Vec<FunctionStatus>, InvokeError>;
}

/// The provider itself, for triggers running in the gateway's process.
#[async_trait::async_trait]
impl FunctionSource for Arc<dyn Provider> {
    async fn functions(&self) -> Result<Vec<FunctionStatus>, InvokeError> {
        let namespaces = self
            .namespaces()
            .await
            .map_err(|e| InvokeError::Unreachable(e.to_string()))?;
        let mut all = Vec::new();
        for namespace in namespaces {
            let functions = self
                .list(&namespace)
                .await
                .map_err(|e| InvokeError::Unreachable(e.to_string()))?;
            all.extend(functions);
        }
        Ok(all)
    }
}

/// A gateway's `/system/namespaces` and `/system/functions`, for triggers running on their own.
#[derive(Debug, Clone)]
pub struct GatewaySource {
    client: reqwest::Client,
    base: String,
    password: Option<String>,
}

impl GatewaySource {
    /// The gateway at `base`, with the `admin` password when authentication is on.
    pub fn new(client: reqwest::Client, base: &str, password: Option<String>) -> Self {
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            password,
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, InvokeError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.get(&url).timeout(REFRESH_TIMEOUT);
        if let Some(password) = &self.password {
            request = request.basic_auth("admin", Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| InvokeError::Unreachable(format!("GET {url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(InvokeError::Unreachable(format!("GET {url}: {status}")));
        }
        response
            .json()
            .await
            .map_err(|e| InvokeError::Unreachable(format!("GET {url}: {e}")))
    }
}

#[async_trait::async_trait]
impl FunctionSource for GatewaySource {
    async fn functions(&self) -> Result<Vec<FunctionStatus>, InvokeError> {
        let namespaces: Vec<String> = self.get("/system/namespaces").await?;
        let mut all = Vec::new();
        for namespace in namespaces {
            let functions: Vec<FunctionStatus> = self
                .get(&format!("/system/functions?namespace={namespace}"))
                .await?;
            all.extend(functions);
        }
        Ok(all)
    }
}

/// The function list, kept fresh by a background task.
#[derive(Debug, Clone)]
pub struct Catalog {
    list: watch::Receiver<FunctionList>,
    poke: Arc<Notify>,
}

impl Catalog {
    /// Loads the list from `source` once (so triggers start with what is deployed), then keeps
    /// refreshing it every `interval`, and whenever [`Catalog::refresh_now`] is called, until
    /// `shutdown`. A failing first load is returned; later failures keep the last list.
    pub async fn start(
        source: Arc<dyn FunctionSource>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> Result<Self, InvokeError> {
        let first = load(&*source).await?;
        let (tx, list) = watch::channel(Arc::new(first));
        let poke = Arc::new(Notify::new());
        tokio::spawn(refresh(source, tx, poke.clone(), interval, shutdown));
        Ok(Self { list, poke })
    }

    /// The list now and every change to it.
    pub fn watch(&self) -> watch::Receiver<FunctionList> {
        self.list.clone()
    }

    /// Asks for a refresh now (after a deploy, update or removal).
    pub fn refresh_now(&self) {
        self.poke.notify_one();
    }
}

/// One load: sorted, volatile fields zeroed.
async fn load(source: &dyn FunctionSource) -> Result<Vec<FunctionStatus>, InvokeError> {
    let mut functions = tokio::time::timeout(REFRESH_TIMEOUT, source.functions())
        .await
        .map_err(|_| InvokeError::Timeout(REFRESH_TIMEOUT))??;
    for f in &mut functions {
        f.replicas = 0;
        f.available_replicas = 0;
        f.invocation_count = 0.0;
    }
    functions.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(functions)
}

async fn refresh(
    source: Arc<dyn FunctionSource>,
    tx: watch::Sender<FunctionList>,
    poke: Arc<Notify>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
            () = poke.notified() => {}
        }
        match load(&*source).await {
            Ok(functions) => {
                if failing {
                    tracing::info!("Function list reachable again.");
                    failing = false;
                }
                tx.send_if_modified(|current| {
                    if **current == functions {
                        return false;
                    }
                    *current = Arc::new(functions);
                    true
                });
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "Cannot refresh the function list; keeping the last one.");
                    failing = true;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    struct Fixed(Mutex<Result<Vec<FunctionStatus>, String>>);

    impl Default for Fixed {
        fn default() -> Self {
            Self(Mutex::new(Ok(Vec::new())))
        }
    }

    impl Fixed {
        fn set(&self, functions: Vec<FunctionStatus>) {
            *self.0.lock().expect("lock") = Ok(functions);
        }
        fn fail(&self) {
            *self.0.lock().expect("lock") = Err("down".into());
        }
    }

    #[async_trait::async_trait]
    impl FunctionSource for Fixed {
        async fn functions(&self) -> Result<Vec<FunctionStatus>, InvokeError> {
            self.0
                .lock()
                .expect("lock")
                .clone()
                .map_err(InvokeError::Unreachable)
        }
    }

    fn function(name: &str, topic: &str, replicas: u64) -> FunctionStatus {
        FunctionStatus {
            name: name.into(),
            namespace: "openfaas-fn".into(),
            annotations: BTreeMap::from([("topic".to_owned(), topic.to_owned())]),
            replicas,
            ..FunctionStatus::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_reach_subscribers_and_scaling_does_not() {
        let source = Arc::new(Fixed::default());
        source.set(vec![function("b", "orders", 1), function("a", "x", 1)]);
        let shutdown = CancellationToken::new();
        let catalog = Catalog::start(source.clone(), REFRESH_INTERVAL, shutdown.clone())
            .await
            .expect("first load");
        let mut list = catalog.watch();
        let names: Vec<_> = list.borrow().iter().map(|f| f.name.clone()).collect();
        assert_eq!(names, ["a", "b"], "sorted by name");

        source.set(vec![function("b", "orders", 3), function("a", "x", 2)]);
        tokio::time::sleep(REFRESH_INTERVAL * 3).await;
        assert!(
            !list.has_changed().expect("open"),
            "scaling is not a change"
        );

        source.set(vec![function("b", "payments", 3), function("a", "x", 2)]);
        tokio::time::timeout(REFRESH_INTERVAL * 2, list.changed())
            .await
            .expect("a change within a second")
            .expect("open");
        assert_eq!(list.borrow_and_update()[1].annotations["topic"], "payments");

        source.fail();
        tokio::time::sleep(REFRESH_INTERVAL * 3).await;
        assert_eq!(
            list.borrow().len(),
            2,
            "a failing source keeps the last list"
        );
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_poke_refreshes_before_the_interval() {
        let source = Arc::new(Fixed::default());
        source.set(vec![]);
        let shutdown = CancellationToken::new();
        let catalog = Catalog::start(source.clone(), Duration::from_secs(3600), shutdown.clone())
            .await
            .expect("first load");
        let mut list = catalog.watch();
        source.set(vec![function("a", "x", 1)]);
        catalog.refresh_now();
        tokio::time::timeout(Duration::from_millis(100), list.changed())
            .await
            .expect("the poke refreshed")
            .expect("open");
        assert_eq!(list.borrow().len(), 1);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_failing_first_load_is_an_error() {
        let source = Arc::new(Fixed::default());
        source.fail();
        let err = Catalog::start(source, REFRESH_INTERVAL, CancellationToken::new())
            .await
            .expect_err("fails");
        assert_eq!(err.code(), "unreachable");
    }
}
