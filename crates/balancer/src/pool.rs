//! A pool: its members, their state, and member selection.
//!
//! Member state lives in atomics. Which members take traffic is summed up in a [`Plan`]
//! (the usable tier, its weighted schedule) published through an `ArcSwap`: picking a
//! member reads the plan, takes the next schedule slot with one atomic increment and
//! checks the member with one atomic load. Plans are rebuilt only when a member's state
//! changes (or a retry time runs out), under a mutex that the hot path never waits for.

use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Method;
use tokio::sync::watch;
use tokio::time::Instant;
use towergate_proxy::{BodyObserver, RouteInfo, Upstream};

use crate::config::{self, LbMethod, PoolConfig, PoolConfigError, Settings};
use crate::selection::smooth_weighted;
use crate::snapshot::{MemberHealth, MemberSnapshot, PoolSnapshot, Tier};

const TARGET: &str = "towergate_balancer";

/// What an operator wants of a member, kept apart from what the balancer observes of it
/// (errors, health checks): an operator's drain survives the member's recovery, and a
/// recovery never undoes a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    /// Takes traffic when healthy.
    Active,
    /// Takes only sticky requests that name its route (Apache `status=+N`).
    Drained,
    /// Takes nothing (Apache `status=+D`).
    Disabled,
}

impl Intent {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Active,
            1 => Self::Drained,
            _ => Self::Disabled,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Active => 0,
            Self::Drained => 1,
            Self::Disabled => 2,
        }
    }
}

/// A pool of members behind one name (Apache `balancer://NAME`). Cheap to clone: all
/// clones share the members and their state.
#[derive(Clone)]
pub struct Pool {
    pub(crate) inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    pub(crate) name: Arc<str>,
    pub(crate) settings: Settings,
    pub(crate) members: Box<[Member]>,
    /// For requests that carry no route of their own: prefix `""`, named after the pool.
    pub(crate) default_route: Arc<RouteInfo>,
    plan: ArcSwap<Plan>,
    replanning: Mutex<()>,
    epoch: Instant,
    /// Dropped with the pool, which ends its health checks.
    pub(crate) alive: watch::Sender<()>,
    unavailable: AtomicU64,
    failovers: AtomicU64,
}

/// One member and what is observed of it.
pub struct Member {
    upstream: Arc<Upstream>,
    weight: u32,
    route: Option<Box<str>>,
    redirect: Option<usize>,
    standby: bool,
    intent: AtomicU8,
    /// Passive health: 0 when fine, else the pool time (ms) at which the member may be
    /// tried again.
    error_until: AtomicU64,
    /// Active health: out of rotation until checks pass again.
    check_down: AtomicBool,
    pub(crate) pass_streak: AtomicU32,
    pub(crate) fail_streak: AtomicU32,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    last_error: ArcSwapOption<LastError>,
}

struct LastError {
    message: String,
    at: Instant,
}

/// Who takes traffic now: rebuilt whenever a member's state changes.
struct Plan {
    /// The tier the schedule serves.
    tier: Tier,
    /// The tier reported in logs and snapshots: members only on trial after their retry
    /// time count as down, so a member that keeps failing does not flap the report.
    announced: Tier,
    /// Smooth weighted round robin over `tier_members`, as member indices.
    schedule: Box<[u16]>,
    /// Usable members of `tier`.
    tier_members: Box<[u16]>,
    /// Every usable member, primaries first: where retries look once `tier` is spent.
    order: Box<[u16]>,
    cursor: AtomicUsize,
    /// Pool time (ms) at which a member's retry time runs out and the plan must be
    /// rebuilt; `u64::MAX` when none.
    recheck_at: u64,
}

/// A set of member indices (a pool holds at most 64 members).
pub(crate) type MemberSet = u64;

pub(crate) fn bit(i: usize) -> MemberSet {
    1 << i
}

