//! The `sync` orchestrator: starts the upstream, the baseline proxy and
//! Courier as child processes, deploys the upstream into Courier as an
//! HTTP-mode function, then runs the load generator against the three
//! variants interleaved over several rounds and reports medians and ratios.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::Uri;
use serde_json::{Value, json};
use tokio::{process::Command, runtime::Handle, time::Instant};

use crate::{
    children::{ChildId, Children},
    load::{self, LoadConfig},
    report::{self, Report, Run, Variant},
};

/// The name the upstream is deployed under in Courier.
pub(crate) const FUNCTION: &str = "bench";

#[derive(clap::Args)]
pub(crate) struct SyncArgs {
    /// Concurrent keep-alive connections of the closed-loop load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Recorded length of each run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unrecorded warm-up at the start of each run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Rounds; each round runs every variant once, in order a, b, c.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Size of each request body in bytes.
    #[arg(long, default_value_t = 128)]
    body_size: usize,
    /// The courier binary [default: `courier` next to this executable].
    #[arg(long)]
    courier: Option<PathBuf>,
    /// Run only a (direct) and b (proxy).
    #[arg(long)]
    skip_courier: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads of the load generator's runtime [default: one per CPU].
    #[arg(long)]
    pub(crate) load_threads: Option<usize>,
    /// A label of the function Courier proxies to, `KEY=VALUE`, repeatable (e.g.
    /// `com.openfaas.scale.max=1` pins it at one replica).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The upstreams to measure against, one after the other: `hyper` (this binary's fast
    /// upstream) and/or `nginx` (Debian's nginx answering `200 ok`; must be installed).
    #[arg(long, value_delimiter = ',', default_value = "hyper,nginx")]
    upstream: Vec<UpstreamKind>,
}

/// What answers the requests at the end of every path.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum UpstreamKind {
    /// `courier-bench upstream`: hyper answering 200 and 64 bytes.
    Hyper,
    /// `courier-bench nginx`: nginx (one process) answering `200 ok`.
    Nginx,
}

impl UpstreamKind {
    fn name(self) -> &'static str {
        match self {
            Self::Hyper => "hyper",
            Self::Nginx => "nginx",
        }
    }

    /// The arguments after this executable that run the upstream on `$PORT`, keeping its files
    /// under `dir`.
    fn command(self, dir: &Path) -> Vec<String> {
        match self {
            Self::Hyper => vec!["upstream".into()],
            Self::Nginx => vec!["nginx".into(), "--dir".into(), dir.display().to_string()],
        }
    }
}

/// One variant's target: where the load generator connects and what it asks for.
struct Target {
    variant: Variant,
    addr: SocketAddr,
    path: &'static str,
}

pub(crate) async fn run(args: SyncArgs, load: Handle) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let exe = std::env::current_exe().context("locating courier-bench itself")?;
    let courier = if args.skip_courier {
        None
    } else {
        let path = args
            .courier
            .clone()
            .unwrap_or_else(|| exe.with_file_name("courier"));
        anyhow::ensure!(
            path.is_file(),
            "courier binary not found at {}: build it (cargo build --release --bin courier), \
             pass --courier PATH, or use --skip-courier",
            path.display()
        );
        Some(path)
    };
    let scratch = tempfile::Builder::new()
        .prefix("courier-bench-")
        .tempdir()?;

    let mut children = Children::default();
    let result = tokio::select! {
        result = bench(&args, &exe, courier.as_deref(), scratch.path(), &mut children, &load) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    children.shutdown().await;
    result
}

