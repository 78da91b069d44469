//! A small WebDriver client driving a real headless Chromium through `chromedriver`: just
//! what the dashboard's browser tests need (navigate, find by CSS, click, type, read text, run
//! a script, take a screenshot), over the W3C WebDriver protocol with reqwest and serde_json,
//! so no browser-automation crate joins the dependency graph.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (`scripts/test.sh`
//! installs them); `$COURIER_CHROMIUM` and `$COURIER_CHROMEDRIVER` name others. Without them a
//! test is skipped loudly, or fails when `COURIER_TEST_REQUIRE_BROKERS=1`, like the tests that
//! need a broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key W3C WebDriver names element references by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver may take to answer `/status`.
const DRIVER_STARTUP: Duration = Duration::from_secs(20);

/// How long `wait_for_*` polls by default.
pub const WAIT: Duration = Duration::from_secs(20);

/// The browser window: the dashboard must be readable at this size.
pub const WINDOW: (u32, u32) = (1280, 800);

fn binary(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.exists().then_some(path)
}

/// Chromium and chromedriver, or `None` (after printing why) when the test should be skipped.
/// Panics when they are missing and `COURIER_TEST_REQUIRE_BROKERS=1`.
pub fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = binary("COURIER_CHROMIUM", "/usr/bin/chromium");
    let driver = binary("COURIER_CHROMEDRIVER", "/usr/bin/chromedriver");
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            let reason = "chromium and chromedriver not found (apt-get install chromium \
                          chromium-driver, or set COURIER_CHROMIUM and COURIER_CHROMEDRIVER)";
            if std::env::var("COURIER_TEST_REQUIRE_BROKERS").is_ok_and(|v| v == "1") {
                panic!("{reason}");
            }
            eprintln!(
                "\n*** SKIPPED: {reason}\n*** (COURIER_TEST_REQUIRE_BROKERS=1 makes this a failure)\n"
            );
            None
        }
    }
}

/// Where screenshots go: `$COURIER_UI_SCREENSHOTS`, else `ui-screenshots/` in the target
/// directory the test binary was built in.
pub fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COURIER_UI_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    // A test binary lives in `<target>/<profile>/deps/`.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir)
        .join("ui-screenshots")
}

/// A running chromedriver with one headless Chromium session; both end on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// A reference to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium at [`WINDOW`].
    pub async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = crate::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(resp) = ready
                && let Ok(body) = resp.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(
                started.elapsed() < DRIVER_STARTUP,
                "chromedriver did not become ready on {base}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::Builder::new()
            .prefix("courier-chromium-")
            .tempdir()
            .expect("profile dir");
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-extensions".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": chromium, "args": args },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let created = browser.command("POST", "/session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; answers its `value`, panics on a WebDriver error.
    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|(status, error)| {
                panic!("WebDriver {method} {path} answered {status}: {error}")
            })
    }

    /// One WebDriver command; answers its `value`, or the status and error it answered.
    async fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Value,
    ) -> Result<Value, (reqwest::StatusCode, Value)> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let resp = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = resp.status();
        let answer: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON: {e}"));
        if status.is_success() {
            Ok(answer["value"].clone())
        } else {
            Err((status, answer["value"].clone()))
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url })).await;
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        let title = self.command("GET", "/title", Value::Null).await;
        title.as_str().unwrap_or_default().to_owned()
    }

    /// The elements matching `css` now (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .command(
                "POST",
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            assert!(
                started.elapsed() < WAIT,
                "no element {css:?} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) {
        self.command("POST", &format!("/element/{}/click", element.0), json!({}))
            .await;
    }

    /// Clears `element` (an input or textarea) and types `text` into it.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.command("POST", &format!("/element/{}/clear", element.0), json!({}))
            .await;
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        let text = self
            .command("GET", &format!("/element/{}/text", element.0), Value::Null)
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The rendered text of `element`, or `None` when the page replaced it meanwhile (a
    /// re-render by the page's polling).
    async fn text_unless_stale(&self, element: &Element) -> Option<String> {
        match self
            .try_command("GET", &format!("/element/{}/text", element.0), Value::Null)
            .await
        {
            Ok(text) => Some(text.as_str().unwrap_or_default().to_owned()),
            Err((_, error)) if error["error"] == "stale element reference" => None,
            Err((status, error)) => {
                panic!(
                    "WebDriver GET /element/{}/text answered {status}: {error}",
                    element.0
                )
            }
        }
    }

    /// The rendered text of the first element matching `css` (found again when the page
    /// re-rendered it between the find and the read).
    pub async fn text_of(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let element = self.find(css).await;
            if let Some(text) = self.text_unless_stale(&element).await {
                return text;
            }
            assert!(
                started.elapsed() < WAIT,
                "{css:?} kept being replaced for {WAIT:?}"
            );
        }
    }

    /// Waits until the text of the first element matching `css` contains `needle`, and
    /// returns that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        self.wait_for_text_within(css, needle, WAIT).await
    }

    /// [`Self::wait_for_text`], waiting up to `wait`.
    pub async fn wait_for_text_within(&self, css: &str, needle: &str, wait: Duration) -> String {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next()
                && let Some(text) = self.text_unless_stale(&e).await
            {
                last = text;
                if last.contains(needle) {
                    return last;
                }
            }
            if started.elapsed() >= wait {
                let page = self
                    .execute(
                        "return [document.title, location.href, (document.getElementById('error') || {}).textContent, window.__courierErrors, document.querySelector('main').innerHTML.slice(0, 1500)];",
                        json!([]),
                    )
                    .await;
                panic!(
                    "{css:?} did not show {needle:?} within {wait:?}; it shows {last:?}; page: {page}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and answers its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// The errors the page's script recorded (`window.__courierErrors`), plus any the browser
    /// logged at SEVERE level (uncaught errors, refused scripts).
    pub async fn script_errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .execute(
                "return window.__courierErrors || ['app.js did not load'];",
                json!([]),
            )
            .await
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        let log = self
            .command("POST", "/se/log", json!({ "type": "browser" }))
            .await;
        for entry in log.as_array().into_iter().flatten() {
            if entry["level"] == "SEVERE" {
                errors.push(entry["message"].as_str().unwrap_or_default().to_owned());
            }
        }
        errors
    }

    /// Saves a PNG of the window as `<screenshot_dir>/<name>.png` and answers its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.command("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        println!("screenshot: {}", path.display());
        path
    }
}

/// `DELETE /session/{id}` over a plain socket (drop cannot await), bounded by timeouts.
fn delete_session(base: &str, session: &str) {
    use std::io::{Read, Write};
    let Some(addr) = base.strip_prefix("http://") else {
        return;
    };
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return;
    };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; chromedriver itself is killed.
        if !self.session.is_empty() {
            delete_session(&self.base, &self.session);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
