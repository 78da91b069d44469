//! How a function's command is started: inside a bubblewrap sandbox (non-root uid, read-only
//! root filesystem, private `/tmp`, secrets at `/var/openfaas/secrets`, the data directory
//! hidden) or, where bubblewrap is missing, directly as a child process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{Error, Result};

/// Where functions see their secrets inside the sandbox.
pub(crate) const SANDBOX_SECRETS_DIR: &str = "/var/openfaas/secrets";

/// The uid and gid functions run as inside the sandbox (`nobody`).
const SANDBOX_ID: &str = "65534";
/// The same, as the host id bubblewrap itself runs as when Courier runs as root, so a
/// function is not host-root behind its user namespace (and cannot read root's files).
pub(crate) const SANDBOX_HOST_ID: u32 = 65534;

/// Whether to sandbox functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Use bubblewrap when it works on this machine, else run unsandboxed (and say so).
    #[default]
    Auto,
    /// Require bubblewrap; refuse to start without it.
    On,
    /// Never sandbox.
    Off,
}

impl std::str::FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "unknown sandbox mode {other:?} (use auto, on or off)"
            )),
        }
    }
}

/// What one process launch needs.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    /// The command and its arguments.
    pub(crate) argv: &'a [String],
    /// The whole environment (nothing is inherited).
    pub(crate) env: &'a [(String, String)],
    /// The host directory holding this function's secrets.
    pub(crate) secrets_dir: &'a Path,
    /// The host scratch directory used as cwd and TMPDIR when unsandboxed.
    pub(crate) scratch_dir: &'a Path,
}

/// The chosen way to start functions.
#[derive(Debug, Clone)]
pub(crate) enum Sandbox {
    /// bubblewrap with the prepared filesystem arguments; `drop_root` when Courier runs as
    /// root and starts bubblewrap as [`SANDBOX_HOST_ID`].
    Bubblewrap {
        bwrap: PathBuf,
        base: Vec<OsString>,
        drop_root: bool,
    },
    /// Plain child processes.
    None,
}

impl Sandbox {
    /// Picks the sandbox for `mode`, probing bubblewrap once.
    pub(crate) fn detect(mode: SandboxMode, data_dir: &Path) -> Result<Self> {
        if mode == SandboxMode::Off {
            return Ok(Self::None);
        }
        let probe = find_in_path("bwrap")
            .ok_or_else(|| "bwrap not found in PATH (apt-get install bubblewrap)".to_owned())
            .and_then(|bwrap| {
                let sandbox = Self::Bubblewrap {
                    base: base_args(data_dir),
                    bwrap,
                    drop_root: nix::unistd::geteuid().is_root(),
                };
                sandbox.probe().map(|()| sandbox)
            });
        match (probe, mode) {
            (Ok(sandbox), _) => Ok(sandbox),
            (Err(why), SandboxMode::On) => Err(Error::SandboxUnavailable(why)),
            (Err(why), _) => {
                tracing::warn!(reason = %why, "Functions run UNSANDBOXED: bubblewrap is not usable.");
                Ok(Self::None)
            }
        }
    }

    /// The host uid that must be able to read a function's staged secrets, when it is not
    /// Courier's own.
    pub(crate) fn secrets_owner(&self) -> Option<u32> {
        match self {
            Self::Bubblewrap {
                drop_root: true, ..
            } => Some(SANDBOX_HOST_ID),
            _ => None,
        }
    }