async fn bench(
    args: &SyncArgs,
    exe: &Path,
    courier: Option<&Path>,
    scratch: &Path,
    children: &mut Children,
    load: &Handle,
) -> anyhow::Result<()> {
    anyhow::ensure!(!args.upstream.is_empty(), "--upstream names no upstream");
    if args.upstream.contains(&UpstreamKind::Nginx) {
        crate::nginx::binary()?;
    }
    println!(
        "sync: {} connections, {} recorded + {} warm-up per run, {} rounds, {}-byte POST bodies",
        args.connections,
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
        args.rounds,
        args.body_size,
    );
    let mut reports = serde_json::Map::new();
    for &kind in &args.upstream {
        println!("\n## upstream: {}\n", kind.name());
        let dir = scratch.join(kind.name());
        std::fs::create_dir_all(&dir)?;
        let runs = bench_upstream(args, kind, exe, courier, &dir, children, load).await;
        children.shutdown().await;
        if runs.is_err() {
            print_log_tail(&dir.join("courier.log"));
        }
        let runs = runs?;
        let report = Report::new(&runs);
        println!("\n{}", report.markdown());
        reports.insert(kind.name().to_owned(), report.json(&runs, json!({})));
    }
    if let Some(out) = &args.out {
        let config = json!({
            "connections": args.connections,
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "rounds": args.rounds,
            "body_bytes": args.body_size,
            "load_threads": args.load_threads,
            "cpus": std::thread::available_parallelism().map(usize::from).ok(),
            "courier": courier.map(|path| path.display().to_string()),
        });
        let text =
            serde_json::to_string_pretty(&json!({ "config": config, "upstreams": reports }))?;
        std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Starts `kind`'s upstream, the baseline proxy in front of it and Courier with the same
/// upstream deployed as a function, then runs the interleaved rounds.
async fn bench_upstream(
    args: &SyncArgs,
    kind: UpstreamKind,
    exe: &Path,
    courier: Option<&Path>,
    dir: &Path,
    children: &mut Children,
    load: &Handle,
) -> anyhow::Result<Vec<Run>> {
    let http = control_client()?;
    let upstream = start_upstream_kind(&http, children, exe, kind, dir).await?;

    let proxy = free_addr()?;
    let id = children.spawn(
        "proxy",
        Command::new(exe)
            .args(["proxy", "--listen", &proxy.to_string()])
            .args(["--upstream", &upstream.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )?;
    wait_ok(&http, children, id, &format!("http://{proxy}/_/health")).await?;

    let mut targets = vec![
        Target {
            variant: Variant::Direct,
            addr: upstream,
            path: "/",
        },
        Target {
            variant: Variant::Proxy,
            addr: proxy,
            path: "/",
        },
    ];
    let body = Bytes::from(vec![b'x'; args.body_size]);
    if let Some(courier) = courier {
        let fprocess = std::iter::once(exe.display().to_string())
            .chain(kind.command(&dir.join("function")))
            .map(|word| shell_quote(&word))
            .collect::<Vec<_>>()
            .join(" ");
        let labels: serde_json::Map<String, serde_json::Value> = args
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        let addr =
            start_courier(&http, children, courier, (&fprocess, &labels), dir, &body).await?;
        targets.push(Target {
            variant: Variant::Courier,
            addr,
            path: "/function/bench",
        });
    }

    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for target in &targets {
            let config = LoadConfig {
                addr: target.addr,
                path: Uri::from_static(target.path),
                connections: args.connections,
                warmup: args.warmup,
                duration: args.duration,
                body: body.clone(),
            };
            let stats = load.spawn(load::run(config)).await??;
            children.ensure_all_running()?;
            let run = Run {
                round,
                variant: target.variant,
                stats,
            };
            println!("{}", report::run_line(&run, args.rounds));
            runs.push(run);
        }
    }
    Ok(runs)
}

/// Starts `courier up` (state and log under `dir`), deploys `fprocess` as the HTTP-mode
/// function [`FUNCTION`], waits for a ready replica and warms it up. Returns the gateway's
/// address.
async fn start_courier(
    http: &reqwest::Client,
    children: &mut Children,
    courier: &Path,
    (fprocess, labels): (&str, &serde_json::Map<String, serde_json::Value>),
    dir: &Path,
    body: &Bytes,
) -> anyhow::Result<SocketAddr> {
    let addr = free_addr()?;
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let log = std::fs::File::create(dir.join("courier.log"))?;
    let id = children.spawn(
        "courier",
        Command::new(courier)
            .args(["up", "--listen", &addr.to_string(), "--data-dir"])
            .arg(&data_dir)
            .args(["--no-auth", "--sandbox", "off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    let base = format!("http://{addr}");
    wait_ok(http, children, id, &format!("{base}/healthz")).await?;
    deploy_process(http, children, id, &base, (fprocess, labels), body).await?;
    Ok(addr)
}

/// Deploys the hyper upstream into the Courier at `base` (child `id`) as the HTTP-mode
/// function [`FUNCTION`], waits for a ready replica and warms it up with 100 synchronous calls.
pub(crate) async fn deploy(
    http: &reqwest::Client,
    children: &mut Children,
    id: ChildId,
    base: &str,
    exe: &Path,
    body: &Bytes,
) -> anyhow::Result<()> {
    let fprocess = format!("{} upstream", shell_quote(&exe.display().to_string()));
    deploy_process(
        http,
        children,
        id,
        base,
        (&fprocess, &serde_json::Map::new()),
        body,
    )
    .await
}

/// Deploys `fprocess` as the HTTP-mode function [`FUNCTION`] into the Courier at `base`
/// (child `id`), waits for a ready replica and warms it up with 100 synchronous calls.
async fn deploy_process(
    http: &reqwest::Client,
    children: &mut Children,
    id: ChildId,
    base: &str,
    (fprocess, labels): (&str, &serde_json::Map<String, serde_json::Value>),
    body: &Bytes,
) -> anyhow::Result<()> {
    let spec = json!({
        "service": FUNCTION,
        "image": "bench:latest",
        "envProcess": fprocess,
        "envVars": { "mode": "http" },
        "labels": labels,
    });
    let response = http
        .post(format!("{base}/system/functions"))
        .json(&spec)
        .send()
        .await
        .context("deploying the bench function")?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("deploying the bench function: {status}: {text}");
    }

    let url = format!("{base}/system/function/{FUNCTION}");
    poll(
        "an available replica of the bench function",
        children,
        id,
        || {
            let request = http.get(&url);
            async move {
                let Ok(response) = request.send().await else {
                    return false;
                };
                if !response.status().is_success() {
                    return false;
                }
                let info: Option<Value> = response.json().await.ok();
                info.and_then(|info| info["availableReplicas"].as_u64())
                    .is_some_and(|replicas| replicas >= 1)
            }
        },
    )
    .await?;

    let url = format!("{base}/function/{FUNCTION}");
    poll("a 2xx from the bench function", children, id, || {
        let request = http.post(&url).body(body.clone());
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await?;
    for _ in 0..100 {
        let status = http.post(&url).body(body.clone()).send().await?.status();
        anyhow::ensure!(
            status.is_success(),
            "warming up the bench function: {status}"
        );
    }
    Ok(())
}

/// Waits for `GET url` to answer 2xx while the child `id` keeps running.
/// The orchestrator's own HTTP client (health checks, deploys): short timeouts, no proxy.
pub(crate) fn control_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// Starts `courier-bench upstream` as a child on a free port and waits until it answers.
pub(crate) async fn start_upstream(
    http: &reqwest::Client,
    children: &mut Children,
    exe: &Path,
) -> anyhow::Result<SocketAddr> {
    start_upstream_kind(http, children, exe, UpstreamKind::Hyper, Path::new(".")).await
}

/// Starts `kind`'s upstream as a child on a free port (its files under `dir`) and waits until
/// it answers.
async fn start_upstream_kind(
    http: &reqwest::Client,
    children: &mut Children,
    exe: &Path,
    kind: UpstreamKind,
    dir: &Path,
) -> anyhow::Result<SocketAddr> {
    let upstream = free_addr()?;
    let id = children.spawn(
        "upstream",
        Command::new(exe)
            .args(kind.command(dir))
            .env("PORT", upstream.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )?;
    wait_ok(http, children, id, &format!("http://{upstream}/_/health")).await?;
    Ok(upstream)
}

pub(crate) async fn wait_ok(
    http: &reqwest::Client,
    children: &mut Children,
    id: ChildId,
    url: &str,
) -> anyhow::Result<()> {
    poll(&format!("GET {url}"), children, id, || {
        let request = http.get(url);
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await
}

/// Polls `check` every 100 ms for up to 30 s, failing early if the child
/// `id` exits.
pub(crate) async fn poll<F, Fut>(
    what: &str,
    children: &mut Children,
    id: ChildId,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    const TIMEOUT: Duration = Duration::from_secs(30);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        children.ensure_running(id)?;
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback address with a port that was free a moment ago.
pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// Quotes `word` for a POSIX shell-like command line, if it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub(crate) fn print_log_tail(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(40)..];
    if !tail.is_empty() {
        eprintln!("--- last lines of the courier log ---");
        for line in tail {
            eprintln!("{line}");
        }
    }
}

/// `KEY=VALUE`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
