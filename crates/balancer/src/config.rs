//! `[pool.NAME]`: a pool's members and options as written in the config file, checked
//! into a [`Pool`](crate::Pool) by [`Pool::from_config`](crate::Pool::from_config).

use std::fmt;
use std::time::Duration;

use http::Method;
use http::uri::PathAndQuery;
use serde::{Deserialize, Deserializer};

/// The most members one pool may hold.
pub const MAX_MEMBERS: usize = 64;

/// The largest member weight (Apache `lbfactor` runs from 1 to 100).
pub const MAX_WEIGHT: u32 = 100;

/// A pool as configured (Apache `<Proxy balancer://NAME>` with its `BalancerMember`s and
/// `ProxySet` options).
///
/// ```toml
/// [pool.paid_servers]
/// members = [
///   { url = "http://paid_one.domain.lan/paid_user", route = "a", redirect = "b" },
///   { url = "http://paid_two.domain.lan/paid_user", route = "b", standby = true },
/// ]
/// retry = "60s"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The members (`BalancerMember`), in order.
    pub members: Vec<MemberConfig>,
    /// How primaries share traffic (`lbmethod`): `byrequests` (default) or `bybusyness`.
    #[serde(default, alias = "method")]
    pub lbmethod: LbMethod,
    /// The cookie or path/query parameter whose value names a member's route after its
    /// first `.` (`stickysession`), e.g. `"ROUTEID"`; unset: no stickiness.
    #[serde(default)]
    pub stickysession: Option<String>,
    /// With `stickysession`: answer 503 rather than send a sticky request elsewhere when
    /// its member and that member's redirect are down (`nofailover=On`).
    #[serde(default)]
    pub nofailover: bool,
    /// How long a member in error is left alone before it is tried again (`retry`).
    #[serde(default = "defaults::retry", deserialize_with = "duration")]
    pub retry: Duration,
    /// Response statuses that put the member in error (`failonstatus`), e.g. `[503]`.
    #[serde(default)]
    pub failonstatus: Vec<u16>,
    /// Methods whose requests are sent to another member after one that reached a member
    /// failed (timeout, broken connection, a `failonstatus` answer), when their body is
    /// empty. Requests that never reached a member are always sent elsewhere. `[]` turns
    /// this off.
    #[serde(default = "defaults::retry_methods")]
    pub retry_methods: Vec<String>,
    /// Active health checks (mod_proxy_hcheck); unset: passive health only.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

/// One member (Apache `BalancerMember URL key=value ...`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's URL: `http://host[:port][/base/path]`.
    pub url: String,
    /// Its share of traffic relative to the other members (`lbfactor`), 1 to 100.
    #[serde(default = "defaults::weight", alias = "lbfactor", alias = "loadfactor")]
    pub weight: u32,
    /// Its route name for sticky sessions (`route`).
    #[serde(default)]
    pub route: Option<String>,
    /// The route whose member takes this member's sticky requests while it is down
    /// (`redirect`).
    #[serde(default)]
    pub redirect: Option<String>,
    /// A hot standby: takes traffic only while no primary is usable (`status=+H`).
    #[serde(default)]
    pub standby: bool,
    /// Takes no traffic at all until an operator enables it (`status=+D`).
    #[serde(default)]
    pub disabled: bool,
}

/// How a pool shares traffic between its usable members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LbMethod {
    /// Smooth weighted round robin (Apache `byrequests`): each member gets its weight's
    /// share, interleaved; equal weights alternate exactly.
    #[default]
    ByRequests,
    /// Fewest requests in flight (Apache `bybusyness`); ties go by `byrequests`.
    ByBusyness,
}

