//! The autoscaler: scaling labels checked at deploy and update, and (with the real binary and
//! real fork-mode processes) functions following their load up, back down after the down
//! delay, and to zero when idle.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, eventually, fork_function, http_function, metric_sum, random_token,
    replicas_field, run_cli,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);

async fn send_json(courier: &Courier, method: Method, body: &Value) -> (StatusCode, String) {
    let resp = courier
        .admin(method, "/system/functions")
        .json(body)
        .send()
        .await
        .expect("send /system/functions");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

fn with_labels(name: &str, labels: Value) -> Value {
    let mut deployment = fork_function(name, "cat");
    deployment["labels"] = labels;
    deployment
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_scale_labels_are_refused_at_deploy_and_update_with_the_reason() {
    let courier = Courier::start().await;
    let cases = [
        ("com.openfaas.scale.min", "two"),
        ("com.openfaas.scale.max", "0"),
        ("com.openfaas.scale.target", "-5"),
        ("com.openfaas.scale.type", "memory"),
        ("com.openfaas.scale.target-proportion", "2"),
        ("com.openfaas.scale.zero", "maybe"),
        ("com.openfaas.scale.zero-duration", "soon"),
        ("com.openfaas.scale.autoscaler", "keda"),
    ];
    for (label, value) in cases {
        let (status, body) = send_json(
            &courier,
            Method::POST,
            &with_labels("bad", json!({ label: value })),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "deploy {label}={value}: {body}"
        );
        assert!(
            body.contains(label) && body.contains(value),
            "deploy {label}={value}: the message should name both: {body}"
        );
    }
    assert!(
        courier.status("bad", DEFAULT_NAMESPACE).await.is_none(),
        "a refused deploy creates nothing"
    );

    courier
        .deploy(&with_labels(
            "good",
            json!({ "com.openfaas.scale.max": "4" }),
        ))
        .await;
    let (status, body) = send_json(
        &courier,
        Method::PUT,
        &with_labels(
            "good",
            json!({ "com.openfaas.scale.min": "5", "com.openfaas.scale.max": "4" }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "update min > max: {body}");
    assert!(body.contains("com.openfaas.scale.min"), "{body}");
    let status = courier.status("good", DEFAULT_NAMESPACE).await.unwrap();
    assert_eq!(
        status["labels"]["com.openfaas.scale.max"], "4",
        "a refused update changes nothing: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_scaling_is_refused_on_the_local_provider_saying_why() {
    let courier = Courier::start().await;
    let (status, body) = send_json(
        &courier,
        Method::POST,
        &with_labels("cpu", json!({ "com.openfaas.scale.type": "cpu" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("cpu") && body.contains("CPU metrics"),
        "the message should say the provider has no CPU metrics: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_scale_labels_are_accepted() {
    let courier = Courier::start().await;
    courier
        .deploy(&with_labels(
            "ok",
            json!({
                "com.openfaas.scale.min": "1",
                "com.openfaas.scale.max": "5",
                "com.openfaas.scale.target": "2",
                "com.openfaas.scale.type": "capacity",
                "com.openfaas.scale.target-proportion": "0.8",
                "com.openfaas.scale.zero": "true",
                "com.openfaas.scale.zero-duration": "1m30s",
            }),
        ))
        .await;
    courier
        .deploy(&with_labels(
            "external",
            json!({ "com.openfaas.scale.autoscaler": "external" }),
        ))
        .await;
    // A max above the provider's limit is capped, not refused.
    courier
        .deploy(&with_labels(
            "big",
            json!({ "com.openfaas.scale.max": "1000" }),
        ))
        .await;

    let mut describe = courier.cli();
    describe.args(["describe", "ok"]);
    let out = run_cli(describe, None).await;
    out.assert_success("courier describe ok");
    assert!(
        out.stdout
            .contains("min 1, max 5, target 2 capacity (proportion 0.8), to zero after 90s idle"),
        "describe shows the scaling policy\n{out}"
    );
    assert!(out.stdout.contains("desired"), "{out}");
}

/// A fork-mode function that takes about 200 ms per call.
fn slow_function(name: &str, labels: Value) -> Value {
    let mut deployment = fork_function(name, "sh -c 'cat >/dev/null; sleep 0.2; echo done'");
    deployment["labels"] = labels;
    deployment
}

async fn replicas(courier: &Courier, name: &str) -> u64 {
    let status = courier
        .status(name, DEFAULT_NAMESPACE)
        .await
        .expect("the function exists");
    replicas_field(&status, "replicas")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_load_scales_a_function_up_at_once_and_back_to_min_after_the_down_delay() {
    const DOWN_DELAY: Duration = Duration::from_secs(3);
    let courier = Courier::builder()
        .arg("--autoscale-down-delay")
        .arg("3s")
        .start()
        .await;
    courier
        .deploy(&slow_function(
            "slow",
            json!({
                "com.openfaas.scale.type": "capacity",
                "com.openfaas.scale.target": "2",
                "com.openfaas.scale.max": "5",
            }),
        ))
        .await;
    courier.invoke_until_ok("slow", b"", READY).await;
    assert_eq!(replicas(&courier, "slow").await, 1);

    // 8 callers, each calling again as soon as answered; the first keeps calling through the
    // scale-down, so replicas are retired under load.
    let stop_burst = Arc::new(AtomicBool::new(false));
    let stop_last = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let client = courier.client();
            let url = courier.url("/function/slow");
            let stop = if i == 0 { &stop_last } else { &stop_burst };
            let (stop, failures, calls) = (stop.clone(), failures.clone(), calls.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = match client.post(&url).body("x").send().await {
                        Ok(resp) => resp.status() == StatusCode::OK,
                        Err(_) => false,
                    };
                    calls.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let load_started = Instant::now();
    let scaled = eventually(
        Duration::from_secs(5),
        "at least 3 replicas within 5 s of the load",
        || async {
            let n = replicas(&courier, "slow").await;
            (n >= 3).then_some(n)
        },
    )
    .await;
    let scaled_after = load_started.elapsed();
    // Keep the load a little longer, through the replicas becoming ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_peak = replicas(&courier, "slow").await;
    assert!((3..=5).contains(&at_peak), "{at_peak} replicas under load");

    stop_burst.store(true, Ordering::Relaxed);
    let load_stopped = Instant::now();
    eventually(
        DOWN_DELAY + Duration::from_secs(3),
        "the function to return to 1 replica after the down delay",
        || async { (replicas(&courier, "slow").await == 1).then_some(()) },
    )
    .await;
    let down_after = load_stopped.elapsed();
    // The retired replicas drain while the last caller goes on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_last.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller task");
    }
    assert!(
        down_after >= DOWN_DELAY - Duration::from_millis(500),
        "scaled down after {down_after:?}, before the down delay"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no call may fail while replicas come and go ({} calls)",
        calls.load(Ordering::Relaxed)
    );

    let metrics = courier.metrics().await;
    let slow = [("function_name", "slow.openfaas-fn")];
    let up = metric_sum(
        &metrics,
        "gateway_autoscaler_decisions_total",
        &[("function_name", "slow.openfaas-fn"), ("direction", "up")],
    );
    let down = metric_sum(
        &metrics,
        "gateway_autoscaler_decisions_total",
        &[("function_name", "slow.openfaas-fn"), ("direction", "down")],
    );
    assert!(up >= Some(1.0), "up decisions: {up:?}");
    assert!(down >= Some(1.0), "down decisions: {down:?}");
    assert_eq!(
        metric_sum(&metrics, "gateway_autoscaler_desired_replicas", &slow),
        Some(1.0)
    );
    assert_eq!(
        metric_sum(&metrics, "gateway_function_invocation_inflight", &slow),
        Some(0.0)
    );
    let log = courier.output();
    assert!(
        log.contains("Autoscaler scaling.") && log.contains("load="),
        "each decision is logged with its load:\n{log}"
    );
    eprintln!("scaled to {scaled} after {scaled_after:?}, back to 1 after {down_after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_function_with_scale_zero_goes_to_zero_and_answers_the_next_call() {
    let courier = Courier::start().await;
    courier
        .deploy(&with_labels(
            "sleepy",
            json!({
                "com.openfaas.scale.zero": "true",
                "com.openfaas.scale.zero-duration": "3s",
            }),
        ))
        .await;
    courier.deploy(&fork_function("awake", "cat")).await;
    courier.invoke_until_ok("sleepy", b"hi", READY).await;
    courier.invoke_until_ok("awake", b"hi", READY).await;
    let last_call = Instant::now();

    eventually(
        Duration::from_secs(5).saturating_sub(last_call.elapsed()),
        "sleepy at 0 replicas 5 s after its last call",
        || async { (replicas(&courier, "sleepy").await == 0).then_some(()) },
    )
    .await;
    assert!(
        last_call.elapsed() >= Duration::from_millis(2500),
        "went to zero {:?} after its last call, before the zero duration",
        last_call.elapsed()
    );
    assert_eq!(
        replicas(&courier, "awake").await,
        1,
        "a function without scale.zero stays up"
    );

    let resp = courier
        .invoke(Method::POST, "sleepy", Some(b"again".to_vec()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "the call that wakes it");
    assert_eq!(resp.text().await.unwrap(), "again");
    assert!(replicas(&courier, "sleepy").await >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_autoscale_leaves_replicas_alone() {
    let courier = Courier::builder().arg("--no-autoscale").start().await;
    courier
        .deploy(&with_labels(
            "sleepy",
            json!({
                "com.openfaas.scale.zero": "true",
                "com.openfaas.scale.zero-duration": "1s",
            }),
        ))
        .await;
    courier.invoke_until_ok("sleepy", b"hi", READY).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&courier, "sleepy").await, 1);
    let metrics = courier.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "gateway_autoscaler_desired_replicas",
            &[("function_name", "sleepy.openfaas-fn")]
        ),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_mode_load_is_spread_over_the_replicas_the_autoscaler_adds() {
    let courier = Courier::builder()
        .arg("--autoscale-down-delay")
        .arg("1m")
        .start()
        .await;
    let mut deployment = http_function("web", &random_token());
    deployment["labels"] = json!({
        "com.openfaas.scale.type": "capacity",
        "com.openfaas.scale.target": "1",
        "com.openfaas.scale.target-proportion": "1",
        "com.openfaas.scale.max": "3",
    });
    courier.deploy(&deployment).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let client = courier.client();
            let url = courier.url("/function/web/sleep?s=0.3");
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = client.get(&url).send().await;
                }
            })
        })
        .collect();
    courier
        .wait_available("web", DEFAULT_NAMESPACE, 3, READY)
        .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller task");
    }

    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..9 {
        let resp = courier.invoke(Method::GET, "web/who", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let seen: Value = resp.json().await.expect("JSON description");
        ports.insert(seen["env"]["PORT"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        ports.len(),
        3,
        "calls go to every replica in turn: {ports:?}"
    );
}

/// Threads that keep every core of this machine busy until dropped.
struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Burners {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..2 * cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 1_u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005) + 1);
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_busy_on_cpu_is_not_scaled_up_on_a_machine_with_none_idle() {
    let courier = Courier::builder().start().await;
    let labels = json!({
        "com.openfaas.scale.type": "capacity",
        "com.openfaas.scale.target": "1",
        "com.openfaas.scale.target-proportion": "1",
        "com.openfaas.scale.max": "3",
    });
    // `busy` keeps two CPU burners in its replica's process tree (bounded by `timeout`, so
    // nothing outlives the test): wanting two cores, it stays well past the busy share
    // however the scheduler splits the machine between it, the test's own burners and a test
    // running beside this one. `idle` is the same server without them.
    let mut busy = http_function("busy", &random_token());
    let server = busy["envProcess"].as_str().expect("command").to_owned();
    let burn = "timeout 120 sh -c \"while :; do :; done\" &";
    busy["envProcess"] = json!(format!(
        "sh -c '{burn} {burn} exec {}'",
        server.replace('\'', "'\\''")
    ));
    busy["labels"] = labels.clone();
    let mut idle = http_function("idle", &random_token());
    idle["labels"] = labels;
    courier.deploy(&busy).await;
    courier.deploy(&idle).await;
    courier.wait_ready("busy", DEFAULT_NAMESPACE, READY).await;
    courier.wait_ready("idle", DEFAULT_NAMESPACE, READY).await;

    // Every core is kept busy by this test; both functions get the same load (3 calls in
    // flight each, 3x the target).
    let burners = Burners::start();
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = ["busy", "idle", "busy", "idle", "busy", "idle"]
        .into_iter()
        .map(|name| {
            let client = courier.client();
            let url = courier.url(&format!("/function/{name}/sleep?s=0.3"));
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = client.get(&url).send().await;
                }
            })
        })
        .collect();
    // The function that waits scales as usual...
    courier
        .wait_available("idle", DEFAULT_NAMESPACE, 2, READY)
        .await;
    // ...while the one busy on CPU is held, saying why (and never scaled first).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = courier.output();
        let about_busy: Vec<&str> = output
            .lines()
            .filter(|l| l.contains("Autoscaler") && l.contains("busy."))
            .collect();
        if about_busy.iter().any(|l| l.contains("Autoscaler holding")) {
            break;
        }
        assert!(
            Instant::now() < deadline && about_busy.is_empty(),
            "the autoscaler did not hold busy; what it said of it: {about_busy:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy_replicas = replicas(&courier, "busy").await;
    stop.store(true, Ordering::Relaxed);
    drop(burners);
    for caller in callers {
        caller.await.expect("caller task");
    }
    assert_eq!(
        busy_replicas, 1,
        "a function busy on CPU on a saturated machine stays at its replicas"
    );
}
