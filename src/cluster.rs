//! `[cluster]`: several gateways sharing what must be shared through Redis.
//!
//! Shared: the flood blocker's counts and blocks (see `towergate_evasive::RedisStore`)
//! and operator intent (a member drained, disabled or enabled on any instance's admin
//! listener applies on all of them within `2 × sync_interval + timeout`). Not shared:
//! member health (each instance checks and observes its members itself), request limits,
//! access logs, metrics. Needs the cargo feature `redis`; without it a `[cluster]`
//! section is a config error.
//!
//! Operator intent lives in one hash, `PREFIX:intent`, field `POOL URL`, value
//! `active`, `drained` or `disabled`. Every instance writes its operator's changes and
//! reads the hash every `sync_interval`; the hash expires a day after the last instance
//! stopped refreshing it, so a drain outlives a restart of the gateways but not an
//! abandoned cluster. When Redis is away an operator's change applies on its own instance
//! at once and is written when Redis is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use towergate_balancer::{Intent, Pool};

/// The `[cluster]` section as written.
///
/// ```toml
/// [cluster]
/// redis = "redis://10.0.0.5:6379/0"   # or unix:///run/redis/redis.sock
/// instance = "gw1"                    # distinct per instance; default HOSTNAME-PID
/// key_prefix = "towergate"            # every key starts with it
/// sync_interval = "100ms"             # how often counts, blocks, intent are exchanged
/// timeout = "100ms"                   # the most one exchange may take
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The Redis URL: `redis://[:password@]host[:port][/db]` or `unix:///path`.
    pub redis: String,
    /// This instance's name (letters, digits, `-`, `_`, `.`); default `HOSTNAME-PID`.
    #[serde(default)]
    pub instance: Option<String>,
    /// The prefix of every key (default `towergate`).
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// How often state is exchanged with Redis (default `"100ms"`, at most `"400ms"`).
    #[serde(default = "default_interval", with = "crate::config::duration")]
    pub sync_interval: Duration,
    /// The most one exchange may take before Redis counts as away (default `"100ms"`).
    #[serde(default = "default_interval", with = "crate::config::duration")]
    pub timeout: Duration,
}

fn default_prefix() -> String {
    "towergate".into()
}

fn default_interval() -> Duration {
    Duration::from_millis(100)
}

/// `[cluster]`, checked where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster(pub ClusterConfig);

impl<'de> Deserialize<'de> for Cluster {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let config = ClusterConfig::deserialize(d)?;
        config.validate().map_err(serde::de::Error::custom)?;
        Ok(Self(config))
    }
}

impl ClusterConfig {
    /// Checks the values; the error names the key.
    #[cfg(feature = "redis")]
    pub fn validate(&self) -> Result<(), String> {
        self.options()
            .validate()
            .map_err(|e| format!("cluster.{e}"))
    }

    /// Without Redis support built in, a `[cluster]` section cannot work.
    #[cfg(not(feature = "redis"))]
    pub fn validate(&self) -> Result<(), String> {
        Err("cluster: this towergate was built without Redis support; rebuild it with the cargo feature `redis` (cargo build --release --features redis), or remove [cluster]".into())
    }

    /// The options for the shared flood-blocking store.
    #[cfg(feature = "redis")]
    pub fn options(&self) -> towergate_evasive::RedisOptions {
        let mut o = towergate_evasive::RedisOptions::new(self.redis.clone());
        if let Some(instance) = &self.instance {
            o.instance = instance.clone();
        }
        o.key_prefix = self.key_prefix.clone();
        o.sync_interval = self.sync_interval;
        o.timeout = self.timeout;
        o
    }
}

/// The state of the link to Redis for operator intent, as the status page shows it.
#[derive(Debug, Clone)]
pub struct IntentLink {
    /// The last exchange succeeded.
    pub up: bool,
    /// When `up` last changed.
    pub since: SystemTime,
    /// Exchanges that succeeded.
    pub syncs: u64,
    /// Exchanges that failed.
    pub failures: u64,
    /// Why the last failed exchange failed.
    pub last_error: Option<String>,
}

