//! Asynchronous invocation over NATS JetStream end to end: `courier up --queue nats://…`
//! stores calls in the stream `OF_faas-request` of a real nats-server 2.10+ (one per test, see
//! `courier_test_support::nats`), and the queue worker takes them from there, through a nats
//! outage, a `kill -9` of courier, dead letters, and as a process of its own.
//!
//! Without a nats-server 2.10+ these tests are skipped loudly, unless
//! `COURIER_TEST_REQUIRE_BROKERS=1` (set by `scripts/test.sh`), which makes them fail.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::process::Stdio;
use std::time::Duration;

use courier_e2e::callback::{Callback, CallbackReceiver};
use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, call_id, fork_function, http_function, random_token,
};
use courier_test_support::nats::NatsServer;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);
const CALLBACKS: Duration = Duration::from_secs(30);

/// The drain deadline of `courier queue-worker` on SIGTERM (10 s), plus slack for a slow box.
const WORKER_EXIT: Duration = Duration::from_secs(15);

/// `courier up --queue nats://…` plus `args`.
async fn courier_on(nats: &NatsServer, args: &[&str]) -> Courier {
    let mut builder = Courier::builder().arg("--queue").arg(nats.url());
    for arg in args {
        builder = builder.arg(*arg);
    }
    builder.start().await
}

async fn deploy_web(courier: &Courier, annotations: Value) {
    let mut web = http_function("web", &random_token());
    web["annotations"] = annotations;
    courier.deploy(&web).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
}

/// Callbacks per path, for counting completions and duplicates.
fn by_path(got: &[Callback]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for callback in got {
        *counts.entry(callback.path.clone()).or_default() += 1;
    }
    counts
}

/// Waits until every path in `expected` got a callback; panics with what is missing after
/// `timeout`. Returns every callback received.
async fn wait_for_paths(
    receiver: &CallbackReceiver,
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> Vec<Callback> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = receiver.received();
        let seen: HashSet<&str> = got.iter().map(|c| c.path.as_str()).collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|p| !seen.contains(p.as_str()))
            .collect();
        if missing.is_empty() {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} accepted calls never produced a callback within {timeout:?}: {missing:?}",
            missing.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints (and returns) how many callbacks arrived more than once.
