//! A pool's state at one moment, for status pages and metrics.

use std::time::Duration;

use serde::Serialize;

use crate::config::LbMethod;
use crate::pool::Intent;

/// Which members take the traffic of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The primary members.
    Primary,
    /// The hot standbys: no primary is usable.
    Standby,
    /// Nobody: requests are answered 503.
    None,
}

/// What the balancer observes of a member, apart from what the operator wants of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum MemberHealth {
    /// Answering.
    Ok,
    /// In error after a failed request; left alone for `retry_in_ms` more.
    Error {
        /// Milliseconds until it is tried again.
        retry_in_ms: u64,
    },
    /// Its retry time is over: the next request for it tries it.
    Retrying,
    /// Active health checks fail; out until they pass.
    CheckFailed,
}

/// One member in a [`PoolSnapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct MemberSnapshot {
    /// Its URL as configured.
    pub url: String,
    /// Its route name.
    pub route: Option<String>,
    /// The route that takes its sticky requests while it is down.
    pub redirect: Option<String>,
    /// A hot standby.
    pub standby: bool,
    /// Its weight (lbfactor).
    pub weight: u32,
    /// What the operator wants of it.
    pub intent: Intent,
    /// What is observed of it.
    pub health: MemberHealth,
    /// Takes ordinary (non-sticky) traffic now, or would if its tier were active.
    pub usable: bool,
    /// Requests in flight (until their response headers arrive).
    pub in_flight: usize,
    /// Requests sent to it, retries included.
    pub requests: u64,
    /// Requests that failed there, and failed health checks that took it out.
    pub failures: u64,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// How long ago the last failure was.
    pub last_error_age: Option<Duration>,
}

/// A pool's state, from [`Pool::snapshot`](crate::Pool::snapshot).
#[derive(Debug, Clone, Serialize)]
pub struct PoolSnapshot {
    /// The pool's name.
    pub name: String,
    /// Its selection method.
    pub lbmethod: LbMethod,
    /// Which tier takes traffic.
    pub active: Tier,
    /// Requests answered 503 because no member could take them.
    pub unavailable: u64,
    /// Requests sent on to another member after a failure.
    pub failovers: u64,
    /// The retry time.
    pub retry: Duration,
    /// The health-check interval, when checks run.
    pub health_checks: Option<Duration>,
    /// The members, in configured order.
    pub members: Vec<MemberSnapshot>,
}
