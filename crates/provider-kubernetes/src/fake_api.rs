//! A fake Kubernetes API server for tests, the way kube-rs recommends (`tower-test`): a test
//! states each call it expects, in order, and answers it as the API server would.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// Longest a test waits for the provider to finish against the fake server.
pub(crate) const TEST_DEADLINE: Duration = Duration::from_secs(5);

/// The server side of a [`Client`] made by [`FakeApi::pair`].
pub(crate) struct FakeApi {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A request received by the fake server.
#[derive(Debug)]
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
