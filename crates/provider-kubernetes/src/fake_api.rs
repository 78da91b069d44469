//! Fake Kubernetes API servers for tests, the way kube-rs recommends (`tower-test`):
//!
//! - [`FakeApi`]: a test states each call it expects, in order (method, path, body), and
//!   answers it as the API server would;
//! - [`FakeCluster`]: keeps objects in memory and answers whatever is asked, recording the
//!   RBAC check each call needs (for the permission tests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

use crate::permissions::PermissionScope;

/// Longest a test waits for the provider to finish against the fake server.
pub(crate) const TEST_DEADLINE: Duration = Duration::from_secs(5);

/// The server side of a [`Client`] made by [`FakeApi::pair`].
pub(crate) struct FakeApi {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A request received by the fake server.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// The method.
    pub(crate) method: Method,
    /// Path and query, as sent.
    pub(crate) uri: String,
    /// The body as JSON; `Value::Null` when empty.
    pub(crate) body: Value,
}

impl FakeApi {
    /// A client talking to a new fake server.
    pub(crate) fn pair() -> (Client, Self) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), Self { handle })
    }

    /// Waits for the next call, leaving it unanswered for now.
    pub(crate) async fn receive(&mut self) -> (Received, SendResponse<Response<Body>>) {
        let (request, send) = self
            .handle
            .next_request()
            .await
            .expect("the provider made no further call");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        let received = Received {
            method: parts.method,
            uri: parts.uri.to_string(),
            body,
        };
        (received, send)
    }

    /// Expects the next call to be `method` on `path_and_query` (the path exactly; each query
    /// parameter given must be present, others may be too), answers `status` with `answer`,
    /// and returns the request's body.
    pub(crate) async fn expect(
        &mut self,
        method: Method,
        path_and_query: &str,
        status: u16,
        answer: Value,
    ) -> Value {
        let (received, send) = self.receive().await;
        received.assert_is(&method, path_and_query);
        send.send_response(answer_with(status, &answer));
        received.body
    }
}

impl Received {
    /// Asserts the method, the path, and that each given query parameter was sent.
    pub(crate) fn assert_is(&self, method: &Method, path_and_query: &str) {
        let (path, query) = split(path_and_query);
        let (sent_path, sent_query) = split(&self.uri);
        assert_eq!(
            (&self.method, sent_path),
            (method, path),
            "unexpected call {} {}",
            self.method,
            self.uri
        );
        let sent: Vec<(String, String)> = form_pairs(sent_query);
        for pair in form_pairs(query) {
            assert!(
                sent.contains(&pair),
                "{} {} lacks the query parameter {}={}",
                self.method,
                self.uri,
                pair.0,
                pair.1
            );
        }
    }
}

fn split(uri: &str) -> (&str, &str) {
    uri.split_once('?').unwrap_or((uri, ""))
}

/// `a=b&c=d`, percent-decoded.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query).expect("query string")
}

/// A response with a JSON body.
pub(crate) fn answer_with(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("status code"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("JSON")))
        .expect("response")
}

/// The API server's answer for a missing object.
pub(crate) fn not_found(resource: &str, name: &str) -> Value {
    failure(404, "NotFound", &format!("{resource} \"{name}\" not found"))
}

/// An API server `Status` failure.
pub(crate) fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

/// A list answer.
pub(crate) fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind, "apiVersion": api_version,
        "metadata": { "resourceVersion": "100" },
        "items": items,
    })
}

/// A function Deployment as the API server hands it back: rendered from `spec` (labels
/// included), with `replicas` and a resource version.
pub(crate) fn function_deployment(spec: &courier_core::FunctionDeployment, replicas: i32) -> Value {
    let function = courier_core::FunctionRef::new(&spec.service, None).expect("a function name");
    let deployment = crate::render::FunctionObjects {
        function: &function,
        spec,
        secrets: &crate::render::SecretUse::default(),
        revision: "2026-11-26T10:00:00Z",
        pods: &crate::config::PodOptions::default(),
    }
    .deployment()
    .expect("a deployment");
    let mut json = serde_json::to_value(deployment).expect("JSON");
    json["spec"]["replicas"] = json!(replicas);
    json["metadata"]["creationTimestamp"] = json!("2026-11-26T10:00:00Z");
    json["metadata"]["resourceVersion"] = json!("7");
    json["status"] = json!({ "availableReplicas": replicas });
    json
}

