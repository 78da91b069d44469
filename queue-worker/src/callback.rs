//! Posting a call's final outcome to its `X-Callback-Url`, retried with backoff.

use std::time::Duration;

use courier_core::headers::HOP_BY_HOP;
use courier_core::trace::TraceContext;

use crate::config::WorkerConfig;
use crate::invoke::Outcome;

/// What the callback carries besides the function's answer.
#[derive(Debug)]
pub(crate) struct CallbackInfo<'a> {
    pub(crate) url: &'a str,
    pub(crate) call_id: &'a str,
    /// `NAME` or `NAME.NAMESPACE` as queued.
    pub(crate) function: &'a str,
    pub(crate) duration: Duration,
    /// Attempts used.
    pub(crate) attempts: u64,
    /// Attempts allowed.
    pub(crate) max_attempts: u64,
    /// The callback's own hop of the call's trace: every post carries it, so the receiver's
    /// spans hang under the `courier.callback` span.
    pub(crate) trace: &'a TraceContext,
}

/// How the callback went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Posted {
    /// Posts made.
    pub(crate) attempts: u32,
    /// The receiver's last answer (`None` when it never answered).
    pub(crate) status: Option<u16>,
    /// Whether the receiver took it (answered 2xx). A final refusal (a 4xx other than 408
    /// and 429) ends the posts too, undelivered.
    pub(crate) delivered: bool,
}

/// Whether a post answered `status` is tried again (408, 429 and 5xx: the receiver may take
/// it later); any other answer is final.
fn retried(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// Posts the outcome until the receiver takes it or the configured attempts run out.
pub(crate) async fn post(
    client: &reqwest::Client,
    config: &WorkerConfig,
    info: &CallbackInfo<'_>,
    outcome: &Outcome,
) -> Posted {
    let mut delay = Duration::from_millis(200);
    let mut posted = Posted {
        attempts: 0,
        status: None,
        delivered: false,
    };
    for attempt in 1..=config.callback_attempts.max(1) {
        posted.attempts = attempt;
        let mut headers = http::HeaderMap::new();
        for (name, value) in &outcome.headers {
            if name == http::header::CONTENT_LENGTH || HOP_BY_HOP.contains(name) {
                continue;
            }
            headers.append(name, value.clone());
        }
        let ours = [
            ("x-call-id", info.call_id.to_owned()),
            (
                "x-function-status",
                outcome.status.unwrap_or(503).to_string(),
            ),
            ("x-function-name", info.function.to_owned()),
            (
                "x-duration-seconds",
                format!("{:.6}", info.duration.as_secs_f64()),
            ),
            ("x-retry", info.attempts.to_string()),
            ("x-retry-max", info.max_attempts.to_string()),
        ];
        for (name, value) in ours {
            // Ours replace any the function sent under the same name.
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.insert(http::HeaderName::from_static(name), value);
            }
        }
        // The call's trace, not one the function may have answered with.
        info.trace.apply(&mut headers);
        let rb = client
            .post(info.url)
            .timeout(config.callback_timeout)
            .headers(headers)
            .body(outcome.body.clone());
        match rb.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                posted.status = Some(status);
                if !retried(status) {
                    posted.delivered = resp.status().is_success();
                    if !posted.delivered {
                        tracing::warn!(
                            call_id = info.call_id,
                            status,
                            attempt,
                            "Callback refused for good."
                        );
                    }
                    return posted;
                }
                tracing::warn!(call_id = info.call_id, status, attempt, "Callback refused.");
            }
            Err(e) => {
                tracing::warn!(call_id = info.call_id, error = %e, attempt, "Callback failed.");
            }
        }
        if attempt < config.callback_attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    posted
}
