//! The [`Store`] trait: where hits are counted and blocks are kept.
//!
//! The layer decides *who* is counted (client address, whitelist, IPv6 grouping) and what a
//! decision does (403, warning, report); the store decides *whether* a hit is over a limit
//! and remembers blocks. [`MemoryStore`](crate::MemoryStore) is the default. A store shared
//! by several gateway instances implements the same trait (`RedisStore`, cargo feature
//! `redis`).

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

/// The limits a store enforces, in mod_evasive's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `DOSPageCount`: requests for one URI a client may make within `page_interval`;
    /// the next one is refused.
    pub page_count: u32,
    /// `DOSPageInterval`: the sliding window for `page_count`.
    pub page_interval: Duration,
    /// `DOSSiteCount`: requests for any URIs a client may make within `site_interval`;
    /// the next one is refused.
    pub site_count: u32,
    /// `DOSSiteInterval`: the sliding window for `site_count`.
    pub site_interval: Duration,
    /// `DOSBlockingPeriod`: how long a blocked client is refused after its last request.
    pub blocking_period: Duration,
}

impl Default for Limits {
    /// mod_evasive's defaults: page count 2 per second, site count 50 per second, blocked
    /// for 10 seconds.
    fn default() -> Self {
        Self {
            page_count: 2,
            page_interval: Duration::from_secs(1),
            site_count: 50,
            site_interval: Duration::from_secs(1),
            blocking_period: Duration::from_secs(10),
        }
    }
}

/// Which limit a client went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Too many requests for one URI (`DOSPageCount`).
    Page,
    /// Too many requests for the site (`DOSSiteCount`).
    Site,
}

impl Reason {
    /// `"page"` or `"site"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Page => "page",
            Reason::Site => "site",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted and under the limits: let it through.
    Pass,
    /// The client is blocked; the block now ends one blocking period after this request.
    Blocked,
    /// This request went over a limit: the client is blocked from now until `until`.
    NewBlock {
        /// The limit that was exceeded.
        reason: Reason,
        /// When the block ends if the client stays silent.
        until: Instant,
    },
}

impl Verdict {
    /// Whether the request is let through.
    pub fn is_pass(self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

/// One current block, for a status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The blocked client: an IPv4 address (`/32`), or an IPv6 address or network (the
    /// layer's `ipv6_prefix`, `/64` by default).
    pub client: IpNet,
    /// The limit it went over.
    pub reason: Reason,
    /// When the block began.
    pub since: SystemTime,
    /// When it ends if the client stays silent.
    pub until: SystemTime,
    /// Requests refused during this block, the first included.
    pub refused: u64,
}

/// Counting and blocking, behind the layer.
///
/// `check` runs on the request path for every counted request: it must answer without
/// waiting (no I/O, no await). A store shared between instances keeps a local view and
/// synchronises in the background (a background future of its own, spawned next to the
/// layer's [`Sweeper`](crate::Sweeper)).
pub trait Store: Send + Sync + 'static {
    /// Counts a request from `client` for `path` at `now`, and answers whether it passes.
    ///
    /// A blocked client's request extends its block and is not counted. The request that
    /// goes over a limit starts a block and clears the client's counts.
    fn check(&self, client: IpNet, path: &str, now: Instant) -> Verdict;

    /// The blocks in force at `now`.
    fn blocks(&self, now: Instant) -> Vec<Block>;

    /// Lifts `client`'s block and forgets its counts; `true` if it was blocked.
    fn unblock(&self, client: IpNet, now: Instant) -> bool;

    /// Forgets clients that are neither blocked nor inside a counting window at `now`, and
    /// frees what counts have expired; returns how many clients were forgotten.
    fn sweep(&self, now: Instant) -> usize;

    /// How many clients are tracked now.
    fn tracked(&self) -> usize;

    /// How many tracked clients were forgotten to make room for new ones since the store
    /// was built (the table was full).
    fn evicted(&self) -> u64;

    /// The state of the link to the other instances, for a store shared between them;
    /// `None` (the default) for a store of one instance.
    fn link(&self) -> Option<LinkStatus> {
        None
    }
}

/// How a shared store's link to its peers (Redis) is doing, for a status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// The last sync succeeded: counts and blocks are shared. When `false` the store
    /// decides on local counts only (fail open) until the link is back.
    pub up: bool,
    /// When `up` last changed (or the store was built).
    pub since: SystemTime,
    /// Syncs that succeeded since the store was built.
    pub syncs: u64,
    /// Syncs that failed (Redis unreachable, slow or answering errors).
    pub failures: u64,
    /// Why the last failed sync failed.
    pub last_error: Option<String>,
    /// Events (counted requests, blocks) dropped because the queue to Redis was full.
    pub dropped: u64,
}
