//! The layer, the service, its response future, and the header logic.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{ExpiresBuilder, ExpiresConfig};
use crate::rule::{ExpiresBase, ExpiresRule};

const TARGET: &str = "towergate_expires";

/// Sets `Expires` and `Cache-Control: max-age` on responses (Apache `mod_expires`).
///
/// Cheap to clone: the rules and counters are shared. See the crate docs for the exact
/// behaviour and an example.
#[derive(Debug, Clone)]
pub struct ExpiresLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    active: bool,
    default: Option<Prepared>,
    /// Exact media types, lower case.
    exact: Box<[(Box<str>, Prepared)]>,
    /// Major types of `major/*` wildcards, lower case.
    wildcard: Box<[(Box<str>, Prepared)]>,
    stats: ExpiresStats,
}

#[derive(Debug)]
struct Prepared {
    rule: ExpiresRule,
    /// `max-age=N`, for `access` rules.
    max_age: HeaderValue,
}

impl Prepared {
    fn new(rule: ExpiresRule) -> Self {
        Self {
            rule,
            max_age: max_age_value(u64::from(rule.seconds())),
        }
    }
}

impl ExpiresLayer {
    /// A layer for `config` (checked already, when it was read).
    pub fn from_config(config: &ExpiresConfig) -> Self {
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        for (range, rule) in &config.by_type {
            match range.wildcard_major() {
                Some(major) => wildcard.push((major.into(), Prepared::new(*rule))),
                None => exact.push((range.as_str().into(), Prepared::new(*rule))),
            }
        }
        Self {
            shared: Arc::new(Shared {
                active: config.active,
                default: config.default.map(Prepared::new),
                exact: exact.into_boxed_slice(),
                wildcard: wildcard.into_boxed_slice(),
                stats: ExpiresStats::default(),
            }),
        }
    }

    /// A layer with only a default rule (`ExpiresDefault`).
    pub fn new(default: ExpiresRule) -> Self {
        Self::from_config(&ExpiresConfig {
            active: true,
            default: Some(default),
            by_type: Vec::new(),
        })
    }

    /// Builds a layer in code from rules in Apache's syntax.
    pub fn builder() -> ExpiresBuilder {
        ExpiresBuilder::new()
    }

    /// The layer's counters, shared by every service it made.
    pub fn stats(&self) -> &ExpiresStats {
        &self.shared.stats
    }

    /// Sets the caching headers on one response, as the service does: exposed for
    /// callers that build responses outside a tower stack.
    pub fn apply<B>(&self, response: &mut Response<B>) {
        self.shared.apply(response.status(), response.headers_mut());
    }
}

impl<S> Layer<S> for ExpiresLayer {
    type Service = Expires<S>;