fn report_duplicates(what: &str, got: &[Callback]) -> usize {
    let duplicates: Vec<(String, usize)> =
        by_path(got).into_iter().filter(|(_, n)| *n > 1).collect();
    let extra: usize = duplicates.iter().map(|(_, n)| n - 1).sum();
    eprintln!(
        "{what}: {} callbacks, {extra} duplicate(s) {duplicates:?}",
        got.len()
    );
    extra
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_call_goes_through_jetstream_to_the_function_and_the_callback() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let courier = courier_on(&nats, &[]).await;
    let receiver = CallbackReceiver::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;

    let resp = courier
        .submit_async("echo", &receiver.url("/done"), "hello jetstream")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{}", courier.output());
    let id = call_id(&resp);

    let got = receiver.wait_for(1, CALLBACKS).await;
    let cb = &got[0];
    assert_eq!(cb.path, "/done");
    assert_eq!(cb.body, b"hello jetstream");
    assert_eq!(cb.header("x-call-id"), id);
    assert_eq!(cb.header("x-function-status"), "200");
    assert_eq!(cb.header("x-function-name"), "echo");
    assert_eq!(cb.header("x-retry"), "1");

    // The call went through nats, not the embedded store.
    let embedded = courier.data_dir().join("queue").join("queue.redb");
    assert!(
        !embedded.exists(),
        "{} exists: the embedded queue was used",
        embedded.display()
    );
    assert!(
        courier.output().contains(&nats.url()),
        "courier does not name the nats queue it uses\n{}",
        courier.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn while_nats_is_down_submissions_get_503_and_after_it_returns_every_accepted_call_completes()
{
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let courier = courier_on(&nats, &["--ack-wait", "2s"]).await;
    let receiver = CallbackReceiver::start().await;
    deploy_web(&courier, json!({"com.openfaas.retry.min_wait": "50ms"})).await;

    const BEFORE: usize = 12;
    const DURING: usize = 8;
    const AFTER: usize = 10;
    let mut accepted = BTreeSet::new();

    // The burst, first with nats up.
    for i in 0..BEFORE {
        let path = format!("/before/{i}");
        let resp = courier
            .submit_async("web/sleep?s=0.1", &receiver.url(&path), "")
            .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "call {i}");
        accepted.insert(path);
    }

    // Mid-burst, nats dies: nothing may be accepted that is not stored.
    nats.stop().await;
    let mut outage_answers = Vec::new();
    for i in 0..DURING {
        let path = format!("/during/{i}");
        let started = std::time::Instant::now();
        let resp = courier
            .submit_async("web/sleep?s=0.1", &receiver.url(&path), "")
            .await;
        let status = resp.status();
        outage_answers.push((status.as_u16(), started.elapsed()));
        assert_ne!(
            status,
            StatusCode::ACCEPTED,
            "call {i} was accepted while nats was down"
        );
        assert!(
            status.is_server_error(),
            "call {i} answered {status} while nats was down: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    eprintln!("answers while nats was down (status, time taken): {outage_answers:?}");

    // nats comes back with the same store on the same port; courier reconnects on its own.
    nats.start_again().await;
    let reconnected = tokio::time::Instant::now();
    for i in 0..AFTER {
        let path = format!("/after/{i}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let resp = courier
                .submit_async("web/sleep?s=0.1", &receiver.url(&path), "")
                .await;
            if resp.status() == StatusCode::ACCEPTED {
                accepted.insert(path);
                break;
            }
            assert!(
                resp.status().is_server_error(),
                "call after the outage answered {}",
                resp.status()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "courier still answers {} 30 s after nats returned\n{}",
                resp.status(),
                courier.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "submissions accepted again {:?} after nats returned",
        reconnected.elapsed()
    );

    let got = wait_for_paths(&receiver, &accepted, Duration::from_secs(90)).await;
    for callback in &got {
        assert_eq!(callback.header("x-function-status"), "200", "{callback:?}");
    }
    report_duplicates("nats outage", &got);
    let unaccepted: Vec<String> = by_path(&got)
        .into_keys()
        .filter(|p| !accepted.contains(p))
        .collect();
    if !unaccepted.is_empty() {
        eprintln!("calls answered 5xx that ran anyway: {unaccepted:?}");
    }
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_accepted_over_jetstream_survives_a_kill_9_of_courier() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut courier = courier_on(&nats, &["--ack-wait", "2s"]).await;
    let receiver = CallbackReceiver::start().await;
    deploy_web(&courier, json!({"com.openfaas.retry.min_wait": "50ms"})).await;

    const CALLS: usize = 40;
    for i in 0..CALLS {
        let resp = courier
            .submit_async("web/sleep?s=0.2", &receiver.url(&format!("/cb/{i}")), "")
            .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "call {i}");
    }
    receiver.wait_for(5, CALLBACKS).await;
    courier.crash_and_restart().await;

    let expected: BTreeSet<String> = (0..CALLS).map(|i| format!("/cb/{i}")).collect();
    let got = wait_for_paths(&receiver, &expected, Duration::from_secs(60)).await;
    assert!(
        got.iter().all(|c| c.header("x-function-status") == "200"),
        "{got:?}"
    );
    report_duplicates("kill -9 over jetstream", &got);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_over_jetstream_are_listed_and_replayable() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let courier = courier_on(&nats, &[]).await;
    let receiver = CallbackReceiver::start().await;
    deploy_web(
        &courier,
        json!({
            "com.openfaas.retry.attempts": "2",
            "com.openfaas.retry.min_wait": "50ms",
            "com.openfaas.retry.max_wait": "200ms",
        }),
    )
    .await;

    // Fails twice (503), the attempts run out: a dead letter.
    let resp = courier
        .submit_async("web/flaky/dl/2", &receiver.url("/cb"), "body")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = call_id(&resp);
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].header("x-function-status"), "503", "{:?}", got[0]);
    assert_eq!(got[0].header("x-retry"), "2");

    let letters: Value = courier
        .admin_json(Method::GET, "/system/dead-letters")
        .await;
    let letters = letters.as_array().expect("an array");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["callId"], id.as_str());
    assert_eq!(letters[0]["function"], "web");
    assert_eq!(letters[0]["namespace"], DEFAULT_NAMESPACE);
    assert_eq!(letters[0]["attempts"], 2);
    assert_eq!(letters[0]["lastStatus"], 503);

    let shown: Value = courier
        .admin_json(Method::GET, &format!("/system/dead-letters/{id}"))
        .await;
    assert_eq!(shown["request"]["Function"], "web");

    // Replayed: the third call succeeds, and the dead letter is gone.
    let replay = courier
        .admin(Method::POST, &format!("/system/dead-letters/{id}/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    let got = receiver.wait_for(2, CALLBACKS).await;
    assert_eq!(got[1].header("x-call-id"), id);
    assert_eq!(got[1].header("x-function-status"), "200", "{:?}", got[1]);
    assert_eq!(got[1].body, b"ok after 2");
    let after: Value = courier
        .admin_json(Method::GET, "/system/dead-letters")
        .await;
    assert_eq!(after, json!([]));
}

/// A `courier queue-worker` child process, its output captured in files.
struct QueueWorker {
    child: tokio::process::Child,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl QueueWorker {
    fn start(courier: &Courier, nats: &NatsServer) -> Self {
        let stdout = courier.scratch_dir().join("queue-worker.stdout.log");
        let stderr = courier.scratch_dir().join("queue-worker.stderr.log");
        let mut cmd = courier.bare_cli();
        cmd.args([
            "queue-worker",
            "--queue",
            &nats.url(),
            "--gateway",
            &courier.base_url(),
            "--ack-wait",
            "2s",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("COURIER_BASIC_AUTH_PASSWORD", courier.password())
        .stdout(fs::File::create(&stdout).expect("create worker stdout"))
        .stderr(fs::File::create(&stderr).expect("create worker stderr"))
        .stdin(Stdio::null());
        let child = cmd.spawn().expect("spawn courier queue-worker");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The worker's `/metrics` URL, from the line it prints at start.
    async fn metrics_url(&self) -> String {
        courier_e2e::eventually(
            Duration::from_secs(10),
            "the worker's metrics line",
            || async {
                fs::read_to_string(&self.stdout).ok().and_then(|out| {
                    out.lines()
                        .find_map(|l| l.trim().strip_prefix("metrics: ").map(str::to_owned))
                })
            },
        )
        .await
    }

    fn output(&self) -> String {
        format!(
            "--- queue-worker stdout ---\n{}\n--- queue-worker stderr ---\n{}",
            fs::read_to_string(&self.stdout).unwrap_or_default(),
            fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_and_the_queue_worker_run_as_separate_processes() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let courier = Courier::builder()
        .command("gateway")
        .arg("--queue")
        .arg(nats.url())
        .start()
        .await;
    let receiver = CallbackReceiver::start().await;
    deploy_web(&courier, json!({"com.openfaas.retry.min_wait": "50ms"})).await;

    // The gateway alone stores the call but runs no worker.
    let resp = courier
        .submit_async("web/sleep?s=0.1", &receiver.url("/first"), "")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{}", courier.output());
    let first = call_id(&resp);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.received().is_empty(),
        "`courier gateway` ran a queued call by itself: {:?}",
        receiver.received()
    );

    // The worker, a process of its own, takes it from nats.
    let mut worker = QueueWorker::start(&courier, &nats);
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].path, "/first");
    assert_eq!(got[0].header("x-call-id"), first);
    assert_eq!(
        got[0].header("x-function-status"),
        "200",
        "{:?}\n{}",
        got[0],
        worker.output()
    );
    assert_eq!(got[0].body, b"slept");

    // The standalone worker serves its own metrics and health.
    let metrics_url = worker.metrics_url().await;
    let client = courier_e2e::http_client();
    let health = client
        .get(metrics_url.replace("/metrics", "/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), StatusCode::OK);
    // The callback is posted before the delivery is settled (and the ledger told of the
    // callback in between): the count follows the callback by a moment.
    let text = courier_e2e::eventually(
        Duration::from_secs(10),
        "the standalone worker to count the processed call",
        || async {
            let text = client
                .get(&metrics_url)
                .send()
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("metrics text");
            (courier_e2e::metric_sum(&text, "queue_worker_messages_processed_total", &[])
                == Some(1.0))
            .then_some(text)
        },
    )
    .await;
    assert!(text.contains("queue_worker_pending_messages"), "{text}");

    // A call in flight when SIGTERM arrives is finished, and the worker exits 0 in time.
    let resp = courier
        .submit_async("web/sleep?s=1.5", &receiver.url("/in-flight"), "")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pid = worker.child.id().expect("queue-worker is running");
    signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM the queue-worker");
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(WORKER_EXIT, worker.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "queue-worker did not exit within {WORKER_EXIT:?} of SIGTERM\n{}",
                worker.output()
            )
        })
        .expect("wait for queue-worker");
    eprintln!(
        "queue-worker exited {status} {:?} after SIGTERM",
        started.elapsed()
    );
    assert!(
        status.success(),
        "queue-worker exited with {status} on SIGTERM\n{}",
        worker.output()
    );
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].path, "/in-flight");
    assert_eq!(got[1].header("x-function-status"), "200", "{:?}", got[1]);
    courier.assert_healthy().await;
}
