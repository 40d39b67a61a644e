//! [`MemoryStore`]: exact sliding-window counts in a sharded table of bounded size.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use foldhash::quality::RandomState;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use crate::store::{Block, Limits, Reason, Store, Verdict};

/// The most page slots (distinct recent URIs) a client gets: `min(site_count, 256)`.
pub const MAX_PAGE_SLOTS: u32 = 256;

/// The longest interval or blocking period a store accepts (24 days); longer ones are
/// clamped to it.
pub const MAX_PERIOD: Duration = Duration::from_millis(i32::MAX as u64);

/// Words in front of a page slot's times: URI hash (two words) and how many times follow.
const PAGE_HEADER: usize = 3;
/// Steps the clock hand takes at most to find a client to forget.
const CLOCK_SCAN: usize = 64;
const MAX_SHARDS: usize = 64;
/// Shards hold at least this many clients (tables smaller than 2 × this have one shard),
/// so that eviction always has entries to choose from.
const MIN_SHARD_CAPACITY: usize = 256;

// === impl MemoryStore ===

/// The in-memory [`Store`]: exact per-client sliding windows, at most `max_tracked`
/// clients.
///
/// # Layout
///
/// Clients are spread over up to 64 shards (of at least 256 clients each) by a keyed
/// hash of their address (foldhash, randomly seeded); each shard is a `Mutex` around a
/// hash index and a vector of entries. A request locks one shard for the few hundred
/// nanoseconds its update takes: there is no global lock.
///
/// An entry holds, for one client:
///
/// - the times (milliseconds) of its last requests to the site, up to `site_count` of
///   them, in a ring: the next request is refused when the ring is full and its oldest
///   time is within `site_interval`;
/// - page slots, one per URI it requested recently, each a 64-bit keyed hash of the
///   path and the times of its last requests, up to `page_count`: the same rule with
///   `page_interval`. A client has at most `site_count` slots (at most
///   [`MAX_PAGE_SLOTS`]); a slot whose newest time is older than `page_interval` is free
///   for the next URI;
/// - its block, if any: since, until, reason, requests refused.
///
/// # Bounds
///
/// A shard never holds more than its share of `max_tracked` entries. When a new client
/// arrives at a full shard, a clock hand (CLOCK, the classic approximation of least
/// recently used) walks the entries: a client seen again since the hand last passed is
/// marked unseen and spared, a blocked client is spared, and the first other client is
/// forgotten. New clients start unseen, so a flood of one-request addresses replaces
/// itself rather than the clients that come back. If the hand meets only blocked clients
/// within 64 steps, it forgets the first unblocked client it spared, or else the blocked
/// client under it. Buffers grow only as a client uses them, are reused for the next
/// client, and are trimmed by [`Store::sweep`].
///
/// Why the page slots are enough: while `page_interval <= site_interval` and
/// `site_count <= MAX_PAGE_SLOTS`, a client with `site_count` slots all holding a request
/// from the last `page_interval` has made `site_count` requests within `site_interval`,
/// so its next request is refused by the site limit before a slot would have to be
/// reused. Counting is then exact: no URI is ever forgotten while it still counts.
/// Outside those conditions a client switching among more URIs than it has slots within
/// one interval can have a URI's count forgotten (counted low, never high).
pub struct MemoryStore {
    shards: Box<[Padded]>,
    shard_mask: u64,
    keys: RandomState,
    rules: Rules,
    max_tracked: usize,
    epoch: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Rules {
    page_count: usize,
    page_ms: u32,
    site_count: usize,
    site_ms: u32,
    block_ms: u64,
    /// After this long without a request every count of a client has expired.
    idle_ms: u64,
    page_slots: usize,
    /// Words per page slot.
    stride: usize,
}

/// A shard on its own cache lines, so that two cores locking neighbours don't contend.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("max_tracked", &self.max_tracked)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store enforcing `limits` for at most `max_tracked` clients (at least 1).
    ///
    /// Counts are clamped to `1..`, `page_count` to 64, and periods to 1 ms ..=
    /// [`MAX_PERIOD`]; [`EvasiveBuilder`](crate::EvasiveBuilder) refuses values outside
    /// these ranges with an error instead.
    pub fn new(limits: &Limits, max_tracked: usize) -> Self {
        let max_tracked = max_tracked.max(1);
        let page_count = limits.page_count.clamp(1, crate::MAX_PAGE_COUNT) as usize;
        let site_count = limits.site_count.max(1) as usize;
        let page_ms = millis(limits.page_interval);
        let site_ms = millis(limits.site_interval);
        let rules = Rules {
            page_count,
            page_ms,
            site_count,
            site_ms,
            block_ms: u64::from(millis(limits.blocking_period)),
            idle_ms: u64::from(page_ms.max(site_ms)),
            page_slots: site_count.min(MAX_PAGE_SLOTS as usize),
            stride: PAGE_HEADER + page_count,
        };
        let mut n = 1;
        while n * 2 <= MAX_SHARDS && n * 2 * MIN_SHARD_CAPACITY <= max_tracked {
            n *= 2;
        }
        let shards = (0..n)
            .map(|i| {
                let cap = max_tracked / n + usize::from(i < max_tracked % n);
                Padded(Mutex::new(Shard::new(cap)))
            })
            .collect();
        Self {
            shards,
            shard_mask: n as u64 - 1,
            keys: RandomState::default(),
            rules,
            max_tracked,
            epoch: tokio::time::Instant::now().into_std(),
        }
    }

