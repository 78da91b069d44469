//! Whether an HTTP-mode function is short of CPU on this machine, read from Linux's `/proc`:
//! the CPU time of each replica's process tree and the machine's idle time, over a short window.
//!
//! The autoscaler asks before it adds replicas ([`courier_core::Provider::cpu_starved`]): on one
//! machine, more processes of a function whose replicas are already busy on CPU, while no CPU is
//! idle, only compete with each other and with the gateway (BENCHMARKS.md: nginx at 20 replicas
//! on two cores serves 0.53x what one replica does). A function that waits (I/O, sleeps) uses
//! little CPU and is never held.
//!
//! An answer covers the time since the previous answer for the same function when that was
//! recent ([`Reading`]): the autoscaler asks once per round while it wants more replicas, so
//! the CPU it is told about is the CPU of the round whose load it counted. Only a first
//! answer (or one after a pause) watches a fresh [`WINDOW`]: at the end of a burst, a window
//! that starts after the load stopped would see idle replicas on an idle machine.
//!
//! Both `/proc/stat` and `/proc/<pid>/stat` count in the same clock ticks, so shares are ratios
//! of tick counts and the tick rate is never needed. Knows nothing of functions or replicas:
//! it is given process ids.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long CPU use is watched for one answer.
pub(crate) const WINDOW: Duration = Duration::from_millis(250);

/// A previous reading at most this old starts the next answer's window.
const REUSE_WITHIN: Duration = Duration::from_secs(3);

/// A replica using at least this share of one core is busy on CPU.
const BUSY_CORES_PER_REPLICA: f64 = 0.2;

/// A machine with less than this share of one core idle has none to give a new replica.
const IDLE_CORES_NEEDED: f64 = 0.3;

/// CPU ticks at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticks {
    /// Spent by the watched process trees (their processes' own and reaped children's).
    trees: u64,
    /// Idle (idle + iowait), all CPUs.
    idle: u64,
    /// Every state, all CPUs.
    total: u64,
}

/// What the window showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Use {
    /// Cores the watched trees used, on average per tree.
    pub(crate) cores_per_tree: f64,
    /// Cores idle on the machine.
    pub(crate) idle_cores: f64,
}

impl Use {
    /// Busy replicas on a machine with no idle CPU.
    pub(crate) fn starved(self) -> bool {
        self.cores_per_tree >= BUSY_CORES_PER_REPLICA && self.idle_cores < IDLE_CORES_NEEDED
    }
}

/// The ticks of some process trees at one moment, kept so the next answer can start there.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    at: Instant,
    /// The roots read, sorted.
    roots: Vec<u32>,
    ticks: Ticks,
}

/// CPU use of the process trees rooted at `roots` since `previous` when that reading is of
/// the same roots and between [`WINDOW`] and [`REUSE_WITHIN`] old; otherwise over a fresh
/// [`WINDOW`] (blocking the thread). Returns the use (`None` when `/proc` cannot be read or
/// there are no roots) and the reading to pass next time.
pub(crate) fn watch_since(
    previous: Option<&Reading>,
    roots: &[u32],
) -> (Option<Use>, Option<Reading>) {
    if roots.is_empty() {
        return (None, None);
    }
    let mut roots = roots.to_vec();
    roots.sort_unstable();
    let read = |roots: Vec<u32>| {
        ticks(&roots).map(|ticks| Reading {
            at: Instant::now(),
            roots,
            ticks,
        })
    };
    let Some(now) = read(roots.clone()) else {
        return (None, None);
    };
    if let Some(previous) = previous
        && previous.roots == now.roots
        && (WINDOW..=REUSE_WITHIN).contains(&now.at.duration_since(previous.at))
    {
        return (between(&previous.ticks, &now.ticks, roots.len()), Some(now));
    }
    std::thread::sleep(WINDOW);
    let Some(after) = read(roots) else {
        return (None, None);
    };
    (
        between(&now.ticks, &after.ticks, after.roots.len()),
        Some(after),
    )
}

/// Watches the process trees rooted at `roots` for [`WINDOW`] (blocking the thread).
/// `None` when `/proc` cannot be read or there are no roots.
#[cfg(test)]
fn watch(roots: &[u32]) -> Option<Use> {
    watch_since(None, roots).0
}

/// The use between two readings of `trees` process trees.
fn between(before: &Ticks, after: &Ticks, trees: usize) -> Option<Use> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return None;
    }
    // Ticks of one core over the window.
    let per_core = total as f64 / cpus;
    Some(Use {
        cores_per_tree: after.trees.saturating_sub(before.trees) as f64 / per_core / trees as f64,
        idle_cores: after.idle.saturating_sub(before.idle) as f64 / per_core,
    })
}

