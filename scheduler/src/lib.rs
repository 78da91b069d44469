//! Courier's scheduler: cron-triggered invocations, the OpenFaaS cron-connector's contract
//! (annotations `topic: cron-function` and `schedule: "<expr>"`) with seconds, time zones,
//! overlap and missed-fire policies, and a single stored fire per scheduled time across
//! replicas.
//!
//! # What it owns
//!
//! - The **expression language** ([`expression`]): 5-field crontab as OpenFaaS users write it
//!   (weekday 0 and 7 = Sunday, 1 = Monday; names; ranges, lists, steps; day-of-month OR
//!   day-of-week when both are restricted), 6 fields with seconds first, the descriptors
//!   `@yearly @annually @monthly @weekly @daily @midnight @hourly @every <go duration>`, and a
//!   `CRON_TZ=<IANA zone> ` (or `TZ=`) prefix. Parsing is the `cron` crate's, behind a
//!   translation (seconds `0` prepended, weekdays written as names) that is property-tested
//!   against croner. [`validate`] is the deploy-time check.
//! - **Fire times** ([`fire_time`]), as a pure function of the expression and an instant.
//!   The daylight-saving rule: every local time a schedule names fires once. A local time
//!   skipped by spring-forward fires at the first instant after the gap (all skipped times of
//!   a gap together fire once); a local time repeated by fall-back fires at its first
//!   occurrence only. `@every` is aligned to the Unix epoch, so replicas agree.
//! - The **timer loop** ([`run`]): one task holds every schedule in a time-ordered set and
//!   sleeps until 50 ms before the earliest fire (`sleep_until`; no polling); it follows the
//!   function catalog (`watch::Receiver::changed`), recomputing only schedules whose
//!   annotations changed. On waking it makes the fires due at that instant ready: spawned
//!   dispatch tasks, up to 64 fires each, which run the overlap checks that ask the queue,
//!   have the invoker encode each call for the queue ([`courier_invoke::Invoker::ready`]),
//!   and then wait; at the instant itself ([`Clock::wait_until`]: a sleep to 2 ms before,
//!   then yielding to the runtime, since a tokio sleep can be a millisecond late) the loop
//!   opens their gate and each task hands its fires over: in queue mode as one batch
//!   ([`courier_invoke::Invoker::enqueue_ready_batch`], one command to the queue per task),
//!   in sync mode as concurrent calls; at most
//!   [`SchedulerConfig::max_concurrent_dispatches`] calls to the invoker at once. The loop
//!   never awaits them, and computes next fire times (and builds the next calls) only after
//!   yielding to them, 64 at a time, so a burst of thousands of fires on one second goes out
//!   at once. A fire
//!   is an empty-body call with `X-Topic: cron-function`, `X-Connector: courier-scheduler`,
//!   `X-Scheduled-Time: <RFC 3339>` and a call id derived from (function, namespace, time)
//!   ([`call_id`]), so every replica's fire of the same time is stored once by the queue.
//! - **Policies** ([`policy`]): `com.courier.schedule.concurrency: forbid|allow` (forbid, the
//!   default, skips a fire while the previous one is outstanding, as seen while the fire is
//!   made ready, up to 50 ms before its time) and
//!   `com.courier.schedule.missed: skip|once` (once: one catch-up run for fires missed while
//!   the scheduler was down).
//! - The **state file** ([`state`]): per schedule, the last fire handled, replaced atomically
//!   about a second after fires (and at shutdown). A restart resumes after that fire: fires
//!   due within [`SchedulerConfig::missed_after`] still fire (late), older ones are missed.
//!   A quick restart causes no false catch-up: fires that did happen but were not yet
//!   written are re-sent with their own derived call id, which the queue recognises as
//!   duplicates (`scheduler_skips_total{reason="duplicate"}`).
//! - The **views** ([`view`]): `GET /system/schedules` objects and the `courier schedules`
//!   table, both pure.
//! - **Metrics** on an injected registry: `scheduler_fires_total{function_name}`,
//!   `scheduler_skips_total{function_name,reason}`, `scheduler_lateness_seconds`. Skips are
//!   logged at info (errors at warn), each fire at debug only: fires are counted, and at
//!   thousands a second a line each would drown the log.
//!
//! # What it must never know
//!
//! Which queue backend stores fires or which provider runs functions (it sees only
//! [`courier_invoke::Invoker`] and the catalog's `FunctionStatus` list), and how HTTP routes
//! are served: the gateway mounts [`schedules`] and calls [`validate`]; the CLI prints
//! [`table`].

pub mod clock;
mod dispatch;
mod error;
pub mod expression;
pub mod fire_time;
mod metrics;
pub mod policy;
mod scheduler;
pub mod state;
pub mod view;

pub use clock::Clock;
pub use dispatch::{CONNECTOR, X_CONNECTOR, X_SCHEDULED_TIME, X_TOPIC, call_id, fire_call};
pub use error::{Error, Result};
pub use expression::{Expression, ExpressionError};
pub use policy::{Concurrency, Missed, ScheduleSpec, validate};
pub use scheduler::{DispatchMode, SchedulerConfig, run};
pub use state::{State, StateStore};
pub use view::{ScheduleView, schedules, table};
