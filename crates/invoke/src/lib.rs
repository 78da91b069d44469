//! How Courier's own components reach functions: the queue worker, the connectors and the
//! scheduler all call through this crate.
//!
//! - [`FunctionCaller`]: one synchronous call through a gateway's `/function/` route, over HTTP
//!   ([`GatewayHttp`]) or in-process when the caller runs inside the gateway's own process
//!   (`courier up` supplies that implementation). Either way the call counts in the gateway's
//!   metrics like any other.
//! - [`Invoker`]: what a trigger (connector, scheduler) does with an event: call the function
//!   now, queue the call durably, ask whether a queued call is still outstanding, or keep a
//!   call given up on as a dead letter. [`Fabric`] is the one implementation, over a
//!   [`FunctionCaller`] and a [`WorkQueue`](courier_queue::WorkQueue).
//! - [`Catalog`]: the functions deployed, refreshed so triggers follow deploys, updates and
//!   removals within a second.
//!
//! Invariant: this crate never knows which provider runs functions or which queue backend
//! stores calls; it knows only the gateway's HTTP routes and the two seams' traits.

mod call;
mod caller;
mod catalog;
mod dead_letter;
mod error;
mod fabric;

pub use call::{Answer, Call, Enqueued, ReadyCall};
pub use caller::{FunctionCaller, GatewayHttp, MAX_RESPONSE_BYTES};
pub use catalog::{Catalog, FunctionList, FunctionSource, GatewaySource, REFRESH_INTERVAL};
pub use dead_letter::{dead_letter_record, keep_dead_letter};
pub use error::InvokeError;
pub use fabric::{Fabric, Invoker};