/// Active health checks for a pool (Apache mod_proxy_hcheck, HAProxy `check`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Time between two checks of a member (`hcinterval`).
    #[serde(default = "defaults::interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// Path appended to the member URL's path (`hcuri`).
    #[serde(default = "defaults::path")]
    pub path: String,
    /// The method of the check request: `GET`, `HEAD` or `OPTIONS` (`hcmethod`).
    #[serde(default = "defaults::check_method")]
    pub method: String,
    /// Statuses that pass: one (`"200"`) or a range (`"200-399"`).
    #[serde(default = "defaults::expect")]
    pub expect: String,
    /// Time a check may take, connect included; at most `interval`.
    #[serde(default = "defaults::timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Consecutive passes that bring a member back (`hcpasses`).
    #[serde(default = "defaults::one")]
    pub rise: u32,
    /// Consecutive failures that take a member out (`hcfails`).
    #[serde(default = "defaults::one")]
    pub fall: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            interval: defaults::interval(),
            path: defaults::path(),
            method: defaults::check_method(),
            expect: defaults::expect(),
            timeout: defaults::timeout(),
            rise: 1,
            fall: 1,
        }
    }
}

mod defaults {
    use std::time::Duration;

    pub fn retry() -> Duration {
        Duration::from_secs(60)
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn retry_methods() -> Vec<String> {
        vec!["GET".into(), "HEAD".into(), "OPTIONS".into()]
    }
    pub fn interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn path() -> String {
        "/".into()
    }
    pub fn check_method() -> String {
        "GET".into()
    }
    pub fn expect() -> String {
        "200-399".into()
    }
    pub fn one() -> u32 {
        1
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration ({e}); write e.g. \"60s\", \"2m\", \"500ms\""
        ))
    })
}

// === builders ===

impl PoolConfig {
    /// A pool of `members` with Apache's defaults: `byrequests`, no stickiness, retry
    /// after 60 s, no failure statuses, GET/HEAD/OPTIONS sent elsewhere after a failure,
    /// no active checks.
    pub fn new(members: impl IntoIterator<Item = MemberConfig>) -> Self {
        Self {
            members: members.into_iter().collect(),
            lbmethod: LbMethod::default(),
            stickysession: None,
            nofailover: false,
            retry: defaults::retry(),
            failonstatus: Vec::new(),
            retry_methods: defaults::retry_methods(),
            health_check: None,
        }
    }

    /// Sets the method.
    pub fn lbmethod(mut self, method: LbMethod) -> Self {
        self.lbmethod = method;
        self
    }

    /// Sets the sticky cookie or parameter name.
    pub fn stickysession(mut self, name: impl Into<String>) -> Self {
        self.stickysession = Some(name.into());
        self
    }

    /// Answer 503 instead of breaking stickiness.
    pub fn nofailover(mut self, on: bool) -> Self {
        self.nofailover = on;
        self
    }

    /// Sets the retry time.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the failure statuses.
    pub fn failonstatus(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.failonstatus = statuses.into_iter().collect();
        self
    }

    /// Sets the methods sent elsewhere after a failure at a member.
    pub fn retry_methods<M: Into<String>>(mut self, methods: impl IntoIterator<Item = M>) -> Self {
        self.retry_methods = methods.into_iter().map(Into::into).collect();
        self
    }

    /// Turns on active health checks.
    pub fn health_check(mut self, check: HealthCheckConfig) -> Self {
        self.health_check = Some(check);
        self
    }
}

impl MemberConfig {
    /// A primary member of weight 1 at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            weight: 1,
            route: None,
            redirect: None,
            standby: false,
            disabled: false,
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the route name.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets the redirect route.
    pub fn redirect(mut self, route: impl Into<String>) -> Self {
        self.redirect = Some(route.into());
        self
    }

    /// Makes it a hot standby.
    pub fn standby(mut self) -> Self {
        self.standby = true;
        self
    }

    /// Makes it disabled.
    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }
}

impl HealthCheckConfig {
    /// Checks every `interval` with the other settings at their defaults.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            timeout: defaults::timeout().min(interval),
            ..Self::default()
        }
    }

    /// Sets the path.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets the passing statuses, e.g. `"200"` or `"200-399"`.
    pub fn expect(mut self, expect: impl Into<String>) -> Self {
        self.expect = expect.into();
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the rise and fall counts.
    pub fn rise_fall(mut self, rise: u32, fall: u32) -> Self {
        self.rise = rise;
        self.fall = fall;
        self
    }
}

// === validation ===

/// A pool configuration that cannot be used: names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfigError {
    /// `pool.NAME.key`, e.g. `pool.web_servers.members[1].weight`.
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for PoolConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for PoolConfigError {}

