//! Per-client flood blocking, as a tower layer: Apache's **mod_evasive** (`DOSPageCount`,
//! `DOSPageInterval`, `DOSSiteCount`, `DOSSiteInterval`, `DOSBlockingPeriod`,
//! `DOSHashTableSize`, `DOSWhitelist`, `DOSLogDir`, `DOSSystemCommand`).
//!
//! # What it does
//!
//! A client that requests **the same URI more than `page_count` times within
//! `page_interval`**, or **any URIs more than `site_count` times within `site_interval`**,
//! is answered `403 Forbidden` for `blocking_period`. **Every request while blocked
//! extends the block**: it ends one blocking period after the client's last request, so
//! a client is released only after a blocking period of silence. Whitelisted addresses
//! and networks are never counted.
//!
//! The counts are exact and per client: with `page_count = 2` and `page_interval = "1s"`,
//! the third request for one URI within one second is refused, however the requests fall
//! on the clock. Precisely, a request is refused when the client already made
//! `page_count` requests for its URI within the last `page_interval` (or `site_count`
//! requests within the last `site_interval`), measured to the millisecond on a monotonic
//! clock. The request that goes over a limit starts the block and clears the client's
//! counts; requests refused during a block are not counted; after the block the client
//! starts from zero.
//!
//! The client is [`towergate_client_addr::client_ip`]: the socket peer, or the real client
//! behind trusted proxies when `ClientAddrLayer` runs first. IPv6 clients are counted per
//! `/64` network by default (`ipv6_prefix`), since one host usually holds a whole `/64`.
//! IPv4-mapped IPv6 addresses count as their IPv4 address. A request without a client
//! address (no `PeerAddr`/`ClientAddr` extension) passes uncounted, and is counted in
//! [`EvasiveStats::unidentified`]. A "URI" is the request path without the query string,
//! as mod_evasive's `r->uri`; method, host and query do not matter.
//!
//! # Configuration
//!
//! | `[evasive]` key   | mod_evasive          | default   | the article |
//! |-------------------|----------------------|-----------|-------------|
//! | `page_count`      | `DOSPageCount`       | 2         | 2           |
//! | `page_interval`   | `DOSPageInterval`    | `"1s"`    | `"1s"`      |
//! | `site_count`      | `DOSSiteCount`       | 50        | 30          |
//! | `site_interval`   | `DOSSiteInterval`    | `"1s"`    | `"1s"`      |
//! | `blocking_period` | `DOSBlockingPeriod`  | `"10s"`   | `"30s"`     |
//! | `max_tracked`     | `DOSHashTableSize`'s role | 100000 | 314739    |
//! | `whitelist`       | `DOSWhitelist`       | none      | `["10.10.10.2"]` |
//! | `log_dir`         | `DOSLogDir`          | none      | a directory |
//! | `command`         | `DOSSystemCommand`   | none      |             |
//! | `ipv6_prefix`     | (none)               | 64        |             |
//!
//! See [`EvasiveConfig`] (serde, for the gateway's `[evasive]` section) and
//! [`EvasiveBuilder`] (in code).
//!
//! # Differences from mod_evasive
//!
//! - **One table per process, shared by every connection and thread.** mod_evasive keeps
//!   one table per Apache child process, so a client whose requests land on different
//!   children is counted in each separately (and blocked in one child only); with the
//!   prefork MPM and 150 children a client could make many times the configured rate.
//! - **Exact sliding windows, to the millisecond.** mod_evasive counts in whole seconds
//!   (`time(NULL)`) and resets a count only when a gap between two hits reaches the
//!   interval: with an interval of 1 it counts per calendar second, so requests at
//!   x.9 s and (x+1).1 s never add up; with longer intervals a steady trickle just under
//!   one hit per interval is never reset and is eventually blocked.
//! - **The (count + 1)-th request is refused.** mod_evasive creates a hit's entry with a
//!   count of 0 and refuses when the count has reached the limit, so with
//!   `DOSPageCount 2` it refuses only from the **fourth** request; here the third.
//! - **Bounded memory.** `DOSHashTableSize` is mod_evasive's number of hash buckets; its
//!   entries (one per client, and one per client and URI) are never freed while the child
//!   lives, so a flood of distinct addresses or URIs grows the process without limit.
//!   Here `max_tracked` caps the clients tracked at once, each client has a bounded number
//!   of page slots, and idle clients are swept (see *Memory* below).
//! - **Whitelist** entries are addresses and CIDR networks, IPv4 and IPv6; mod_evasive's
//!   trailing-wildcard form (`10.10.*.*`) is accepted too. mod_evasive's whitelist is
//!   IPv4 wildcards only.
//! - **IPv6 clients are grouped per `/64`** (configurable); mod_evasive counts each
//!   address string, which lets one IPv6 host rotate through 2^64 addresses.
//! - **Reports on every block.** mod_evasive writes `dos-<ip>` (its PID inside) and runs
//!   `DOSSystemCommand` only when that file does not exist yet, so an address is reported
//!   once until someone deletes the file. Here each new block writes (overwrites) the
//!   file, with the reason and times inside, and runs the command; a block being extended
//!   reports nothing. Reports run in the background, never on the request path: the
//!   command through `sh -c` (at most 4 at once, killed after 30 s); `%s` is the address
//!   (for IPv6 the `/64` network in CIDR form). `DOSEmailNotify` has no equivalent: use
//!   `command` (e.g. `mail`).
//! - **Logging:** one `tracing` warning per block (target `towergate_evasive`, fields
//!   `client`, `reason` = `page`|`site`, `until`), where mod_evasive logs to syslog.
//! - **No subrequest exemption is needed:** mod_evasive skips Apache's internal
//!   subrequests and redirects; the layer sees client requests only.
//!
//! # Why not `governor`
//!
//! `governor`'s keyed limiters implement GCRA, a leaky bucket. mod_evasive's counts map
//! onto a quota of `page_count` cells replenished over `page_interval`
//! (`Quota::with_period(page_interval / page_count).allow_burst(page_count)`), but that
//! quota admits `page_count` requests at once and then one more every
//! `page_interval / page_count`: with a count of 2 per second, requests at 0 ms, 0 ms and
//! 500 ms all pass, although the third arrives within the second. The stricter mapping
//! (`with_period(page_interval).allow_burst(page_count)`) refills one request per
//! interval, so a client browsing steadily below `site_count` per second is blocked
//! after a few seconds. No GCRA quota says "at most N in any window of length T", which
//! is what the directives mean. Its keyed state stores also have no size cap (they grow
//! until `retain_recent` runs). So the counting here is a sliding log per client in a
//! sharded table: the times of the last `count` requests, refused when the oldest of
//! them is within the interval. That is exact and costs `4 × count` bytes per window.
//!
//! # Memory
//!
//! [`MemoryStore`] tracks at most `max_tracked` clients. When a new client arrives and
//! its shard is full, a client that has not come back recently and is not blocked is
//! forgotten (CLOCK eviction, counted in [`EvasiveStats::evicted`]); clients that came
//! only once go first, so a flood of one-request addresses mostly replaces itself. Under
//! a flood of more distinct addresses than the table holds, clients are counted low,
//! never high: nobody is blocked by another's requests. A client keeps at most `min(site_count, 256)` page slots (distinct
//! URIs seen in the last `page_interval`), so one client cannot create unbounded keys;
//! while `page_interval <= site_interval` and `site_count <= 256` (the article's values
//! and the defaults), a client that would need more slots is refused by the site limit
//! first, so no URI is forgotten while it still counts. The worst case per client is
//! [`MemoryStore::bytes_per_client`]: about 1.1 KB with the article's values, so at most
//! about 340 MB for its 314739 clients; the builder refuses a table whose worst case
//! exceeds 8 GiB. Buffers grow only as a client uses them: a client that sent one
//! request takes about 250 bytes, one with 29 recent URIs about 900 bytes.
//!
//! The [`Sweeper`] returned by the builder forgets clients idle longer than both
//! intervals and trims expired counts; spawn it (`tokio::spawn(sweeper.run())`). It ends
//! when the layer is dropped.
//!
//! # Concurrency
//!
//! No global lock: a request hashes the client address and the path (foldhash, randomly
//! seeded), reads the clock, locks one of up to 64 shards for the few hundred
//! nanoseconds its update takes, and touches an atomic counter only when it is refused.
//!
//! # Several instances (cargo feature `redis`)
//!
//! Counting and blocks sit behind the [`Store`] trait; [`MemoryStore`] is the default and
//! nothing else is compiled without the feature. With the feature `redis`, `RedisStore`
//! shares them between instances through one Redis server: with N instances a client's
//! page and site counts are summed across instances within the intervals, and a block
//! made on any instance is honoured by all within `2 × sync_interval + timeout` (300 ms by
//! default). Decisions stay local and immediate: the request path never waits on Redis;
//! counts are pushed and pulled in one pipelined round trip per `sync_interval`. A
//! flood spread over N instances can overshoot by at most `(N − 1) × page_count` requests
//! (`(N − 1) × site_count` for the site), during that first lag only. When Redis is
//! away the store decides on local counts (fail open), logs it once, reports it in
//! [`EvasiveLayer::link`], and resumes sharing when Redis is back. Every key has a prefix
//! and expires on its own. The `redis_store` module docs give the details; the
//! [`redis`](https://docs.rs/redis) crate was chosen for its tokio `ConnectionManager`
//! (reconnects on its own) over `fred` (cluster and pool machinery not needed here).
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn demo() {
//! use towergate_evasive::{EvasiveLayer, Limits, RedisOptions, RedisStore};
//!
//! let limits = Limits { site_count: 30, ..Limits::default() };
//! let mut options = RedisOptions::new("redis://10.0.0.5:6379/0");
//! options.instance = "gw1".into();
//! let (store, sync) = RedisStore::new(&limits, 100_000, options).unwrap();
//! let (evasive, sweeper) = EvasiveLayer::builder().limits(limits).store(store).build().unwrap();
//! tokio::spawn(sweeper.run());
//! tokio::spawn(sync.run());
//! # let _ = evasive;
//! # }
//! ```
//!
//! [`EvasiveLayer::blocks`] is the snapshot for a status page.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use towergate_client_addr::PeerAddr;
//! use towergate_evasive::EvasiveLayer;
//!
//! # async fn demo() {
//! let (evasive, sweeper) = EvasiveLayer::builder()
//!     .page_count(2)
//!     .site_count(30)
//!     .blocking_period(Duration::from_secs(30))
//!     .whitelist("10.10.10.2".parse::<std::net::IpAddr>().unwrap())
//!     .build()
//!     .unwrap();
//! tokio::spawn(sweeper.run());
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(evasive.clone());
//!
//! // The accept loop (or `ClientAddrLayer`) says who the client is.
//! let from = |ip: &str| {
//!     let mut req = Request::get("/").body(Body::empty()).unwrap();
//!     req.extensions_mut().insert(PeerAddr(format!("{ip}:40000").parse().unwrap()));
//!     req
//! };
//! let status = |app: Router, ip| async move { app.oneshot(from(ip)).await.unwrap().status() };
//!
//! assert_eq!(status(app.clone(), "203.0.113.7").await, StatusCode::OK);
//! assert_eq!(status(app.clone(), "203.0.113.7").await, StatusCode::OK);
//! // The third request for `/` within a second: blocked for 30 s.
//! assert_eq!(status(app.clone(), "203.0.113.7").await, StatusCode::FORBIDDEN);
//! // Others are not affected; the whitelisted address is never counted.
//! assert_eq!(status(app.clone(), "198.51.100.9").await, StatusCode::OK);
//! for _ in 0..10 {
//!     assert_eq!(status(app.clone(), "10.10.10.2").await, StatusCode::OK);
//! }
//! assert_eq!(evasive.blocks()[0].client.to_string(), "203.0.113.7/32");
//! assert_eq!(evasive.stats().blocks, 1);
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```
//!
//! An axum app served with `into_make_service_with_connect_info::<SocketAddr>()` gets its
//! client address from axum's `ConnectInfo` with `towergate-client-addr`'s `axum`
//! feature; the gateway's accept loop inserts `PeerAddr` itself.

mod config;
mod future;
mod layer;
mod memory;
#[cfg(feature = "redis")]
pub mod redis_store;
mod store;
mod sweeper;
mod whitelist;

pub use config::{EvasiveConfig, EvasiveError};
pub use future::ResponseFuture;
pub use layer::{
    Evasive, EvasiveBuilder, EvasiveLayer, EvasiveStats, MAX_PAGE_COUNT, MAX_SITE_COUNT,
};
pub use memory::{MAX_PAGE_SLOTS, MAX_PERIOD, MemoryStore};
#[cfg(feature = "redis")]
pub use redis_store::{RedisOptions, RedisStore, RedisSync};
pub use store::{Block, Limits, LinkStatus, Reason, Store, Verdict};
pub use sweeper::Sweeper;
pub use whitelist::{Whitelist, parse_entry as parse_whitelist_entry};

#[cfg(test)]
mod tests;
