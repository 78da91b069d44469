//! A callback receiver for asynchronous calls: a real HTTP server on loopback that records
//! every POST (headers and body) and answers with a status the test chooses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One callback as received.
#[derive(Debug, Clone)]
pub struct Callback {
    /// Path and query the callback was posted to.
    pub path: String,
    /// Headers, lower-case names (last value wins).
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Callback {
    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Records callbacks; stops when dropped.
#[derive(Debug)]
pub struct CallbackReceiver {
    port: u16,
    received: Arc<Mutex<Vec<Callback>>>,
    answer: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl CallbackReceiver {
    /// Starts a receiver on a free loopback port, answering 200.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind callback receiver");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(AtomicU16::new(200));
        let (rec, ans) = (received.clone(), answer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (rec, ans) = (rec.clone(), ans.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let (rec, ans) = (rec.clone(), ans.clone());
                        async move {
                            let path = req.uri().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let status = ans.load(Ordering::SeqCst);
                            if status < 300 {
                                rec.lock().unwrap().push(Callback {
                                    path,
                                    headers,
                                    body,
                                });
                            }
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            received,
            answer,
            task,
        }
    }

    /// The URL to give as `X-Callback-Url` (with `path` appended).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// From now on answer `status` (a non-2xx answer is not recorded: the sender must retry).
    pub fn answer_with(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    /// Every callback recorded so far.
    pub fn received(&self) -> Vec<Callback> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` callbacks were recorded; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Callback> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} callbacks within {timeout:?}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
