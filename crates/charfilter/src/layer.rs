//! [`CharFilterLayer`] and the [`CharFilter`] service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::rule::{Action, Rule};

const TARGET: &str = "towergate_charfilter";

/// The article's rule: `RewriteRule [^a-zA-Z0-9|\.|/|_|-] - [F]`.
///
/// It refuses every path with a character other than ASCII letters, digits, `.`, `/`,
/// `_`, `-` and, as written in the article, `|` (inside brackets `|` is a literal, not an
/// alternative).
pub const ARTICLE_RULE: &str = r"[^a-zA-Z0-9|\.|/|_|-]";

// === impl CharFilterLayer ===

/// Refuses requests whose path (or query) breaks a rule. Cheap to clone.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone, Default)]
pub struct CharFilterLayer {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Box<[Rule]>,
    hits: Box<[AtomicU64]>,
    refused: AtomicU64,
    logged: AtomicU64,
}

/// Counts of the layer's decisions since it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CharFilterStats {
    /// Requests refused.
    pub refused: u64,
    /// Times a rule with [`Action::Log`] fired.
    pub logged: u64,
    /// Per rule, in order: the times it fired.
    pub rule_hits: Vec<u64>,
}

impl CharFilterLayer {
    /// A layer trying `rules` in order.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        let rules: Box<[Rule]> = rules.into_iter().collect();
        let hits = rules.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            shared: Arc::new(Shared {
                rules,
                hits,
                refused: AtomicU64::new(0),
                logged: AtomicU64::new(0),
            }),
        }
    }

    /// A layer with the article's rule alone ([`ARTICLE_RULE`], 403).
    pub fn article() -> Self {
        Self::new([Rule::deny(ARTICLE_RULE).expect("the article's rule compiles")])
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.shared.rules
    }

    /// The decisions counted so far.
    pub fn stats(&self) -> CharFilterStats {
        let s = &self.shared;
        CharFilterStats {
            refused: s.refused.load(Relaxed),
            logged: s.logged.load(Relaxed),
            rule_hits: s.hits.iter().map(|h| h.load(Relaxed)).collect(),
        }
    }
}

impl<S> Layer<S> for CharFilterLayer {
    type Service = CharFilter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CharFilter {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    /// The first refusing rule that fires; log-only rules that fire on the way are
    /// logged and counted.
    fn check(&self, path: &str, query: Option<&str>) -> Option<&Rule> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.fires(path, query) {
                continue;
            }
            self.hits[i].fetch_add(1, Relaxed);
            match rule.get_action() {
                Action::Refuse(status) => {
                    self.refused.fetch_add(1, Relaxed);
                    tracing::info!(target: TARGET, rule = i, pattern = rule.pattern().as_str(), path, query, status = status.as_u16(), "request refused");
                    return Some(rule);
                }
                Action::Log => {
                    self.logged.fetch_add(1, Relaxed);
                    tracing::info!(target: TARGET, rule = i, pattern = rule.pattern().as_str(), path, query, "rule matched (log only)");
                }
            }
        }
        None
    }
}

// === impl CharFilter ===

/// Refuses requests that break a rule; built by [`CharFilterLayer`].
#[derive(Debug, Clone)]
pub struct CharFilter<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> CharFilter<S> {
    /// Wraps `inner` with a layer's rules.
    pub fn new(inner: S, layer: &CharFilterLayer) -> Self {
        layer.layer(inner)
    }

    towergate_guard::inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CharFilter<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.shared.check(req.uri().path(), req.uri().query()) {
            None => ResponseFuture::inner(self.inner.call(req)),
            Some(rule) => ResponseFuture::refused(refusal(rule)),
        }
    }
}

fn refusal<B: From<Bytes>>(rule: &Rule) -> Response<B> {
    let Action::Refuse(status) = rule.get_action() else {
        unreachable!("only refusing rules answer")
    };
    towergate_guard::refusal(status, rule.body().clone())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::rule::Scope;

    async fn answer(layer: &CharFilterLayer, target: &str) -> (StatusCode, Option<String>, Bytes) {
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
        let res = svc
            .oneshot(Request::get(target).body(()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let len = res
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_owned());
        (
            status,
            len,
            res.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn the_article_refuses_with_403() {
        let layer = CharFilterLayer::article();
        assert_eq!(
            answer(&layer, "/news_rss/a-b_c.html?x=%20;").await.0,
            StatusCode::OK
        );
        let (status, len, body) = answer(&layer, "/a%20b").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(len.as_deref(), Some("14"));
        assert_eq!(&body[..], b"403 Forbidden\n");
        assert_eq!(answer(&layer, "/~user/").await.0, StatusCode::FORBIDDEN);
        let stats = layer.stats();
        assert_eq!((stats.refused, stats.rule_hits), (2, vec![2]));
    }

    #[tokio::test]
    async fn first_refusing_rule_answers_log_rules_pass() {
        let layer = CharFilterLayer::new([
            Rule::deny("admin").unwrap().action(Action::Log),
            Rule::deny(r"\.php$")
                .unwrap()
                .action(Action::Refuse(StatusCode::NOT_FOUND)),
            Rule::deny("(?i)select").unwrap().scope(Scope::Query),
            Rule::deny("x").unwrap(),
        ]);
        assert_eq!(answer(&layer, "/admin/").await.0, StatusCode::OK);
        let (status, _, body) = answer(&layer, "/admin/x.php").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::NOT_FOUND, &b"404 Not Found\n"[..])
        );
        assert_eq!(
            answer(&layer, "/a?q=1%20SeLeCt").await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            answer(&layer, "/a?q=select&x").await.0,
            StatusCode::FORBIDDEN
        );
        let stats = layer.stats();
        assert_eq!((stats.refused, stats.logged), (3, 2));
        assert_eq!(stats.rule_hits, vec![2, 1, 2, 0]);
    }
}
