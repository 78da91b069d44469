//! The dashboard's pages as server-rendered HTML shells: the layout (title, navigation), each
//! page's headings, forms and empty tables, and the data attributes the script reads. The
//! data itself is fetched by `assets/app.js` from the gateway's JSON API, so every page shows
//! exactly what `/system/*` serves.
//!
//! Knows page names and element ids; never reads functions, the ledger or the queue.

use super::escape::escape;

/// One page of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Page {
    /// Every function, with scale, remove and deploy.
    Functions,
    /// One function: invoke form, logs, spec.
    Function {
        /// The function's name (validated).
        name: String,
        /// Its namespace (validated).
        namespace: String,
    },
    /// The invocation ledger.
    Calls,
    /// Dead-lettered calls.
    DeadLetters,
    /// The queue's figures.
    Queue,
    /// Cron schedules and their next fire times.
    Schedules,
    /// Topics and the functions subscribed to them.
    Connectors,
}

/// The navigation: path under `/ui/`, label and the page it selects.
const NAV: [(&str, &str); 6] = [
    ("functions", "Functions"),
    ("calls", "Calls"),
    ("dead-letters", "Dead letters"),
    ("queue", "Queue"),
    ("schedules", "Schedules"),
    ("connectors", "Connectors"),
];

impl Page {
    /// The page a `/ui/{slug}` path names, or `None`.
    pub(crate) fn from_slug(slug: &str) -> Option<Self> {
        Some(match slug {
            "" | "functions" => Self::Functions,
            "calls" => Self::Calls,
            "dead-letters" => Self::DeadLetters,
            "queue" => Self::Queue,
            "schedules" => Self::Schedules,
            "connectors" => Self::Connectors,
            _ => return None,
        })
    }

    /// The navigation entry this page belongs to.
    fn slug(&self) -> &'static str {
        match self {
            Self::Functions | Self::Function { .. } => "functions",
            Self::Calls => "calls",
            Self::DeadLetters => "dead-letters",
            Self::Queue => "queue",
            Self::Schedules => "schedules",
            Self::Connectors => "connectors",
        }
    }

    /// The `<title>` (unescaped).
    fn title(&self) -> String {
        match self {
            Self::Functions => "Functions".into(),
            Self::Function { name, namespace } => format!("{name}.{namespace}"),
            Self::Calls => "Calls".into(),
            Self::DeadLetters => "Dead letters".into(),
            Self::Queue => "Queue".into(),
            Self::Schedules => "Schedules".into(),
            Self::Connectors => "Connectors".into(),
        }
    }

    /// The whole document; `csrf` is the session's token when the person logged in with the
    /// form (the script sends it with every write; the logout form carries it).
    pub(crate) fn render(&self, csrf: Option<&str>) -> String {
        let nav: String = NAV
            .iter()
            .map(|(slug, label)| {
                let current = if *slug == self.slug() {
                    r#" aria-current="page""#
                } else {
                    ""
                };
                format!(r#"<a href="/ui/{slug}"{current}>{label}</a>"#)
            })
            .collect();
        let (data, body) = match self {
            Self::Function { name, namespace } => (
                format!(
                    r#" data-function="{}" data-namespace="{}""#,
                    escape(name),
                    escape(namespace)
                ),
                function_body(name, namespace),
            ),
            _ => (String::new(), self.body().to_owned()),
        };
        let (csrf_meta, logout) = match csrf {
            Some(token) => (
                format!(
                    r#"<meta name="courier-csrf" content="{}">
"#,
                    escape(token)
                ),
                format!(
                    r#"<form class="logout" method="post" action="/ui/logout"><input type="hidden" name="csrf" value="{}"><button id="logout" type="submit">Log out</button></form>"#,
                    escape(token)
                ),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Courier</title>
{csrf_meta}<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/assets/app.css">
<script src="/ui/assets/app.js" defer></script>
</head>
<body data-page="{page}"{data}>
<header><a class="brand" href="/ui/">Courier</a><nav>{nav}</nav>{logout}</header>
<main>
<p id="error" class="error" role="alert" hidden></p>
{body}
</main>
</body>
</html>
"#,
            title = escape(&self.title()),
            page = match self {
                Self::Function { .. } => "function",
                other => other.slug(),
            },
        )
    }

    /// The page's own markup (every page but `Function`, which carries its name).
    fn body(&self) -> &'static str {
        match self {
            Self::Functions => FUNCTIONS,
            Self::Function { .. } => "",
            Self::Calls => CALLS,
            Self::DeadLetters => DEAD_LETTERS,
            Self::Queue => QUEUE,
            Self::Schedules => SCHEDULES,
            Self::Connectors => CONNECTORS,
        }
    }
}

