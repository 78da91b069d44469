//! One synchronous call through a gateway's `/function/` route.

use bytes::{Bytes, BytesMut};

use crate::Answer;

/// Largest function answer kept (for a callback, a reply topic or a dead letter).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How Courier's components reach functions: over HTTP through a gateway ([`GatewayHttp`]),
/// or in-process when they run inside the gateway's own process (`courier up`).
#[async_trait::async_trait]
pub trait FunctionCaller: Send + Sync + 'static {
    /// Sends `request` (its URI is the `/function/...` path and query) and returns the answer;
    /// `Err` (saying why) when neither the gateway nor the function answered.
    async fn call(&self, request: http::Request<Bytes>) -> Result<Answer, String>;
}

impl std::fmt::Debug for dyn FunctionCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FunctionCaller")
    }
}

/// Calls functions through a gateway's `/function/` route over HTTP, on one pooled client.
#[derive(Debug)]
pub struct GatewayHttp {
    client: reqwest::Client,
    base: String,
}

impl GatewayHttp {
    /// A caller of the gateway at `base` (`http://127.0.0.1:8080`).
    pub fn new(client: reqwest::Client, base: &str) -> Self {
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl FunctionCaller for GatewayHttp {
    async fn call(&self, request: http::Request<Bytes>) -> Result<Answer, String> {
        let (parts, body) = request.into_parts();
        let url = format!("{}{}", self.base, parts.uri);
        let mut response = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("gateway unreachable: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the function's answer: {e}"))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(format!(
                    "function answer exceeds {MAX_RESPONSE_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        })
    }
}
