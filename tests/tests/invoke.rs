//! Invoking functions through `/function/…`: what reaches the function (method, path, query,
//! headers, body), what comes back (status, redirects, call ids), and how failures surface
//! (404, 502, 504, 500, exec timeouts). HTTP-mode functions run `fixtures/http_fn.py`;
//! fork-mode functions run plain commands.

use std::time::{Duration, Instant};

use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, fork_function, http_function, python, random_token,
    wait_processes_gone,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);

/// Starts courier (with `extra_args`) and deploys the HTTP fixture as `web`.
async fn courier_with_http_function(extra_args: &[&str]) -> Courier {
    let mut builder = Courier::builder();
    for arg in extra_args {
        builder = builder.arg(*arg);
    }
    let courier = builder.start().await;
    let mut web = http_function("web", &random_token());
    web["envVars"]["custom_env"] = json!("custom_env_value");
    courier.deploy(&web).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    courier
}

/// Starts courier and deploys a fork-mode function `name` running `cmd` with `env_vars`.
async fn courier_with_fork_function(name: &str, cmd: &str, env_vars: Value) -> Courier {
    let courier = Courier::start().await;
    let mut deployment = fork_function(name, cmd);
    if env_vars != Value::Null {
        deployment["envVars"] = env_vars;
    }
    courier.deploy(&deployment).await;
    courier.wait_ready(name, DEFAULT_NAMESPACE, READY).await;
    courier
}

async fn described(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "function answered {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not the fixture's JSON ({e}): {text}"))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

