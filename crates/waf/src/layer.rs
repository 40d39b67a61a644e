//! [`WafLayer`] and the [`Waf`] service: one ModSecurity transaction per request.

use std::ffi::CStr;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::WafBody;
use crate::config::{BodyLimitAction, Engine, WafConfig};
use crate::ffi::{Intervention, RuleMatch, RuleSet, Transaction};
use crate::future::ResponseFuture;

/// Bodies (request or response) up to this size are evaluated on the calling thread;
/// larger ones on tokio's blocking pool, so that a long evaluation does not hold up other
/// requests.
pub(crate) const INLINE_BODY: usize = 16 * 1024;

/// The layer's counters, for a status page or metrics.
#[derive(Debug, Default)]
struct Counters {
    inspected: AtomicU64,
    blocked: AtomicU64,
    detected: AtomicU64,
}

/// A snapshot of [`WafLayer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WafStats {
    /// Requests inspected.
    pub inspected: u64,
    /// Requests answered by a rule's disruptive action (deny, redirect), or refused for
    /// a body over the limit.
    pub blocked: u64,
    /// Requests that matched a logging rule but were let through (`DetectionOnly`, or
    /// scores under the CRS threshold).
    pub detected: u64,
}

/// What every clone of the layer shares: the compiled rules and the counters.
#[derive(Debug)]
pub(crate) struct Inner {
    /// `None`: the layer is switched off and only sets the request body type.
    pub(crate) rules: Option<Arc<RuleSet>>,
    pub(crate) body_access: bool,
    pub(crate) body_limit: usize,
    pub(crate) reject_over_limit: bool,
    /// `None`: response bodies are not inspected.
    pub(crate) response_body: Option<ResponseBodyRules>,
    counters: Counters,
}

/// Which response bodies are inspected, and how much of them.
#[derive(Debug)]
pub(crate) struct ResponseBodyRules {
    pub(crate) limit: usize,
    pub(crate) reject_over_limit: bool,
    /// Lowercase `type/subtype`.
    mime_types: Vec<String>,
}

impl ResponseBodyRules {
    /// Whether an answer with `content_type` has its body inspected.
    fn inspects(&self, content_type: Option<&HeaderValue>) -> bool {
        let Some(media) = content_type.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = media.split(';').next().unwrap_or("").trim();
        self.mime_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(media))
    }
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuleSet")
    }
}

impl Inner {
    pub(crate) fn new(rules: Arc<RuleSet>, c: &WafConfig) -> Self {
        Self {
            rules: Some(rules),
            body_access: c.request_body_access && c.engine != Engine::Off,
            body_limit: c.request_body_limit,
            // DetectionOnly never blocks, not even for size (as ModSecurity 2 behaves).
            reject_over_limit: c.request_body_limit_action == BodyLimitAction::Reject
                && c.engine == Engine::On,
            response_body: (c.response_body_access && c.engine != Engine::Off).then(|| {
                ResponseBodyRules {
                    limit: c.response_body_limit,
                    reject_over_limit: c.response_body_limit_action == BodyLimitAction::Reject
                        && c.engine == Engine::On,
                    mime_types: c
                        .response_body_mime_types
                        .iter()
                        .map(|t| t.to_ascii_lowercase())
                        .collect(),
                }
            }),
            counters: Counters::default(),
        }
    }

    pub(crate) fn count_blocked(&self) {
        self.counters.blocked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_detected(&self) {
        self.counters.detected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs every request (and its response headers) through ModSecurity rules: the OWASP
/// Core Rule Set, or rules of your own. Build it from a [`WafConfig`]; clones share the
/// compiled rules and the counters. See the crate docs for an example.
#[derive(Debug, Clone)]
pub struct WafLayer {
    inner: Arc<Inner>,
}

impl WafLayer {
    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// A layer that inspects nothing: requests pass as they are (their body wrapped in
    /// [`WafBody`], so that a stack has the same types with and without rules).
    pub fn disabled() -> Self {
        Self::from_inner(Inner {
            rules: None,
            body_access: false,
            body_limit: 0,
            reject_over_limit: false,
            response_body: None,
            counters: Counters::default(),
        })
    }

    /// Whether the layer has rules (it is not [`WafLayer::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.inner.rules.is_some()
    }

    /// Compiles `rules` (ModSecurity directives, as in a rules file) with the defaults of
    /// [`WafConfig`] (engine on, request bodies inspected up to 128 KiB).
    pub fn from_rules(rules: &str) -> Result<Self, crate::WafError> {
        WafConfig {
            rules: vec![rules.to_owned()],
            ..WafConfig::default()
        }
        .build(std::path::Path::new("."))
    }

    /// The counters so far.
    pub fn stats(&self) -> WafStats {
        let c = &self.inner.counters;
        WafStats {
            inspected: c.inspected.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
            detected: c.detected.load(Ordering::Relaxed),
        }
    }
}

impl<S> Layer<S> for WafLayer {
    type Service = Waf<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Waf {
            inner,
            shared: self.inner.clone(),
        }
    }
}

/// The service [`WafLayer`] makes. See the crate docs for an example.
#[derive(Debug, Clone)]
pub struct Waf<S> {
    inner: S,
    shared: Arc<Inner>,
}

impl<S> Waf<S> {
    towergate_guard::inner_service_accessors!();
}

/// What the layer keeps of a request for its log lines and later phases.
pub(crate) struct Ctx {
    pub(crate) txn: Transaction,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) client: Option<IpAddr>,
    pub(crate) shared: Arc<Inner>,
    /// Whether any rule has logged a message so far.
    pub(crate) matched: bool,
}

