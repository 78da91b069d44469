//! A port — not the OpenFaaS certifier itself, which cannot be fetched on these machines — of
//! the certifier's `Test_ScaleUpAndDownFromThroughPut` (github.com/openfaas/certifier,
//! `tests/scaling_test.go`), run against the real `courier up` and real fork-mode processes.
//!
//! Kept as the certifier has it: the function (`sha512sum` in fork mode, labels
//! `com.openfaas.scale.min=1`, `com.openfaas.scale.max=2`, no scale type: `rps` with the default
//! target 50), the load (`hey` with N=1000 requests, C=50 workers, QPS=50 per worker, keep-alives
//! disabled, 10 s timeout; statuses are printed, not checked, as the certifier only logs hey's
//! output), and the checks (exactly `max` replicas right after the load, exactly `min` after
//! the cooldown).
//!
//! Changed, and why: the certifier's cooldown is one minute against a gateway whose scale-down
//! takes "about a minute"; tests here must finish well under a minute, so `courier up` runs
//! with `--autoscale-down-delay 5s` and the cooldown is 10 s (twice the window, as the
//! certifier's minute is against OpenFaaS's default).

use std::sync::Arc;
use std::time::Duration;

use courier_e2e::{Courier, DEFAULT_NAMESPACE, fork_function, replicas_field};
use serde_json::json;
use tokio::sync::Mutex;

const MIN_REPLICAS: u64 = 1;
const MAX_REPLICAS: u64 = 2;
/// hey's N, C and QPS (per worker), as the certifier sets them.
const ATTEMPTS: usize = 1000;
const WORKERS: usize = 50;
const QPS_PER_WORKER: f64 = 50.0;

async fn replicas(courier: &Courier, name: &str) -> u64 {
    let status = courier
        .status(name, DEFAULT_NAMESPACE)
        .await
        .expect("the function exists");
    replicas_field(&status, "replicas")
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_up_and_down_from_throughput() {
    let courier = Courier::builder()
        .arg("--autoscale-down-delay")
        .arg("5s")
        .start()
        .await;
    let name = "test-throughput-scaling";
    let mut function = fork_function(name, "sha512sum");
    function["labels"] = json!({
        "com.openfaas.scale.min": MIN_REPLICAS.to_string(),
        "com.openfaas.scale.max": MAX_REPLICAS.to_string(),
    });
    courier.deploy(&function).await;

    // hey: C workers, each sending N/C requests, each worker throttled to QPS, a new
    // connection per request.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = courier.url(&format!("/function/{name}"));
    let statuses = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, usize>::new(),
    ));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, url, statuses) = (client.clone(), url.clone(), statuses.clone());
            tokio::spawn(async move {
                let mut throttle =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / QPS_PER_WORKER));
                for _ in 0..ATTEMPTS / WORKERS {
                    throttle.tick().await;
                    let outcome = match client.post(&url).send().await {
                        Ok(response) => response.status().as_u16().to_string(),
                        Err(e) if e.is_timeout() => "timeout".to_owned(),
                        Err(_) => "error".to_owned(),
                    };
                    *statuses.lock().await.entry(outcome).or_default() += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a load worker");
    }
    let load_took = started.elapsed();
    let statuses = statuses.lock().await.clone();
    eprintln!("load: {ATTEMPTS} requests in {load_took:?}, statuses {statuses:?}");

    let after_load = replicas(&courier, name).await;
    assert_eq!(
        after_load, MAX_REPLICAS,
        "never reached max scale {MAX_REPLICAS}, only {after_load} replicas after {ATTEMPTS} \
         attempts (statuses {statuses:?})"
    );

    // Cooldown.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after_cooldown = replicas(&courier, name).await;
    assert_eq!(
        after_cooldown, MIN_REPLICAS,
        "got {after_cooldown} replicas, wanted {MIN_REPLICAS}"
    );
}
