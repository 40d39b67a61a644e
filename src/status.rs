//! What the admin listener shows: one [`Status`] per config generation, rendered as JSON,
//! as a page, and as Prometheus metrics.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::metrics::Metrics;

/// A route as configured.
#[derive(Debug, Clone)]
pub struct RouteStatus {
    /// Its name.
    pub name: String,
    /// Its front prefix.
    pub prefix: String,
    /// Where it leads: an upstream URL or `pool NAME`.
    pub target: String,
}

/// The status of one config generation.
pub struct Status {
    /// The generation number (1 at start, one more per reload).
    pub generation: u64,
    /// The metrics registry, shared by all generations.
    pub metrics: Arc<Metrics>,
    /// The routes, in config order.
    pub routes: Vec<RouteStatus>,
    /// The balancer pools, by name; read live when shown.
    pub pools: Vec<towergate_balancer::Pool>,
    /// The flood blocker, when `[evasive]` is on: its counters and block list.
    pub evasive: Option<towergate_evasive::EvasiveLayer>,
    /// The request limits: refusals per limit.
    pub limits: Option<towergate_request_limits::RequestLimitsLayer>,
    /// The PROXY protocol acceptors by listener group (`server`, `tls`), where it is on.
    pub proxy_protocol: Vec<(&'static str, towergate_proxy_protocol::ProxyProtocol)>,
    /// Membership in a cluster (`[cluster]`): shared operator intent and the link to Redis.
    pub cluster: Option<Arc<crate::cluster::ClusterState>>,
    /// The WAF, when `[waf]` is on: requests inspected, blocked, detected.
    #[cfg(feature = "waf")]
    pub waf: Option<towergate_waf::WafLayer>,
    /// Client connections per worker thread, read live.
    pub workers: Option<crate::workers::WorkerLoad>,
}

impl Status {
    /// An empty status for a stack being built.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            generation: 0,
            metrics,
            routes: Vec::new(),
            pools: Vec::new(),
            evasive: None,
            limits: None,
            proxy_protocol: Vec::new(),
            cluster: None,
            #[cfg(feature = "waf")]
            waf: None,
            workers: None,
        }
    }

    fn evasive_json(&self) -> Value {
        let Some(evasive) = &self.evasive else {
            return Value::Null;
        };
        let stats = evasive.stats();
        json!({
            "blocks_started": stats.blocks,
            "rejected": stats.rejected,
            "tracked": stats.tracked,
            "evicted": stats.evicted,
            "blocked": evasive.blocks().iter().map(|b| json!({
                "client": b.client.to_string(),
                "reason": format!("{:?}", b.reason).to_lowercase(),
                "until_unix": unix(b.until),
                "refused": b.refused,
            })).collect::<Vec<_>>(),
        })
    }

    fn limits_json(&self) -> Value {
        let Some(limits) = &self.limits else {
            return Value::Null;
        };
        let s = limits.stats();
        json!({"line": s.line, "fields": s.fields, "field_size": s.field_size, "body_declared": s.body_declared, "body_streamed": s.body_streamed})
    }

    fn cluster_json(&self) -> Value {
        let Some(cluster) = &self.cluster else {
            return Value::Null;
        };
        let evasive = self.evasive.as_ref().and_then(|e| e.link());
        cluster.to_json(evasive.as_ref())
    }

    /// The WAF's counters: inspected, blocked, detected (`None` when it is off).
    pub fn waf_counts(&self) -> Option<[(&'static str, u64); 3]> {
        #[cfg(feature = "waf")]
        if let Some(waf) = &self.waf {
            let s = waf.stats();
            return Some([
                ("inspected", s.inspected),
                ("blocked", s.blocked),
                ("detected", s.detected),
            ]);
        }
        None
    }

    fn waf_json(&self) -> Value {
        match self.waf_counts() {
            Some(counts) => counts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            None => Value::Null,
        }
    }

    /// The status as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "waf": self.waf_json(),
            "generation": self.generation,
            "workers": self.workers.as_ref().map(|w| w.connections()),
            "max_connections": self.workers.as_ref().map(|w| w.max_connections()),
            "routes": self.routes.iter().map(|r| json!({"name": r.name, "prefix": r.prefix, "target": r.target})).collect::<Vec<_>>(),
            "evasive": self.evasive_json(),
            "limits": self.limits_json(),
            "proxy_protocol": self.proxy_protocol.iter().map(|(listeners, pp)| {
                let s = pp.stats();
                json!({
                    "listeners": listeners,
                    "proxied": s.proxied,
                    "local": s.local,
                    "refused": {
                        "untrusted": s.untrusted,
                        "invalid": s.invalid,
                        "timeout": s.timed_out,
                        "closed": s.closed,
                    },
                })
            }).collect::<Vec<_>>(),
            "cluster": self.cluster_json(),
            "pools": self.pools.iter().map(|p| serde_json::to_value(p.snapshot()).unwrap_or(Value::Null)).collect::<Vec<_>>(),
        })
    }

    /// Prometheus exposition: the recorded counters and histograms, plus gauges read now.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .set_gauge("towergate_config_generation", &[], self.generation as f64);
        if let Some(workers) = &self.workers {
            self.metrics.set_gauge(
                "towergate_max_connections",
                &[],
                workers.max_connections() as f64,
            );
            for (i, n) in workers.connections().into_iter().enumerate() {
                self.metrics.set_gauge(
                    "towergate_worker_connections",
                    &[("worker", i.to_string())],
                    n as f64,
                );
            }
        }
        if let Some(evasive) = &self.evasive {
            let stats = evasive.stats();
            self.metrics
                .set_gauge("towergate_evasive_blocks_started", &[], stats.blocks as f64);
            self.metrics
                .set_gauge("towergate_evasive_rejected", &[], stats.rejected as f64);
            self.metrics.set_gauge(
                "towergate_evasive_blocked_clients",
                &[],
                evasive.blocks().len() as f64,
            );
            self.metrics.set_gauge(
                "towergate_evasive_tracked_clients",
                &[],
                stats.tracked as f64,
            );
        }
        for (listeners, pp) in &self.proxy_protocol {
            let s = pp.stats();
            for (result, n) in [
                ("proxied", s.proxied),
                ("local", s.local),
                ("untrusted", s.untrusted),
                ("invalid", s.invalid),
                ("timeout", s.timed_out),
                ("closed", s.closed),
            ] {
                self.metrics.set_gauge(
                    "towergate_proxy_protocol_connections",
                    &[
                        ("listeners", (*listeners).to_owned()),
                        ("result", result.to_owned()),
                    ],
                    n as f64,
                );
            }
        }
        if let Some(cluster) = &self.cluster {
            let intent = cluster.intent_link();
            let evasive = self.evasive.as_ref().and_then(|e| e.link());
            let mut parts = vec![("intent", intent.up, intent.failures)];
            if let Some(e) = &evasive {
                parts.push(("evasive", e.up, e.failures));
            }
            for (part, up, failures) in parts {
                let labels = [("part", part.to_owned())];
                self.metrics.set_gauge(
                    "towergate_cluster_link_up",
                    &labels,
                    if up { 1.0 } else { 0.0 },
                );
                self.metrics
                    .set_gauge("towergate_cluster_sync_failures", &labels, failures as f64);
            }
        }
        if let Some(limits) = &self.limits {
            let s = limits.stats();
            for (limit, n) in [
                ("line", s.line),
                ("fields", s.fields),
                ("field_size", s.field_size),
                ("body_declared", s.body_declared),
                ("body_streamed", s.body_streamed),
            ] {
                self.metrics.set_gauge(
                    "towergate_limit_rejections",
                    &[("limit", limit.to_owned())],
                    n as f64,
                );
            }
        }
        for (outcome, n) in self.waf_counts().into_iter().flatten() {
            self.metrics.set_gauge(
                "towergate_waf_requests",
                &[("outcome", outcome.to_owned())],
                n as f64,
            );
        }
        for pool in &self.pools {
            for m in pool.snapshot().members {
                let labels = [("pool", pool.name().to_owned()), ("member", m.url.clone())];
                self.metrics.set_gauge(
                    "towergate_member_usable",
                    &labels,
                    if m.usable { 1.0 } else { 0.0 },
                );
                self.metrics
                    .set_gauge("towergate_member_in_flight", &labels, m.in_flight as f64);
                self.metrics
                    .set_gauge("towergate_member_requests", &labels, m.requests as f64);
                self.metrics
                    .set_gauge("towergate_member_failures", &labels, m.failures as f64);
            }
        }
        self.metrics.render()
    }

    /// The status page: self-contained HTML, readable at a glance.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(4096);
        h.push_str(concat!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>towergate status</title>",
            "<meta http-equiv=refresh content=5><style>",
            "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}",
            "h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}",
            "table{border-collapse:collapse;min-width:40em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}",
            "th{background:#eee}.up{background:#d8f5d0}.down{background:#f8d0d0}.standby{background:#eef}",
            ".drained{background:#f4e9c8}button{font:inherit}",
            "</style></head><body>"
        ));
        let _ = write!(
            h,
            "<h1>towergate</h1><p>configuration generation <b id=generation>{}</b></p>",
            self.generation
        );
        if let Some(cluster) = &self.cluster {
            let intent = cluster.intent_link();
            let evasive = self.evasive.as_ref().and_then(|e| e.link());
            let _ = write!(
                h,
                "<h2>Cluster</h2><p>instance <b>{}</b>, Redis {}, key prefix {}</p><table id=cluster><tr><th>shared</th><th>link</th><th>failed syncs</th><th>last error</th></tr>",
                esc(&cluster.instance),
                esc(&cluster.redis),
                esc(&cluster.key_prefix)
            );
            let mut rows = vec![(
                "operator intent",
                intent.up,
                intent.failures,
                intent.last_error,
            )];
            if let Some(e) = evasive {
                rows.push(("flood counts and blocks", e.up, e.failures, e.last_error));
            }
            for (what, up, failures, error) in rows {
                let _ = write!(
                    h,
                    "<tr class={}><td>{what}</td><td>{}</td><td>{failures}</td><td>{}</td></tr>",
                    if up { "up" } else { "down" },
                    if up { "up" } else { "down: local only" },
                    esc(error.as_deref().unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
        h.push_str(
            "<h2>Routes</h2><table id=routes><tr><th>name</th><th>prefix</th><th>target</th></tr>",
        );
        for r in &self.routes {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.name),
                esc(&r.prefix),
                esc(&r.target)
            );
        }
        h.push_str("</table>");
        for pool in &self.pools {
            let snap = pool.snapshot();
            let _ = write!(
                h,
                "<h2>Pool {} <small>({:?}, {:?} active, {} answered 503, {} failovers)</small></h2>",
                esc(&snap.name),
                snap.lbmethod,
                snap.active,
                snap.unavailable,
                snap.failovers
            );
            h.push_str("<table class=pool><tr><th>member</th><th>route</th><th>weight</th><th>intent</th><th>health</th><th>in flight</th><th>requests</th><th>failures</th><th>last error</th><th>operator</th></tr>");
            for (i, m) in snap.members.iter().enumerate() {
                let class = match (m.intent, m.usable, m.standby) {
                    (towergate_balancer::Intent::Active, true, false) => "up",
                    (towergate_balancer::Intent::Active, true, true) => "standby",
                    (towergate_balancer::Intent::Active, false, _) => "down",
                    _ => "drained",
                };
                let _ = write!(
                    h,
                    "<tr class={class}><td>{}{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&m.url),
                    if m.standby { " (standby)" } else { "" },
                    esc(m.route.as_deref().unwrap_or("")),
                    m.weight,
                    m.intent,
                    m.health,
                    m.in_flight,
                    m.requests,
                    m.failures,
                    esc(m.last_error.as_deref().unwrap_or("")),
                    member_actions(&snap.name, i, m.intent)
                );
            }
            h.push_str("</table>");
        }
        if let Some(evasive) = &self.evasive {
            let stats = evasive.stats();
            let _ = write!(
                h,
                "<h2>Flood blocking <small>({} blocks started, {} requests refused, {} clients tracked)</small></h2><table id=blocks><tr><th>client</th><th>reason</th><th>ends in</th><th>refused</th></tr>",
                stats.blocks, stats.rejected, stats.tracked
            );
            let now = unix(std::time::SystemTime::now());
            for b in evasive.blocks() {
                let _ = write!(
                    h,
                    "<tr class=down><td>{}</td><td>{:?}</td><td>{} s</td><td>{}</td></tr>",
                    b.client,
                    b.reason,
                    unix(b.until).saturating_sub(now),
                    b.refused
                );
            }
            h.push_str("</table>");
        }
        for (listeners, pp) in &self.proxy_protocol {
            let s = pp.stats();
            let _ = write!(
                h,
                "<h2>PROXY protocol on the [{listeners}] listeners <small>({} connections with a client address, {} without (balancer checks); refused: {} untrusted, {} invalid, {} timed out, {} closed early)</small></h2>",
                s.proxied, s.local, s.untrusted, s.invalid, s.timed_out, s.closed
            );
        }
        if let Some([(_, inspected), (_, blocked), (_, detected)]) = self.waf_counts() {
            let _ = write!(
                h,
                "<h2>WAF</h2><p id=waf>{inspected} requests inspected, {blocked} blocked, {detected} detected (matched, let through)</p>"
            );
        }
        h.push_str(
            "<p><a href=status.json>JSON</a> · <a href=metrics>metrics</a></p></body></html>",
        );
        h
    }
}