impl Pool {
    /// Checks `config` and builds the pool named `name` (used in logs and errors).
    pub fn from_config(name: &str, config: &PoolConfig) -> Result<Self, PoolConfigError> {
        let (settings, members) = config::check(name, config)?;
        let members: Box<[Member]> = members
            .into_iter()
            .map(|m| Member {
                upstream: Arc::new(m.upstream),
                weight: m.weight,
                route: m.route,
                redirect: m.redirect,
                standby: m.standby,
                intent: AtomicU8::new(
                    if m.disabled {
                        Intent::Disabled
                    } else {
                        Intent::Active
                    }
                    .as_u8(),
                ),
                error_until: AtomicU64::new(0),
                check_down: AtomicBool::new(false),
                pass_streak: AtomicU32::new(0),
                fail_streak: AtomicU32::new(0),
                in_flight: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                last_error: ArcSwapOption::empty(),
            })
            .collect();
        let epoch = Instant::now();
        let mut inner = PoolInner {
            name: name.into(),
            default_route: Arc::new(RouteInfo::new(name, "")),
            settings,
            members,
            plan: ArcSwap::from_pointee(Plan::empty()),
            replanning: Mutex::new(()),
            epoch,
            alive: watch::channel(()).0,
            unavailable: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        };
        let plan = inner.compute_plan(inner.now_ms());
        inner.plan = ArcSwap::from_pointee(plan);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The members, in configured order.
    pub fn members(&self) -> &[Member] {
        &self.inner.members
    }

    /// The selection method.
    pub fn lbmethod(&self) -> LbMethod {
        self.inner.settings.lbmethod
    }

    /// Picks a member for a request without sticky route, as the balancer does, and
    /// counts nothing. For tools and benchmarks; the [`BalancerLayer`](crate::BalancerLayer)
    /// does this on its own.
    pub fn pick(&self) -> Option<&Member> {
        self.inner.select(None, 0).map(|i| &self.inner.members[i])
    }

    /// Picks the member for a request whose sticky value names `route`.
    pub fn pick_route(&self, route: &str) -> Option<&Member> {
        self.inner
            .select(self.inner.route_index(route), 0)
            .map(|i| &self.inner.members[i])
    }

    /// Sets what the operator wants of the member at `url` (as configured); `false` when
    /// no member has that URL.
    pub fn set_intent(&self, url: &str, intent: Intent) -> bool {
        let Some(i) = self
            .inner
            .members
            .iter()
            .position(|m| m.upstream.url() == url)
        else {
            return false;
        };
        let old = Intent::from_u8(self.inner.members[i].intent.swap(intent.as_u8(), Relaxed));
        if old != intent {
            tracing::info!(target: TARGET, pool = %self.inner.name, member = %url, from = ?old, to = ?intent, "operator changed member intent");
            self.inner.replan();
        }
        true
    }

    /// The pool's state now: per member intent, health, load and counters.
    pub fn snapshot(&self) -> PoolSnapshot {
        self.inner.snapshot()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.name)
            .field("members", &self.inner.members.len())
            .finish()
    }
}

impl Member {
    /// The member's upstream (its URL, parsed).
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        self.upstream.url()
    }

    /// Its route name, if any.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// Its weight (lbfactor).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// True for a hot standby.
    pub fn is_standby(&self) -> bool {
        self.standby
    }

    /// What the operator wants of it.
    pub fn intent(&self) -> Intent {
        Intent::from_u8(self.intent.load(Relaxed))
    }

    /// Requests in flight to it now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Requests sent to it so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Healthy, with `now` computed only when it is needed.
    fn healthy(&self, now: &mut impl FnMut() -> u64) -> bool {
        if self.check_down.load(Relaxed) {
            return false;
        }
        match self.error_until.load(Relaxed) {
            0 => true,
            until => now() >= until,
        }
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("url", &self.url())
            .field("weight", &self.weight)
            .field("route", &self.route)
            .field("standby", &self.standby)
            .finish()
    }
}

impl Plan {
    fn empty() -> Self {
        Self {
            tier: Tier::None,
            announced: Tier::None,
            schedule: Box::new([]),
            tier_members: Box::new([]),
            order: Box::new([]),
            cursor: AtomicUsize::new(0),
            recheck_at: u64::MAX,
        }
    }
}

