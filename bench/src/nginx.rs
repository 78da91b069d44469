//! nginx as the upstream: `courier-bench nginx --port P --dir D` writes a one-location
//! config (`return 200 'ok'` to anything, `/_/health` included) into `D` and replaces itself
//! with nginx in the foreground, so the orchestrator, or Courier running it as an HTTP-mode
//! function with `$PORT`, owns the process. One process (`master_process off`: nothing is
//! left behind if it is killed), no access log, keep-alive without a request cap (a proxy's
//! pooled connections are never recycled mid-run).

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Where Debian puts the binary; `PATH` is searched first.
const DEBIAN_NGINX: &str = "/usr/sbin/nginx";

/// The nginx binary, or an error that says how to get it.
pub(crate) fn binary() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    match on_path {
        Some(path) => Ok(path),
        None if Path::new(DEBIAN_NGINX).is_file() => Ok(PathBuf::from(DEBIAN_NGINX)),
        None => bail!(
            "nginx not found on PATH or at {DEBIAN_NGINX}: install it (apt-get install nginx) \
             or pass --upstream hyper"
        ),
    }
}

/// The config for a server on 127.0.0.1:`port` keeping its files in `dir`.
fn config(port: u16, dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process off;
pid {dir}/nginx-{port}.pid;
error_log {dir}/nginx-{port}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {dir}/nginx-{port}-body;
    proxy_temp_path {dir}/nginx-{port}-proxy;
    fastcgi_temp_path {dir}/nginx-{port}-fastcgi;
    uwsgi_temp_path {dir}/nginx-{port}-uwsgi;
    scgi_temp_path {dir}/nginx-{port}-scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 'ok'; }}
    }}
}}
"
    )
}

/// Writes the config and becomes nginx; returns only on failure.
pub(crate) fn exec(port: u16, dir: &Path) -> anyhow::Result<()> {
    let nginx = binary()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf = dir.join(format!("nginx-{port}.conf"));
    std::fs::write(&conf, config(port, dir))
        .with_context(|| format!("writing {}", conf.display()))?;
    let error = std::process::Command::new(&nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join(format!("nginx-{port}.error.log")))
        .exec();
    Err(error).with_context(|| format!("starting {}", nginx.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_loopback_and_answers_everything() {
        let text = config(4321, Path::new("/tmp/x"));
        assert!(text.contains("listen 127.0.0.1:4321;"));
        assert!(text.contains("location / { default_type text/plain; return 200 'ok'; }"));
        assert!(text.contains("pid /tmp/x/nginx-4321.pid;"));
        assert!(text.contains("daemon off;"));
    }
}
