//! [`RedisStore`]: counts and blocks shared by several instances through Redis
//! (cargo feature `redis`).
//!
//! # Semantics
//!
//! Every instance decides on its own, at once, from local state: its own exact sliding
//! windows (a [`MemoryStore`]) plus the requests the *other* instances counted for the
//! same client, as last pulled from Redis. So with N instances sharing one Redis, a
//! client's page and site counts are the sum over all instances within the intervals,
//! and its `page_count + 1`-th request for a URI within `page_interval` is refused on
//! whichever instance it lands, as on one instance.
//!
//! A background task ([`RedisSync`], spawned by the caller) runs every `sync_interval`
//! (default 100 ms) and, in one pipelined round trip:
//!
//! - pushes the requests counted since the last round (one sorted-set member per
//!   request, scored by its time) and the blocks started or extended here;
//! - pulls, for every client and URI counted here within its interval, the requests the
//!   other instances counted, and the blocks in force anywhere; a block made elsewhere is
//!   imposed on the local table until its end.
//!
//! # How far a flood can overshoot
//!
//! What another instance counted reaches this one after at most two sync intervals and
//! one round trip (its push, then this instance's pull). Within that lag each instance
//! still enforces the limits on the requests it sees, and counts what it learns as soon
//! as it learns it. A client spreading a flood over N instances can therefore get at most
//! `(N - 1) × page_count` requests for a URI (and `(N - 1) × site_count` for the site)
//! more than one instance would allow, and only within the first
//! `2 × sync_interval + timeout` of the flood; after that the counts are summed. A block
//! made on any instance is honoured by all within `2 × sync_interval + timeout` (300 ms
//! with the defaults; the gateway refuses settings above one second). Clocks of the
//! instances must agree (NTP): request times are wall-clock milliseconds.
//!
//! # Faults
//!
//! The request path never waits on Redis: [`Store::check`] reads the last pulled view
//! (one atomic load) and queues the request for the next push (one short lock of one of
//! 16 queues). When Redis is unreachable, slow (a round longer than `timeout`) or
//! answers errors, the store decides on local counts only (fail open, the
//! [`MemoryStore`] limits), logs the change once, and reports it through
//! [`Store::link`]; blocks learnt before stay until they end. Requests counted while
//! the link is down are not shared; sharing resumes with the first round that succeeds.
//! At most 65536 events wait for a round; more are dropped and counted in
//! [`LinkStatus::dropped`].
//!
//! # Keys
//!
//! Under the configured prefix (default `towergate`), every key with a TTL:
//!
//! - `PREFIX:ev:s:CLIENT`: the client's requests (sorted set, member per request, score
//!   in Unix ms), expires one `site_interval` (plus a second) after its last write;
//! - `PREFIX:ev:p:CLIENT:HASH`: its requests for one URI (HASH: a 64-bit FNV-1a hash of
//!   the path), expires one `page_interval` (plus a second) after its last write;
//! - `PREFIX:ev:blocks`: the blocks in force (sorted set, member `page CLIENT` or `site
//!   CLIENT`, score the block's end in Unix ms), trimmed every round and expiring one
//!   `blocking_period` (plus a minute) after its last write.
//!
//! Every instance must use the same limits and a distinct instance name. Redis Cluster
//! (keys spread over shards) is not supported; one Redis server (or a replicated
//! primary) is.
//!
//! # Why the `redis` crate
//!
//! redis-rs is the maintained, widely used client; its tokio `ConnectionManager`
//! reconnects on its own after Redis restarts, and pipelines are all this store needs.
//! `fred` does more (cluster, sentinel, its own pools) at several times the dependency
//! weight; nothing here needs it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ipnet::IpNet;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::layer::{Address, TARGET, now};
use crate::memory::MemoryStore;
use crate::store::{Block, Limits, LinkStatus, Reason, Store, Verdict};

const OUTBOX_SHARDS: usize = 16;
/// Events one queue holds between two rounds (16 queues: 65536 events).
const OUTBOX_PER_SHARD: usize = 4096;
/// Clients whose counts are pulled at once; more clients are decided on local counts.
const MAX_INTEREST: usize = 100_000;
/// Keys pulled per round at most.
const MAX_PULLED_KEYS: usize = 20_000;
/// Blocks pulled per round at most.
const MAX_PULLED_BLOCKS: usize = 10_000;
/// Times pulled per key at most.
const MAX_TIMES: usize = 4096;
/// Added to a count key's TTL, for clock differences and slow rounds.
const COUNT_SLACK_MS: u64 = 1_000;
const BLOCKS_SLACK_MS: u64 = 60_000;