impl PoolInner {
    pub(crate) fn now_ms(&self) -> u64 {
        // +1 keeps 0 free to mean "no error".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(crate) fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    fn compute_plan(&self, now: u64) -> Plan {
        let mut primaries = Vec::new();
        let mut standbys = Vec::new();
        let mut confirmed_primary = false;
        let mut recheck_at = u64::MAX;
        for (i, m) in self.members.iter().enumerate() {
            if m.intent() != Intent::Active || m.check_down.load(Relaxed) {
                continue;
            }
            let until = m.error_until.load(Relaxed);
            if until > now {
                recheck_at = recheck_at.min(until);
                continue;
            }
            if m.standby {
                standbys.push(i as u16);
            } else {
                confirmed_primary |= until == 0;
                primaries.push(i as u16);
            }
        }
        let (tier, tier_members) = if !primaries.is_empty() {
            (Tier::Primary, primaries.clone())
        } else if !standbys.is_empty() {
            (Tier::Standby, standbys.clone())
        } else {
            (Tier::None, Vec::new())
        };
        let announced = if confirmed_primary {
            Tier::Primary
        } else if !standbys.is_empty() {
            Tier::Standby
        } else {
            tier
        };
        let weights: Vec<u32> = tier_members
            .iter()
            .map(|&i| self.members[i as usize].weight)
            .collect();
        let schedule = smooth_weighted(&weights)
            .into_iter()
            .map(|p| tier_members[p as usize])
            .collect();
        let mut order = primaries;
        order.extend(standbys);
        Plan {
            tier,
            announced,
            schedule,
            tier_members: tier_members.into(),
            order: order.into(),
            cursor: AtomicUsize::new(0),
            recheck_at,
        }
    }

    /// Rebuilds the plan after a state change, and reports tier changes.
    pub(crate) fn replan(&self) {
        let _guard = self.replanning.lock().unwrap_or_else(|e| e.into_inner());
        self.replan_locked();
    }

    /// Rebuilds the plan unless another thread is doing it right now.
    fn try_replan(&self) {
        if let Ok(_guard) = self.replanning.try_lock() {
            self.replan_locked();
        }
    }

    fn replan_locked(&self) {
        let now = self.now_ms();
        let plan = self.compute_plan(now);
        let old = self.plan.load();
        let pool = &*self.name;
        match (old.announced, plan.announced) {
            (a, b) if a == b => {}
            (Tier::Primary, Tier::Standby) => {
                tracing::warn!(target: TARGET, pool, "standby engaged: no primary member is usable");
            }
            (Tier::Standby, Tier::Primary) => {
                tracing::info!(target: TARGET, pool, "standby released: traffic is back on the primary members");
            }
            (_, Tier::None) => {
                tracing::error!(target: TARGET, pool, "no usable member: requests are answered 503");
            }
            (Tier::None, tier) => {
                tracing::info!(target: TARGET, pool, ?tier, "pool usable again");
            }
            _ => {}
        }
        if plan.tier != old.tier || plan.tier_members != old.tier_members {
            tracing::debug!(target: TARGET, pool, tier = ?plan.tier, members = ?plan.tier_members, "selection plan rebuilt");
        }
        self.plan.store(Arc::new(plan));
    }