fn has_line(body: &str, line: &str) -> bool {
    body.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_reaches_an_http_function_unchanged() {
    let courier = courier_with_http_function(&[]).await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let method: Method = method.parse().unwrap();
        let resp = courier.invoke(method.clone(), "web/verbs", None).await;
        let seen = described(resp).await;
        assert_eq!(seen["method"], method.as_str(), "{seen}");
        assert_eq!(seen["path"], "/verbs", "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_request_gets_the_function_status_without_a_body() {
    let courier = courier_with_http_function(&[]).await;
    let resp = courier.invoke(Method::HEAD, "web/anything", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.bytes().await.unwrap().is_empty(),
        "HEAD answer has a body"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_path_after_the_function_name_and_the_query_reach_the_function_intact() {
    let courier = courier_with_http_function(&[]).await;

    let seen = described(
        courier
            .invoke(Method::GET, "web/a/b?x=1&y=two%20words&x=3", None)
            .await,
    )
    .await;
    assert_eq!(seen["path"], "/a/b", "{seen}");
    assert_eq!(seen["query"], "x=1&y=two%20words&x=3", "{seen}");

    let bare = described(courier.invoke(Method::GET, "web", None).await).await;
    assert_eq!(bare["path"], "/", "/function/web: {bare}");
    assert_eq!(bare["query"], "", "{bare}");

    let slash = described(courier.invoke(Method::GET, "web/?only=query", None).await).await;
    assert_eq!(slash["path"], "/", "/function/web/: {slash}");
    assert_eq!(slash["query"], "only=query", "{slash}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_name_dot_namespace_form_reaches_the_same_function() {
    let courier = courier_with_http_function(&[]).await;
    let seen = described(
        courier
            .invoke(
                Method::POST,
                "web.openfaas-fn/deep/path?q=1",
                Some(b"dotted".to_vec()),
            )
            .await,
    )
    .await;
    assert_eq!(seen["path"], "/deep/path", "{seen}");
    assert_eq!(seen["query"], "q=1", "{seen}");
    assert_eq!(seen["body"], "dotted", "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_headers_and_deployed_env_reach_the_http_function() {
    let courier = courier_with_http_function(&[]).await;
    let payload = json!({ "order": 42, "items": ["a", "b"] }).to_string();
    let resp = courier
        .client()
        .put(courier.url("/function/web/orders"))
        .header("Content-Type", "application/json")
        .header("X-Custom-Header", "custom value")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    let seen = described(resp).await;
    assert_eq!(seen["body"], payload.as_str(), "{seen}");
    assert_eq!(
        seen["headers"]["content-type"], "application/json",
        "{seen}"
    );
    assert_eq!(seen["headers"]["x-custom-header"], "custom value", "{seen}");
    assert_eq!(seen["env"]["custom_env"], "custom_env_value", "{seen}");
    let port = seen["env"]["PORT"].as_str().unwrap_or_default();
    assert!(
        port.parse::<u16>().is_ok_and(|p| p > 0),
        "PORT env is {port:?}: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_request_body_reaches_the_function_whole() {
    let courier = courier_with_http_function(&[]).await;
    let chunks: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok("first chunk, "), Ok("second chunk, "), Ok("last chunk")];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = courier
        .client()
        .post(courier.url("/function/web/upload"))
        .body(body)
        .send()
        .await
        .unwrap();
    let seen = described(resp).await;
    assert_eq!(
        seen["body"], "first chunk, second chunk, last chunk",
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_adds_a_call_id_and_start_time_to_request_and_response() {
    let courier = courier_with_http_function(&[]).await;
    let resp = courier.invoke(Method::GET, "web/ids", None).await;
    let response_call_id = header(&resp, "x-call-id").expect("X-Call-Id on the response");
    let response_start = header(&resp, "x-start-time").expect("X-Start-Time on the response");
    let seen = described(resp).await;

    let request_call_id = seen["headers"]["x-call-id"].as_str().unwrap_or_default();
    assert!(
        !request_call_id.is_empty(),
        "function saw no X-Call-Id: {seen}"
    );
    assert_eq!(
        response_call_id, request_call_id,
        "response and request call ids differ"
    );
    let request_start = seen["headers"]["x-start-time"].as_str().unwrap_or_default();
    assert!(
        !request_start.is_empty(),
        "function saw no X-Start-Time: {seen}"
    );
    assert!(!response_start.is_empty());

    let second = courier.invoke(Method::GET, "web/ids", None).await;
    let second_id = header(&second, "x-call-id").expect("X-Call-Id on the second response");
    assert_ne!(second_id, response_call_id, "each call gets its own id");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_supplied_call_id_is_passed_on_unchanged() {
    let courier = courier_with_http_function(&[]).await;
    let resp = courier
        .client()
        .get(courier.url("/function/web/ids"))
        .header("X-Call-Id", "caller-chosen-id-123")
        .send()
        .await
        .unwrap();
    if let Some(echoed) = header(&resp, "x-call-id") {
        assert_eq!(echoed, "caller-chosen-id-123", "response X-Call-Id");
    }
    let seen = described(resp).await;
    assert_eq!(
        seen["headers"]["x-call-id"], "caller-chosen-id-123",
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn function_status_codes_are_passed_back_unchanged() {
    let courier = courier_with_http_function(&[]).await;
    for code in [201u16, 204, 400, 404, 418, 500, 503] {
        let resp = courier
            .invoke(Method::GET, &format!("web/status/{code}"), None)
            .await;
        assert_eq!(resp.status().as_u16(), code, "function answered {code}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_from_the_function_reaches_the_caller_unfollowed() {
    let courier = courier_with_http_function(&[]).await;
    for method in [Method::POST, Method::GET] {
        let resp = courier.invoke(method.clone(), "web/redirect", None).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{method} /redirect");
        assert_eq!(
            header(&resp, "location").as_deref(),
            Some("http://example.com/"),
            "{method} /redirect Location"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_function_is_404() {
    let courier = courier_with_http_function(&[]).await;
    for path in [
        "nope",
        "nope/with/path",
        "nope.openfaas-fn",
        ".openfaas-fn",
        "web.other-ns",
    ] {
        let resp = courier
            .invoke(Method::POST, path, Some(b"x".to_vec()))
            .await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "POST /function/{path}"
        );
    }
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_crashing_mid_request_is_502() {
    let courier = courier_with_http_function(&[]).await;
    let resp = courier
        .invoke(Method::POST, "web/crash", Some(b"boom".to_vec()))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    courier.assert_healthy().await;
}

async fn assert_upstream_timeout_is_two_seconds(courier: &Courier) {
    let fast = courier.invoke(Method::GET, "web/sleep?s=0.5", None).await;
    assert_eq!(
        fast.status(),
        StatusCode::OK,
        "a call inside the timeout succeeds"
    );

    let started = Instant::now();
    let slow = courier.invoke(Method::GET, "web/sleep?s=15", None).await;
    let took = started.elapsed();
    assert_eq!(
        slow.status(),
        StatusCode::GATEWAY_TIMEOUT,
        "a call beyond the timeout"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "504 came after {took:?}, expected about 2 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_slower_than_the_upstream_timeout_flag_is_504() {
    let courier = courier_with_http_function(&["--upstream-timeout", "2s"]).await;
    assert_upstream_timeout_is_two_seconds(&courier).await;
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_timeout_can_come_from_the_environment() {
    let courier = Courier::builder()
        .env("COURIER_UPSTREAM_TIMEOUT", "2s")
        .start()
        .await;
    courier.deploy(&http_function("web", &random_token())).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    assert_upstream_timeout_is_two_seconds(&courier).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_function_gets_the_body_on_stdin_and_answers_with_stdout_byte_for_byte() {
    let courier = courier_with_fork_function("echo", "cat", Value::Null).await;

    let text = courier
        .invoke(Method::POST, "echo", Some(b"hello\nworld\n".to_vec()))
        .await;
    assert_eq!(text.status(), StatusCode::OK);
    assert_eq!(text.bytes().await.unwrap().as_ref(), b"hello\nworld\n");

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let resp = courier
        .invoke(Method::POST, "echo", Some(binary.clone()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.bytes().await.unwrap().as_ref() == binary.as_slice(),
        "binary body changed"
    );

    let empty = courier.invoke(Method::POST, "echo", None).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert!(empty.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_verb_reaches_a_fork_function_with_call_id_and_start_time() {
    let courier = courier_with_fork_function("verbs", "env", json!({})).await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let method: Method = method.parse().unwrap();
        let resp = courier
            .invoke(method.clone(), "verbs.openfaas-fn", None)
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{method}");
        assert!(
            header(&resp, "x-call-id").is_some_and(|v| !v.is_empty()),
            "{method} X-Call-Id"
        );
        assert!(
            header(&resp, "x-start-time").is_some_and(|v| !v.is_empty()),
            "{method} X-Start-Time"
        );
        let body = resp.text().await.unwrap();
        assert!(
            has_line(&body, &format!("Http_Method={method}")),
            "{method}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_function_sees_method_query_path_headers_and_deployed_env() {
    let courier = courier_with_fork_function(
        "env-test",
        "env",
        json!({ "custom_env": "custom_env_value" }),
    )
    .await;
    let resp = courier
        .client()
        .get(courier.url("/function/env-test/some/path?testing=1"))
        .header("X-Custom-Header", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let call_id = header(&resp, "x-call-id").expect("X-Call-Id on the response");
    let body = resp.text().await.unwrap();

    assert!(has_line(&body, "Http_Method=GET"), "{body}");
    assert!(has_line(&body, "Http_Query=testing=1"), "{body}");
    assert!(
        body.lines()
            .any(|l| l.starts_with("Http_Path=") && l.ends_with("/some/path")),
        "Http_Path: {body}"
    );
    assert!(has_line(&body, "Http_X_Custom_Header=abc"), "{body}");
    assert!(
        has_line(&body, &format!("Http_X_Call_Id={call_id}")),
        "{body}"
    );
    assert!(has_line(&body, "custom_env=custom_env_value"), "{body}");

    let no_query = courier.invoke(Method::GET, "env-test", None).await;
    let body = no_query.text().await.unwrap();
    assert!(has_line(&body, "custom_env=custom_env_value"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_command_is_split_like_shell_words_but_never_run_by_a_shell() {
    let courier = courier_with_fork_function(
        "words",
        r#"echo $HOME 'two  spaces' "double quoted" plain"#,
        Value::Null,
    )
    .await;
    let resp = courier.invoke(Method::POST, "words", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.text().await.unwrap(),
        "$HOME two  spaces double quoted plain\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_function_exiting_non_zero_is_500() {
    let courier =
        courier_with_fork_function("fails", "sh -c 'echo failing; exit 3'", Value::Null).await;
    let resp = courier
        .invoke(Method::POST, "fails", Some(b"in".to_vec()))
        .await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_function_past_its_exec_timeout_is_killed() {
    let marker = random_token();
    let cmd = format!(r#"{} -c "import time; time.sleep(30)" {marker}"#, python());
    let courier = courier_with_fork_function("slow", &cmd, json!({ "exec_timeout": "1s" })).await;

    let started = Instant::now();
    let resp = courier
        .invoke(Method::POST, "slow", Some(b"x".to_vec()))
        .await;
    let took = started.elapsed();
    let status = resp.status();
    assert!(
        status == StatusCode::REQUEST_TIMEOUT || status.is_server_error(),
        "exec timeout answered {status}"
    );
    assert!(
        took < Duration::from_secs(10),
        "answer took {took:?} with exec_timeout 1s"
    );
    wait_processes_gone(&marker, Duration::from_secs(5)).await;
}

/// Sends `head` (a whole request head, ending in a blank line, asking to close) on a fresh
/// connection and returns the response's status line and body.
async fn raw_exchange(port: u16, head: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to courier");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(READY, stream.read_to_end(&mut response))
        .await
        .expect("courier closed the connection in time")
        .expect("read the response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_are_added_and_hop_by_hop_headers_never_reach_the_function() {
    let courier = courier_with_http_function(&[]).await;
    let (status, body) = raw_exchange(
        courier.port(),
        "GET /function/web/hops HTTP/1.1\r\nHost: caller.example:8443\r\n\
         Connection: close, x-hop-secret\r\nX-Hop-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 200 "), "{status}: {body}");
    let seen: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(headers["x-forwarded-host"], "caller.example:8443", "{seen}");
    assert_eq!(headers["x-kept"], "yes", "{seen}");
    for hop in ["x-hop-secret", "keep-alive", "proxy-authorization", "te"] {
        assert!(
            headers.get(hop).is_none(),
            "{hop} reached the function: {seen}"
        );
    }

    // What an earlier proxy already set is passed on unchanged.
    let (status, body) = raw_exchange(
        courier.port(),
        "GET /function/web/hops HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Host: edge.example\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 200 "), "{status}: {body}");
    let seen: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7", "{seen}");
    assert_eq!(
        seen["headers"]["x-forwarded-host"], "edge.example",
        "{seen}"
    );
}