// === impl RedisOptions ===

/// Where and how a [`RedisStore`] shares its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[:password@]host[:port][/db]` or `unix:///path/to/redis.sock`.
    pub url: String,
    /// This instance's name, distinct per instance (it tells its own counts from the
    /// others'); no `:`.
    pub instance: String,
    /// The prefix of every key (default `towergate`).
    pub key_prefix: String,
    /// How often counts and blocks are pushed and pulled (default 100 ms).
    pub sync_interval: Duration,
    /// The most a round may take before the link counts as down (default 100 ms).
    pub timeout: Duration,
}

impl RedisOptions {
    /// Options for `url`, with the defaults: instance `HOSTNAME-PID`, prefix
    /// `towergate`, sync every 100 ms, 100 ms budget.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            instance: default_instance(),
            key_prefix: "towergate".into(),
            sync_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
        }
    }

    /// Checks the values: `Err` names the field (`url`, `instance`, `key_prefix`,
    /// `sync_interval`, `timeout`) and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let client = redis::Client::open(self.url.as_str()).map_err(|e| {
            format!(
                "redis: `{}` is not a Redis URL ({e}); write e.g. \"redis://127.0.0.1:6379/0\" or \"unix:///run/redis/redis.sock\"",
                redact(&self.url)
            )
        })?;
        if matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        ) {
            return Err("redis: rediss:// (TLS) is not supported; use redis:// on a private network or a unix socket".into());
        }
        check_name("instance", &self.instance)?;
        check_name("key_prefix", &self.key_prefix)?;
        if self.sync_interval < Duration::from_millis(10)
            || self.sync_interval > Duration::from_millis(400)
        {
            return Err(format!(
                "sync_interval: {} is out of range; write \"10ms\" to \"400ms\" (default \"100ms\")",
                humantime::format_duration(self.sync_interval)
            ));
        }
        if self.timeout < Duration::from_millis(5) || self.timeout > Duration::from_millis(500) {
            return Err(format!(
                "timeout: {} is out of range; write \"5ms\" to \"500ms\" (default \"100ms\")",
                humantime::format_duration(self.timeout)
            ));
        }
        if 2 * self.sync_interval + self.timeout > Duration::from_secs(1) {
            return Err(format!(
                "sync_interval and timeout: a block reaches every instance within 2 × sync_interval + timeout, here {}; keep it within 1s",
                humantime::format_duration(2 * self.sync_interval + self.timeout)
            ));
        }
        Ok(())
    }
}

fn check_name(key: &str, v: &str) -> Result<(), String> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "{key}: `{v}` must be 1 to 64 letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// `HOSTNAME-PID`: distinct for each process on each machine.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .take(48)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "towergate".into());
    format!("{host}-{}", std::process::id())
}

/// The URL without its password, for logs and the status page.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

// === impl RedisStore ===

