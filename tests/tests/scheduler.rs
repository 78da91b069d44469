//! The scheduler end to end, inside `courier up`: a function annotated `topic: cron-function`
//! and `schedule: "<expr>"` is fired on time through the queue, follows edits of its schedule,
//! stops when removed, is listed by `GET /system/schedules` and `courier schedules`, and an
//! invalid schedule is refused at deploy time.
//!
//! Fires are observed in the function's own logs: the fork-mode function writes one line to
//! stderr per run, with the `X-Scheduled-Time` and `X-Connector` headers it received (fork mode
//! passes headers as `Http_*` variables), which works the same with or without the sandbox.

use std::time::{Duration, Instant};

use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, eventually, fork_function, metric_sum, parse_rfc3339, run_cli,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One stderr line per run: `fired at <X-Scheduled-Time> by <X-Connector>`.
const RECORD_FIRE: &str =
    "sh -c 'echo \"fired at $Http_X_Scheduled_Time by $Http_X_Connector\" >&2'";

const READY: Duration = Duration::from_secs(20);

fn scheduled(name: &str, schedule: &str) -> Value {
    let mut function = fork_function(name, RECORD_FIRE);
    function["annotations"] = json!({ "topic": "cron-function", "schedule": schedule });
    function
}

/// The scheduled times of the runs the function logged so far, in log order.
async fn fires(courier: &Courier, name: &str) -> Vec<String> {
    courier
        .logs(name, "")
        .await
        .iter()
        .filter_map(|line| {
            let text = line["text"].as_str()?;
            let rest = &text[text.find("fired at ")? + "fired at ".len()..];
            let (time, connector) = rest.split_once(" by ")?;
            assert_eq!(connector.trim(), "courier-scheduler", "{text}");
            Some(time.to_owned())
        })
        .collect()
}