impl Ctx {
    /// Logs the messages rules wrote since the last call.
    pub(crate) fn log_matches(&mut self) {
        let matches = self.txn.take_matches();
        self.matched |= !matches.is_empty();
        for RuleMatch { id, msg } in matches {
            tracing::warn!(
                target: "towergate_waf",
                rule_id = %id,
                msg = %msg,
                method = %self.method,
                uri = %self.uri,
                client = ?self.client,
                "rule matched"
            );
        }
    }

    /// The intervention, if a rule asked for one, logged and counted, as a response.
    pub(crate) fn intervene<B: From<Bytes>>(&mut self) -> Option<Response<B>> {
        self.log_matches();
        let it = self.txn.intervention()?;
        self.shared.count_blocked();
        let Intervention { status, url, rule } = it;
        let (rule_id, msg) = rule.map_or((String::new(), String::new()), |r| (r.id, r.msg));
        let mut status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error() || s.is_redirection())
            .unwrap_or(StatusCode::FORBIDDEN);
        let location = url.and_then(|u| HeaderValue::try_from(u).ok());
        if location.is_some() && !status.is_redirection() {
            status = StatusCode::FOUND;
        }
        tracing::warn!(
            target: "towergate_waf",
            status = status.as_u16(),
            rule_id = %rule_id,
            msg = %msg,
            method = %self.method,
            uri = %self.uri,
            client = ?self.client,
            "request blocked"
        );
        // The audit log otherwise records the status of a response that never came (200).
        let _ = self.txn.update_status_code(status.as_u16());
        // A refusal says what it is in a line of text, as the other guards' do; a redirect
        // has no body.
        let Some(location) = location else {
            return Some(refused(status));
        };
        let mut res = Response::new(B::from(Bytes::new()));
        *res.status_mut() = status;
        res.headers_mut().insert(header::LOCATION, location);
        Some(res)
    }

    /// Phase 3, the response headers: the refusal a rule asked for, if any.
    pub(crate) fn response_headers<B, R: From<Bytes>>(
        &mut self,
        res: &Response<B>,
    ) -> Option<Response<R>> {
        for (name, value) in res.headers() {
            let _ = self
                .txn
                .response_header(name.as_str().as_bytes(), value.as_bytes());
        }
        let protocol = protocol(res.version());
        let _ = self
            .txn
            .process_response_headers(res.status().as_u16(), protocol);
        self.intervene()
    }

    /// Whether phase 4 reads the body of `res`: response bodies are inspected, it has one,
    /// and it is of a type to inspect.
    pub(crate) fn inspects_body<B: Body>(&self, res: &Response<B>) -> bool {
        let Some(rules) = &self.shared.response_body else {
            return false;
        };
        let status = res.status().as_u16();
        self.method != Method::HEAD
            && !matches!(status, 100..=199 | 204 | 304)
            && !res.body().is_end_stream()
            && rules.inspects(res.headers().get(header::CONTENT_TYPE))
    }

    /// The end of a transaction whose answer goes out: counted as detected when a rule
    /// matched, then phase 5.
    pub(crate) fn pass(self) {
        if self.matched {
            self.shared.count_detected();
        }
        self.finish();
    }

    /// Phase 5 and cleanup: the audit log may be written, which is file I/O, so a
    /// transaction that matched anything finishes on the blocking pool.
    pub(crate) fn finish(self) {
        let mut txn = self.txn;
        if self.matched {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn_blocking(move || {
                    let _ = txn.process_logging();
                });
                return;
            }
        }
        let _ = txn.process_logging();
    }
}

fn protocol(v: Version) -> &'static CStr {
    match v {
        Version::HTTP_09 => c"HTTP/0.9",
        Version::HTTP_10 => c"HTTP/1.0",
        Version::HTTP_2 => c"HTTP/2.0",
        Version::HTTP_3 => c"HTTP/3.0",
        _ => c"HTTP/1.1",
    }
}

fn version_number(v: Version) -> &'static CStr {
    match v {
        Version::HTTP_09 => c"0.9",
        Version::HTTP_10 => c"1.0",
        Version::HTTP_2 => c"2.0",
        Version::HTTP_3 => c"3.0",
        _ => c"1.1",
    }
}