/// A [`Store`] shared by several instances through Redis: local decisions, summed counts,
/// blocks honoured everywhere. See the [module docs](self) for the semantics, how far a
/// flood can overshoot, the keys, and what happens when Redis is away.
///
/// Built with [`RedisStore::new`], which also returns the [`RedisSync`] task to spawn;
/// give the store to [`EvasiveBuilder::store`](crate::EvasiveBuilder::store) with the same
/// limits.
pub struct RedisStore {
    local: MemoryStore,
    limits: Limits,
    view: ArcSwap<View>,
    outbox: Outbox,
    link: Mutex<LinkStatus>,
    /// An instant and its Unix time in ms: request times are wall-clock ms in Redis.
    base: (Instant, u64),
    options: RedisOptions,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact(&self.options.url))
            .field("instance", &self.options.instance)
            .field("key_prefix", &self.options.key_prefix)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store enforcing `limits` (the layer's) for at most `max_tracked` clients, shared
    /// through the Redis at `options.url`, and the task that syncs it, for the caller to
    /// spawn (`tokio::spawn(sync.run())`; it ends when the store is dropped). Connects
    /// lazily: Redis need not be up yet. Must be called within a tokio runtime.
    pub fn new(
        limits: &Limits,
        max_tracked: usize,
        options: RedisOptions,
    ) -> Result<(Arc<Self>, RedisSync), String> {
        options.validate()?;
        let client = redis::Client::open(options.url.as_str()).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        let t = now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let store = Arc::new(Self {
            local: MemoryStore::new(limits, max_tracked),
            limits: *limits,
            view: ArcSwap::from_pointee(View::default()),
            outbox: Outbox::new(),
            link: Mutex::new(LinkStatus {
                up: false,
                since: SystemTime::now(),
                syncs: 0,
                failures: 0,
                last_error: None,
                dropped: 0,
            }),
            base: (t, unix),
            options,
        });
        let keys = Keys::new(&store.options.key_prefix);
        let own = format!("{}:", store.options.instance);
        let sync = RedisSync {
            store: Arc::downgrade(&store),
            manager,
            keys,
            member_prefix: format!("{own}{unix:x}."),
            own,
            seq: 0,
            interest: HashMap::new(),
            events: Vec::new(),
            pending_blocks: HashMap::new(),
            pending_unblocks: Vec::new(),
            logged_down: false,
            every: store.options.sync_interval,
            timeout: store.options.timeout,
        };
        Ok((store, sync))
    }

    /// The options it was built with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The Redis URL, its password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact(&self.options.url)
    }

    fn unix_ms(&self, t: Instant) -> u64 {
        self.base.1 + t.saturating_duration_since(self.base.0).as_millis() as u64
    }

    fn instant(&self, unix_ms: u64) -> Instant {
        self.base.0 + Duration::from_millis(unix_ms.saturating_sub(self.base.1))
    }

    fn link_lock(&self) -> MutexGuard<'_, LinkStatus> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for RedisStore {
    fn check(&self, client: IpNet, path: &str, now: Instant) -> Verdict {
        let mut page = None;
        let remote = {
            let view = self.view.load();
            match (!view.clients.is_empty())
                .then(|| view.clients.get(&client))
                .flatten()
            {
                None => (0, 0),
                Some(r) => {
                    let t = self.unix_ms(now);
                    let hash = path_hash(path);
                    page = Some(hash);
                    let site_ms = self.limits.site_interval.as_millis() as u64;
                    let page_ms = self.limits.page_interval.as_millis() as u64;
                    let pages = r
                        .pages
                        .iter()
                        .find(|(h, _)| *h == hash)
                        .map_or(0, |(_, times)| within(times, t, page_ms));
                    (within(&r.site, t, site_ms), pages)
                }
            }
        };
        let verdict = self.local.check_with(client, path, now, remote);
        let event = match verdict {
            Verdict::Pass => Event::Hit {
                client,
                page: page.unwrap_or_else(|| path_hash(path)),
                at: self.unix_ms(now),
            },
            Verdict::Blocked => Event::Refused { client },
            Verdict::NewBlock { reason, until } => Event::Block {
                client,
                reason,
                until: self.unix_ms(until),
            },
        };
        self.outbox.push(event);
        verdict
    }

    fn blocks(&self, now: Instant) -> Vec<Block> {
        self.local.blocks(now)
    }

    fn unblock(&self, client: IpNet, now: Instant) -> bool {
        self.outbox.push(Event::Unblock { client });
        self.local.unblock(client, now)
    }

    fn sweep(&self, now: Instant) -> usize {
        self.local.sweep(now)
    }

    fn tracked(&self) -> usize {
        self.local.tracked()
    }

    fn evicted(&self) -> u64 {
        self.local.evicted()
    }

    fn link(&self) -> Option<LinkStatus> {
        let mut status = self.link_lock().clone();
        status.dropped = self.outbox.dropped.load(Relaxed);
        Some(status)
    }
}

/// How many of `times` (Unix ms, any order) lie within `window` before `t`.
fn within(times: &[u64], t: u64, window: u64) -> u32 {
    times.iter().filter(|&&at| at + window > t).count() as u32
}