/// The login form, with `message` above it after a failed attempt; `next` is where a login
/// goes (already checked by `login::safe_next`, escaped here).
pub(crate) fn login(next: &str, message: Option<&str>) -> String {
    let message = message
        .map(|m| {
            format!(
                r#"<p id="login-error" class="error" role="alert">{}</p>"#,
                escape(m)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Courier</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/assets/app.css">
</head>
<body data-page="login">
<header><span class="brand">Courier</span></header>
<main class="login">
<h1>Log in</h1>
{message}
<form id="login-form" method="post" action="/ui/login">
<input type="hidden" name="next" value="{next}">
<label>User <input id="login-user" name="user" value="admin" autocomplete="username" required spellcheck="false"></label>
<label>Password <input id="login-password" name="password" type="password" autocomplete="current-password" required autofocus></label>
<button id="login-button" type="submit">Log in</button>
</form>
<p class="muted">The admin user of the gateway; <code>courier up</code> keeps the password in <code>courier-data/secrets/basic-auth-password</code>.</p>
</main>
</body>
</html>
"#,
        next = escape(next),
    )
}

fn function_body(name: &str, namespace: &str) -> String {
    let name = escape(name);
    let namespace = escape(namespace);
    format!(
        r#"<h1>{name}<span class="muted">.{namespace}</span></h1>
<dl class="figures" id="summary"></dl>
<figure class="rate">
<svg id="rate-chart" class="sparkline" viewBox="0 0 300 40" preserveAspectRatio="none" role="img" aria-label="requests per second, last two minutes"></svg>
<figcaption>Requests/s over the last two minutes (from the gateway's counters, every 2 s): <strong id="rate-now">…</strong></figcaption>
</figure>
<div class="columns">
<section>
<h2>Invoke</h2>
<form id="invoke-form">
<label>Method <select id="invoke-method"><option>POST</option><option>GET</option><option>PUT</option><option>PATCH</option><option>DELETE</option></select></label>
<label>Path <input id="invoke-path" value="/" spellcheck="false"></label>
<label>Mode <select id="invoke-mode"><option value="sync">synchronous</option><option value="async">asynchronous (queued)</option></select></label>
<label class="wide"><span>Headers, one <code>Name: value</code> a line</span><textarea id="invoke-headers" rows="2" spellcheck="false"></textarea></label>
<label class="wide">Body <textarea id="invoke-body" rows="4" spellcheck="false"></textarea></label>
<button id="invoke-button" type="submit">Invoke</button>
</form>
<div id="invoke-result" hidden>
<p><strong id="invoke-status"></strong> <span id="invoke-duration" class="muted"></span> <a id="invoke-call" hidden></a></p>
<pre id="invoke-response"></pre>
<table id="invoke-response-headers" class="compact"><tbody></tbody></table>
</div>
</section>
<section>
<h2>Logs <span class="muted" id="logs-updated"></span></h2>
<pre id="logs" class="logs"></pre>
</section>
</div>
<section>
<h2>Spec</h2>
<pre id="spec"></pre>
</section>"#
    )
}

const FUNCTIONS: &str = r#"<h1>Functions</h1>
<table id="functions">
<thead><tr><th>Name</th><th>Namespace</th><th>Mode</th><th>Replicas<br><span class="muted">ready/desired</span></th><th>Invocations</th><th>Error rate</th><th>p50</th><th>Deployed</th><th>Scale</th><th></th></tr></thead>
<tbody></tbody>
</table>
<p id="functions-empty" class="muted" hidden>No functions deployed.</p>
<details id="deploy">
<summary>Deploy from a stack file</summary>
<p class="muted">Paste a stack file, the YAML <code>courier up -f</code> and <code>courier deploy -f</code> read (faas-cli's <code>stack.yml</code>; a function's command is <code>fprocess</code> or <code>environment.fprocess</code>). Functions that exist are updated.</p>
<textarea id="deploy-spec" rows="9" spellcheck="false">functions:
  hello:
    fprocess: echo hello
    labels:
      com.openfaas.scale.min: 1
</textarea>
<p><button id="deploy-button" type="button">Deploy</button></p>
<pre id="deploy-result" hidden></pre>
</details>"#;

const CALLS: &str = r#"<h1>Calls</h1>
<form id="calls-filter" class="filters">
<label>Function <input id="filter-function" placeholder="name or name.namespace" spellcheck="false"></label>
<label>State <select id="filter-state"><option value="">any</option><option>queued</option><option>running</option><option>retrying</option><option>succeeded</option><option>failed</option><option>dead-lettered</option><option>cancelled</option></select></label>
<button type="submit">Filter</button>
</form>
<section id="call-detail" hidden>
<h2>Call <code id="call-id"></code></h2>
<dl class="figures" id="call-summary"></dl>
<h3>Attempts</h3>
<svg id="call-timeline" class="timeline-chart" viewBox="0 0 640 40" role="img" aria-label="the call's attempts on a time line"></svg>
<ol id="call-attempts" class="timeline"></ol>
<h3>Result</h3>
<pre id="call-result" class="muted">—</pre>
<p><button id="call-cancel" type="button">Cancel this call</button> <span id="call-cancel-result"></span></p>
</section>
<table id="calls">
<thead><tr><th>Call</th><th>Function</th><th>State</th><th>Source</th><th>Attempts</th><th>Created</th><th>Updated</th></tr></thead>
<tbody></tbody>
</table>
<p id="calls-empty" class="muted" hidden>No calls match.</p>"#;

const DEAD_LETTERS: &str = r#"<h1>Dead letters</h1>
<p><button id="purge" type="button">Purge all</button> <button id="purge-confirm" type="button" class="danger" hidden>Really purge every dead letter</button> <span id="purge-result"></span></p>
<table id="dead-letters">
<thead><tr><th>Call</th><th>Function</th><th>Attempts</th><th>Last status</th><th>Error</th><th>Failed at</th><th></th></tr></thead>
<tbody></tbody>
</table>
<p id="dead-letters-empty" class="muted" hidden>No dead letters.</p>
<section id="dead-letter-detail" hidden>
<h2>Dead letter <code id="dead-letter-id"></code></h2>
<pre id="dead-letter-request"></pre>
</section>"#;

const QUEUE: &str = r#"<h1>Queue</h1>
<dl class="figures big">
<dt title="Messages stored and not yet acknowledged: waiting, being invoked, or waiting for a retry">Depth</dt><dd id="queue-pending">…</dd>
<dt title="Calls this process's queue worker is invoking now">In flight</dt><dd id="queue-in-flight">…</dd>
<dt title="Age of the oldest call the ledger shows queued, running or retrying">Oldest waiting</dt><dd id="queue-oldest">…</dd>
<dt title="Messages the worker settled (acknowledged or dead-lettered) per second, over the last 10 seconds">Worker throughput</dt><dd id="queue-throughput">…</dd>
<dt title="Messages the worker settled since it started">Settled</dt><dd id="queue-processed">…</dd>
<dt>Calls running</dt><dd id="queue-running">…</dd>
<dt>Calls retrying</dt><dd id="queue-retrying">…</dd>
<dt>Dead letters</dt><dd id="queue-dead-letters">…</dd>
</dl>
<svg id="queue-depth-chart" class="sparkline wide" viewBox="0 0 600 60" preserveAspectRatio="none" role="img" aria-label="queue depth, last two minutes"></svg>
<p class="muted">Depth over the last two minutes. Updated every second. <span id="queue-updated"></span></p>"#;

const SCHEDULES: &str = r#"<h1>Schedules</h1>
<table id="schedules">
<thead><tr><th>Function</th><th>Namespace</th><th>Schedule</th><th>Time zone</th><th>Last fire</th><th>Next fire times (UTC)</th></tr></thead>
<tbody></tbody>
</table>
<p id="schedules-empty" class="muted" hidden>No scheduled functions.</p>
<p class="muted">The last fire and its outcome come from the invocation ledger (the newest call of the function with a cron source).</p>"#;

const CONNECTORS: &str = r#"<h1>Connectors</h1>
<p class="muted">Topics (Kafka topics, AMQP queues, <code>cron-function</code>) from each function's <code>topic</code> annotation, with what the connectors and the scheduler running in this process counted since they started.</p>
<table id="connectors">
<thead><tr><th>Topic</th><th>Functions</th><th title="Kafka: consumer lag summed over partitions; AMQP: messages ready in the queue">Lag / depth</th><th title="Messages the connectors received from this topic or queue">Received</th><th title="Per subscribed function: calls that answered, were queued or dead-lettered (connectors), or fires handed over (scheduler)">Settled</th></tr></thead>
<tbody></tbody>
</table>
<p id="connectors-empty" class="muted" hidden>No function subscribes to a topic.</p>
<p class="muted" id="connectors-note"></p>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_a_title_and_the_script() {
        for slug in [
            "",
            "calls",
            "dead-letters",
            "queue",
            "schedules",
            "connectors",
        ] {
            let page = Page::from_slug(slug).unwrap().render(None);
            assert!(!page.contains("courier-csrf") && !page.contains("/ui/logout"));
            assert!(page.contains("<title>"), "{slug}");
            assert!(page.contains(r#"src="/ui/assets/app.js""#), "{slug}");
        }
        assert_eq!(Page::from_slug("nope"), None);
    }

    #[test]
    fn a_function_page_escapes_what_it_shows() {
        let page = Page::Function {
            name: "<b>".into(),
            namespace: "x\"y".into(),
        }
        .render(None);
        assert!(!page.contains("<b>"));
        assert!(page.contains("&lt;b&gt;.x&quot;y · Courier"));
        assert!(page.contains(r#"data-namespace="x&quot;y""#));
    }

    #[test]
    fn a_session_page_carries_its_token_and_a_logout_form() {
        let page = Page::Calls.render(Some("tok\"en"));
        assert!(page.contains(r#"<meta name="courier-csrf" content="tok&quot;en">"#));
        assert!(page.contains(r#"action="/ui/logout""#));
        assert!(page.contains(r#"name="csrf" value="tok&quot;en""#));
    }

    #[test]
    fn the_login_form_escapes_where_it_goes_and_its_message() {
        let page = login("/ui/calls?a=1&b=\"x", Some("<no>"));
        assert!(page.contains(r#"name="next" value="/ui/calls?a=1&amp;b=&quot;x""#));
        assert!(page.contains("&lt;no&gt;"));
        assert!(!page.contains("app.js"), "the login page needs no script");
        assert!(!login("/ui/", None).contains("login-error"));
    }
}