    /// A short name for `/system/info`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Bubblewrap { .. } => "bubblewrap",
            Self::None => "none",
        }
    }

    /// The secrets directory as the function sees it.
    pub(crate) fn secrets_dir_in_function(&self, host_dir: &Path) -> OsString {
        match self {
            Self::Bubblewrap { .. } => SANDBOX_SECRETS_DIR.into(),
            Self::None => host_dir.as_os_str().to_owned(),
        }
    }

    /// The temporary directory as the function sees it.
    pub(crate) fn tmp_dir_in_function(&self, host_dir: &Path) -> OsString {
        match self {
            Self::Bubblewrap { .. } => "/tmp".into(),
            Self::None => host_dir.as_os_str().to_owned(),
        }
    }

    fn probe(&self) -> std::result::Result<(), String> {
        let dir = std::env::temp_dir();
        let mut cmd = self.std_command(&Launch {
            argv: &["true".to_owned()],
            env: &[("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
            secrets_dir: &dir,
            scratch_dir: &dir,
        });
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "bwrap probe failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("bwrap probe failed: {e}")),
        }
    }

    fn std_command(&self, launch: &Launch<'_>) -> std::process::Command {
        let mut cmd = match self {
            Self::Bubblewrap {
                bwrap,
                base,
                drop_root,
            } => {
                let mut cmd = std::process::Command::new(bwrap);
                if *drop_root {
                    use std::os::unix::process::CommandExt;
                    cmd.uid(SANDBOX_HOST_ID).gid(SANDBOX_HOST_ID);
                }
                cmd.args(base)
                    .arg("--ro-bind")
                    .arg(launch.secrets_dir)
                    .arg(SANDBOX_SECRETS_DIR)
                    .args(["--remount-ro", "/", "--chdir", "/tmp", "--"])
                    .args(launch.argv);
                cmd
            }
            Self::None => {
                let mut cmd = std::process::Command::new(&launch.argv[0]);
                cmd.args(&launch.argv[1..]).current_dir(launch.scratch_dir);
                cmd
            }
        };
        cmd.env_clear().envs(launch.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// A tokio command for `launch`, in its own process group, killed when dropped.
    pub(crate) fn command(&self, launch: &Launch<'_>) -> tokio::process::Command {
        let mut cmd: tokio::process::Command = self.std_command(launch).into();
        cmd.process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// The filesystem half of the bubblewrap command line: the host's root directories bound
/// read-only (without `/tmp`, `/run`, `/proc`, `/dev`, `/sys`, `/home`, `/root`), fresh
/// `/dev`, `/proc` and `/tmp`, an empty `/var/openfaas`, the data directory and Courier's
/// home hidden, all namespaces unshared but the
/// network, every capability dropped, a non-root uid.
fn base_args(data_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &[&std::ffi::OsStr]| args.extend(a.iter().map(|s| s.to_os_string()));
    for dir in [Path::new("/"), Path::new("/var")] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let skip = [
                "/proc",
                "/dev",
                "/tmp",
                "/run",
                "/sys",
                "/var",
                "/var/openfaas",
                // Home directories hold keys and credentials; never visible.
                "/home",
                "/root",
            ];
            if skip.iter().any(|s| path == Path::new(s)) {
                continue;
            }
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&path) {
                        push(&["--symlink".as_ref(), target.as_os_str(), path.as_os_str()]);
                    }
                }
                Ok(_) => push(&["--ro-bind".as_ref(), path.as_os_str(), path.as_os_str()]),
                Err(_) => {}
            }
        }
    }
    push(&[
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
        "--dir".as_ref(),
        "/run".as_ref(),
        "--dir".as_ref(),
        SANDBOX_SECRETS_DIR.as_ref(),
    ]);
    // Hide Courier's own state (the admin password, every function's secrets) and the home
    // directory of the user Courier runs as, wherever they are. Under /tmp, /home or /root
    // they are hidden already.
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for dir in [Some(data_dir.to_owned()), home].into_iter().flatten() {
        if let Ok(dir) = std::fs::canonicalize(&dir)
            && dir != Path::new("/")
            && !["/tmp", "/home", "/root"]
                .iter()
                .any(|h| dir.starts_with(h))
        {
            push(&["--tmpfs".as_ref(), dir.as_os_str()]);
        }
    }
    push(&[
        "--unshare-all".as_ref(),
        "--share-net".as_ref(),
        "--unshare-user".as_ref(),
        "--uid".as_ref(),
        SANDBOX_ID.as_ref(),
        "--gid".as_ref(),
        SANDBOX_ID.as_ref(),
        "--cap-drop".as_ref(),
        "ALL".as_ref(),
        "--die-with-parent".as_ref(),
        "--new-session".as_ref(),
    ]);
    args
}

/// Finds an executable in `PATH`, or checks a path that contains a slash.
pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}