/// FNV-1a: the same path gives the same key on every instance and build.
fn path_hash(path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// === impl View ===

/// What the other instances counted, as last pulled: read on the request path.
#[derive(Default)]
struct View {
    clients: HashMap<IpNet, Remote, foldhash::fast::RandomState>,
}

#[derive(Default)]
struct Remote {
    /// Times (Unix ms) of the client's requests elsewhere.
    site: Box<[u64]>,
    /// Per URI hash, the times of its requests elsewhere.
    pages: Vec<(u64, Box<[u64]>)>,
}

// === impl Outbox ===

#[derive(Debug, Clone, Copy)]
enum Event {
    Hit {
        client: IpNet,
        page: u64,
        at: u64,
    },
    Refused {
        client: IpNet,
    },
    Block {
        client: IpNet,
        reason: Reason,
        until: u64,
    },
    Unblock {
        client: IpNet,
    },
}

/// Events waiting for the next round, in 16 queues so that requests of different
/// clients rarely meet on one lock.
struct Outbox {
    shards: Box<[Mutex<Vec<Event>>]>,
    dropped: AtomicU64,
}

impl Outbox {
    fn new() -> Self {
        Self {
            shards: (0..OUTBOX_SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            dropped: AtomicU64::new(0),
        }
    }

    fn push(&self, event: Event) {
        let client = match event {
            Event::Hit { client, .. }
            | Event::Refused { client }
            | Event::Block { client, .. }
            | Event::Unblock { client } => client,
        };
        let bits = match client.addr() {
            std::net::IpAddr::V4(a) => u64::from(a.to_bits()),
            std::net::IpAddr::V6(a) => {
                let b = a.to_bits();
                (b >> 64) as u64 ^ b as u64
            }
        };
        let i = ((bits ^ (bits >> 8) ^ (bits >> 16)) as usize) % OUTBOX_SHARDS;
        let mut queue = self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= OUTBOX_PER_SHARD {
            drop(queue);
            // A refusal only extends a block that is shared already.
            if !matches!(event, Event::Refused { .. }) {
                self.dropped.fetch_add(1, Relaxed);
            }
            return;
        }
        queue.push(event);
    }

    fn drain_into(&self, out: &mut Vec<Event>) {
        for shard in &self.shards {
            let mut queue = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(queue.drain(..));
        }
    }
}

// === impl RedisSync ===

struct Keys {
    prefix: String,
    blocks: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            blocks: format!("{prefix}:ev:blocks"),
        }
    }

    fn site(&self, client: IpNet) -> String {
        format!("{}:ev:s:{client}", self.prefix)
    }

    fn page(&self, client: IpNet, page: u64) -> String {
        format!("{}:ev:p:{client}:{page:016x}", self.prefix)
    }
}

/// Until when (Unix ms) a client's counts elsewhere matter here.
#[derive(Default)]
struct Interest {
    site_until: u64,
    pages: HashMap<u64, u64>,
}

/// A [`RedisStore`]'s background task: pushes this instance's counts and blocks, pulls the
/// others', every `sync_interval`. Spawn it (`tokio::spawn(sync.run())`); it ends when the
/// store is dropped.
pub struct RedisSync {
    store: Weak<RedisStore>,
    manager: ConnectionManager,
    keys: Keys,
    /// `INSTANCE:`: members this instance wrote start with it.
    own: String,
    /// `INSTANCE:BOOT.`: unique across restarts of an instance.
    member_prefix: String,
    seq: u64,
    interest: HashMap<IpNet, Interest>,
    events: Vec<Event>,
    pending_blocks: HashMap<IpNet, (Reason, u64)>,
    pending_unblocks: Vec<IpNet>,
    logged_down: bool,
    every: Duration,
    timeout: Duration,
}

impl fmt::Debug for RedisSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSync")
            .field("every", &self.every)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A key pulled in a round: a client's site count, or one of its pages.
type Pulled = (IpNet, Option<u64>);

