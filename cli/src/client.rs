//! The HTTP client every client command uses: the gateway URL, the admin password found next
//! to `courier up`, and errors that tell a person what to do.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

/// Where the gateway is and how to log in to it.
#[derive(Debug, Clone, Args)]
pub(crate) struct GatewayArgs {
    /// The gateway's URL.
    #[arg(
        long,
        env = "COURIER_GATEWAY",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) gateway: String,
    /// The data directory of `courier up`, where the admin password is read from
    /// (`secrets/basic-auth-password`) when COURIER_BASIC_AUTH_PASSWORD is not set.
    #[arg(
        long,
        env = "COURIER_DATA_DIR",
        default_value = "./courier-data",
        global = true
    )]
    pub(crate) data_dir: PathBuf,
    /// The admin password (prefer the environment variable; flags show up in `ps`).
    #[arg(
        long,
        env = "COURIER_BASIC_AUTH_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub(crate) password: Option<String>,
    /// The function namespace.
    #[arg(
        long,
        short = 'n',
        env = "COURIER_NAMESPACE",
        default_value = "openfaas-fn",
        global = true
    )]
    pub(crate) namespace: String,
}

/// A client of one gateway.
#[derive(Debug)]
pub(crate) struct Gateway {
    base: String,
    password: Option<String>,
    http: reqwest::Client,
    pub(crate) namespace: String,
}

impl Gateway {
    pub(crate) fn new(args: &GatewayArgs) -> Result<Self> {
        let password = crate::password::given_or_read(args.password.clone(), &args.data_dir)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: args.gateway.trim_end_matches('/').to_owned(),
            password,
            http,
            namespace: args.namespace.clone(),
        })
    }

    /// A request to `path`, authenticated when a password is known.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.password {
            Some(p) => rb.basic_auth("admin", Some(p)),
            None => rb,
        }
    }

    /// A request to a function (`/function/...`): never carries the admin credentials, which
    /// the function would otherwise receive.
    pub(crate) fn function_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends a request with a timeout, turning connection failures into advice.
    pub(crate) async fn send(
        &self,
        rb: RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        let rb = match timeout {
            Some(t) => rb.timeout(t),
            None => rb,
        };
        let resp = rb.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "cannot reach the gateway at {} (is `courier up` running?)",
                    self.base
                )
            } else if e.is_timeout() {
                anyhow!("the gateway at {} did not answer in time", self.base)
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            bail!(
                "the gateway refused the credentials: set COURIER_BASIC_AUTH_PASSWORD, or point \
                 --data-dir at the data directory of `courier up`"
            );
        }
        Ok(resp)
    }

    /// Sends a management request (30 s timeout) and fails on a non-2xx answer.
    pub(crate) async fn expect_ok(&self, rb: RequestBuilder, what: &str) -> Result<Response> {
        let resp = self.send(rb, Some(Duration::from_secs(30))).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            bail!("{what}: the gateway answered {status}: {}", body.trim());
        }
        Ok(resp)
    }
}