/// Writes `ip` as a C string into `buf`.
fn ip_cstr(ip: Option<IpAddr>, buf: &mut [u8; 48]) -> &CStr {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = match ip {
        Some(ip) => write!(cursor, "{ip}\0"),
        None => write!(cursor, "0.0.0.0\0"),
    };
    CStr::from_bytes_until_nul(buf).unwrap_or(c"0.0.0.0")
}

/// Starts the transaction: connection, request line, headers (phase 1).
fn begin<B>(req: &Request<B>, shared: &Arc<Inner>, rules: &Arc<RuleSet>) -> Ctx {
    let mut txn = Transaction::new(rules);
    let client = towergate_client_addr::client_ip(req);
    let port = towergate_client_addr::peer_addr(req.extensions()).map_or(0, |a| a.port());
    let mut buf = [0u8; 48];
    let _ = txn.connection(ip_cstr(client, &mut buf), port, c"0.0.0.0", 0);

    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .as_bytes();
    let method = req.method().as_str().as_bytes();
    // One buffer for the two strings (the request target cannot hold a NUL byte).
    let mut line = Vec::with_capacity(target.len() + method.len() + 2);
    line.extend_from_slice(target);
    line.push(0);
    line.extend_from_slice(method);
    line.push(0);
    let (t, m) = line.split_at(target.len() + 1);
    if let (Ok(t), Ok(m)) = (CStr::from_bytes_with_nul(t), CStr::from_bytes_with_nul(m)) {
        let _ = txn.uri(t, m, version_number(req.version()));
    }
    if !req.headers().contains_key(header::HOST) {
        if let Some(authority) = req.uri().authority() {
            let _ = txn.request_header(b"Host", authority.as_str().as_bytes());
        }
    }
    for (name, value) in req.headers() {
        let _ = txn.request_header(name.as_str().as_bytes(), value.as_bytes());
    }
    let _ = txn.process_request_headers();
    shared.counters.inspected.fetch_add(1, Ordering::Relaxed);
    Ctx {
        txn,
        method: req.method().clone(),
        uri: req.uri().clone(),
        client,
        shared: shared.clone(),
        matched: false,
    }
}

/// `413` for a body over the limit when the action is `Reject`; the connection is closed,
/// since the rest of the body is still on it.
pub(crate) fn too_large<B: From<Bytes>>(ctx: &Ctx) -> Response<B> {
    ctx.shared.count_blocked();
    tracing::warn!(
        target: "towergate_waf",
        status = 413,
        limit = ctx.shared.body_limit,
        method = %ctx.method,
        uri = %ctx.uri,
        client = ?ctx.client,
        "request blocked: body over waf.request_body_limit (request_body_limit_action = Reject)"
    );
    let mut res = refused::<B>(StatusCode::PAYLOAD_TOO_LARGE);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// `status` with its code and reason as a line of plain text.
/// `500` for a response body over the limit when its action is `Reject`
/// (ModSecurity's answer to it).
pub(crate) fn response_too_large<B: From<Bytes>>(ctx: &Ctx) -> Response<B> {
    ctx.shared.count_blocked();
    tracing::warn!(
        target: "towergate_waf",
        status = 500,
        limit = ctx.shared.response_body.as_ref().map_or(0, |r| r.limit),
        method = %ctx.method,
        uri = %ctx.uri,
        client = ?ctx.client,
        "response blocked: body over waf.response_body_limit (response_body_limit_action = Reject)"
    );
    refused(StatusCode::INTERNAL_SERVER_ERROR)
}

fn refused<B: From<Bytes>>(status: StatusCode) -> Response<B> {
    let reason = status.canonical_reason().unwrap_or("Refused");
    let text = Bytes::from(format!("{} {reason}\n", status.as_u16()));
    towergate_guard::refusal(status, text)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Waf<S>
where
    S: Service<Request<WafBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body<Data = Bytes> + Unpin,
    ReqBody::Error: Unpin,
    ResBody: Body<Data = Bytes> + From<Bytes> + Unpin,
    ResBody::Error: Unpin,
{
    type Response = Response<WafBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(rules) = &self.shared.rules else {
            return ResponseFuture::pass(self.inner.call(req.map(WafBody::new)));
        };
        let mut ctx = begin(&req, &self.shared, rules);
        if let Some(refusal) = ctx.intervene() {
            ctx.finish();
            return ResponseFuture::refused(refusal);
        }
        // Take the service that was driven to readiness; leave a clone in its place.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let shared = &self.shared;
        if !shared.body_access || req.body().is_end_stream() {
            // Phase 2 runs for every request: most CRS rules (ARGS, the query string) are
            // there.
            let _ = ctx.txn.process_request_body();
            if let Some(refusal) = ctx.intervene() {
                ctx.finish();
                return ResponseFuture::refused(refusal);
            }
            return ResponseFuture::call(service, req.map(WafBody::new), ctx);
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if shared.reject_over_limit && declared.is_some_and(|n| n > shared.body_limit as u64) {
            let res = too_large(&ctx);
            ctx.finish();
            return ResponseFuture::refused(res);
        }
        ResponseFuture::read_body(service, req, ctx)
    }
}