    /// The member whose route is `route`.
    pub(crate) fn route_index(&self, route: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.route.as_deref() == Some(route))
    }

    /// Picks a member: the sticky member (or its redirect) when given and usable, else
    /// from the plan, skipping members in `skip`. A member on trial after its retry time
    /// is claimed by one request at a time; others go elsewhere meanwhile.
    pub(crate) fn select(&self, sticky: Option<usize>, skip: MemberSet) -> Option<usize> {
        if let Some(i) = sticky {
            if self.route_usable(i, skip) {
                return Some(i);
            }
            if let Some(r) = self.members[i]
                .redirect
                .filter(|&r| self.route_usable(r, skip))
            {
                return Some(r);
            }
            if self.settings.nofailover {
                return None;
            }
        }
        let mut skip = skip;
        loop {
            let plan = self.current_plan();
            let i = self.pick_from(&plan, skip)?;
            if self.claim(i) {
                return Some(i);
            }
            skip |= bit(i);
        }
    }

    fn current_plan(&self) -> arc_swap::Guard<Arc<Plan>> {
        let plan = self.plan.load();
        if plan.recheck_at != u64::MAX && self.now_ms() >= plan.recheck_at {
            drop(plan);
            self.try_replan();
            return self.plan.load();
        }
        plan
    }

    fn pick_from(&self, plan: &Plan, skip: MemberSet) -> Option<usize> {
        let len = plan.schedule.len();
        if len == 0 {
            return None;
        }
        let slot = plan.cursor.fetch_add(1, Relaxed) % len;
        let next = plan.schedule[slot] as usize;
        let pick = match self.settings.lbmethod {
            LbMethod::ByRequests if skip & bit(next) == 0 => Some(next),
            LbMethod::ByRequests => (1..len)
                .map(|k| plan.schedule[(slot + k) % len] as usize)
                .find(|&i| skip & bit(i) == 0),
            LbMethod::ByBusyness => self.least_busy(&plan.tier_members, next, skip),
        };
        // The tier is spent (a retry): any other usable member, primaries first.
        pick.or_else(|| {
            plan.order
                .iter()
                .map(|&i| i as usize)
                .find(|&i| skip & bit(i) == 0)
        })
    }

    /// Fewest requests in flight; on a tie the round robin's pick, else the next tied
    /// member after it.
    fn least_busy(&self, members: &[u16], preferred: usize, skip: MemberSet) -> Option<usize> {
        let start = members
            .iter()
            .position(|&i| i as usize == preferred)
            .unwrap_or(0);
        let mut best: Option<(usize, usize)> = None;
        for k in 0..members.len() {
            let i = members[(start + k) % members.len()] as usize;
            if skip & bit(i) != 0 {
                continue;
            }
            let busy = self.members[i].in_flight.load(Relaxed);
            if best.is_none_or(|(_, b)| busy < b) {
                best = Some((i, busy));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Takes the member for a request: true at once for a healthy member; for one whose
    /// retry time has run out, true for the single request that gets to try it.
    fn claim(&self, i: usize) -> bool {
        let m = &self.members[i];
        if m.check_down.load(Relaxed) {
            return false;
        }
        let until = m.error_until.load(Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        let trial_until = now + self.retry_ms().max(1);
        if m.error_until
            .compare_exchange(until, trial_until, Relaxed, Relaxed)
            .is_ok()
        {
            tracing::debug!(target: TARGET, pool = %self.name, member = %m.url(), "retry time over: trying the member again");
            self.replan();
            true
        } else {
            false
        }
    }

    /// Sticky requests may go to drained members and standbys; never to disabled ones.
    fn route_usable(&self, i: usize, skip: MemberSet) -> bool {
        skip & bit(i) == 0 && self.members[i].intent() != Intent::Disabled && self.claim(i)
    }

    fn retry_ms(&self) -> u64 {
        self.settings.retry.as_millis() as u64
    }

    /// The member answered: clears a passive error.
    pub(crate) fn observe_success(&self, i: usize) {
        let m = &self.members[i];
        if m.error_until.load(Relaxed) != 0 && m.error_until.swap(0, Relaxed) != 0 {
            tracing::info!(target: TARGET, pool = %self.name, member = %m.url(), "member back: it answered again");
            self.replan();
        }
    }

    /// Counts a failure at the member without putting it in error.
    pub(crate) fn observe_failure(&self, i: usize, message: String) {
        let m = &self.members[i];
        m.failures.fetch_add(1, Relaxed);
        tracing::debug!(target: TARGET, pool = %self.name, member = %m.url(), error = %message, "request failed at member");
        m.last_error.store(Some(Arc::new(LastError {
            message,
            at: Instant::now(),
        })));
    }

    /// Puts the member in error for the retry time (passive health).
    pub(crate) fn mark_error(&self, i: usize, message: String) {
        let m = &self.members[i];
        m.failures.fetch_add(1, Relaxed);
        m.pass_streak.store(0, Relaxed);
        let now = self.now_ms();
        let prev = m.error_until.swap(now + self.retry_ms().max(1), Relaxed);
        if prev == 0 {
            tracing::warn!(target: TARGET, pool = %self.name, member = %m.url(), error = %message, retry = ?self.settings.retry, "member down: in error until its retry time passes");
        } else {
            tracing::debug!(target: TARGET, pool = %self.name, member = %m.url(), error = %message, "member still in error");
        }
        m.last_error.store(Some(Arc::new(LastError {
            message,
            at: Instant::now(),
        })));
        if prev == 0 || prev <= now || self.plan.load().tier_members.contains(&(i as u16)) {
            self.replan();
        }
    }

    /// A health check passed.
    pub(crate) fn check_passed(&self, i: usize, rise: u32) {
        let m = &self.members[i];
        m.fail_streak.store(0, Relaxed);
        let passes = m.pass_streak.fetch_add(1, Relaxed) + 1;
        if passes < rise {
            return;
        }
        let was_down = m.check_down.swap(false, Relaxed);
        let had_error = m.error_until.load(Relaxed) != 0 && m.error_until.swap(0, Relaxed) != 0;
        if was_down || had_error {
            tracing::info!(target: TARGET, pool = %self.name, member = %m.url(), passes, "member back: health checks pass");
            self.replan();
        }
    }

    /// A health check failed.
    pub(crate) fn check_failed(&self, i: usize, fall: u32, message: String) {
        let m = &self.members[i];
        m.pass_streak.store(0, Relaxed);
        let fails = m.fail_streak.fetch_add(1, Relaxed) + 1;
        if fails < fall {
            return;
        }
        if !m.check_down.swap(true, Relaxed) {
            m.failures.fetch_add(1, Relaxed);
            tracing::warn!(target: TARGET, pool = %self.name, member = %m.url(), error = %message, fails, "member down: health checks fail");
            m.last_error.store(Some(Arc::new(LastError {
                message,
                at: Instant::now(),
            })));
            self.replan();
        }
    }

    /// A request is being sent to member `i`.
    pub(crate) fn start(&self, i: usize) {
        let m = &self.members[i];
        m.requests.fetch_add(1, Relaxed);
        m.in_flight.fetch_add(1, Relaxed);
    }

    /// The request sent to member `i` is over.
    pub(crate) fn finish(&self, i: usize) {
        self.members[i].in_flight.fetch_sub(1, Relaxed);
    }

    pub(crate) fn count_unavailable(&self) {
        self.unavailable.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_failover(&self) {
        self.failovers.fetch_add(1, Relaxed);
    }

    pub(crate) fn sticky_name(&self) -> Option<&str> {
        self.settings.sticky.as_deref()
    }

    pub(crate) fn retries_after_reach(&self, method: &Method) -> bool {
        self.settings.retry_methods.contains(method)
    }

    /// True when an answer (a `failonstatus` status) can be sent on to another member.
    pub(crate) fn retries_answers(&self) -> bool {
        !self.settings.failonstatus.is_empty()
    }

    pub(crate) fn fails_on(&self, status: u16) -> bool {
        !self.settings.failonstatus.is_empty() && self.settings.failonstatus.contains(&status)
    }

    fn snapshot(&self) -> PoolSnapshot {
        let now = self.now_ms();
        let plan = self.plan.load();
        let members = self
            .members
            .iter()
            .map(|m| {
                let until = m.error_until.load(Relaxed);
                let health = if m.check_down.load(Relaxed) {
                    MemberHealth::CheckFailed
                } else if until == 0 {
                    MemberHealth::Ok
                } else if until > now {
                    MemberHealth::Error {
                        retry_in_ms: until - now,
                    }
                } else {
                    MemberHealth::Retrying
                };
                let last_error = m.last_error.load();
                MemberSnapshot {
                    url: m.url().to_owned(),
                    route: m.route.as_deref().map(str::to_owned),
                    redirect: m
                        .redirect
                        .and_then(|r| self.members[r].route.as_deref().map(str::to_owned)),
                    standby: m.standby,
                    weight: m.weight,
                    intent: m.intent(),
                    health,
                    usable: m.intent() == Intent::Active && m.healthy(&mut || now),
                    in_flight: m.in_flight.load(Relaxed),
                    requests: m.requests.load(Relaxed),
                    failures: m.failures.load(Relaxed),
                    last_error: last_error.as_ref().map(|e| e.message.clone()),
                    last_error_age: last_error.as_ref().map(|e| e.at.elapsed()),
                }
            })
            .collect();
        PoolSnapshot {
            name: self.name.to_string(),
            lbmethod: self.settings.lbmethod,
            active: plan.announced,
            unavailable: self.unavailable.load(Relaxed),
            failovers: self.failovers.load(Relaxed),
            retry: self.settings.retry,
            health_checks: self.settings.health_check.as_ref().map(|h| h.interval),
            members,
        }
    }
}

/// Response bodies report to their member: a body the member cut short puts it in error
/// (as a connect error does), and a request counts as in flight until its body is over.
impl BodyObserver for PoolInner {
    fn body_failed(&self, member: usize, error: &towergate_proxy::BodyError) {
        self.mark_error(member, format!("response body cut short: {error}"));
    }

    fn body_over(&self, member: usize) {
        self.finish(member);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::MemberConfig;

    fn pool(config: PoolConfig) -> Pool {
        Pool::from_config("t", &config).unwrap()
    }

    fn urls(pool: &Pool, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| pool.pick().unwrap().url().to_owned())
            .collect()
    }

    fn count(picks: &[String], url: &str) -> usize {
        picks.iter().filter(|p| *p == url).count()
    }

    #[test]
    fn equal_weights_alternate() {
        let p = pool(PoolConfig::new([
            MemberConfig::new("http://a"),
            MemberConfig::new("http://b"),
        ]));
        let picks = urls(&p, 1000);
        assert!(picks.chunks(2).all(|c| c[0] != c[1]), "not alternating");
        assert_eq!(count(&picks, "http://a"), 500);
    }

    #[test]
    fn weights_three_to_one() {
        let p = pool(PoolConfig::new([
            MemberConfig::new("http://a").weight(3),
            MemberConfig::new("http://b"),
        ]));
        let picks = urls(&p, 400);
        assert_eq!(count(&picks, "http://a"), 300);
        assert_eq!(
            &picks[..4],
            ["http://a", "http://a", "http://b", "http://a"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn standby_only_while_no_primary_and_retry_time() {
        let p = pool(
            PoolConfig::new([
                MemberConfig::new("http://a"),
                MemberConfig::new("http://b").standby(),
            ])
            .retry(Duration::from_secs(10)),
        );
        assert!(urls(&p, 10).iter().all(|u| u == "http://a"));
        p.inner.mark_error(0, "refused".into());
        assert_eq!(p.snapshot().active, Tier::Standby);
        assert!(urls(&p, 10).iter().all(|u| u == "http://b"));
        tokio::time::advance(Duration::from_secs(11)).await;
        // One request gets to try the primary; the others stay on the standby meanwhile.
        assert_eq!(p.pick().unwrap().url(), "http://a");
        assert!(urls(&p, 5).iter().all(|u| u == "http://b"));
        p.inner.observe_success(0);
        assert_eq!(p.snapshot().active, Tier::Primary);
        assert!(urls(&p, 10).iter().all(|u| u == "http://a"));
    }

    #[test]
    fn both_down_means_nothing() {
        let p = pool(PoolConfig::new([
            MemberConfig::new("http://a"),
            MemberConfig::new("http://b").standby(),
        ]));
        p.inner.mark_error(0, "x".into());
        p.inner.mark_error(1, "x".into());
        assert!(p.pick().is_none());
        assert_eq!(p.snapshot().active, Tier::None);
    }

    #[test]
    fn retries_skip_tried_members_and_fall_to_standby() {
        let p = pool(PoolConfig::new([
            MemberConfig::new("http://a"),
            MemberConfig::new("http://b"),
            MemberConfig::new("http://c").standby(),
        ]));
        assert_eq!(p.inner.select(None, bit(0)), Some(1));
        assert_eq!(p.inner.select(None, bit(1)), Some(0));
        assert_eq!(p.inner.select(None, bit(0) | bit(1)), Some(2));
        assert_eq!(p.inner.select(None, bit(0) | bit(1) | bit(2)), None);
    }

    #[test]
    fn sticky_routes_and_redirect() {
        let p = pool(
            PoolConfig::new([
                MemberConfig::new("http://a").route("a").redirect("b"),
                MemberConfig::new("http://b").route("b").standby(),
                MemberConfig::new("http://c").route("c"),
            ])
            .stickysession("ROUTEID"),
        );
        assert_eq!(p.pick_route("b").unwrap().url(), "http://b");
        assert_eq!(p.pick_route("c").unwrap().url(), "http://c");
        p.inner.mark_error(0, "x".into());
        assert_eq!(p.pick_route("a").unwrap().url(), "http://b");
        p.inner.mark_error(2, "x".into());
        // c has no redirect: balanced among the usable primaries (none) then standby.
        assert_eq!(p.pick_route("c").unwrap().url(), "http://b");
        assert_eq!(p.pick_route("zz").unwrap().url(), "http://b");
    }

    #[test]
    fn nofailover_keeps_sticky_requests_away_from_others() {
        let p = pool(
            PoolConfig::new([
                MemberConfig::new("http://a").route("a"),
                MemberConfig::new("http://b").route("b"),
            ])
            .stickysession("S")
            .nofailover(true),
        );
        p.inner.mark_error(0, "x".into());
        assert!(p.pick_route("a").is_none());
        assert_eq!(p.pick().unwrap().url(), "http://b");
    }

    #[test]
    fn intent_is_kept_apart_from_health() {
        let p = pool(PoolConfig::new([
            MemberConfig::new("http://a").route("a"),
            MemberConfig::new("http://b").route("b"),
            MemberConfig::new("http://c").disabled(),
        ]));
        assert!(urls(&p, 10).iter().all(|u| u != "http://c"));
        assert!(p.set_intent("http://a", Intent::Drained));
        p.inner.mark_error(0, "x".into());
        p.inner.check_passed(0, 1);
        // Healthy again, still drained: only its sticky route reaches it.
        assert!(urls(&p, 10).iter().all(|u| u == "http://b"));
        assert_eq!(p.pick_route("a").unwrap().url(), "http://a");
        assert!(p.set_intent("http://c", Intent::Active));
        assert_eq!(count(&urls(&p, 10), "http://c"), 5);
        assert!(!p.set_intent("http://nope", Intent::Active));
    }

    #[test]
    fn bybusyness_prefers_idle_members() {
        let p = pool(
            PoolConfig::new([
                MemberConfig::new("http://a"),
                MemberConfig::new("http://b"),
                MemberConfig::new("http://c"),
            ])
            .lbmethod(LbMethod::ByBusyness),
        );
        // Idle pool: plain round robin.
        assert_eq!(urls(&p, 3), ["http://a", "http://b", "http://c"]);
        p.inner.start(0);
        p.inner.start(1);
        assert!(urls(&p, 6).iter().all(|u| u == "http://c"));
        p.inner.start(2);
        p.inner.start(2);
        assert!(urls(&p, 6).iter().all(|u| u != "http://c"));
        p.inner.finish(2);
        p.inner.finish(2);
        let picks = urls(&p, 6);
        assert_eq!(count(&picks, "http://c"), 6);
    }

    #[test]
    fn health_checks_rise_and_fall() {
        let p = pool(PoolConfig::new([
            MemberConfig::new("http://a"),
            MemberConfig::new("http://b"),
        ]));
        p.inner.check_failed(0, 2, "x".into());
        assert_eq!(count(&urls(&p, 10), "http://a"), 5);
        p.inner.check_failed(0, 2, "x".into());
        assert_eq!(count(&urls(&p, 10), "http://a"), 0);
        p.inner.check_passed(0, 2);
        assert_eq!(count(&urls(&p, 10), "http://a"), 0);
        p.inner.check_passed(0, 2);
        assert_eq!(count(&urls(&p, 10), "http://a"), 5);
        // A passing check also ends a passive error at once.
        p.inner.mark_error(1, "x".into());
        assert_eq!(count(&urls(&p, 10), "http://b"), 0);
        p.inner.check_passed(1, 1);
        assert_eq!(count(&urls(&p, 10), "http://b"), 5);
    }

    #[test]
    fn snapshot_reports_members() {
        let p = pool(PoolConfig::new([
            MemberConfig::new("http://a").weight(2).route("a"),
            MemberConfig::new("http://b").standby(),
        ]));
        p.inner.start(0);
        p.inner.mark_error(1, "connection refused".into());
        let s = p.snapshot();
        assert_eq!(s.name, "t");
        assert_eq!(s.active, Tier::Primary);
        assert_eq!(s.members[0].weight, 2);
        assert_eq!(s.members[0].in_flight, 1);
        assert_eq!(s.members[0].requests, 1);
        assert!(s.members[0].usable);
        assert!(matches!(s.members[1].health, MemberHealth::Error { .. }));
        assert_eq!(s.members[1].failures, 1);
        assert_eq!(
            s.members[1].last_error.as_deref(),
            Some("connection refused")
        );
        assert!(!s.members[1].usable);
    }
}
