//! Process groups: every function process starts its own group, and the whole group goes when
//! the replica stops or a request ends, so no grandchild outlives its function.

use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a replica gets between SIGTERM and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(3);

/// Kills a process group with SIGKILL when dropped.
#[derive(Debug)]
pub(crate) struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    /// Guards the group led by `pid` (spawned with `process_group(0)`).
    pub(crate) fn new(pid: Option<u32>) -> Self {
        Self {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
        }
    }

    /// Sends `signal` to the group.
    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, signal);
        }
    }

    /// Asks the group to stop, then kills it after the grace period unless `child` exits.
    pub(crate) async fn stop(&mut self, child: &mut tokio::process::Child) {
        self.signal(Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            self.signal(Signal::SIGKILL);
            let _ = child.wait().await;
        }
        // Whatever else is left in the group goes too.
        self.signal(Signal::SIGKILL);
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}