/// The RBAC check one API call needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Access {
    /// Namespaced or cluster-wide.
    pub(crate) scope: PermissionScope,
    /// The API group; `""` is the core group.
    pub(crate) api_group: String,
    /// The resource, or `resource/subresource`.
    pub(crate) resource: String,
    /// The verb.
    pub(crate) verb: &'static str,
}

impl std::fmt::Display for Access {
    /// `verb resource`: short, for tables of what each call needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)
    }
}

/// What a test sees of a [`FakeCluster`] while it serves.
#[derive(Debug, Clone)]
pub(crate) struct ClusterView {
    accesses: Arc<Mutex<Vec<Access>>>,
    calls: Arc<Mutex<Vec<Received>>>,
    open_watches: Arc<AtomicUsize>,
}

impl ClusterView {
    /// The checks the calls since the last `take` needed.
    pub(crate) fn take(&self) -> BTreeSet<Access> {
        std::mem::take(&mut *self.accesses.lock().expect("accesses lock"))
            .into_iter()
            .collect()
    }

    /// Every call so far (method, path and query, body), in order.
    pub(crate) fn calls(&self) -> Vec<Received> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// How many watches are open (answered with nothing yet, as a quiet watch is).
    pub(crate) fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }
}

/// A fake API server that keeps objects in memory and answers any call the provider makes
/// the way the real one would, recording the RBAC check each call needs. Coarser than
/// [`FakeApi`] (no label selectors, apply is a JSON merge), for tests about which calls are
/// made rather than their exact bodies.
pub(crate) struct FakeCluster {
    /// Objects by path (`/apis/apps/v1/namespaces/openfaas-fn/deployments/echo`).
    objects: BTreeMap<String, Value>,
    view: ClusterView,
    /// Watches left open.
    held: Vec<SendResponse<Response<Body>>>,
    version: u64,
}

/// A parsed API path.
struct ApiPath {
    access: Access,
    /// The collection's path.
    collection: String,
    /// The object's name, for calls on one object.
    name: Option<String>,
    /// The subresource, if any.
    subresource: Option<String>,
}

impl ApiPath {
    fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, prefix_len) = match segments.first() {
            Some(&"api") => ("", 2),
            Some(&"apis") => (segments[1], 3),
            _ => panic!("not an API path: {path}"),
        };
        let rest = &segments[prefix_len..];
        let (namespaced, rest) = match rest {
            ["namespaces", _, _, ..] => (true, &rest[2..]),
            _ => (false, rest),
        };
        let resource = rest[0];
        let collection_len = prefix_len + if namespaced { 3 } else { 1 };
        let subresource = rest.get(2).map(|s| (*s).to_owned());
        Self {
            access: Access {
                scope: if namespaced {
                    PermissionScope::ServedNamespace
                } else {
                    PermissionScope::Cluster
                },
                api_group: group.to_owned(),
                resource: match &subresource {
                    Some(sub) => format!("{resource}/{sub}"),
                    None => resource.to_owned(),
                },
                verb: "",
            },
            collection: format!("/{}", segments[..collection_len].join("/")),
            name: rest.get(1).map(|s| (*s).to_owned()),
            subresource,
        }
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.collection,
            self.name.as_deref().unwrap_or_default()
        )
    }
}