    /// The most clients this store tracks.
    pub fn max_tracked(&self) -> usize {
        self.max_tracked
    }

    /// The most bytes one tracked client takes (entry, index, full windows, with an
    /// allowance for the allocator), so that the table stays under `max_tracked` times
    /// this.
    pub fn bytes_per_client(&self) -> usize {
        let r = &self.rules;
        let windows = 4 * (r.site_count + r.page_slots * r.stride);
        std::mem::size_of::<Entry>()
            + 2 * std::mem::size_of::<(u64, u32)>() // index slot at half load
            + windows + windows / 4 // allocator rounding and fragmentation
            + 64 // two allocation headers
    }

    fn tick(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Bits 32.. pick the shard: the index uses the low bits for bucket positions and
        // the top 7 as tags, so neither is constant within a shard.
        let i = ((hash >> 32) & self.shard_mask) as usize;
        lock(&self.shards[i].0)
    }

    fn shards(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards.iter().map(|s| lock(&s.0))
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Nothing panics while holding a shard; if something did, its counts are still sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> u32 {
    d.clamp(Duration::from_millis(1), MAX_PERIOD).as_millis() as u32
}

/// Milliseconds from `then` to `now` on the 32-bit clock of the windows. Every time kept
/// in a window is at most one interval (< 2^31 ms) older than the entry's last request,
/// which is never after `now`.
fn since(now: u32, then: u32) -> u32 {
    now.wrapping_sub(then)
}

impl MemoryStore {
    /// [`Store::check`], with `remote` requests (site, page) made elsewhere within the
    /// intervals added to the client's own counts: a shared store's local decision.
    #[inline]
    pub(crate) fn check_with(
        &self,
        client: IpNet,
        path: &str,
        now: Instant,
        remote: (u32, u32),
    ) -> Verdict {
        let hash = self.keys.hash_one(client);
        let page = self.keys.hash_one(path);
        let t = self.tick(now);
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let i = shard.find_or_insert(client, hash, t);
        shard.entries[i as usize].judge(&self.rules, page, t, now, remote)
    }

    /// Blocks `client` until `until` (or later, if it is blocked longer already) for a
    /// block made elsewhere; `true` if it was not blocked before.
    #[cfg(feature = "redis")]
    pub(crate) fn impose(
        &self,
        client: IpNet,
        reason: Reason,
        until: Instant,
        now: Instant,
    ) -> bool {
        let hash = self.keys.hash_one(client);
        let t = self.tick(now);
        let until = self.tick(until);
        if until <= t {
            return false;
        }
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let i = shard.find_or_insert(client, hash, t);
        let e = &mut shard.entries[i as usize];
        if e.blocked && t < e.until {
            e.until = e.until.max(until);
            return false;
        }
        e.blocked = true;
        e.reason = reason;
        e.since = t;
        e.until = until;
        e.refused = 0;
        e.forget_counts();
        true
    }

    /// The reason and end of `client`'s block, if it is blocked at `now`.
    #[cfg(feature = "redis")]
    pub(crate) fn block_of(&self, client: IpNet, now: Instant) -> Option<(Reason, Instant)> {
        let hash = self.keys.hash_one(client);
        let t = self.tick(now);
        let shard = self.shard(hash);
        let &i = shard.index.get(&hash)?;
        let e = &shard.entries[i as usize];
        (e.client == client && e.blocked && t < e.until)
            .then(|| (e.reason, now + Duration::from_millis(e.until - t)))
    }
}

impl Store for MemoryStore {
    #[inline]
    fn check(&self, client: IpNet, path: &str, now: Instant) -> Verdict {
        self.check_with(client, path, now, (0, 0))
    }

    fn blocks(&self, now: Instant) -> Vec<Block> {
        let t = self.tick(now);
        let wall = SystemTime::now();
        let mut out = Vec::new();
        for shard in self.shards() {
            for e in &shard.entries {
                if e.blocked && t < e.until {
                    out.push(Block {
                        client: e.client,
                        reason: e.reason,
                        since: wall - Duration::from_millis(t.saturating_sub(e.since)),
                        until: wall + Duration::from_millis(e.until - t),
                        refused: u64::from(e.refused),
                    });
                }
            }
        }
        out
    }

    fn unblock(&self, client: IpNet, now: Instant) -> bool {
        let hash = self.keys.hash_one(client);
        let t = self.tick(now);
        let mut shard = self.shard(hash);
        let Some(&i) = shard.index.get(&hash) else {
            return false;
        };
        let e = &mut shard.entries[i as usize];
        if e.client != client || !e.blocked {
            return false;
        }
        let was = t < e.until;
        e.blocked = false;
        e.forget_counts();
        was
    }

    fn sweep(&self, now: Instant) -> usize {
        let t = self.tick(now);
        self.shards().map(|mut s| s.sweep(&self.rules, t)).sum()
    }

    fn tracked(&self) -> usize {
        self.shards().map(|s| s.entries.len()).sum()
    }

    fn evicted(&self) -> u64 {
        self.shards().map(|s| s.evicted).sum()
    }
}

// === impl Entry ===

struct Entry {
    client: IpNet,
    hash: u64,
    blocked: bool,
    reason: Reason,
    refused: u32,
    /// Seen again since the clock hand last passed.
    referenced: bool,
    /// Milliseconds since the store's epoch.
    last_seen: u64,
    since: u64,
    until: u64,
    /// Times of the last requests to the site, oldest first (low 32 bits of ms).
    site: VecDeque<u32>,
    /// Page slots, `stride` words each: hash low, hash high, count, times oldest first.
    pages: Vec<u32>,
}

impl Entry {
    fn new(client: IpNet, hash: u64, t: u64) -> Self {
        Self {
            client,
            hash,
            blocked: false,
            reason: Reason::Site,
            refused: 0,
            referenced: false,
            last_seen: t,
            since: 0,
            until: 0,
            site: VecDeque::new(),
            pages: Vec::new(),
        }
    }

    /// Makes this entry a fresh one for `client`, keeping its buffers.
    fn reuse(&mut self, client: IpNet, hash: u64, t: u64) {
        self.client = client;
        self.hash = hash;
        self.blocked = false;
        self.refused = 0;
        self.referenced = false;
        self.last_seen = t;
        self.forget_counts();
    }

    fn forget_counts(&mut self) {
        self.site.clear();
        self.pages.clear();
    }

    fn judge(
        &mut self,
        r: &Rules,
        page: u64,
        t: u64,
        now: Instant,
        (remote_site, remote_page): (u32, u32),
    ) -> Verdict {
        // Requests racing for the shard lock may arrive a millisecond out of order: keep
        // the entry's clock monotonic.
        let t = t.max(self.last_seen);
        if t - self.last_seen >= r.idle_ms {
            self.forget_counts();
        }
        self.last_seen = t;
        if self.blocked {
            if t < self.until {
                self.until = t + r.block_ms;
                self.refused = self.refused.saturating_add(1);
                return Verdict::Blocked;
            }
            self.blocked = false;
        }
        let t32 = t as u32;

        while let Some(&first) = self.site.front() {
            if since(t32, first) < r.site_ms {
                break;
            }
            self.site.pop_front();
        }
        if self.site.len() + remote_site as usize >= r.site_count {
            return self.block(Reason::Site, r, t, now);
        }

        let at = self.page_slot(r, page, t32);
        let slot = &mut self.pages[at..at + r.stride];
        let mut len = slot[2] as usize;
        let times = &mut slot[PAGE_HEADER..];
        let expired = times[..len]
            .iter()
            .take_while(|&&s| since(t32, s) >= r.page_ms)
            .count();
        if expired > 0 {
            times.copy_within(expired..len, 0);
            len -= expired;
        }
        if len + remote_page as usize >= r.page_count {
            return self.block(Reason::Page, r, t, now);
        }
        times[len] = t32;
        slot[2] = len as u32 + 1;

        if self.site.len() == self.site.capacity() {
            let len = self.site.len();
            self.site.reserve_exact(len.max(4).min(r.site_count - len));
        }
        self.site.push_back(t32);
        Verdict::Pass
    }

    /// The offset of `page`'s slot, taking a free one (or, past the guarantees, the
    /// least recently used one) for a new URI. Slots whose newest time has left the page
    /// window are emptied on the way: every kept time stays within an interval.
    fn page_slot(&mut self, r: &Rules, page: u64, t32: u32) -> usize {
        let (lo, hi) = (page as u32, (page >> 32) as u32);
        let mut free = None;
        let mut oldest = (0, 0u32);
        for (n, slot) in self.pages.chunks_exact_mut(r.stride).enumerate() {
            let at = n * r.stride;
            if slot[0] == lo && slot[1] == hi {
                return at;
            }
            let len = slot[2] as usize;
            if len > 0 {
                let age = since(t32, slot[PAGE_HEADER + len - 1]);
                if age >= r.page_ms {
                    slot[2] = 0;
                } else {
                    if age >= oldest.1 {
                        oldest = (at, age);
                    }
                    continue;
                }
            }
            free.get_or_insert(at);
        }
        let at = match free {
            Some(at) => at,
            None if self.pages.len() < r.page_slots * r.stride => {
                let slots = self.pages.len() / r.stride;
                if self.pages.capacity() - self.pages.len() < r.stride {
                    let more = slots.max(1).min(r.page_slots - slots);
                    self.pages.reserve_exact(more * r.stride);
                }
                let at = self.pages.len();
                self.pages.resize(at + r.stride, 0);
                at
            }
            None => oldest.0,
        };
        self.pages[at] = lo;
        self.pages[at + 1] = hi;
        self.pages[at + 2] = 0;
        at
    }

    fn block(&mut self, reason: Reason, r: &Rules, t: u64, now: Instant) -> Verdict {
        self.blocked = true;
        self.reason = reason;
        self.since = t;
        self.until = t + r.block_ms;
        self.refused = 1;
        self.forget_counts();
        Verdict::NewBlock {
            reason,
            until: now + Duration::from_millis(r.block_ms),
        }
    }

    /// Drops expired times and empty page slots; trims buffers much larger than needed.
    fn compact(&mut self, r: &Rules, t: u64) {
        let t32 = t as u32;
        while let Some(&first) = self.site.front() {
            if since(t32, first) < r.site_ms {
                break;
            }
            self.site.pop_front();
        }
        let mut keep = 0;
        let slots = self.pages.len() / r.stride;
        for n in 0..slots {
            let at = n * r.stride;
            let len = self.pages[at + 2] as usize;
            if len == 0 || since(t32, self.pages[at + PAGE_HEADER + len - 1]) >= r.page_ms {
                continue;
            }
            if keep != n {
                self.pages.copy_within(at..at + r.stride, keep * r.stride);
            }
            keep += 1;
        }
        self.pages.truncate(keep * r.stride);
        if self.site.capacity() > 2 * self.site.len() + 4 {
            self.site.shrink_to(self.site.len());
        }
        if self.pages.capacity() > 2 * self.pages.len() + r.stride {
            self.pages.shrink_to(self.pages.len());
        }
    }
}

// === impl Shard ===

struct Shard {
    /// Client hash → entry position.
    index: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    entries: Vec<Entry>,
    cap: usize,
    /// The clock hand: the next entry the eviction looks at.
    hand: usize,
    evicted: u64,
}

impl Shard {
    fn new(cap: usize) -> Self {
        Self {
            index: HashMap::default(),
            entries: Vec::new(),
            cap,
            hand: 0,
            evicted: 0,
        }
    }

    fn find_or_insert(&mut self, client: IpNet, hash: u64, t: u64) -> u32 {
        if let Some(&i) = self.index.get(&hash) {
            let e = &mut self.entries[i as usize];
            if e.client == client {
                e.referenced = true;
            } else {
                // Two addresses with one 64-bit keyed hash: the newcomer takes the entry.
                e.reuse(client, hash, t);
            }
            return i;
        }
        if self.entries.len() < self.cap {
            let i = self.entries.len() as u32;
            if self.entries.len() == self.entries.capacity() {
                // Grow by doubling, but never past the cap.
                let len = self.entries.len();
                self.entries.reserve_exact(len.max(16).min(self.cap - len));
            }
            self.entries.push(Entry::new(client, hash, t));
            self.index.insert(hash, i);
            return i;
        }
        let i = self.victim(t);
        let old = self.entries[i as usize].hash;
        self.index.remove(&old);
        self.entries[i as usize].reuse(client, hash, t);
        self.index.insert(hash, i);
        self.evicted += 1;
        i
    }

    /// The entry to forget for a newcomer (CLOCK; see the module docs).
    fn victim(&mut self, t: u64) -> u32 {
        let len = self.entries.len();
        let mut spared = None;
        for _ in 0..CLOCK_SCAN.min(2 * len) {
            let i = self.hand;
            self.hand = if i + 1 == len { 0 } else { i + 1 };
            let e = &mut self.entries[i];
            if e.blocked && t < e.until {
                continue;
            }
            if e.referenced {
                e.referenced = false;
                spared.get_or_insert(i);
                continue;
            }
            return i as u32;
        }
        spared.unwrap_or(self.hand) as u32
    }

    /// Forgets entry `i`; the last entry takes its place.
    fn remove(&mut self, i: u32) {
        let hash = self.entries[i as usize].hash;
        self.index.remove(&hash);
        self.entries.swap_remove(i as usize);
        if let Some(moved) = self.entries.get(i as usize) {
            self.index.insert(moved.hash, i);
        }
    }

    fn sweep(&mut self, r: &Rules, t: u64) -> usize {
        let mut removed = 0;
        let mut i = self.entries.len();
        while i > 0 {
            i -= 1;
            let e = &self.entries[i];
            let blocked = e.blocked && t < e.until;
            // A finished block left no counts behind: nothing to keep.
            if !blocked && (e.blocked || t.saturating_sub(e.last_seen) >= r.idle_ms) {
                self.remove(i as u32);
                removed += 1;
                continue;
            }
            let e = &mut self.entries[i];
            if blocked {
                e.forget_counts();
                e.site.shrink_to_fit();
                e.pages.shrink_to_fit();
            } else {
                e.compact(r, t);
            }
        }
        if self.hand >= self.entries.len() {
            self.hand = 0;
        }
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to(self.entries.len() * 2);
            self.index.shrink_to(self.entries.len() * 2);
        }
        removed
    }
}

/// The index's keys are already keyed hashes: pass them through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
impl MemoryStore {
    /// (site times, page slots in use, page slot capacity) of `client`'s entry.
    pub(crate) fn entry_sizes(&self, client: IpNet) -> Option<(usize, usize, usize)> {
        let hash = self.keys.hash_one(client);
        let shard = self.shard(hash);
        let &i = shard.index.get(&hash)?;
        let e = &shard.entries[i as usize];
        let stride = self.rules.stride;
        Some((
            e.site.len(),
            e.pages.len() / stride,
            e.pages.capacity() / stride,
        ))
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Checks every shard's index and clock hand against its entries.
    pub(crate) fn assert_consistent(&self) {
        for shard in self.shards() {
            assert!(shard.entries.len() <= shard.cap);
            assert_eq!(shard.index.len(), shard.entries.len());
            for (i, e) in shard.entries.iter().enumerate() {
                assert_eq!(shard.index.get(&e.hash), Some(&(i as u32)));
            }
            assert!(shard.hand < shard.entries.len().max(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(page: u32, site: u32) -> Limits {
        Limits {
            page_count: page,
            page_interval: Duration::from_secs(1),
            site_count: site,
            site_interval: Duration::from_secs(1),
            blocking_period: Duration::from_secs(30),
        }
    }

    fn ip(s: &str) -> IpNet {
        IpNet::from(s.parse::<std::net::IpAddr>().unwrap())
    }

    fn v4(n: u32) -> IpNet {
        IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(n)))
    }

    struct Clock(Instant);
    impl Clock {
        fn new() -> Self {
            Self(Instant::now())
        }
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn is_new_block(v: Verdict, reason: Reason) -> bool {
        matches!(v, Verdict::NewBlock { reason: r, .. } if r == reason)
    }

    #[test]
    fn the_third_request_for_a_uri_within_the_interval_is_refused() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("192.0.2.1");
        assert_eq!(s.check(a, "/x", c.at(0)), Verdict::Pass);
        assert_eq!(s.check(a, "/x", c.at(1)), Verdict::Pass);
        assert!(is_new_block(s.check(a, "/x", c.at(2)), Reason::Page));
        assert_eq!(s.check(a, "/y", c.at(3)), Verdict::Blocked);
        // Another client is not affected.
        assert_eq!(s.check(ip("192.0.2.2"), "/x", c.at(4)), Verdict::Pass);
    }

    #[test]
    fn windows_slide_across_second_boundaries() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("192.0.2.1");
        assert_eq!(s.check(a, "/x", c.at(0)), Verdict::Pass);
        assert_eq!(s.check(a, "/x", c.at(900)), Verdict::Pass);
        // 0 ms has left the window: two in the last second (900, 1000).
        assert_eq!(s.check(a, "/x", c.at(1000)), Verdict::Pass);
        // 900 and 1000 are within the second before 1899: refused, although mod_evasive
        // (whole seconds, reset per second) would count this as a new second's first hit.
        assert!(is_new_block(s.check(a, "/x", c.at(1899)), Reason::Page));
    }

    #[test]
    fn steady_browsing_below_the_limits_passes_forever() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("192.0.2.1");
        // 29 requests a second, each URI twice a second, for a minute.
        for n in 0..29 * 60u64 {
            let path = format!("/asset/{}", (n / 2) % 40);
            assert_eq!(
                s.check(a, &path, c.at(n * 1000 / 29)),
                Verdict::Pass,
                "request {n}"
            );
        }
    }

    #[test]
    fn the_site_limit_counts_all_uris() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("192.0.2.1");
        for n in 0..30 {
            assert_eq!(s.check(a, &format!("/p{n}"), c.at(n)), Verdict::Pass);
        }
        assert!(is_new_block(s.check(a, "/p30", c.at(30)), Reason::Site));
    }