/// The operator's buttons for member `index` of `pool`: forms posting to the admin
/// listener's `/pools/POOL/members/INDEX/ACTION`.
fn member_actions(pool: &str, index: usize, intent: towergate_balancer::Intent) -> String {
    use towergate_balancer::Intent;
    let mut out = String::new();
    for (action, label, shown) in [
        ("drain", "drain", intent == Intent::Active),
        ("disable", "disable", intent != Intent::Disabled),
        ("enable", "enable", intent != Intent::Active),
    ] {
        if shown {
            let _ = write!(
                out,
                "<form method=post action=\"pools/{}/members/{index}/{action}\" style=display:inline><button>{label}</button></form> ",
                esc(pool)
            );
        }
    }
    out
}

impl Status {
    /// Applies an operator action posted to `path` (`/pools/POOL/members/INDEX/ACTION`,
    /// ACTION one of `drain`, `disable`, `enable`). `Ok(description)` or `Err(reason)`.
    pub fn member_action(&self, path: &str) -> Result<String, String> {
        use towergate_balancer::Intent;
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let ["pools", pool, "members", index, action] = parts[..] else {
            return Err(
                "not an action: use /pools/POOL/members/INDEX/{drain,disable,enable}".into(),
            );
        };
        let intent = match action {
            "drain" => Intent::Drained,
            "disable" => Intent::Disabled,
            "enable" => Intent::Active,
            _ => {
                return Err(format!(
                    "unknown action `{action}`: drain, disable or enable"
                ));
            }
        };
        let pool = self
            .pools
            .iter()
            .find(|p| p.name() == pool)
            .ok_or_else(|| format!("no pool `{pool}`"))?;
        let member = index
            .parse::<usize>()
            .ok()
            .and_then(|i| pool.members().get(i))
            .ok_or_else(|| format!("pool `{}` has no member {index}", pool.name()))?;
        let url = member.url().to_owned();
        pool.set_intent(&url, intent);
        if let Some(cluster) = &self.cluster {
            cluster.publish(pool.name(), &url, intent);
        }
        tracing::warn!(target: "towergate::admin", pool = pool.name(), member = %url, ?intent, "operator changed a member");
        Ok(format!("{} {url}: {intent:?}", pool.name()))
    }
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