impl FakeCluster {
    /// A client talking to a new fake cluster that holds `objects` (path, object).
    pub(crate) fn start(objects: Vec<(String, Value)>) -> (Client, ClusterView) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let view = ClusterView {
            accesses: Arc::default(),
            calls: Arc::default(),
            open_watches: Arc::default(),
        };
        let cluster = Self {
            objects: objects.into_iter().collect(),
            view: view.clone(),
            held: Vec::new(),
            version: 100,
        };
        tokio::spawn(cluster.serve(handle));
        (Client::new(service, "default"), view)
    }

    async fn serve(mut self, mut handle: Handle<Request<Body>, Response<Body>>) {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("request body is JSON")
            };
            let apply = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
            let query = form_pairs(parts.uri.query().unwrap_or_default());
            let watch = query.iter().any(|(k, v)| k == "watch" && v == "true");
            let path = ApiPath::parse(parts.uri.path());
            self.view.calls.lock().expect("calls lock").push(Received {
                method: parts.method.clone(),
                uri: parts.uri.to_string(),
                body: body.clone(),
            });
            match self.answer(&parts.method, &path, body, apply, watch) {
                Some(response) => send.send_response(response),
                None => {
                    self.view.open_watches.fetch_add(1, Ordering::SeqCst);
                    self.held.push(send);
                }
            }
        }
    }

    fn record(&self, path: &ApiPath, verb: &'static str) {
        let access = Access {
            verb,
            ..path.access.clone()
        };
        self.view
            .accesses
            .lock()
            .expect("accesses lock")
            .push(access);
    }

    /// The answer to one call; `None` for a watch, which is left open.
    fn answer(
        &mut self,
        method: &Method,
        path: &ApiPath,
        body: Value,
        apply: bool,
        watch: bool,
    ) -> Option<Response<Body>> {
        let key = path.key();
        let missing = || {
            let mut status = not_found(&path.access.resource, path.name.as_deref().unwrap_or(""));
            status["details"] = json!({
                "name": path.name, "kind": path.access.resource,
            });
            answer_with(404, &status)
        };
        let verb = match (method.as_str(), &path.name, path.subresource.as_deref()) {
            ("GET", Some(_), _) => "get",
            ("GET", None, _) if watch => "watch",
            ("GET", None, _) => "list",
            ("POST", None, _) => "create",
            ("PUT", Some(_), _) => "update",
            ("PATCH", Some(_), _) => "patch",
            ("DELETE", Some(_), _) => "delete",
            _ => panic!("unexpected call {method} {}", path.collection),
        };
        self.record(path, verb);
        self.version += 1;
        let version = self.version.to_string();
        Some(match (verb, path.subresource.as_deref()) {
            ("watch", _) => return None,
            ("get", Some("log")) => Response::new(Body::from(
                b"2026-11-26T10:00:00Z Forking fprocess.\n".to_vec(),
            )),
            ("get", _) => match self.objects.get(&key) {
                Some(object) => answer_with(200, object),
                None => missing(),
            },
            ("list", _) => {
                let prefix = format!("{}/", path.collection);
                let items = self
                    .objects
                    .iter()
                    .filter(|(k, _)| k.strip_prefix(&prefix).is_some_and(|n| !n.contains('/')))
                    .map(|(_, v)| v.clone())
                    .collect();
                answer_with(200, &list("List", "v1", items))
            }
            ("create", _) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .expect("a name")
                    .to_owned();
                let key = format!("{}/{name}", path.collection);
                if self.objects.contains_key(&key) {
                    let message = format!("{} \"{name}\" already exists", path.access.resource);
                    return Some(answer_with(409, &failure(409, "AlreadyExists", &message)));
                }
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(version);
                self.objects.insert(key, object.clone());
                answer_with(201, &object)
            }
            ("update", _) => {
                let Some(stored) = self.objects.get(&key) else {
                    return Some(missing());
                };
                // Optimistic concurrency, as the real server: an update naming another
                // resource version than the stored one is a conflict.
                let sent = &body["metadata"]["resourceVersion"];
                if !sent.is_null() && *sent != stored["metadata"]["resourceVersion"] {
                    let message = format!(
                        "Operation cannot be fulfilled on {} \"{}\": the object has been modified",
                        path.access.resource,
                        path.name.as_deref().unwrap_or_default()
                    );
                    return Some(answer_with(409, &failure(409, "Conflict", &message)));
                }
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(version);
                self.objects.insert(key, object.clone());
                answer_with(200, &object)
            }
            ("patch", Some("scale")) => {
                let Some(deployment) = self.objects.get_mut(&key) else {
                    return Some(missing());
                };
                deployment["spec"]["replicas"] = body["spec"]["replicas"].clone();
                answer_with(
                    200,
                    &json!({
                        "apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": { "name": path.name },
                        "spec": { "replicas": body["spec"]["replicas"] },
                    }),
                )
            }
            ("patch", _) => {
                let existing = self.objects.get(&key).cloned();
                if existing.is_none() && apply {
                    // An apply that creates its object is also authorised as a create.
                    self.record(path, "create");
                }
                let Some(mut object) = existing.or(apply.then(|| json!({}))) else {
                    return Some(missing());
                };
                merge(&mut object, body);
                object["metadata"]["resourceVersion"] = json!(version);
                self.objects.insert(key, object.clone());
                answer_with(200, &object)
            }
            ("delete", _) => match self.objects.remove(&key) {
                Some(_) => answer_with(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                None => missing(),
            },
            _ => unreachable!("every verb is answered above"),
        })
    }
}

/// A JSON merge: objects merge key by key, anything else replaces.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}