/// A gateway's membership in a cluster: shared operator intent, and what the status
/// page shows of the link. Kept across reloads while `[cluster]` stays the same.
pub struct ClusterState {
    /// This instance's name.
    pub instance: String,
    /// The Redis URL without its password.
    pub redis: String,
    /// The key prefix.
    pub key_prefix: String,
    pools: ArcSwap<Vec<Pool>>,
    pending: Mutex<HashMap<(String, String), Intent>>,
    link: Mutex<IntentLink>,
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("instance", &self.instance)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClusterState {
    /// The pools of the generation now serving, whose intent is shared.
    pub fn set_pools(&self, pools: Vec<Pool>) {
        self.pools.store(Arc::new(pools));
    }

    /// An operator changed a member here: share it with the other instances.
    pub fn publish(&self, pool: &str, url: &str, intent: Intent) {
        lock(&self.pending).insert((pool.to_owned(), url.to_owned()), intent);
    }

    /// The intent link's state now.
    pub fn intent_link(&self) -> IntentLink {
        lock(&self.link).clone()
    }

    /// The cluster as JSON, with the flood blocker's link when it is shared.
    pub fn to_json(&self, evasive: Option<&towergate_evasive::LinkStatus>) -> Value {
        let intent = self.intent_link();
        let link = |up: bool, since: SystemTime, syncs, failures, error: &Option<String>| {
            json!({
                "up": up,
                "since_unix": since.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                "syncs": syncs,
                "failures": failures,
                "last_error": error,
            })
        };
        json!({
            "instance": self.instance,
            "redis": self.redis,
            "key_prefix": self.key_prefix,
            "up": intent.up && evasive.is_none_or(|e| e.up),
            "intent": link(intent.up, intent.since, intent.syncs, intent.failures, &intent.last_error),
            "evasive": evasive.map(|e| {
                let mut v = link(e.up, e.since, e.syncs, e.failures, &e.last_error);
                v["dropped"] = json!(e.dropped);
                v
            }),
        })
    }
}

/// One day: how long shared intent outlives the last instance refreshing it.
#[cfg(feature = "redis")]
const INTENT_TTL_MS: u64 = 24 * 3600 * 1000;

/// The cluster state for `config`, and its background work (sharing operator intent).
#[cfg(feature = "redis")]
pub fn start(
    config: &ClusterConfig,
) -> anyhow::Result<(Arc<ClusterState>, crate::stack::Background)> {
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};

    let options = config.options();
    options
        .validate()
        .map_err(|e| anyhow::anyhow!("cluster.{e}"))?;
    let client = redis::Client::open(options.url.as_str())?;
    let manager = ConnectionManager::new_lazy_with_config(
        client,
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1)),
    )?;
    let redacted = redact(&options.url);
    let state = Arc::new(ClusterState {
        instance: options.instance.clone(),
        redis: redacted,
        key_prefix: options.key_prefix.clone(),
        pools: ArcSwap::from_pointee(Vec::new()),
        pending: Mutex::new(HashMap::new()),
        link: Mutex::new(IntentLink {
            up: false,
            since: SystemTime::now(),
            syncs: 0,
            failures: 0,
            last_error: None,
        }),
    });
    let work = share_intents(state.clone(), manager, options);
    Ok((state, Box::pin(work)))
}

#[cfg(feature = "redis")]
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(feature = "redis")]
fn intent_name(intent: Intent) -> &'static str {
    match intent {
        Intent::Active => "active",
        Intent::Drained => "drained",
        Intent::Disabled => "disabled",
    }
}