impl RedisSync {
    /// Runs until the store is dropped.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(store) = self.store.upgrade() else {
                break;
            };
            self.round(&store).await;
        }
        tracing::debug!(target: TARGET, "store dropped: Redis sync stops");
    }

    async fn round(&mut self, store: &RedisStore) {
        let now_i = now();
        let t = store.unix_ms(now_i);
        let l = &store.limits;
        let (site_ms, page_ms) = (
            l.site_interval.as_millis() as u64,
            l.page_interval.as_millis() as u64,
        );
        let block_ms = l.blocking_period.as_millis() as u64;

        self.events.clear();
        store.outbox.drain_into(&mut self.events);
        let mut site_hits: HashMap<IpNet, Vec<u64>> = HashMap::new();
        let mut page_hits: HashMap<(IpNet, u64), Vec<u64>> = HashMap::new();
        let mut refused = std::collections::HashSet::new();
        for &event in &self.events {
            match event {
                Event::Hit { client, page, at } => {
                    site_hits.entry(client).or_default().push(at);
                    page_hits.entry((client, page)).or_default().push(at);
                    if self.interest.len() < MAX_INTEREST || self.interest.contains_key(&client) {
                        let i = self.interest.entry(client).or_default();
                        i.site_until = i.site_until.max(at + site_ms);
                        let p = i.pages.entry(page).or_default();
                        *p = (*p).max(at + page_ms);
                    }
                }
                Event::Refused { client } => {
                    refused.insert(client);
                }
                Event::Block {
                    client,
                    reason,
                    until,
                } => {
                    self.pending_blocks.insert(client, (reason, until));
                }
                Event::Unblock { client } => {
                    self.pending_blocks.remove(&client);
                    self.pending_unblocks.push(client);
                }
            }
        }
        // Requests refused here extend the block: share its new end.
        for client in refused {
            if let Some((reason, until)) = store.local.block_of(client, now_i) {
                self.pending_blocks
                    .insert(client, (reason, store.unix_ms(until)));
            }
        }
        self.interest.retain(|_, i| {
            i.pages.retain(|_, until| *until > t);
            i.site_until > t || !i.pages.is_empty()
        });

        let mut pipe = redis::pipe();
        for (client, times) in &site_hits {
            self.push_times(&mut pipe, &self.keys.site(*client), times, t, site_ms);
        }
        for ((client, page), times) in &page_hits {
            self.push_times(
                &mut pipe,
                &self.keys.page(*client, *page),
                times,
                t,
                page_ms,
            );
        }
        if !self.pending_blocks.is_empty() {
            let zadd = pipe.cmd("ZADD").arg(&self.keys.blocks).arg("GT");
            for (client, (reason, until)) in &self.pending_blocks {
                zadd.arg(*until).arg(format!("{reason} {client}"));
            }
            zadd.ignore();
            pipe.cmd("PEXPIRE")
                .arg(&self.keys.blocks)
                .arg(block_ms + BLOCKS_SLACK_MS)
                .ignore();
        }
        if !self.pending_unblocks.is_empty() {
            let zrem = pipe.cmd("ZREM").arg(&self.keys.blocks);
            for client in &self.pending_unblocks {
                zrem.arg(format!("page {client}"))
                    .arg(format!("site {client}"));
            }
            zrem.ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&self.keys.blocks)
            .arg("-inf")
            .arg(t)
            .ignore();

        let mut pulled: Vec<Pulled> = Vec::new();
        let site_limit = (4 * l.site_count as usize + 8).min(MAX_TIMES);
        let page_limit = (4 * l.page_count as usize + 8).min(MAX_TIMES);
        'pull: for (client, i) in &self.interest {
            if i.site_until > t {
                if pulled.len() >= MAX_PULLED_KEYS {
                    break 'pull;
                }
                pull_times(&mut pipe, &self.keys.site(*client), t, site_ms, site_limit);
                pulled.push((*client, None));
            }
            for (page, until) in &i.pages {
                if *until > t {
                    if pulled.len() >= MAX_PULLED_KEYS {
                        break 'pull;
                    }
                    pull_times(
                        &mut pipe,
                        &self.keys.page(*client, *page),
                        t,
                        page_ms,
                        page_limit,
                    );
                    pulled.push((*client, Some(*page)));
                }
            }
        }
        pipe.cmd("ZRANGEBYSCORE")
            .arg(&self.keys.blocks)
            .arg(format!("({t}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_PULLED_BLOCKS);

        let answer = tokio::time::timeout(
            self.timeout,
            pipe.query_async::<Vec<Vec<(String, f64)>>>(&mut self.manager),
        )
        .await;
        let mut answers = match answer {
            Ok(Ok(answers)) if answers.len() == pulled.len() + 1 => answers,
            Ok(Ok(answers)) => {
                self.down(
                    store,
                    format!("unexpected answer: {} replies", answers.len()),
                );
                return;
            }
            Ok(Err(e)) => {
                self.down(store, e.to_string());
                return;
            }
            Err(_) => {
                self.down(
                    store,
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                );
                return;
            }
        };
        self.pending_blocks.clear();
        self.pending_unblocks.clear();

        let blocks = answers.pop().unwrap_or_default();
        let mut view = View::default();
        for ((client, page), entries) in pulled.into_iter().zip(answers) {
            let times: Box<[u64]> = entries
                .into_iter()
                .filter(|(member, _)| !member.starts_with(&self.own))
                .map(|(_, at)| at as u64)
                .collect();
            if times.is_empty() {
                continue;
            }
            let remote = view.clients.entry(client).or_default();
            match page {
                None => remote.site = times,
                Some(page) => remote.pages.push((page, times)),
            }
        }
        store.view.store(Arc::new(view));

        for (member, until) in blocks {
            let Some((reason, client)) = member.split_once(' ') else {
                continue;
            };
            let reason = match reason {
                "page" => Reason::Page,
                "site" => Reason::Site,
                _ => continue,
            };
            let Ok(client) = client.parse::<IpNet>() else {
                continue;
            };
            let until = store.instant(until as u64);
            if store.local.impose(client, reason, until, now_i) {
                tracing::info!(target: TARGET, client = %Address(client), %reason, "client blocked by another instance");
            }
        }
        self.up(store);
    }

    fn push_times(
        &mut self,
        pipe: &mut redis::Pipeline,
        key: &str,
        times: &[u64],
        t: u64,
        window: u64,
    ) {
        let zadd = pipe.cmd("ZADD").arg(key);
        for at in times {
            self.seq += 1;
            zadd.arg(*at)
                .arg(format!("{}{:x}", self.member_prefix, self.seq));
        }
        zadd.ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(key)
            .arg("-inf")
            .arg(t.saturating_sub(window))
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(key)
            .arg(window + COUNT_SLACK_MS)
            .ignore();
    }

    fn up(&mut self, store: &RedisStore) {
        let mut link = store.link_lock();
        link.syncs += 1;
        if !link.up {
            link.up = true;
            link.since = SystemTime::now();
            self.logged_down = false;
            tracing::info!(target: TARGET, redis = %store.redacted_url(), instance = %store.options.instance, "Redis link up: flood counts and blocks are shared");
        }
    }

    fn down(&mut self, store: &RedisStore, error: String) {
        if !store.view.load().clients.is_empty() {
            store.view.store(Arc::new(View::default()));
        }
        let mut link = store.link_lock();
        link.failures += 1;
        if link.up {
            link.up = false;
            link.since = SystemTime::now();
        }
        if !self.logged_down {
            self.logged_down = true;
            tracing::warn!(target: TARGET, redis = %store.redacted_url(), %error, "Redis link down: flood counts and blocks are local only until it is back");
        }
        link.last_error = Some(error);
    }
}