    fn layer(&self, inner: S) -> Expires<S> {
        Expires {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`ExpiresLayer`]. See the crate docs.
#[derive(Debug, Clone)]
pub struct Expires<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Expires<S> {
    /// Wraps `inner` with a default rule only.
    pub fn new(inner: S, default: ExpiresRule) -> Self {
        ExpiresLayer::new(default).layer(inner)
    }

    /// A layer with only a default rule; see [`ExpiresLayer::builder`] for more.
    pub fn layer(default: ExpiresRule) -> ExpiresLayer {
        ExpiresLayer::new(default)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Expires<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ResponseFuture {
            future: self.inner.call(req),
            shared: self.shared.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`Expires`]: sets the headers when the response arrives.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        shared: Arc<Shared>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.future.poll(cx))?;
        this.shared.apply(response.status(), response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

// === impl Shared ===

impl Shared {
    fn rule_for(&self, headers: &HeaderMap) -> Option<&Prepared> {
        let essence = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim());
        if let Some(essence) = essence.filter(|e| !e.is_empty()) {
            if let Some((_, p)) = self
                .exact
                .iter()
                .find(|(t, _)| t.eq_ignore_ascii_case(essence))
            {
                return Some(p);
            }
            if let Some((major, _)) = essence.split_once('/') {
                if let Some((_, p)) = self
                    .wildcard
                    .iter()
                    .find(|(t, _)| t.eq_ignore_ascii_case(major))
                {
                    return Some(p);
                }
            }
        }
        self.default.as_ref()
    }

    fn apply(&self, status: http::StatusCode, headers: &mut HeaderMap) {
        if !self.active {
            return;
        }
        let stats = &self.stats;
        // Apache skips errors (`ap_is_HTTP_ERROR`: 400 and up); 1xx are never final here.
        if status.as_u16() >= 400 || status.is_informational() {
            stats.skipped_status.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if headers.contains_key(header::EXPIRES) {
            stats.kept_existing.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(prepared) = self.rule_for(headers) else {
            stats.no_rule.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if has_max_age(headers) {
            stats.kept_existing.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = unix_secs(SystemTime::now());
        let seconds = u64::from(prepared.rule.seconds());
        let (expires, max_age) = match prepared.rule.base() {
            ExpiresBase::Access => (now + seconds, prepared.max_age.clone()),
            ExpiresBase::Modification => {
                let Some(modified) = headers
                    .get(header::LAST_MODIFIED)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| httpdate::parse_http_date(v).ok())
                else {
                    stats.no_last_modified.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                // A Last-Modified in the future is an origin's mistake: count from now.
                let base = unix_secs(modified).min(now);
                let expires = (base + seconds).max(now);
                (expires, max_age_value(expires - now))
            }
        };
        merge_cache_control(headers, max_age);
        headers.insert(header::EXPIRES, http_date(expires));
        stats.applied.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(target: TARGET, rule = %prepared.rule, "caching headers set");
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn max_age_value(seconds: u64) -> HeaderValue {
    let mut buf = [0u8; 32];
    let prefix = b"max-age=";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut len = prefix.len();
    let mut digits = [0u8; 20];
    let mut n = seconds;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    buf[len..len + d.len()].copy_from_slice(d);
    len += d.len();
    HeaderValue::from_bytes(&buf[..len]).expect("digits are a valid header value")
}

/// True when some `Cache-Control` value already carries a `max-age` directive.
fn has_max_age(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|directive| {
            let name = directive.split(|&b| b == b'=').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"max-age")
        })
    })
}

/// Adds `max_age` to `Cache-Control`, as one header value.
fn merge_cache_control(headers: &mut HeaderMap, max_age: HeaderValue) {
    let mut existing = headers.get_all(header::CACHE_CONTROL).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(header::CACHE_CONTROL, max_age);
        return;
    }
    let mut merged = Vec::with_capacity(64);
    for value in existing {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            merged.extend_from_slice(value);
            merged.extend_from_slice(b", ");
        }
    }
    merged.extend_from_slice(max_age.as_bytes());
    let merged = HeaderValue::from_bytes(&merged).unwrap_or(max_age);
    headers.insert(header::CACHE_CONTROL, merged);
}

/// A few formatted dates by Unix second, and the slot to fill next.
struct DateCache {
    slots: [(u64, Option<HeaderValue>); 4],
    next: usize,
}

thread_local! {
    /// The last few formatted dates on this thread: responses sent in the same second
    /// by the same rule share one `Expires` value.
    static DATES: RefCell<DateCache> = const {
        RefCell::new(DateCache { slots: [const { (0, None) }; 4], next: 0 })
    };
}

fn http_date(unix: u64) -> HeaderValue {
    DATES.with(|cell| {
        let mut cache = cell.borrow_mut();
        let DateCache { slots, next } = &mut *cache;
        if let Some((_, Some(v))) = slots.iter().find(|(s, v)| *s == unix && v.is_some()) {
            return v.clone();
        }
        let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix));
        let value = HeaderValue::from_str(&text).expect("an HTTP date is a valid header value");
        slots[*next] = (unix, Some(value.clone()));
        *next = (*next + 1) % slots.len();
        value
    })
}

// === impl ExpiresStats ===

/// What the layer did, counted since it was built.
#[derive(Debug, Default)]
pub struct ExpiresStats {
    applied: AtomicU64,
    kept_existing: AtomicU64,
    skipped_status: AtomicU64,
    no_rule: AtomicU64,
    no_last_modified: AtomicU64,
}

/// A copy of [`ExpiresStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiresSnapshot {
    /// Responses that got `Expires` and `max-age`.
    pub applied: u64,
    /// Responses left alone because they carried `Expires` or a `max-age` already.
    pub kept_existing: u64,
    /// Error answers (status 400 and up), left alone as Apache does.
    pub skipped_status: u64,
    /// Responses no rule applied to (no default, no matching type).
    pub no_rule: u64,
    /// Responses whose `modification` rule found no usable `Last-Modified`.
    pub no_last_modified: u64,
}

