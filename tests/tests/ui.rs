//! The web dashboard (`/ui/`) end to end, in a real headless Chromium driven over WebDriver:
//! a person logs in, sees the example stack's functions, invokes `echo` from the form, watches
//! an asynchronous call reach `succeeded` on the Calls page, replays a dead letter, sees
//! `tick`'s next fire times, scales and removes a function; markup a function writes to its
//! logs and answers is shown as text and never run; without the login `/ui/*` gives no data.
//!
//! Every page is saved as a PNG under `target/ui-screenshots/` (or `$COURIER_UI_SCREENSHOTS`);
//! the paths are printed.

use std::time::Duration;

use courier_e2e::webdriver::{Browser, browser_binaries};
use courier_e2e::{ADMIN_USER, Courier, DEFAULT_NAMESPACE, call_id, eventually, fork_function};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(30);
const SETTLED: Duration = Duration::from_secs(30);

/// `courier up -f examples/stack.yml`.
async fn courier_with_the_example_stack() -> Courier {
    let stack = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("stack.yml");
    let courier = Courier::builder()
        .arg("-f")
        .arg(stack.display().to_string())
        .start()
        .await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    courier
}

/// The dashboard's address.
fn page_url(courier: &Courier, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", courier.port())
}

async fn assert_no_script_errors(browser: &Browser, page: &str) {
    let errors = browser.script_errors().await;
    assert!(errors.is_empty(), "script errors on {page}: {errors:?}");
}

/// Opens `path` (logged in), checks its title.
async fn visit(browser: &Browser, courier: &Courier, path: &str, title: &str) {
    browser.goto(&page_url(courier, path)).await;
    let got = browser.title().await;
    assert!(got.starts_with(title), "{path}: title {got:?}");
}

/// Opens `path` without a login, is sent to the login form, types the admin password into it
/// (a wrong one first when `wrong_first`) and lands on `path`.
async fn log_in_with_the_form(browser: &Browser, courier: &Courier, path: &str, wrong_first: bool) {
    browser.goto(&page_url(courier, path)).await;
    assert_eq!(browser.title().await, "Log in · Courier");
    if wrong_first {
        browser
            .type_into(&browser.find("#login-password").await, "not-the-password")
            .await;
        browser.click(&browser.find("#login-button").await).await;
        browser
            .wait_for_text("#login-error", "Wrong user or password.")
            .await;
        browser.screenshot("login-refused").await;
        // The browser logs the refused login's 401 (and only that); reading the log empties it.
        // The login page has no script, so it records no script errors of its own.
        let errors = browser.script_errors().await;
        assert!(
            errors.iter().all(|e| e.contains("app.js did not load")
                || (e.contains("/ui/login") && e.contains("401"))),
            "{errors:?}"
        );
    }
    browser
        .type_into(&browser.find("#login-password").await, &courier.password())
        .await;
    browser.click(&browser.find("#login-button").await).await;
    browser.find("#logout").await;
    let here = browser
        .execute("return location.pathname;", json!([]))
        .await;
    assert_eq!(here, path.split('?').next().unwrap_or(path));
}