fn ticks(roots: &[u32]) -> Option<Ticks> {
    let (idle, total) = machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may end between the listing and the read: skipped.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(process) = process(&text)
        {
            processes.push((pid, process));
        }
    }
    Some(Ticks {
        trees: tree_ticks(roots, &processes),
        idle,
        total,
    })
}

/// `(idle, total)` ticks from `/proc/stat`'s first line (`cpu  user nice system idle iowait …`).
fn machine(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((idle, values.iter().sum()))
}

/// One process from `/proc/<pid>/stat`: its parent and the ticks it and its reaped children
/// spent (utime + stime + cutime + cstime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    parent: u32,
    ticks: u64,
}

fn process(stat: &str) -> Option<Process> {
    // The command name is in parentheses and may hold spaces and parentheses itself: the
    // fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name, from 0: state, ppid (1), …, utime (11), stime (12), cutime (13),
    // cstime (14).
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Process {
        parent: fields.get(1)?.parse().ok()?,
        ticks: number(11)? + number(12)? + number(13)? + number(14)?,
    })
}

/// Ticks of every process in the trees rooted at `roots`.
fn tree_ticks(roots: &[u32], processes: &[(u32, Process)]) -> u64 {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut ticks = HashMap::with_capacity(processes.len());
    for (pid, process) in processes {
        children.entry(process.parent).or_default().push(*pid);
        ticks.insert(*pid, process.ticks);
    }
    let mut sum = 0;
    let mut stack: Vec<u32> = roots.to_vec();
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        sum += ticks.get(&pid).copied().unwrap_or(0);
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_gives_idle_and_iowait_against_every_state() {
        let stat = "cpu  100 5 50 800 20 0 3 0 0 0\ncpu0 50 2 25 400 10 0 1 0 0 0\nintr 1\n";
        assert_eq!(machine(stat), Some((820, 978)));
        assert_eq!(machine("intr 1\n"), None);
    }

    #[test]
    fn a_process_line_is_read_after_the_last_parenthesis() {
        // A command name with spaces and a ')' of its own.
        let stat = "4242 (my (odd) fn) S 17 4242 4242 0 -1 4194560 100 0 0 0 30 12 7 1 20 0 1 0 \
                    500 1000 100";
        assert_eq!(
            process(stat),
            Some(Process {
                parent: 17,
                ticks: 30 + 12 + 7 + 1
            })
        );
        assert_eq!(process("garbage"), None);
    }

    #[test]
    fn a_tree_sums_its_descendants_and_nothing_else() {
        let p = |parent, ticks| Process { parent, ticks };
        let processes = [
            (10, p(1, 5)),   // root
            (11, p(10, 7)),  // child
            (12, p(11, 3)),  // grandchild
            (20, p(1, 100)), // someone else's
        ];
        assert_eq!(tree_ticks(&[10], &processes), 15);
        assert_eq!(tree_ticks(&[10, 20], &processes), 115);
        assert_eq!(tree_ticks(&[99], &processes), 0);
    }

    #[test]
    fn only_busy_replicas_on_a_machine_without_idle_cpu_are_starved() {
        let starved = |cores_per_tree, idle_cores| {
            Use {
                cores_per_tree,
                idle_cores,
            }
            .starved()
        };
        assert!(starved(0.6, 0.05), "busy replicas, no idle CPU");
        assert!(!starved(0.6, 1.2), "busy replicas, idle CPU to give");
        assert!(
            !starved(0.01, 0.0),
            "replicas that wait, machine saturated by others"
        );
    }

    #[test]
    fn watching_this_process_sees_its_own_cpu() {
        // This test's process burns CPU on another thread while it is watched.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let burner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0_u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        };
        let seen = watch(&[std::process::id()]).expect("/proc is readable");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        burner.join().expect("burner");
        assert!(
            seen.cores_per_tree > 0.05,
            "a thread spinning for the whole window shows as CPU use: {seen:?}"
        );
        assert!(watch(&[]).is_none());
    }

    #[test]
    fn a_recent_reading_of_the_same_trees_starts_the_next_window() {
        let me = [std::process::id()];
        let (_, first) = watch_since(None, &me);
        let first = first.expect("/proc is readable");
        // Too recent (less than a window ago): a fresh window is watched.
        let started = Instant::now();
        let (seen, second) = watch_since(Some(&first), &me);
        assert!(seen.is_some());
        assert!(started.elapsed() >= WINDOW, "watched a window of its own");
        let second = second.expect("a reading");
        // A window later, the reading is reused: the answer is immediate.
        std::thread::sleep(WINDOW);
        let started = Instant::now();
        let (seen, _) = watch_since(Some(&second), &me);
        assert!(seen.is_some());
        assert!(
            started.elapsed() < WINDOW,
            "covered the time since the previous reading, took {:?}",
            started.elapsed()
        );
        // Other trees: a fresh window.
        let started = Instant::now();
        let (_, _) = watch_since(Some(&second), &[1]);
        assert!(started.elapsed() >= WINDOW);
    }
}