/// Every `sync_interval`: writes this instance's operator changes, reads everyone's, and
/// applies those that differ to the pools now serving.
#[cfg(feature = "redis")]
async fn share_intents(
    state: Arc<ClusterState>,
    mut manager: redis::aio::ConnectionManager,
    options: towergate_evasive::RedisOptions,
) {
    const TARGET: &str = "towergate::cluster";
    let key = format!("{}:intent", options.key_prefix);
    let mut tick = tokio::time::interval(options.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged_down = false;
    loop {
        tick.tick().await;
        let sent = std::mem::take(&mut *lock(&state.pending));
        let mut pipe = redis::pipe();
        for ((pool, url), intent) in &sent {
            pipe.cmd("HSET")
                .arg(&key)
                .arg(format!("{pool} {url}"))
                .arg(intent_name(*intent))
                .ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(INTENT_TTL_MS).ignore();
        pipe.cmd("HGETALL").arg(&key);
        let answer = tokio::time::timeout(
            options.timeout,
            pipe.query_async::<(HashMap<String, String>,)>(&mut manager),
        )
        .await;
        let error = match answer {
            Ok(Ok((shared,))) => {
                let pending = lock(&state.pending);
                for pool in state.pools.load().iter() {
                    for member in pool.members() {
                        let url = member.url();
                        if pending.contains_key(&(pool.name().to_owned(), url.to_owned())) {
                            // Changed here since this exchange began: that wins.
                            continue;
                        }
                        let intent = match shared
                            .get(&format!("{} {url}", pool.name()))
                            .map(String::as_str)
                        {
                            Some("active") => Intent::Active,
                            Some("drained") => Intent::Drained,
                            Some("disabled") => Intent::Disabled,
                            _ => continue,
                        };
                        if member.intent() != intent {
                            tracing::info!(target: TARGET, pool = pool.name(), member = %url, ?intent, "operator intent from another instance");
                            pool.set_intent(url, intent);
                        }
                    }
                }
                drop(pending);
                let mut link = lock(&state.link);
                link.syncs += 1;
                if !link.up {
                    link.up = true;
                    link.since = SystemTime::now();
                    logged_down = false;
                    tracing::info!(target: TARGET, redis = %state.redis, instance = %state.instance, "Redis link up: operator intent is shared");
                }
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "no answer within {}",
                humantime::format_duration(options.timeout)
            ),
        };
        // Not written: keep for the next exchange, unless changed again meanwhile.
        {
            let mut pending = lock(&state.pending);
            for (k, intent) in sent {
                pending.entry(k).or_insert(intent);
            }
        }
        let mut link = lock(&state.link);
        link.failures += 1;
        if link.up {
            link.up = false;
            link.since = SystemTime::now();
        }
        if !logged_down {
            logged_down = true;
            tracing::warn!(target: TARGET, redis = %state.redis, %error, "Redis link down: operator intent applies on this instance only until it is back");
        }
        link.last_error = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    const BASE: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\n\n";

    #[cfg(not(feature = "redis"))]
    #[test]
    fn a_cluster_section_needs_the_redis_feature() {
        let text = format!("{BASE}[cluster]\nredis = \"redis://127.0.0.1:6379\"\n");
        let e = Config::from_toml(&text, Path::new("gw.toml")).unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("gw.toml:4:"), "{e}");
        assert!(e.contains("built without Redis support"), "{e}");
        assert!(e.contains("--features redis"), "{e}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn cluster_values_are_checked_where_they_are_written() {
        let ok =
            format!("{BASE}[cluster]\nredis = \"redis://127.0.0.1:6379\"\ninstance = \"gw1\"\n");
        let config = Config::from_toml(&ok, Path::new("gw.toml")).unwrap();
        let c = &config.cluster.unwrap().0;
        assert_eq!(c.options().instance, "gw1");
        assert_eq!(c.key_prefix, "towergate");
        for (extra, key) in [
            ("redis = \"http://x\"", "cluster.redis"),
            (
                "redis = \"redis://h\"\ninstance = \"a b\"",
                "cluster.instance",
            ),
            (
                "redis = \"redis://h\"\nsync_interval = \"2s\"",
                "cluster.sync_interval",
            ),
            (
                "redis = \"redis://h\"\nkey_prefix = \"\"",
                "cluster.key_prefix",
            ),
        ] {
            let text = format!("{BASE}[cluster]\n{extra}\n");
            let e = Config::from_toml(&text, Path::new("gw.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("gw.toml:4:"), "{e}");
            assert!(e.contains(key), "{key}: {e}");
        }
        let text = format!("{BASE}[cluster]\nredis = \"redis://h\"\nsync = \"1s\"\n");
        let e = Config::from_toml(&text, Path::new("gw.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field `sync`"), "{e}");
    }
}