impl ExpiresStats {
    /// The counters now.
    pub fn snapshot(&self) -> ExpiresSnapshot {
        ExpiresSnapshot {
            applied: self.applied.load(Ordering::Relaxed),
            kept_existing: self.kept_existing.load(Ordering::Relaxed),
            skipped_status: self.skipped_status.load(Ordering::Relaxed),
            no_rule: self.no_rule.load(Ordering::Relaxed),
            no_last_modified: self.no_last_modified.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::StatusCode;
    use tower::{ServiceExt, service_fn};

    use super::*;

    fn layer() -> ExpiresLayer {
        ExpiresLayer::builder()
            .default("access plus 2 hours")
            .by_type("image/png", "access plus 1 month")
            .by_type("text/*", "A60")
            .by_type("text/css", "A120")
            .by_type("application/pdf", "modification plus 1 hour")
            .build()
            .unwrap()
    }

    async fn run(layer: &ExpiresLayer, status: u16, headers: &[(&str, &str)]) -> Response<()> {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            res.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let svc = layer.layer(service_fn(move |_req: Request<()>| {
            let res = Response::from_parts(res.clone_parts(), ());
            async move { Ok::<_, Infallible>(res) }
        }));
        svc.oneshot(Request::new(())).await.unwrap()
    }

    trait CloneParts {
        fn clone_parts(&self) -> http::response::Parts;
    }
    impl CloneParts for Response<()> {
        fn clone_parts(&self) -> http::response::Parts {
            let mut b = Response::builder().status(self.status());
            for (k, v) in self.headers() {
                b = b.header(k, v);
            }
            b.body(()).unwrap().into_parts().0
        }
    }

    fn expires_in(res: &Response<()>) -> i64 {
        let at = httpdate::parse_http_date(res.headers()["expires"].to_str().unwrap()).unwrap();
        unix_secs(at) as i64 - unix_secs(SystemTime::now()) as i64
    }

    #[tokio::test]
    async fn default_rule_sets_both_headers() {
        let l = layer();
        let res = run(&l, 200, &[]).await;
        assert_eq!(res.headers()["cache-control"], "max-age=7200");
        assert!(
            (7198..=7200).contains(&expires_in(&res)),
            "{:?}",
            res.headers()
        );
        assert_eq!(l.stats().snapshot().applied, 1);
    }

    #[tokio::test]
    async fn by_type_exact_then_wildcard_then_default() {
        let l = layer();
        let png = run(&l, 200, &[("content-type", "Image/PNG")]).await;
        assert_eq!(png.headers()["cache-control"], "max-age=2592000");
        let css = run(&l, 200, &[("content-type", "text/css; charset=utf-8")]).await;
        assert_eq!(css.headers()["cache-control"], "max-age=120");
        let html = run(&l, 200, &[("content-type", "text/html")]).await;
        assert_eq!(html.headers()["cache-control"], "max-age=60");
        let json = run(&l, 200, &[("content-type", "application/json")]).await;
        assert_eq!(json.headers()["cache-control"], "max-age=7200");
    }

    #[tokio::test]
    async fn existing_expires_or_max_age_is_kept() {
        let l = layer();
        let res = run(&l, 200, &[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")]).await;
        assert_eq!(res.headers()["expires"], "Thu, 01 Jan 1970 00:00:00 GMT");
        assert!(res.headers().get("cache-control").is_none());
        let res = run(&l, 200, &[("cache-control", "public, Max-Age=5")]).await;
        assert_eq!(res.headers()["cache-control"], "public, Max-Age=5");
        assert!(res.headers().get("expires").is_none());
        assert_eq!(l.stats().snapshot().kept_existing, 2);
    }

    #[tokio::test]
    async fn cache_control_is_merged_into_one_value() {
        let l = layer();
        let res = run(
            &l,
            200,
            &[
                ("cache-control", "public"),
                ("cache-control", "must-revalidate"),
            ],
        )
        .await;
        let all: Vec<_> = res.headers().get_all("cache-control").iter().collect();
        assert_eq!(all, ["public, must-revalidate, max-age=7200"]);
    }

    #[tokio::test]
    async fn statuses_as_apache() {
        let l = layer();
        for status in [200, 204, 206, 301, 302, 304] {
            let res = run(&l, status, &[]).await;
            assert_eq!(res.headers()["cache-control"], "max-age=7200", "{status}");
        }
        for status in [400, 403, 404, 413, 500, 502, 503] {
            let res = run(&l, status, &[]).await;
            assert!(res.headers().get("expires").is_none(), "{status}");
            assert!(res.headers().get("cache-control").is_none(), "{status}");
        }
        assert_eq!(l.stats().snapshot().skipped_status, 7);
    }

    #[tokio::test]
    async fn modification_rules_need_last_modified() {
        let l = layer();
        let pdf = [("content-type", "application/pdf")];
        let res = run(&l, 200, &pdf).await;
        assert!(res.headers().get("expires").is_none());
        assert_eq!(l.stats().snapshot().no_last_modified, 1);

        let ten_min_ago = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(600));
        let res = run(&l, 200, &[pdf[0], ("last-modified", &ten_min_ago)]).await;
        let age: u64 = res.headers()["cache-control"].to_str().unwrap()["max-age=".len()..]
            .parse()
            .unwrap();
        assert!((2998..=3001).contains(&age), "{age}");
        assert!((2998..=3001).contains(&expires_in(&res)));

        // Modified long ago: already expired, max-age=0 and Expires = now (as Apache).
        let res = run(
            &l,
            200,
            &[pdf[0], ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")],
        )
        .await;
        assert_eq!(res.headers()["cache-control"], "max-age=0");
        assert!(expires_in(&res).abs() <= 1);

        // Modified "in the future" (clock skew, or the year 9999): counted from now.
        let res = run(
            &l,
            200,
            &[pdf[0], ("last-modified", "Fri, 31 Dec 9999 23:59:59 GMT")],
        )
        .await;
        assert_eq!(res.headers()["cache-control"], "max-age=3600");

        let res = run(&l, 200, &[pdf[0], ("last-modified", "yesterday")]).await;
        assert!(res.headers().get("expires").is_none());
    }

    #[tokio::test]
    async fn inactive_or_ruleless_does_nothing() {
        let off = ExpiresLayer::builder()
            .default("A60")
            .active(false)
            .build()
            .unwrap();
        assert!(run(&off, 200, &[]).await.headers().get("expires").is_none());
        let none = ExpiresLayer::builder()
            .by_type("image/png", "A60")
            .build()
            .unwrap();
        assert!(
            run(&none, 200, &[])
                .await
                .headers()
                .get("expires")
                .is_none()
        );
        assert_eq!(none.stats().snapshot().no_rule, 1);
    }

    #[test]
    fn max_age_values() {
        assert_eq!(max_age_value(0), "max-age=0");
        assert_eq!(max_age_value(7200), "max-age=7200");
        assert_eq!(max_age_value(u64::MAX), "max-age=18446744073709551615");
    }

    #[test]
    fn http_dates_are_cached_and_correct() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        for s in 0..10 {
            assert_eq!(
                http_date(784_111_777 + s),
                httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(784_111_777 + s))
            );
        }
    }
}