/// Checked settings of a pool.
#[derive(Debug)]
pub(crate) struct Settings {
    pub lbmethod: LbMethod,
    pub sticky: Option<Box<str>>,
    pub nofailover: bool,
    pub retry: Duration,
    pub failonstatus: Box<[u16]>,
    pub retry_methods: Box<[Method]>,
    pub health_check: Option<CheckSettings>,
}

/// Checked health-check settings.
#[derive(Debug, Clone)]
pub(crate) struct CheckSettings {
    pub interval: Duration,
    pub path: String,
    pub method: Method,
    pub expect: (u16, u16),
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// A checked member, before it gets its runtime state.
#[derive(Debug)]
pub(crate) struct CheckedMember {
    pub upstream: towergate_proxy::Upstream,
    pub weight: u32,
    pub route: Option<Box<str>>,
    pub redirect: Option<usize>,
    pub standby: bool,
    pub disabled: bool,
}

pub(crate) fn check(
    name: &str,
    config: &PoolConfig,
) -> Result<(Settings, Vec<CheckedMember>), PoolConfigError> {
    let err = |key: &str, message: String| PoolConfigError {
        key: format!(
            "pool.{name}{}{key}",
            if key.starts_with('[') || key.is_empty() {
                ""
            } else {
                "."
            }
        ),
        message,
    };
    if config.members.is_empty() {
        return Err(err(
            "members",
            "a pool needs at least one member, e.g. members = [{ url = \"http://10.0.0.1:8080\" }]"
                .into(),
        ));
    }
    if config.members.len() > MAX_MEMBERS {
        return Err(err(
            "members",
            format!(
                "{} members; a pool holds at most {MAX_MEMBERS}: split it into several pools",
                config.members.len()
            ),
        ));
    }
    let mut members = Vec::with_capacity(config.members.len());
    for (i, m) in config.members.iter().enumerate() {
        let key = |k: &str| format!("members[{i}].{k}");
        let upstream = towergate_proxy::Upstream::parse(&m.url)
            .map_err(|e| err(&key("url"), e.to_string()))?;
        if config.members[..i].iter().any(|o| o.url == m.url) {
            return Err(err(
                &key("url"),
                format!("`{}` is listed twice; each member once", m.url),
            ));
        }
        if !(1..=MAX_WEIGHT).contains(&m.weight) {
            return Err(err(
                &key("weight"),
                format!(
                    "{} is out of range; a weight (lbfactor) runs from 1 to {MAX_WEIGHT}",
                    m.weight
                ),
            ));
        }
        if let Some(route) = &m.route {
            if !valid_route(route) {
                return Err(err(
                    &key("route"),
                    format!(
                        "`{route}` is not a route name; use letters, digits, `_` and `-`, e.g. \"a\""
                    ),
                ));
            }
            if config.members[..i]
                .iter()
                .any(|o| o.route.as_deref() == Some(route))
            {
                return Err(err(
                    &key("route"),
                    format!("route `{route}` is taken by another member; routes are unique"),
                ));
            }
        }
        members.push(CheckedMember {
            upstream,
            weight: m.weight,
            route: m.route.as_deref().map(Into::into),
            redirect: None,
            standby: m.standby,
            disabled: m.disabled,
        });
    }
    for (i, m) in config.members.iter().enumerate() {
        let Some(redirect) = &m.redirect else {
            continue;
        };
        let target = config
            .members
            .iter()
            .position(|o| o.route.as_deref() == Some(redirect.as_str()));
        match target {
            Some(t) if t == i => {
                return Err(err(
                    &format!("members[{i}].redirect"),
                    format!("`{redirect}` is this member's own route; name another member's route"),
                ));
            }
            Some(t) => members[i].redirect = Some(t),
            None => {
                let routes: Vec<&str> = config
                    .members
                    .iter()
                    .filter_map(|o| o.route.as_deref())
                    .collect();
                return Err(err(
                    &format!("members[{i}].redirect"),
                    if routes.is_empty() {
                        format!(
                            "`{redirect}` names no member's route, and no member has one: give the target member `route = \"{redirect}\"`"
                        )
                    } else {
                        format!(
                            "`{redirect}` names no member's route; routes here: {}",
                            routes.join(", ")
                        )
                    },
                ));
            }
        }
    }
    let sticky = match &config.stickysession {
        None => None,
        Some(s) if s.is_empty() || !s.bytes().all(is_token_byte) => {
            return Err(err(
                "stickysession",
                format!(
                    "`{s}` is not a cookie or parameter name; use letters, digits, `_` and `-`, e.g. \"ROUTEID\""
                ),
            ));
        }
        Some(s) => {
            if members.iter().all(|m| m.route.is_none()) {
                return Err(err(
                    "stickysession",
                    "no member has a `route`, so a sticky value could name none: give members routes or drop stickysession".into(),
                ));
            }
            Some(s.as_str().into())
        }
    };
    for (i, s) in config.failonstatus.iter().enumerate() {
        if !(100..=599).contains(s) {
            return Err(err(
                &format!("failonstatus[{i}]"),
                format!("{s} is not an HTTP status (100 to 599)"),
            ));
        }
    }
    let mut retry_methods = Vec::with_capacity(config.retry_methods.len());
    for (i, m) in config.retry_methods.iter().enumerate() {
        let key = format!("retry_methods[{i}]");
        let method = Method::from_bytes(m.as_bytes())
            .map_err(|_| err(&key, format!("`{m}` is not an HTTP method")))?;
        if !method.is_idempotent() {
            return Err(err(
                &key,
                format!(
                    "{method} is not idempotent, so sending it twice could do its work twice; list only GET, HEAD, OPTIONS, PUT, DELETE or TRACE"
                ),
            ));
        }
        retry_methods.push(method);
    }
    let health_check = match &config.health_check {
        None => None,
        Some(hc) => Some(check_health(hc).map_err(|(k, m)| err(&format!("health_check.{k}"), m))?),
    };
    Ok((
        Settings {
            lbmethod: config.lbmethod,
            sticky,
            nofailover: config.nofailover,
            retry: config.retry,
            failonstatus: config.failonstatus.clone().into(),
            retry_methods: retry_methods.into(),
            health_check,
        },
        members,
    ))
}

fn check_health(hc: &HealthCheckConfig) -> Result<CheckSettings, (&'static str, String)> {
    if hc.interval < Duration::from_millis(10) {
        return Err((
            "interval",
            format!(
                "{:?} is too short; write at least \"10ms\", e.g. \"5s\"",
                hc.interval
            ),
        ));
    }
    if hc.timeout.is_zero() || hc.timeout > hc.interval {
        return Err((
            "timeout",
            format!(
                "{:?} must be above zero and at most the interval ({:?})",
                hc.timeout, hc.interval
            ),
        ));
    }
    if !hc.path.starts_with('/') || hc.path.parse::<PathAndQuery>().is_err() {
        return Err((
            "path",
            format!(
                "`{}` is not a path; write e.g. \"/\" or \"/health\"",
                hc.path
            ),
        ));
    }
    let method = match hc.method.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "OPTIONS" => Method::OPTIONS,
        _ => {
            return Err((
                "method",
                format!("`{}`: use GET, HEAD or OPTIONS", hc.method),
            ));
        }
    };
    let expect = parse_expect(&hc.expect).ok_or_else(|| {
        (
            "expect",
            format!(
                "`{}` is not a status or range; write e.g. \"200\" or \"200-399\"",
                hc.expect
            ),
        )
    })?;
    if hc.rise == 0 {
        return Err(("rise", "must be at least 1".into()));
    }
    if hc.fall == 0 {
        return Err(("fall", "must be at least 1".into()));
    }
    Ok(CheckSettings {
        interval: hc.interval,
        path: hc.path.clone(),
        method,
        expect,
        timeout: hc.timeout,
        rise: hc.rise,
        fall: hc.fall,
    })
}

