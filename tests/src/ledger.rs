//! The invocation ledger's HTTP API (`/system/calls`) as the end-to-end tests use it: a
//! call's record, a long poll on it, lists, cancels; and `courier up` started on either queue
//! backend, so one test body runs on the embedded store and on JetStream.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use courier_test_support::nats::NatsServer;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{Courier, eventually, url_encode};

/// The queue `courier up` keeps its calls (and their records) in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store in the data directory (the default).
    Embedded,
    /// A nats-server of the test's own (`--queue nats://…`).
    JetStream,
}

impl Backend {
    /// Starts `courier up` with `args` on this backend. `None` when JetStream has no
    /// nats-server 2.10+ here: the test is skipped, loudly (a failure when
    /// `COURIER_TEST_REQUIRE_BROKERS=1`).
    pub async fn start(self, args: &[&str]) -> Option<OnBackend> {
        self.start_command("up", args).await
    }

    /// Starts `courier {command}` (`up`, or `gateway`: no queue worker, so calls stay
    /// queued) with `args` on this backend; `None` as for [`Backend::start`].
    pub async fn start_command(self, command: &str, args: &[&str]) -> Option<OnBackend> {
        let nats = match self {
            Self::Embedded => None,
            Self::JetStream => Some(NatsServer::start().await?),
        };
        let mut builder = Courier::builder().command(command);
        if let Some(nats) = &nats {
            builder = builder.arg("--queue").arg(nats.url());
        }
        for arg in args {
            builder = builder.arg(*arg);
        }
        Some(OnBackend {
            courier: builder.start().await,
            _nats: nats,
        })
    }
}

/// A running `courier up` and, on JetStream, its nats-server (stopped after courier).
pub struct OnBackend {
    /// Declared first: dropped (stopped) before the server it talks to.
    courier: Courier,
    _nats: Option<NatsServer>,
}

impl std::fmt::Debug for OnBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnBackend")
            .field("courier", &self.courier)
            .field("nats", &self._nats.as_ref().map(NatsServer::url))
            .finish()
    }
}

impl Deref for OnBackend {
    type Target = Courier;

    fn deref(&self) -> &Courier {
        &self.courier
    }
}

impl DerefMut for OnBackend {
    fn deref_mut(&mut self) -> &mut Courier {
        &mut self.courier
    }
}

/// Whether `text` is a W3C trace id: 32 lowercase hex digits, not all zero.
pub fn is_trace_id(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && text.bytes().any(|b| b != b'0')
}

/// The trace id of a `traceparent` value (`00-<trace id>-<parent id>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

/// `/system/calls/<id>` with the id percent-encoded.
pub fn call_path(id: &str) -> String {
    format!("/system/calls/{}", url_encode(id))
}

impl Courier {
    /// `GET /system/calls/{id}`: the record, `None` on 404; panics on anything else.
    pub async fn call(&self, id: &str) -> Option<Value> {
        let path = call_path(id);
        let resp = self
            .admin(Method::GET, &path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        match resp.status() {
            StatusCode::OK => Some(resp.json().await.expect("a call record is JSON")),
            StatusCode::NOT_FOUND => None,
            other => panic!(
                "GET {path} answered {other}: {}\n{}",
                resp.text().await.unwrap_or_default(),
                self.output()
            ),
        }
    }

    /// `GET /system/calls/{id}?wait={wait}`: the record (asserting 200) and how long the
    /// answer took.
    pub async fn call_waiting(&self, id: &str, wait: &str) -> (Value, Duration) {
        let path = format!("{}?wait={wait}", call_path(id));
        let started = Instant::now();
        let resp = self
            .admin(Method::GET, &path)
            .timeout(Duration::from_secs(330))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let took = started.elapsed();
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        let record = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
        (record, took)
    }

    /// Polls the record of `id` until `check` holds (at most `timeout`); returns it.
    pub async fn wait_call(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let what = format!("call {id}: {what}");
        eventually(timeout, &what, || async {
            self.call(id).await.filter(|record| check(record))
        })
        .await
    }

    /// Polls the record of `id` until its state is `state`; returns it.
    pub async fn wait_call_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        self.wait_call(id, &format!("state {state}"), timeout, |record| {
            record["state"] == state
        })
        .await
    }

    /// `GET /system/calls?{query}`: the records (asserting 200).
    pub async fn calls(&self, query: &str) -> Vec<Value> {
        let path = format!("/system/calls?{query}");
        let list = self.admin_json(Method::GET, &path).await;
        list.as_array()
            .unwrap_or_else(|| panic!("GET {path} is not an array: {list}"))
            .clone()
    }

    /// `DELETE /system/calls/{id}`.
    pub async fn cancel_call(&self, id: &str) -> reqwest::Response {
        let path = call_path(id);
        self.admin(Method::DELETE, &path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
    }

    /// `POST /async-function/{path}` with `headers` (no callback unless among them); asserts
    /// 202 and returns the call id.
    pub async fn submit(&self, path: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut request = self
            .client()
            .post(self.url(&format!("/async-function/{path}")))
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let resp = request.send().await.expect("submit an asynchronous call");
        let status = resp.status();
        let id = resp
            .headers()
            .get("x-call-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::ACCEPTED, "submit {path}: {text}");
        assert!(!id.is_empty(), "the 202 for {path} carries no X-Call-Id");
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_is_32_lowercase_hex_digits_not_all_zero() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(!is_trace_id("00000000000000000000000000000000"));
        assert!(!is_trace_id("4bf92f3577b34da6a3ce929d0e0e473"));
        assert!(!is_trace_id(""));
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
