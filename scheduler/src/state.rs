//! The scheduler's memory across restarts: for each schedule, the last fire time it handled
//! (fired, or skipped), so that fires that fell due while it was down can be told apart from
//! fires it already handled.
//!
//! One small JSON file, replaced atomically (written to a temporary file beside it, synced,
//! renamed over it, directory synced), so a crash leaves either the old or the new file:
//!
//! ```json
//! {"version":1,"schedules":{"tick.openfaas-fn":{"schedule":"*/2 * * * * *","last":"2026-01-01T10:00:02Z"}}}
//! ```
//!
//! A record only counts for the same `schedule` text: after an edit, the schedule starts afresh.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format version written (and the only one read).
const VERSION: u32 = 1;

/// Everything the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The file format's version.
    pub version: u32,
    /// Per function (`name.namespace`), the last fire handled.
    pub schedules: BTreeMap<String, Handled>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: VERSION,
            schedules: BTreeMap::new(),
        }
    }
}

/// The last fire handled for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handled {
    /// The `schedule` annotation the fire belonged to.
    pub schedule: String,
    /// The fire's scheduled time.
    #[serde(with = "rfc3339")]
    pub last: DateTime<Utc>,
}

/// Reads and replaces the state file at one path.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// A store for `path` (e.g. `<data-dir>/scheduler/state.json`); nothing is touched yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<State> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(Error::StateRead {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let state: State =
            serde_json::from_slice(&bytes).map_err(|source| Error::StateCorrupt {
                path: self.path.clone(),
                source,
            })?;
        if state.version != VERSION {
            return Err(Error::StateCorrupt {
                path: self.path.clone(),
                source: serde::de::Error::custom(format!(
                    "version {} is not {VERSION}",
                    state.version
                )),
            });
        }
        Ok(state)
    }

    /// Creates the directory when needed and checks it can be written (at start, so that a
    /// bad path fails loudly instead of every later save).
    pub fn prepare(&self) -> Result<()> {
        let write_error = |source| Error::StateWrite {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(write_error)?;
        }
        let probe = self.temporary_path();
        fs::write(&probe, b"").map_err(write_error)?;
        fs::remove_file(&probe).map_err(write_error)
    }

    /// Replaces the state file atomically.
    pub fn save(&self, state: &State) -> Result<()> {
        let write_error = |source| Error::StateWrite {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(state).map_err(|e| write_error(std::io::Error::other(e)))?;
        let temporary = self.temporary_path();
        let mut file = fs::File::create(&temporary).map_err(write_error)?;
        file.write_all(&bytes).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        fs::rename(&temporary, &self.path).map_err(write_error)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; not every filesystem lets a directory be synced.
            if let Ok(dir) = fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    fn temporary_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".tmp");
        self.path.with_file_name(name)
    }
}

mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::view::format_time(*at))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.to_utc())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_missing_file_is_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("scheduler/state.json"));
        assert_eq!(store.load().unwrap(), State::default());
    }

    #[test]
    fn saved_state_loads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("scheduler/state.json"));
        store.prepare().unwrap();
        let mut state = State::default();
        state.schedules.insert(
            "tick.openfaas-fn".to_owned(),
            Handled {
                schedule: "*/2 * * * * *".to_owned(),
                last: at("2026-01-01T10:00:02Z"),
            },
        );
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        let text = fs::read_to_string(store.path()).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"schedules":{"tick.openfaas-fn":{"schedule":"*/2 * * * * *","last":"2026-01-01T10:00:02Z"}}}"#
        );
        let names: Vec<_> = fs::read_dir(dir.path().join("scheduler"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_corrupt_file_is_reported_not_guessed_at() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.json"));
        fs::write(store.path(), "{not json").unwrap();
        assert!(matches!(store.load(), Err(Error::StateCorrupt { .. })));
        fs::write(store.path(), r#"{"version":2,"schedules":{}}"#).unwrap();
        assert!(matches!(store.load(), Err(Error::StateCorrupt { .. })));
    }

    #[test]
    fn prepare_fails_when_the_directory_cannot_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let store = StateStore::new(blocker.join("state.json"));
        assert!(matches!(store.prepare(), Err(Error::StateWrite { .. })));
    }
}
