//! The client commands, one module each.

pub(crate) mod calls;
pub(crate) mod deploy;
pub(crate) mod describe;
pub(crate) mod dlq;
pub(crate) mod invoke;
pub(crate) mod list;
pub(crate) mod logs;
pub(crate) mod remove;
pub(crate) mod schedules;
pub(crate) mod secret;