    #[test]
    fn requests_while_blocked_extend_the_block() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("192.0.2.1");
        s.check(a, "/", c.at(0));
        s.check(a, "/", c.at(1));
        let Verdict::NewBlock { until, .. } = s.check(a, "/", c.at(2)) else {
            panic!("not blocked")
        };
        assert_eq!(until, c.at(30_002));
        // Keeps sending every 29 s: stays blocked well past the first 30 s.
        for k in 1..5 {
            assert_eq!(s.check(a, "/", c.at(2 + 29_000 * k)), Verdict::Blocked);
        }
        let last = 2 + 29_000 * 4;
        let b = &s.blocks(c.at(last))[0];
        assert_eq!((b.client, b.reason, b.refused), (a, Reason::Page, 5));
        // Silent for a blocking period: released, counting from zero.
        assert_eq!(s.check(a, "/", c.at(last + 30_000)), Verdict::Pass);
        assert_eq!(s.check(a, "/", c.at(last + 30_001)), Verdict::Pass);
        assert!(s.blocks(c.at(last + 30_001)).is_empty());
    }

    #[test]
    fn unblock_lifts_a_block() {
        let s = MemoryStore::new(&limits(1, 30), 1000);
        let c = Clock::new();
        let a: IpNet = "2001:db8::/64".parse().unwrap();
        s.check(a, "/", c.at(0));
        assert!(!s.check(a, "/", c.at(1)).is_pass());
        assert!(s.unblock(a, c.at(2)));
        assert!(!s.unblock(a, c.at(3)));
        assert_eq!(s.check(a, "/", c.at(4)), Verdict::Pass);
    }

