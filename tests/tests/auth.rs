//! Basic auth on `/system/*`: who gets in, what the refusal looks like, where the password
//! comes from, and which routes stay open.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use courier_e2e::{Courier, DEFAULT_NAMESPACE, fork_function};
use reqwest::{Method, StatusCode};

/// Every management route, with a method it accepts.
const SYSTEM_ROUTES: &[(&str, &str)] = &[
    ("GET", "/system/functions"),
    ("POST", "/system/functions"),
    ("PUT", "/system/functions"),
    ("DELETE", "/system/functions"),
    ("GET", "/system/function/echo"),
    ("POST", "/system/scale-function/echo"),
    ("GET", "/system/info"),
    ("GET", "/system/namespaces"),
    ("GET", "/system/secrets"),
    ("POST", "/system/secrets"),
    ("PUT", "/system/secrets"),
    ("DELETE", "/system/secrets"),
    ("GET", "/system/logs?name=echo&follow=false"),
];

fn assert_basic_challenge(resp: &reqwest::Response, what: &str) {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate"))
        .to_str()
        .expect("WWW-Authenticate is ASCII");
    assert_eq!(challenge, r#"Basic realm="Restricted""#, "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_system_route_refuses_a_request_without_credentials() {
    let courier = Courier::start().await;
    for (method, path) in SYSTEM_ROUTES {
        let method: Method = method.parse().unwrap();
        let resp = courier
            .anonymous(method.clone(), path)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_basic_challenge(&resp, &format!("{method} {path} without credentials"));
    }
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_refused_with_a_basic_challenge() {
    let courier = Courier::start().await;
    let resp = courier
        .anonymous(Method::GET, "/system/functions")
        .basic_auth("admin", Some(format!("{}x", courier.password())))
        .send()
        .await
        .unwrap();
    assert_basic_challenge(&resp, "admin with a wrong password");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_password_for_another_user_is_refused() {
    let courier = Courier::start().await;
    let resp = courier
        .anonymous(Method::GET, "/system/functions")
        .basic_auth("root", Some(courier.password()))
        .send()
        .await
        .unwrap();
    assert_basic_challenge(&resp, "user root with the admin password");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_with_the_environment_password_is_let_in() {
    let courier = Courier::start().await;
    let resp = courier
        .admin(Method::GET, "/system/functions")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let list: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        list,
        serde_json::json!([]),
        "a fresh courier has no functions"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_password_wins_over_the_password_file() {
    let courier = Courier::builder()
        .data_file("secrets/basic-auth-password", "frompasswordfile1\n")
        .start()
        .await;
    let env_password = courier.password();
    assert_ne!(env_password, "frompasswordfile1");

    let with_env = courier
        .anonymous(Method::GET, "/system/info")
        .basic_auth("admin", Some(&env_password))
        .send()
        .await
        .unwrap();
    assert_eq!(with_env.status(), StatusCode::OK);

    let with_file = courier
        .anonymous(Method::GET, "/system/info")
        .basic_auth("admin", Some("frompasswordfile1"))
        .send()
        .await
        .unwrap();
    assert_basic_challenge(
        &with_file,
        "the file password while COURIER_BASIC_AUTH_PASSWORD is set",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_password_file_is_used_when_the_environment_has_none() {
    let courier = Courier::builder()
        .without_password_env()
        .data_file("secrets/basic-auth-password", "Existing0Password9\n")
        .start()
        .await;
    assert_eq!(
        courier.password(),
        "Existing0Password9",
        "the file must not be regenerated"
    );

    let resp = courier
        .anonymous(Method::GET, "/system/functions")
        .basic_auth("admin", Some("Existing0Password9"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "surrounding whitespace is trimmed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_password_one_is_generated_into_a_private_file_and_accepted() {
    let courier = Courier::builder().without_password_env().start().await;

    let file = courier.password_file();
    let metadata = std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("{} was not generated: {e}", file.display()));
    assert_eq!(
        metadata.permissions().mode() & 0o777,
        0o600,
        "password file mode"
    );
    let password = courier.password();
    assert!(!password.is_empty(), "generated password is empty");
    assert!(
        password.chars().all(|c| c.is_ascii_alphanumeric()),
        "generated password {password:?} has characters other than letters and digits"
    );

    let ok = courier
        .admin(Method::GET, "/system/functions")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let wrong = courier
        .anonymous(Method::GET, "/system/functions")
        .basic_auth("admin", Some("not-the-generated-one"))
        .send()
        .await
        .unwrap();
    assert_basic_challenge(&wrong, "a wrong password against a generated one");
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_output_tells_the_listen_url_the_user_and_where_the_password_is() {
    let courier = Courier::builder().without_password_env().start().await;
    let url = courier.base_url();
    courier
        .wait_output(
            "the listen URL, admin and the password file",
            Duration::from_secs(10),
            |out| {
                out.contains(&url) && out.contains("admin") && out.contains("basic-auth-password")
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn function_health_and_metrics_routes_need_no_credentials() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier
        .wait_ready("echo", DEFAULT_NAMESPACE, Duration::from_secs(20))
        .await;

    let health = courier
        .anonymous(Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "/healthz");

    let metrics = courier
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK, "/metrics");

    let invoke = courier
        .anonymous(Method::POST, "/function/echo")
        .body("no credentials needed")
        .send()
        .await
        .unwrap();
    assert_eq!(invoke.status(), StatusCode::OK, "/function/echo");
    assert_eq!(invoke.text().await.unwrap(), "no credentials needed");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_auth_opens_system_routes_and_warns_that_authentication_is_disabled() {
    let courier = Courier::builder().arg("--no-auth").start().await;

    for path in [
        "/system/functions",
        "/system/info",
        "/system/namespaces",
        "/system/secrets",
    ] {
        let resp = courier.anonymous(Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path} with --no-auth");
    }
    let deploy = courier
        .anonymous(Method::POST, "/system/functions")
        .json(&fork_function("open", "cat"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        deploy.status(),
        StatusCode::ACCEPTED,
        "deploy with --no-auth"
    );

    courier
        .wait_output(
            "a warning that authentication is disabled",
            Duration::from_secs(10),
            |out| out.to_lowercase().contains("authentication is disabled"),
        )
        .await;
}