async fn send(courier: &Courier, method: Method, path: &str, body: &Value) -> (StatusCode, String) {
    let resp = courier
        .admin(method.clone(), path)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

async fn schedules(courier: &Courier) -> Vec<Value> {
    let list = courier.admin_json(Method::GET, "/system/schedules").await;
    list.as_array()
        .unwrap_or_else(|| panic!("/system/schedules is not an array: {list}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_scheduled_every_two_seconds_fires_at_least_twice_within_five_seconds() {
    let courier = Courier::start().await;
    courier.deploy(&scheduled("tick", "*/2 * * * * *")).await;
    let deployed = Instant::now();
    let times = eventually(
        Duration::from_secs(5),
        "two scheduled runs of tick",
        || async {
            let times = fires(&courier, "tick").await;
            (times.len() >= 2).then_some(times)
        },
    )
    .await;
    assert!(deployed.elapsed() <= Duration::from_secs(5));
    let parsed: Vec<_> = times.iter().map(|t| parse_rfc3339(t)).collect();
    for (t, text) in parsed.iter().zip(&times) {
        assert_eq!(t.second() % 2, 0, "fired at {text}, not an even second");
        assert_eq!(t.nanosecond(), 0, "{text}");
    }
    let mut sorted = parsed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        parsed.len(),
        "a scheduled time ran twice: {times:?}"
    );
    let metrics = courier.metrics().await;
    let fired = metric_sum(
        &metrics,
        "scheduler_fires_total",
        &[("function_name", "tick.openfaas-fn")],
    );
    assert!(
        fired.is_some_and(|n| n >= 2.0),
        "scheduler_fires_total: {fired:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_of_the_schedule_takes_effect() {
    let courier = Courier::start().await;
    // Once a year: nothing fires during the test.
    courier.deploy(&scheduled("tick", "0 0 0 1 1 *")).await;
    courier.wait_ready("tick", DEFAULT_NAMESPACE, READY).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fires(&courier, "tick").await.is_empty());

    let (status, body) = send(
        &courier,
        Method::PUT,
        "/system/functions",
        &scheduled("tick", "* * * * * *"),
    )
    .await;
    assert!(status.is_success(), "update answered {status}: {body}");
    eventually(
        Duration::from_secs(8),
        "runs on the new schedule",
        || async { (fires(&courier, "tick").await.len() >= 2).then_some(()) },
    )
    .await;
    let listed = eventually(
        Duration::from_secs(3),
        "the new schedule listed",
        || async {
            schedules(&courier)
                .await
                .into_iter()
                .find(|s| s["function"] == "tick" && s["schedule"] == "* * * * * *")
        },
    )
    .await;
    assert_eq!(listed["namespace"], DEFAULT_NAMESPACE);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_the_function_stops_its_fires() {
    let courier = Courier::start().await;
    courier.deploy(&scheduled("tick", "* * * * * *")).await;
    eventually(Duration::from_secs(8), "a first run", || async {
        (!fires(&courier, "tick").await.is_empty()).then_some(())
    })
    .await;

    let (status, body) = send(
        &courier,
        Method::DELETE,
        "/system/functions",
        &json!({ "functionName": "tick", "namespace": DEFAULT_NAMESPACE }),
    )
    .await;
    assert!(status.is_success(), "delete answered {status}: {body}");
    eventually(
        Duration::from_secs(3),
        "tick gone from /system/schedules",
        || async {
            (!schedules(&courier)
                .await
                .iter()
                .any(|s| s["function"] == "tick"))
            .then_some(())
        },
    )
    .await;
    // `/system/schedules` is read from the function list; the scheduler follows that list on
    // its own round and drops a removed schedule's series then. A fire after that would bring
    // the series back.
    let labels = [("function_name", "tick.openfaas-fn")];
    eventually(
        Duration::from_secs(5),
        "the scheduler dropping tick's series",
        || async {
            metric_sum(&courier.metrics().await, "scheduler_fires_total", &labels)
                .is_none()
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = metric_sum(&courier.metrics().await, "scheduler_fires_total", &labels);
    assert_eq!(later, None, "tick kept firing after removal");
}

#[tokio::test(flavor = "multi_thread")]
async fn system_schedules_lists_each_scheduled_function_with_its_next_five_times() {
    let courier = Courier::start().await;
    courier
        .deploy(&scheduled("report", "CRON_TZ=Europe/Berlin 0 9 * * 1-5"))
        .await;
    courier.deploy(&scheduled("tick", "*/2 * * * * *")).await;
    courier.deploy(&fork_function("plain", "cat")).await;
    let list = eventually(Duration::from_secs(3), "two schedules listed", || async {
        let list = schedules(&courier).await;
        (list.len() == 2).then_some(list)
    })
    .await;
    let report = list
        .iter()
        .find(|s| s["function"] == "report")
        .unwrap_or_else(|| panic!("report missing: {list:?}"));
    assert_eq!(report["namespace"], DEFAULT_NAMESPACE);
    assert_eq!(report["schedule"], "CRON_TZ=Europe/Berlin 0 9 * * 1-5");
    assert_eq!(report["timezone"], "Europe/Berlin");
    let next: Vec<_> = report["next"]
        .as_array()
        .unwrap_or_else(|| panic!("next is not an array: {report}"))
        .iter()
        .map(|t| parse_rfc3339(t.as_str().expect("an RFC 3339 string")))
        .collect();
    assert_eq!(next.len(), 5, "{report}");
    assert!(next.windows(2).all(|w| w[0] < w[1]), "{report}");
    assert!(next[0] > time::OffsetDateTime::now_utc(), "{report}");
    for t in &next {
        assert!(
            !matches!(t.weekday(), time::Weekday::Saturday | time::Weekday::Sunday),
            "1-5 must mean Monday to Friday: {report}"
        );
        // 09:00 in Berlin is 07:00 or 08:00 UTC.
        assert!([7, 8].contains(&t.hour()) && t.minute() == 0, "{report}");
    }
    let tick = list
        .iter()
        .find(|s| s["function"] == "tick")
        .expect("tick listed");
    assert_eq!(tick["timezone"], "UTC");
    assert_eq!(tick["next"].as_array().map(Vec::len), Some(5), "{tick}");

    let table = run_cli(
        {
            let mut cmd = courier.cli();
            cmd.arg("schedules");
            cmd
        },
        None,
    )
    .await;
    table.assert_success("courier schedules");
    assert!(table.stdout.contains("report"), "{table}");
    assert!(table.stdout.contains("Europe/Berlin"), "{table}");
    assert!(table.stdout.contains("*/2 * * * * *"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_schedule_is_refused_at_deploy_time() {
    let courier = Courier::start().await;
    let (status, body) = send(
        &courier,
        Method::POST,
        "/system/functions",
        &scheduled("bad", "0 9 * *"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("expected 5 or 6 fields, got 4"), "{body}");
    assert!(courier.status("bad", DEFAULT_NAMESPACE).await.is_none());

    let (status, body) = send(
        &courier,
        Method::POST,
        "/system/functions",
        &scheduled("zoned", "CRON_TZ=Mars/Olympus_Mons 0 9 * * *"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("unknown time zone"), "{body}");

    // An update is checked the same way.
    courier.deploy(&scheduled("tick", "@hourly")).await;
    let (status, body) = send(
        &courier,
        Method::PUT,
        "/system/functions",
        &scheduled("tick", "0 0 * * 8"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("day-of-week"), "{body}");
}

/// A `courier scheduler` child process beside `courier up`, both on one JetStream queue.
struct StandaloneScheduler {
    child: tokio::process::Child,
    stdout: std::path::PathBuf,
}

impl StandaloneScheduler {
    fn start(courier: &Courier, queue: &str) -> Self {
        let stdout = courier.scratch_dir().join("scheduler.stdout.log");
        let mut cmd = courier.bare_cli();
        cmd.args([
            "scheduler",
            "--gateway",
            &courier.base_url(),
            "--queue",
            queue,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(courier.scratch_dir().join("second-scheduler"))
        .env("COURIER_BASIC_AUTH_PASSWORD", courier.password())
        .stdout(std::fs::File::create(&stdout).expect("create scheduler stdout"))
        .stderr(std::process::Stdio::null());
        let child = cmd.spawn().expect("spawn courier scheduler");
        Self { child, stdout }
    }

    async fn metrics(&self) -> String {
        let url = eventually(
            Duration::from_secs(10),
            "the scheduler's metrics line",
            || async {
                std::fs::read_to_string(&self.stdout).ok().and_then(|out| {
                    out.lines()
                        .find_map(|l| l.trim().strip_prefix("metrics: ").map(str::to_owned))
                })
            },
        )
        .await;
        courier_e2e::http_client()
            .get(url)
            .send()
            .await
            .expect("GET the scheduler's /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_on_one_queue_run_each_fire_once() {
    let Some(nats) = courier_test_support::nats::NatsServer::start().await else {
        return;
    };
    let courier = Courier::builder()
        .arg("--queue")
        .arg(nats.url())
        .start()
        .await;
    let mut second = StandaloneScheduler::start(&courier, &nats.url());
    let mut function = scheduled("tick", "* * * * * *");
    function["annotations"]["com.courier.schedule.concurrency"] = json!("allow");
    courier.deploy(&function).await;

    // Both schedulers fire every second; the queue stores each scheduled time once.
    let times = eventually(Duration::from_secs(15), "five runs of tick", || async {
        let times = fires(&courier, "tick").await;
        (times.len() >= 5).then_some(times)
    })
    .await;
    let mut distinct = times.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), times.len(), "a fire ran twice: {times:?}");

    // Both really fired: between them, the one that came second was told "duplicate".
    let standalone = second.metrics().await;
    let in_up = courier.metrics().await;
    let duplicates = |text: &str| {
        metric_sum(text, "scheduler_skips_total", &[("reason", "duplicate")]).unwrap_or(0.0)
    };
    let fired = metric_sum(&standalone, "scheduler_fires_total", &[]).unwrap_or(0.0);
    assert!(
        fired + duplicates(&standalone) >= 3.0,
        "the standalone scheduler did not fire:\n{standalone}"
    );
    assert!(
        duplicates(&standalone) + duplicates(&in_up) >= 2.0,
        "no fire was refused as a duplicate:\n{standalone}\n{in_up}"
    );
    let _ = second.child.kill().await;
}