    #[test]
    fn one_client_holds_at_most_site_count_page_slots() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("192.0.2.1");
        // 20 new URIs a second for ten minutes: under both limits, 12000 URIs.
        for n in 0..12_000u64 {
            assert_eq!(s.check(a, &format!("/u/{n}"), c.at(n * 50)), Verdict::Pass);
            let (site, slots, cap) = s.entry_sizes(a).unwrap();
            assert!(
                site <= 30 && slots <= 30 && cap <= 30,
                "{site} {slots} {cap}"
            );
        }
    }

    #[test]
    fn interleaving_many_uris_cannot_dodge_the_page_limit() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("192.0.2.1");
        // 29 distinct URIs, then /x twice: still within the site limit, and /x is counted.
        for n in 0..28 {
            assert_eq!(s.check(a, &format!("/u/{n}"), c.at(n)), Verdict::Pass);
        }
        assert_eq!(s.check(a, "/x", c.at(28)), Verdict::Pass);
        assert_eq!(s.check(a, "/x", c.at(29)), Verdict::Pass);
        assert!(is_new_block(s.check(a, "/x", c.at(30)), Reason::Site));
        let s = MemoryStore::new(&limits(2, 30), 1000);
        for n in 0..27 {
            assert_eq!(s.check(a, &format!("/u/{n}"), c.at(n)), Verdict::Pass);
        }
        assert_eq!(s.check(a, "/x", c.at(27)), Verdict::Pass);
        assert_eq!(s.check(a, "/x", c.at(28)), Verdict::Pass);
        assert!(is_new_block(s.check(a, "/x", c.at(29)), Reason::Page));
    }

    #[test]
    fn the_table_never_exceeds_max_tracked() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        assert_eq!(s.shard_count(), 2);
        let c = Clock::new();
        for n in 0..50_000u32 {
            assert_eq!(s.check(v4(n), "/", c.at(u64::from(n / 100))), Verdict::Pass);
        }
        assert_eq!(s.tracked(), 1000);
        assert_eq!(s.evicted(), 49_000);
        s.assert_consistent();
    }

    #[test]
    fn a_flood_of_new_addresses_does_not_release_a_blocked_client() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("203.0.113.9");
        s.check(a, "/", c.at(0));
        s.check(a, "/", c.at(0));
        assert!(!s.check(a, "/", c.at(0)).is_pass());
        for n in 0..100_000u32 {
            s.check(v4(n), "/", c.at(1 + u64::from(n / 1000)));
        }
        assert_eq!(s.tracked(), 1000);
        assert_eq!(s.check(a, "/", c.at(200)), Verdict::Blocked);
        s.assert_consistent();
    }

    #[test]
    fn clients_that_come_back_outlive_a_flood_of_one_shot_addresses() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let regular = ip("203.0.113.9");
        for n in 0..100_000u32 {
            // 2500 new addresses a second; the regular client sends 25 a second.
            let t = c.at(u64::from(n) * 4 / 10);
            if n % 100 == 0 {
                assert_eq!(s.check(regular, &format!("/{n}"), t), Verdict::Pass);
                assert!(s.entry_sizes(regular).unwrap().0 >= 1);
            }
            s.check(v4(n), "/", t);
        }
        // Its counts were never dropped: the site window holds its last second.
        let (site, _, _) = s.entry_sizes(regular).unwrap();
        assert_eq!(site, 25);
        assert!(s.evicted() > 90_000);
        s.assert_consistent();
    }

    #[test]
    fn sweeping_forgets_idle_clients_and_keeps_blocks() {
        let s = MemoryStore::new(&limits(2, 30), 10_000);
        let c = Clock::new();
        for n in 0..5000u32 {
            s.check(v4(n), "/", c.at(0));
        }
        let a = ip("203.0.113.9");
        for _ in 0..3 {
            s.check(a, "/", c.at(10));
        }
        assert_eq!(s.sweep(c.at(500)), 0);
        assert_eq!(s.tracked(), 5001);
        // A second after their last request the others have nothing left to count.
        assert_eq!(s.sweep(c.at(1000)), 5000);
        assert_eq!(s.tracked(), 1);
        s.assert_consistent();
        assert_eq!(s.check(a, "/", c.at(1001)), Verdict::Blocked);
        // The block ends 30 s after its last request; then it goes too.
        assert_eq!(s.sweep(c.at(31_000)), 0);
        assert_eq!(s.sweep(c.at(31_001)), 1);
        assert_eq!(s.tracked(), 0);
        s.assert_consistent();
    }

    #[test]
    fn lru_and_index_stay_consistent_under_churn() {
        let s = MemoryStore::new(&limits(3, 10), 600);
        let c = Clock::new();
        let mut x: u32 = 1;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let client = v4(x % 2000);
            s.check(client, &format!("/{}", x % 7), c.at(step / 50));
            if step % 10_000 == 0 {
                s.sweep(c.at(step / 50));
                s.assert_consistent();
            }
        }
        s.assert_consistent();
    }

    #[test]
    fn concurrent_callers_are_counted_exactly() {
        let mut l = limits(50, 100_000);
        l.page_interval = Duration::from_secs(3600);
        let s = std::sync::Arc::new(MemoryStore::new(&l, 1000));
        let now = Instant::now();
        let a = ip("192.0.2.1");
        let verdicts: Vec<Verdict> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let s = s.clone();
                    scope.spawn(move || (0..10).map(|_| s.check(a, "/x", now)).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let pass = verdicts.iter().filter(|v| v.is_pass()).count();
        let new = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::NewBlock { .. }))
            .count();
        assert_eq!((pass, new, verdicts.len() - pass - new), (50, 1, 29));
    }

    #[test]
    fn times_far_apart_do_not_wrap() {
        let s = MemoryStore::new(&limits(2, 30), 1000);
        let c = Clock::new();
        let a = ip("192.0.2.1");
        s.check(a, "/", c.at(0));
        s.check(a, "/", c.at(1));
        // 2^32 ms later (49.7 days): the 32-bit window clock reads the same values.
        let later = 1u64 << 32;
        assert_eq!(s.check(a, "/", c.at(later)), Verdict::Pass);
        assert_eq!(s.check(a, "/", c.at(later + 1)), Verdict::Pass);
        assert!(!s.check(a, "/", c.at(later + 2)).is_pass());
    }

    #[test]
    fn worst_case_bytes_are_stated() {
        let s = MemoryStore::new(&limits(2, 30), 314_739);
        let per = s.bytes_per_client();
        assert!((900..1300).contains(&per), "{per}");
        assert_eq!(s.shard_count(), 64);
    }
}