fn parse_expect(s: &str) -> Option<(u16, u16)> {
    let status = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=599).contains(s))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (status(lo)?, status(hi)?),
        None => {
            let s = status(s)?;
            (s, s)
        }
    };
    (lo <= hi).then_some((lo, hi))
}

fn valid_route(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<(), String> {
        let config: PoolConfig = toml::from_str(toml_text).map_err(|e| e.message().to_owned())?;
        check("p", &config).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn article_pools_parse() {
        parse(
            r#"members = [
              { url = "http://paid_one.domain.lan/paid_user", route = "a", redirect = "b" },
              { url = "http://paid_two.domain.lan/paid_user", route = "b", standby = true },
            ]"#,
        )
        .unwrap();
        parse(r#"members = [{ url = "http://w1.lan" }, { url = "http://w2.lan", lbfactor = 3 }]"#)
            .unwrap();
        parse(
            r#"members = [{ url = "http://w1.lan", route = "a" }]
               lbmethod = "bybusyness"
               stickysession = "ROUTEID"
               retry = "5s"
               failonstatus = [503]
               retry_methods = ["GET", "PUT"]
               health_check = { interval = "2s", path = "/health", expect = "200", rise = 2, fall = 3 }"#,
        )
        .unwrap();
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            (
                "members = []",
                "pool.p.members: a pool needs at least one member",
            ),
            (
                r#"members = [{ url = "ftp://x" }]"#,
                "pool.p.members[0].url: `ftp://x`: the scheme must be http",
            ),
            (
                r#"members = [{ url = "http://x", weight = 0 }]"#,
                "pool.p.members[0].weight: 0 is out of range",
            ),
            (
                r#"members = [{ url = "http://x", route = "a" }, { url = "http://y", route = "a" }]"#,
                "pool.p.members[1].route: route `a` is taken",
            ),
            (
                r#"members = [{ url = "http://x", route = "a", redirect = "c" }, { url = "http://y", route = "b" }]"#,
                "pool.p.members[0].redirect: `c` names no member's route; routes here: a, b",
            ),
            (
                r#"members = [{ url = "http://x", route = "a", redirect = "a" }]"#,
                "pool.p.members[0].redirect: `a` is this member's own route",
            ),
            (
                r#"members = [{ url = "http://x" }, { url = "http://x" }]"#,
                "pool.p.members[1].url: `http://x` is listed twice",
            ),
            (
                r#"members = [{ url = "http://x" }]
               stickysession = "ROUTEID""#,
                "pool.p.stickysession: no member has a `route`",
            ),
            (
                r#"members = [{ url = "http://x" }]
               failonstatus = [42]"#,
                "pool.p.failonstatus[0]: 42 is not an HTTP status",
            ),
            (
                r#"members = [{ url = "http://x" }]
               retry_methods = ["POST"]"#,
                "pool.p.retry_methods[0]: POST is not idempotent",
            ),
            (
                r#"members = [{ url = "http://x" }]
               health_check = { interval = "1s", timeout = "2s" }"#,
                "pool.p.health_check.timeout",
            ),
            (
                r#"members = [{ url = "http://x" }]
               health_check = { expect = "2xx" }"#,
                "pool.p.health_check.expect: `2xx` is not a status or range",
            ),
            (
                r#"members = [{ url = "http://x" }]
               health_check = { path = "health" }"#,
                "pool.p.health_check.path",
            ),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_err();
            assert!(got.starts_with(want), "{text}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn unknown_keys_and_methods_are_refused_by_serde() {
        let e = parse(r#"members = [{ url = "http://x", lbfactr = 2 }]"#).unwrap_err();
        assert!(e.contains("unknown field `lbfactr`"), "{e}");
        let e = parse(
            r#"members = [{ url = "http://x" }]
            lbmethod = "random""#,
        )
        .unwrap_err();
        assert!(e.contains("expected `byrequests` or `bybusyness`"), "{e}");
        let e = parse(
            r#"members = [{ url = "http://x" }]
            retry = "soon""#,
        )
        .unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn expect_ranges() {
        assert_eq!(parse_expect("200"), Some((200, 200)));
        assert_eq!(parse_expect("200-399"), Some((200, 399)));
        assert_eq!(parse_expect("399-200"), None);
        assert_eq!(parse_expect("2xx"), None);
        assert_eq!(parse_expect("99"), None);
    }
}