/// A function that always fails with 500 and is retried once, so its calls dead-letter fast.
fn broken() -> Value {
    let mut f = fork_function("broken", "sh -c 'echo broken on purpose >&2; exit 1'");
    f["annotations"] = json!({
        "com.openfaas.retry.attempts": "2",
        "com.openfaas.retry.codes": "500",
        "com.openfaas.retry.min_wait": "50ms",
        "com.openfaas.retry.max_wait": "100ms",
    });
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_runs_the_example_stack_from_the_dashboard() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let courier = courier_with_the_example_stack().await;
    courier.deploy(&broken()).await;
    courier.wait_ready("broken", DEFAULT_NAMESPACE, READY).await;
    let browser = Browser::start(&chromium, &driver).await;

    // Log in through the form (a wrong password first), landing on the Functions page.
    log_in_with_the_form(&browser, &courier, "/ui/", true).await;
    assert!(browser.title().await.starts_with("Functions"));
    for name in ["echo", "env", "hello", "tick", "wordcount"] {
        browser
            .wait_for_text(&format!("#functions tr[data-function={name:?}]"), name)
            .await;
    }
    let echo_row = browser
        .wait_for_text("#functions tr[data-function=\"echo\"]", "openfaas-fn")
        .await;
    assert!(echo_row.contains("fork"), "{echo_row}");
    browser.screenshot("functions").await;
    assert_no_script_errors(&browser, "Functions").await;

    // Deploy from a pasted stack file: a broken one names its line, a good one deploys.
    browser.click(&browser.find("#deploy summary").await).await;
    let spec = browser.find("#deploy-spec").await;
    browser
        .type_into(
            &spec,
            "functions:\n  pasted:\n    fprocess: cat\n  commandless:\n    image: x\n",
        )
        .await;
    browser.click(&browser.find("#deploy-button").await).await;
    let problem = browser.wait_for_text("#deploy-result", "line 4").await;
    assert!(problem.contains("fprocess"), "{problem}");
    // The browser logs the refusal's 400 (and only that); reading the log empties it.
    let errors = browser.script_errors().await;
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/ui/api/stack") && e.contains("400")),
        "{errors:?}"
    );
    browser
        .type_into(
            &spec,
            "functions:\n  pasted:\n    fprocess: cat\n    labels:\n      team: ui\n",
        )
        .await;
    browser.click(&browser.find("#deploy-button").await).await;
    browser
        .wait_for_text("#deploy-result", "deployed pasted")
        .await;
    browser
        .wait_for_text("#functions tr[data-function=\"pasted\"]", "pasted")
        .await;
    let pasted = courier
        .status("pasted", DEFAULT_NAMESPACE)
        .await
        .expect("pasted is deployed");
    assert_eq!(pasted["labels"]["team"], "ui", "{pasted:#}");
    browser.screenshot("functions-deployed").await;
    assert_no_script_errors(&browser, "Functions (deploy)").await;

    // Function: invoke echo from the form and read its answer.
    browser
        .click(
            &browser
                .find("#functions tr[data-function=\"echo\"] a")
                .await,
        )
        .await;
    browser.wait_for_text("h1", "echo").await;
    assert!(browser.title().await.starts_with("echo.openfaas-fn"));
    let body = browser.find("#invoke-body").await;
    browser.type_into(&body, "hello from the browser").await;
    browser.click(&browser.find("#invoke-button").await).await;
    browser.wait_for_text("#invoke-status", "200").await;
    assert_eq!(
        browser.text_of("#invoke-response").await,
        "hello from the browser"
    );
    browser
        .wait_for_text("#invoke-response-headers", "x-call-id")
        .await;
    browser
        .wait_for_text("#spec", "\"envProcess\": \"cat\"")
        .await;
    // The request-rate sparkline, drawn from the polled counters.
    browser.wait_for_text("#rate-now", "/s").await;
    let drawn = browser
        .execute(
            "return document.querySelectorAll('#rate-chart polyline').length;",
            json!([]),
        )
        .await;
    assert_eq!(drawn, 1, "the sparkline has its line");
    browser.screenshot("function-echo").await;

    // An asynchronous call from the same form, followed to the Calls page.
    browser
        .click(&browser.find("#invoke-mode option[value=\"async\"]").await)
        .await;
    browser.type_into(&body, "queued from the browser").await;
    browser.click(&browser.find("#invoke-button").await).await;
    browser.wait_for_text("#invoke-status", "202").await;
    let link = browser.wait_for_text("#invoke-call", "call ").await;
    let id = link.trim_start_matches("call ").trim().to_owned();
    assert_no_script_errors(&browser, "Function").await;
    browser.click(&browser.find("#invoke-call").await).await;
    browser
        .wait_for_text(&format!("#calls tr[data-call={id:?}]"), "succeeded")
        .await;
    browser.wait_for_text("#call-summary", "succeeded").await;
    browser.wait_for_text("#call-attempts", "status 200").await;
    assert_eq!(browser.title().await, "Calls · Courier");
    // The attempt as a bar on the call's time line.
    let bars = browser
        .execute(
            "return document.querySelectorAll('#call-timeline rect.bar.ok').length;",
            json!([]),
        )
        .await;
    assert_eq!(bars, 1, "one successful attempt on the time line");
    browser.screenshot("calls").await;
    assert_no_script_errors(&browser, "Calls").await;

    // Dead letters: a call of `broken` runs out of attempts; replay it from the page.
    let resp = courier
        .anonymous(Method::POST, "/async-function/broken")
        .body("doomed")
        .send()
        .await
        .expect("submit to broken");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let doomed = call_id(&resp);
    eventually(SETTLED, "broken's call dead-lettered", || async {
        let record = courier
            .admin_json(Method::GET, &format!("/system/calls/{doomed}"))
            .await;
        (record["state"] == "dead-lettered").then_some(())
    })
    .await;
    visit(&browser, &courier, "/ui/dead-letters", "Dead letters").await;
    let row = format!("#dead-letters tr[data-call={doomed:?}]");
    browser.wait_for_text(&row, "broken").await;
    browser.screenshot("dead-letters").await;
    browser
        .click(&browser.find(&format!("{row} button.replay")).await)
        .await;
    let replayed = browser.wait_for_text("#replayed-call", "-").await;
    let replay = courier
        .admin_json(Method::GET, &format!("/system/calls/{}", replayed.trim()))
        .await;
    assert_eq!(replay["source"]["kind"], "replay", "{replay:#}");
    assert_eq!(replay["function"], "broken", "{replay:#}");
    assert_no_script_errors(&browser, "Dead letters").await;

    // Schedules: tick's next five fire times.
    visit(&browser, &courier, "/ui/schedules", "Schedules").await;
    let next = browser
        .wait_for_text("#schedules tr[data-function=\"tick\"] td.next", "Z")
        .await;
    assert_eq!(next.lines().count(), 5, "{next}");
    // Its last fire and the outcome, from the ledger (it fires every 30 seconds).
    let last = browser
        .wait_for_text_within(
            "#schedules tr[data-function=\"tick\"] td.last",
            "succeeded",
            Duration::from_secs(45),
        )
        .await;
    assert!(last.contains('Z') && last.contains("(200)"), "{last}");
    let tick = browser
        .text_of("#schedules tr[data-function=\"tick\"]")
        .await;
    assert!(
        tick.contains("*/30 * * * * *") && tick.contains("UTC"),
        "{tick}"
    );
    browser.screenshot("schedules").await;
    assert_no_script_errors(&browser, "Schedules").await;

    // Queue: live figures.
    visit(&browser, &courier, "/ui/queue", "Queue").await;
    browser.wait_for_text("#queue-updated", "Last:").await;
    let dead = browser.text_of("#queue-dead-letters").await;
    assert!(dead.parse::<u64>().is_ok(), "{dead:?}");
    browser.wait_for_text("#queue-throughput", "/s").await;
    for figure in ["#queue-in-flight", "#queue-processed", "#queue-pending"] {
        let shown = browser.text_of(figure).await;
        assert!(shown.parse::<u64>().is_ok(), "{figure}: {shown:?}");
    }
    let processed: u64 = browser.text_of("#queue-processed").await.parse().unwrap();
    assert!(
        processed >= 2,
        "echo's async call and broken's settled: {processed}"
    );
    let oldest = browser.text_of("#queue-oldest").await;
    assert!(!oldest.is_empty() && oldest != "…", "{oldest:?}");
    browser.screenshot("queue").await;
    assert_no_script_errors(&browser, "Queue").await;

    // Connectors: the cron topic and its subscriber.
    visit(&browser, &courier, "/ui/connectors", "Connectors").await;
    let topics = browser.wait_for_text("#connectors", "cron-function").await;
    assert!(topics.contains("tick"), "{topics}");
    browser
        .wait_for_text(
            "#connectors tr[data-topic=\"cron-function\"] td.settled",
            "fired",
        )
        .await;
    browser.screenshot("connectors").await;
    assert_no_script_errors(&browser, "Connectors").await;

    // Scale hello to 2, then remove env with its confirmation.
    visit(&browser, &courier, "/ui/functions", "Functions").await;
    let hello = "#functions tr[data-function=\"hello\"]";
    browser.wait_for_text(hello, "hello").await;
    let echo_row = browser
        .wait_for_text("#functions tr[data-function=\"echo\"]", "%")
        .await;
    assert!(
        echo_row.contains(" 2 0.0 %"),
        "echo's two calls, no errors: {echo_row}"
    );
    browser.screenshot("functions-after-calls").await;
    let replicas = browser.find(&format!("{hello} input.replicas")).await;
    browser.type_into(&replicas, "2").await;
    browser
        .click(&browser.find(&format!("{hello} button.scale")).await)
        .await;
    eventually(READY, "hello scaled to 2", || async {
        let status = courier.status("hello", DEFAULT_NAMESPACE).await?;
        (status["replicas"] == 2).then_some(())
    })
    .await;
    let env = "#functions tr[data-function=\"env\"] button.remove";
    browser.click(&browser.find(env).await).await;
    browser
        .wait_for_text("#functions tr[data-function=\"env\"]", "Confirm remove env")
        .await;
    assert!(courier.status("env", DEFAULT_NAMESPACE).await.is_some());
    browser.click(&browser.find(env).await).await;
    eventually(READY, "env removed", || async {
        courier
            .status("env", DEFAULT_NAMESPACE)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert_no_script_errors(&browser, "Functions after scale and remove").await;

    // Log out: the pages send the browser to the form again.
    browser.click(&browser.find("#logout").await).await;
    browser.find("#login-form").await;
    browser.goto(&page_url(&courier, "/ui/calls")).await;
    assert_eq!(browser.title().await, "Log in · Courier");
}

#[tokio::test(flavor = "multi_thread")]
async fn markup_in_a_functions_logs_and_answer_is_shown_as_text_and_never_run() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let courier = Courier::start().await;
    // Logs a line of markup on every call, and answers with the request body.
    let log_markup = "sh -c 'echo \"<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>\" >&2; cat'";
    courier.deploy(&fork_function("shouty", log_markup)).await;
    courier.wait_ready("shouty", DEFAULT_NAMESPACE, READY).await;
    let browser = Browser::start(&chromium, &driver).await;

    log_in_with_the_form(&browser, &courier, "/ui/function/shouty", false).await;
    assert!(browser.title().await.starts_with("shouty.openfaas-fn"));
    let answer = "<script>window.__pwned=3</script><img src=x onerror=\"window.__pwned=4\">";
    browser
        .type_into(&browser.find("#invoke-body").await, answer)
        .await;
    browser
        .type_into(
            &browser.find("#invoke-headers").await,
            "X-Note: <b onmouseover=alert(1)>",
        )
        .await;
    browser.click(&browser.find("#invoke-button").await).await;
    browser.wait_for_text("#invoke-status", "200").await;
    assert_eq!(browser.text_of("#invoke-response").await, answer);
    let logs = browser
        .wait_for_text("#logs", "<script>window.__pwned=1</script>")
        .await;
    assert!(
        logs.contains("<img src=x onerror=window.__pwned=2>"),
        "{logs}"
    );
    browser.screenshot("escaping").await;

    let pwned = browser
        .execute("return typeof window.__pwned;", json!([]))
        .await;
    assert_eq!(pwned, "undefined", "a function's markup ran in the page");
    let injected = browser
        .execute(
            "return document.querySelectorAll('main script, main img, main b').length;",
            json!([]),
        )
        .await;
    assert_eq!(injected, 0, "a function's markup became elements");
    assert_no_script_errors(&browser, "Function (escaping)").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_admin_login_the_dashboard_gives_no_data() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("secretive", "cat")).await;
    // Pages send a browser to the login form and show nothing themselves.
    let pages = [
        "/ui/",
        "/ui/functions",
        "/ui/calls",
        "/ui/dead-letters",
        "/ui/queue",
        "/ui/schedules",
        "/ui/connectors",
        "/ui/function/secretive",
    ];
    for path in pages {
        let resp = courier
            .anonymous(Method::GET, path)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with("/ui/login?next=%2Fui"),
            "{path}: {location}"
        );
        assert!(!resp.headers().contains_key("set-cookie"), "{path}");
        assert_eq!(resp.text().await.unwrap_or_default(), "", "{path}");
        let resp = courier.admin(Method::GET, path).send().await.expect("GET");
        assert_eq!(resp.status(), StatusCode::OK, "{path} with basic auth");
    }
    // Data and the script: 401 with the basic auth challenge (scripts use basic auth).
    let data = [
        "/ui/assets/app.js",
        "/ui/api/stats",
        "/ui/api/queue",
        "/ui/api/connectors",
    ];
    for path in data.into_iter().chain(pages) {
        let wrong = courier
            .anonymous(Method::GET, path)
            .basic_auth(ADMIN_USER, Some("not-the-password"))
            .send()
            .await
            .expect("GET");
        assert_ne!(wrong.status(), StatusCode::OK, "{path}");
        let body = wrong.text().await.unwrap_or_default();
        assert!(
            !body.contains("secretive") && !body.contains('{'),
            "{path}: {body}"
        );
    }
    for path in data {
        let resp = courier
            .anonymous(Method::GET, path)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Basic realm=\"Restricted\"",
            "{path}"
        );
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.contains("secretive") && !body.contains('{'),
            "{path}: {body}"
        );
        let resp = courier.admin(Method::GET, path).send().await.expect("GET");
        assert_eq!(resp.status(), StatusCode::OK, "{path} with basic auth");
    }
    // What the login form itself needs is open, and holds no data.
    for path in ["/ui/login", "/ui/assets/app.css"] {
        let resp = courier
            .anonymous(Method::GET, path)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(!resp.text().await.unwrap_or_default().contains("secretive"));
    }

    // `/` sends a person to the dashboard, giving nothing away itself.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(courier.url("/"))
        .send()
        .await
        .expect("GET /");
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert_eq!(resp.headers()["location"], "/ui/");

    // An unknown page or a bad function name is a 4xx with a message.
    let resp = courier
        .admin(Method::GET, "/ui/nope")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = courier
        .admin(Method::GET, "/ui/function/Bad_Name")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(!resp.text().await.unwrap_or_default().is_empty());

    // A write another site's page makes the browser send, login included, is refused.
    let resp = courier
        .admin(Method::DELETE, "/system/functions")
        .header("Origin", "http://evil.example")
        .json(&json!({ "functionName": "secretive" }))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = courier
        .admin(Method::POST, "/system/scale-function/secretive")
        .header("Sec-Fetch-Site", "cross-site")
        .json(&json!({ "serviceName": "secretive", "replicas": 0 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(
        courier
            .status("secretive", DEFAULT_NAMESPACE)
            .await
            .is_some()
    );
}

/// The `Set-Cookie` header of a response, or "".
fn set_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The value of `<meta name="courier-csrf" content="...">` in a page.
fn csrf_of(page: &str) -> String {
    let start = page
        .find(r#"<meta name="courier-csrf" content=""#)
        .unwrap_or_else(|| panic!("no CSRF token in the page: {page}"))
        + r#"<meta name="courier-csrf" content=""#.len();
    page[start..]
        .split('"')
        .next()
        .expect("a closing quote")
        .to_owned()
}

async fn log_in(courier: &Courier, password: &str, next: &str) -> reqwest::Response {
    courier
        .anonymous(Method::POST, "/ui/login")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(courier_e2e::form_body(&[
            ("user", ADMIN_USER),
            ("password", password),
            ("next", next),
        ]))
        .send()
        .await
        .expect("POST /ui/login")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_login_form_hands_out_a_strict_session_cookie_that_guards_writes_and_logout_ends_it() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("guarded", "cat")).await;

    // A wrong password: the form again, 401, a message, no cookie, no browser prompt.
    let wrong = log_in(&courier, "not-the-password", "/ui/calls").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&wrong).is_empty());
    let challenge = wrong.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!challenge.starts_with("Basic"), "{challenge}");
    let page = wrong.text().await.unwrap();
    assert!(page.contains("Wrong user or password."), "{page}");
    assert!(page.contains(r#"name="next" value="/ui/calls""#), "{page}");

    // The right one: a session cookie, HttpOnly, SameSite=Strict, Path=/, and on to `next`.
    let resp = log_in(&courier, &courier.password(), "/ui/calls").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/ui/calls");
    let cookie_header = set_cookie(&resp);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie_header.contains(attribute), "{cookie_header}");
    }
    assert!(
        !cookie_header.contains("Secure"),
        "plain HTTP: {cookie_header}"
    );
    let cookie = cookie_header.split(';').next().unwrap().to_owned();
    assert!(
        cookie.starts_with("courier_session=") && cookie.len() > 40,
        "{cookie}"
    );
    // Behind a TLS-terminating proxy the cookie is Secure; `next` never leaves the dashboard.
    let resp = courier
        .anonymous(Method::POST, "/ui/login")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Forwarded-Proto", "https")
        .body(courier_e2e::form_body(&[
            ("user", ADMIN_USER),
            ("password", &courier.password()),
            ("next", "//evil.example/ui/"),
        ]))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.headers()["location"], "/ui/");
    assert!(
        set_cookie(&resp).contains("; Secure"),
        "{}",
        set_cookie(&resp)
    );

    // The cookie opens pages, the dashboard's data and the /system/* API its script calls.
    let page = courier
        .anonymous(Method::GET, "/ui/calls")
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    let csrf = csrf_of(&page);
    assert!(page.contains(r#"action="/ui/logout""#));
    for path in ["/ui/api/stats", "/system/functions", "/ui/assets/app.js"] {
        let resp = courier
            .anonymous(Method::GET, path)
            .header("Cookie", &cookie)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }

    // A write under the cookie needs the session's CSRF token, and the same origin.
    let scale = |csrf: Option<&str>, origin: &str| {
        let mut request = courier
            .anonymous(Method::POST, "/system/scale-function/guarded")
            .header("Cookie", &cookie)
            .header("Origin", origin)
            .json(&json!({ "serviceName": "guarded", "replicas": 2 }));
        if let Some(csrf) = csrf {
            request = request.header("X-Courier-Csrf", csrf);
        }
        request.send()
    };
    let here = courier.base_url();
    let resp = scale(None, &here).await.expect("POST");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = scale(Some("forged"), &here).await.expect("POST");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = scale(Some(&csrf), "http://evil.example")
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        courier.status("guarded", DEFAULT_NAMESPACE).await.unwrap()["replicas"],
        1
    );
    let resp = scale(Some(&csrf), &here).await.expect("POST");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        courier.status("guarded", DEFAULT_NAMESPACE).await.unwrap()["replicas"],
        2
    );

    // Logout needs the token too; then the cookie opens nothing, without a password prompt.
    let logout = |csrf: &str| {
        courier
            .anonymous(Method::POST, "/ui/logout")
            .header("Cookie", &cookie)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(courier_e2e::form_body(&[("csrf", csrf)]))
            .send()
    };
    assert_eq!(
        logout("forged").await.expect("POST").status(),
        StatusCode::FORBIDDEN
    );
    let resp = logout(&csrf).await.expect("POST");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/ui/login");
    assert!(
        set_cookie(&resp).contains("Max-Age=0"),
        "{}",
        set_cookie(&resp)
    );
    let resp = courier
        .anonymous(Method::GET, "/ui/api/stats")
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Cookie ")
    );
    let resp = courier
        .anonymous(Method::GET, "/ui/queue")
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = courier
        .anonymous(Method::GET, "/system/functions")
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Neither the password nor a session token is ever logged.
    let output = courier.output();
    assert!(output.contains("Dashboard login"), "{output}");
    assert!(
        !output.contains(&courier.password()),
        "the password was logged"
    );
    let token = cookie.trim_start_matches("courier_session=");
    assert!(!output.contains(token), "a session token was logged");
    assert!(!output.contains(&csrf), "a CSRF token was logged");
}
