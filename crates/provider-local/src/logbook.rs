//! Function logs: the last lines of every function in memory, and a broadcast of new lines for
//! `follow`. Lines are numbered so a follower that subscribes while reading the backlog sees
//! each line once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use courier_core::{FunctionRef, LogMessage, LogRequest, LogStream};
use futures_util::StreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast;

/// Lines kept per function.
const KEPT_LINES: usize = 10_000;
/// Lines a slow follower may lag before it skips ahead.
const FOLLOW_BUFFER: usize = 1_024;

#[derive(Debug, Clone)]
struct Line {
    seq: u64,
    unix_nanos: i128,
    message: LogMessage,
}

/// One function's log.
#[derive(Debug)]
pub(crate) struct FunctionLog {
    function: FunctionRef,
    lines: Mutex<(u64, VecDeque<Line>)>,
    tx: broadcast::Sender<Line>,
}

impl FunctionLog {
    fn new(function: FunctionRef) -> Self {
        Self {
            function,
            lines: Mutex::new((0, VecDeque::new())),
            tx: broadcast::channel(FOLLOW_BUFFER).0,
        }
    }

    /// Appends one line written by `instance`.
    pub(crate) fn write(&self, instance: &str, text: impl Into<String>) {
        let now = OffsetDateTime::now_utc();
        let message = LogMessage {
            name: self.function.name.clone(),
            namespace: self.function.namespace.clone(),
            instance: instance.to_owned(),
            timestamp: now.format(&Rfc3339).unwrap_or_default(),
            text: text.into(),
        };
        let mut guard = self.lines.lock().expect("log lock");
        let (seq, lines) = &mut *guard;
        *seq += 1;
        let line = Line {
            seq: *seq,
            unix_nanos: now.unix_timestamp_nanos(),
            message,
        };
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line.clone());
        let _ = self.tx.send(line);
    }

    /// The lines `request` asks for, then (when following) every new one.
    pub(crate) fn read(&self, request: &LogRequest) -> LogStream {
        let wanted = {
            let instance = request.instance.clone();
            let since = request.since_unix_nanos;
            move |line: &Line| {
                instance
                    .as_ref()
                    .is_none_or(|i| *i == line.message.instance)
                    && since.is_none_or(|s| line.unix_nanos >= s)
            }
        };
        let rx = request.follow.then(|| self.tx.subscribe());
        let (last_seq, backlog) = {
            let guard = self.lines.lock().expect("log lock");
            let matching: Vec<Line> = guard.1.iter().filter(|l| wanted(l)).cloned().collect();
            (guard.0, matching)
        };
        let skip = request
            .tail
            .map_or(0, |tail| backlog.len().saturating_sub(tail));
        let backlog = futures_util::stream::iter(backlog.into_iter().skip(skip).map(|l| l.message));
        let Some(rx) = rx else {
            return backlog.boxed();
        };
        let live = futures_util::stream::unfold(rx, move |mut rx| {
            let wanted = wanted.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(line) if line.seq > last_seq && wanted(&line) => {
                            return Some((line.message, rx));
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        backlog.chain(live).boxed()
    }
}

/// Every function's log.
#[derive(Debug, Default)]
pub(crate) struct LogBook {
    logs: Mutex<HashMap<FunctionRef, Arc<FunctionLog>>>,
}

impl LogBook {
    /// The log of `function`, created on first use.
    pub(crate) fn log(&self, function: &FunctionRef) -> Arc<FunctionLog> {
        self.logs
            .lock()
            .expect("logbook lock")
            .entry(function.clone())
            .or_insert_with(|| Arc::new(FunctionLog::new(function.clone())))
            .clone()
    }

    /// Forgets a removed function's log; followers see the stream end.
    pub(crate) fn remove(&self, function: &FunctionRef) {
        self.logs.lock().expect("logbook lock").remove(function);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tail: Option<usize>, follow: bool) -> LogRequest {
        LogRequest {
            name: "f".into(),
            namespace: "openfaas-fn".into(),
            instance: None,
            tail,
            follow,
            since_unix_nanos: None,
        }
    }

    #[tokio::test]
    async fn tail_returns_the_last_lines_in_order() {
        let log = FunctionLog::new(FunctionRef::new("f", None).unwrap());
        for i in 0..5 {
            log.write("f-1", format!("line {i}"));
        }
        let lines: Vec<_> = log.read(&request(Some(2), false)).collect().await;
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["line 3", "line 4"]);
        assert_eq!(lines[0].instance, "f-1");
    }

    #[tokio::test]
    async fn follow_sees_backlog_then_new_lines_once() {
        let log = Arc::new(FunctionLog::new(FunctionRef::new("f", None).unwrap()));
        log.write("f-1", "old");
        let mut stream = log.read(&request(None, true));
        log.write("f-1", "new");
        assert_eq!(stream.next().await.unwrap().text, "old");
        assert_eq!(stream.next().await.unwrap().text, "new");
    }
}