fn pull_times(pipe: &mut redis::Pipeline, key: &str, t: u64, window: u64, limit: usize) {
    pipe.cmd("ZREVRANGEBYSCORE")
        .arg(key)
        .arg("+inf")
        .arg(format!("({}", t.saturating_sub(window)))
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let ok = RedisOptions::new("redis://127.0.0.1:6379/0");
        assert_eq!(ok.validate(), Ok(()));
        let mut o = ok.clone();
        o.url = "http://x".into();
        assert!(o.validate().unwrap_err().starts_with("redis:"));
        let mut o = ok.clone();
        o.instance = "a:b".into();
        assert!(o.validate().unwrap_err().starts_with("instance:"));
        let mut o = ok.clone();
        o.sync_interval = Duration::from_millis(400);
        o.timeout = Duration::from_millis(300);
        assert!(o.validate().unwrap_err().contains("within 1s"));
        let mut o = ok;
        o.sync_interval = Duration::from_secs(2);
        assert!(o.validate().unwrap_err().starts_with("sync_interval:"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn path_hash_is_stable() {
        assert_eq!(path_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(path_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn counts_within_the_window() {
        assert_eq!(within(&[100, 900, 1500], 2000, 1000), 1);
        assert_eq!(within(&[100, 900, 1500], 1500, 1000), 2);
    }
}
