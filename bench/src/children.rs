//! The child processes of a benchmark run. Every child is `kill_on_drop`, so
//! an error or panic never leaves one behind; `shutdown` first asks politely
//! (SIGTERM, so Courier can stop its function processes) and then kills.

use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct Children {
    running: Vec<(&'static str, Child)>,
}

/// Handle to one child in a [`Children`] set.
#[derive(Clone, Copy)]
pub(crate) struct ChildId(usize);

impl Children {
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        command: &mut Command,
    ) -> anyhow::Result<ChildId> {
        let child = command
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}: {:?}", command.as_std()))?;
        self.running.push((name, child));
        Ok(ChildId(self.running.len() - 1))
    }

    /// The child's process id (`None` once it has been waited for).
    pub(crate) fn pid(&self, id: ChildId) -> Option<u32> {
        self.running[id.0].1.id()
    }

    /// Fails if the child has already exited.
    pub(crate) fn ensure_running(&mut self, id: ChildId) -> anyhow::Result<()> {
        let (name, child) = &mut self.running[id.0];
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited early: {status}");
        }
        Ok(())
    }

    /// Fails if any child has exited.
    pub(crate) fn ensure_all_running(&mut self) -> anyhow::Result<()> {
        for id in 0..self.running.len() {
            self.ensure_running(ChildId(id))?;
        }
        Ok(())
    }

    /// Stops every child, newest first.
    pub(crate) async fn shutdown(&mut self) {
        while let Some((name, mut child)) = self.running.pop() {
            if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
                    continue;
                }
                eprintln!("{name} did not stop within {STOP_GRACE:?}; killing it");
            }
            let _ = child.kill().await;
        }
    }
}
