//! What survives a restart: one JSON record per function and one file per secret, written
//! atomically (temp file, fsync, rename) under the data directory.
//!
//! ```text
//! <data-dir>/functions/<namespace>/<name>.json    FunctionRecord
//! <data-dir>/function-secrets/<namespace>/<name>  secret bytes, mode 0600
//! <data-dir>/run/<namespace>/<name>/              per-function scratch (secrets copy, tmp)
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use courier_core::{FunctionDeployment, FunctionRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A deployed function as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FunctionRecord {
    /// The deployment exactly as received.
    pub(crate) spec: FunctionDeployment,
    /// The namespace it was deployed to.
    pub(crate) namespace: String,
    /// Creation time, RFC 3339.
    pub(crate) created_at: String,
    /// Desired replicas.
    pub(crate) replicas: u64,
}

/// The data directory layout.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    root: PathBuf,
    run_root: PathBuf,
    /// Keeps the private fallback scratch root alive; removed with the last clone.
    _scratch: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl Store {
    /// The layout under `root`. Per-function scratch directories live in `<root>/run`, unless
    /// another user (the sandbox's) cannot reach into `root`; then in a fresh private
    /// directory under the system temporary directory, removed when Courier stops.
    pub(crate) fn new(root: PathBuf) -> Result<Self> {
        if others_can_traverse(&root) {
            return Ok(Self {
                run_root: root.join("run"),
                root,
                _scratch: None,
            });
        }
        let scratch = tempfile::Builder::new()
            .prefix("courier-run-")
            .tempdir()
            .map_err(|e| Error::io("create directory", std::env::temp_dir(), e))?;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io("chmod", scratch.path(), e))?;
        Ok(Self {
            run_root: scratch.path().to_owned(),
            root,
            _scratch: Some(std::sync::Arc::new(scratch)),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn function_path(&self, f: &FunctionRef) -> PathBuf {
        self.root
            .join("functions")
            .join(&f.namespace)
            .join(format!("{}.json", f.name))
    }

    fn secret_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.root
            .join("function-secrets")
            .join(namespace)
            .join(name)
    }

    /// The per-function scratch directory.
    pub(crate) fn run_dir(&self, f: &FunctionRef) -> PathBuf {
        self.run_root.join(&f.namespace).join(&f.name)
    }

    pub(crate) fn save_function(&self, record: &FunctionRecord) -> Result<()> {
        let f = FunctionRef {
            name: record.spec.service.clone(),
            namespace: record.namespace.clone(),
        };
        let bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        write_atomic(&self.function_path(&f), &bytes, 0o600)
    }

    pub(crate) fn remove_function(&self, f: &FunctionRef) -> Result<()> {
        remove_if_exists(&self.function_path(f))?;
        let run = self.run_dir(f);
        if run.exists() {
            std::fs::remove_dir_all(&run).map_err(|e| Error::io("remove", &run, e))?;
        }
        Ok(())
    }

    pub(crate) fn load_functions(&self) -> Result<Vec<FunctionRecord>> {
        let mut out = Vec::new();
        for ns_dir in list_dir(&self.root.join("functions"))? {
            for file in list_dir(&ns_dir)? {
                if file.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let bytes = std::fs::read(&file).map_err(|e| Error::io("read", &file, e))?;
                let record = serde_json::from_slice(&bytes).map_err(|source| Error::Corrupt {
                    path: file.clone(),
                    source,
                })?;
                out.push(record);
            }
        }
        Ok(out)
    }

    pub(crate) fn secret_exists(&self, namespace: &str, name: &str) -> bool {
        self.secret_path(namespace, name).is_file()
    }

    pub(crate) fn write_secret(&self, namespace: &str, name: &str, value: &[u8]) -> Result<()> {
        write_atomic(&self.secret_path(namespace, name), value, 0o600)
    }

    pub(crate) fn remove_secret(&self, namespace: &str, name: &str) -> Result<()> {
        remove_if_exists(&self.secret_path(namespace, name))
    }

    pub(crate) fn list_secrets(&self, namespace: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = list_dir(&self.root.join("function-secrets").join(namespace))?
            .into_iter()
            .filter(|p| p.is_file())
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Namespaces that hold functions or secrets.
    pub(crate) fn namespaces_in_use(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for dir in ["functions", "function-secrets"] {
            for ns in list_dir(&self.root.join(dir))? {
                if list_dir(&ns)?.is_empty() {
                    continue;
                }
                if let Some(name) = ns.file_name().and_then(|n| n.to_str()) {
                    out.push(name.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// Copies a function's secrets into `dir`, the directory the function sees, owned by
    /// `owner` when the function runs as another host user.
    pub(crate) fn materialize_secrets(
        &self,
        f: &FunctionRef,
        secrets: &[String],
        dir: &Path,
        owner: Option<u32>,
    ) -> Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io("remove", dir, e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("chmod", dir, e))?;
        for name in secrets {
            let from = self.secret_path(&f.namespace, name);
            let bytes = std::fs::read(&from).map_err(|e| Error::io("read", &from, e))?;
            let to = dir.join(name);
            write_atomic(&to, &bytes, 0o400)?;
            if let Some(uid) = owner {
                std::os::unix::fs::chown(&to, Some(uid), Some(uid))
                    .map_err(|e| Error::io("chown", &to, e))?;
            }
        }
        if let Some(uid) = owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(uid))
                .map_err(|e| Error::io("chown", dir, e))?;
        }
        Ok(())
    }
}

/// Whether every directory from `/` down to `dir` lets other users pass (`o+x`).
fn others_can_traverse(dir: &Path) -> bool {
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok().map(|e| e.path())).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read directory", dir, e)),
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().expect("store paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io("write", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    file.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_and_secrets_round_trip_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_owned()).unwrap();
        let record = FunctionRecord {
            spec: FunctionDeployment::test("echo", "cat"),
            namespace: "openfaas-fn".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            replicas: 2,
        };
        store.save_function(&record).unwrap();
        store
            .write_secret("openfaas-fn", "token", b"s3cr3t")
            .unwrap();
        let loaded = store.load_functions().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].spec, record.spec);
        assert_eq!(loaded[0].replicas, 2);
        assert_eq!(store.list_secrets("openfaas-fn").unwrap(), vec!["token"]);
        let mode = std::fs::metadata(store.secret_path("openfaas-fn", "token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let f = FunctionRef::new("echo", None).unwrap();
        let secrets = store.run_dir(&f).join("secrets");
        store
            .materialize_secrets(&f, &["token".into()], &secrets, None)
            .unwrap();
        assert_eq!(std::fs::read(secrets.join("token")).unwrap(), b"s3cr3t");
        store.remove_function(&f).unwrap();
        assert!(store.load_functions().unwrap().is_empty());
        assert_eq!(store.namespaces_in_use().unwrap(), vec!["openfaas-fn"]);
    }
}
