//! [`AclLayer`] and the [`Acl`] service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;
use towergate_client_addr::client_ip;
use towergate_guard::refusal;

use crate::future::ResponseFuture;
use crate::policy::{Access, Policy};

const TARGET: &str = "towergate_acl";
const FORBIDDEN: &str = "403 Forbidden\n";

// === impl AclLayer ===

/// Answers 403 to clients a policy denies. Cheap to clone.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone, Default)]
pub struct AclLayer {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    global: Policy,
    /// (prefix without trailing slash, policy), longest prefix first.
    locations: Vec<(String, Policy)>,
    denied: AtomicU64,
}

/// Counts of the layer's decisions since it was built (passes are not counted, to keep
/// the shared counter off the common path; the access log counts requests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AclStats {
    /// Requests answered 403.
    pub denied: u64,
}

impl AclLayer {
    /// A layer applying `policy` to every request.
    pub fn new(policy: Policy) -> Self {
        Self::builder().global(policy).build()
    }

    /// A builder, for per-location policies.
    pub fn builder() -> AclBuilder {
        AclBuilder::default()
    }

    /// The decisions counted so far.
    pub fn stats(&self) -> AclStats {
        AclStats {
            denied: self.shared.denied.load(Relaxed),
        }
    }
}

impl<S> Layer<S> for AclLayer {
    type Service = Acl<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Acl {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    fn policy_for(&self, path: &str) -> &Policy {
        self.locations
            .iter()
            .find(|(prefix, _)| match path.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            })
            .map_or(&self.global, |(_, p)| p)
    }
}

// === impl AclBuilder ===

/// Builds an [`AclLayer`] in code.
#[derive(Debug, Clone, Default)]
pub struct AclBuilder {
    global: Policy,
    locations: Vec<(String, Policy)>,
}

impl AclBuilder {
    /// The policy outside every location (default: everyone passes).
    pub fn global(mut self, policy: Policy) -> Self {
        self.global = policy;
        self
    }

    /// A policy for requests whose path is `prefix` or below it (segment boundaries:
    /// `/paid_user` covers `/paid_user/x`, not `/paid_users`). It replaces the global
    /// policy there, as Apache's `<Location>` does; the longest matching prefix wins.
    pub fn location(mut self, prefix: &str, policy: Policy) -> Self {
        let prefix = prefix.trim_end_matches('/').to_owned();
        self.locations.retain(|(p, _)| *p != prefix);
        self.locations.push((prefix, policy));
        self
    }

    /// The layer.
    pub fn build(mut self) -> AclLayer {
        self.locations.sort_by_key(|l| std::cmp::Reverse(l.0.len()));
        AclLayer {
            shared: Arc::new(Shared {
                global: self.global,
                locations: self.locations,
                denied: AtomicU64::new(0),
            }),
        }
    }
}

// === impl Acl ===

/// Answers 403 to denied clients; built by [`AclLayer`].
#[derive(Debug, Clone)]
pub struct Acl<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Acl<S> {
    /// Wraps `inner` with a layer's policies.
    pub fn new(inner: S, layer: &AclLayer) -> Self {
        layer.layer(inner)
    }

    towergate_guard::inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Acl<S>
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
        let client = client_ip(&req);
        match self.shared.policy_for(req.uri().path()).decide(client) {
            Access::Allow => ResponseFuture::inner(self.inner.call(req)),
            Access::Deny => {
                self.shared.denied.fetch_add(1, Relaxed);
                tracing::info!(target: TARGET, client = ?client, path = req.uri().path(), "client denied");
                ResponseFuture::refused(forbidden())
            }
        }
    }
}

fn forbidden<B: From<Bytes>>() -> Response<B> {
    refusal(
        StatusCode::FORBIDDEN,
        Bytes::from_static(FORBIDDEN.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full};
    use tower::{ServiceExt, service_fn};
    use towergate_client_addr::{ClientAddr, PeerAddr};

    use super::*;
    use crate::policy::{Order, Source};

    async fn status(layer: &AclLayer, client: Option<&str>, path: &str) -> (StatusCode, Bytes) {
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
        let mut req = Request::get(path).body(()).unwrap();
        if let Some(c) = client {
            req.extensions_mut()
                .insert(PeerAddr(format!("{c}:1").parse().unwrap()));
        }
        let res = svc.oneshot(req).await.unwrap();
        let status = res.status();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    }

    fn src(s: &str) -> Source {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn denies_with_403_and_counts() {
        let layer = AclLayer::new(Policy::order(Order::AllowDeny).allow(src("10.0.0.0/8")));
        assert_eq!(
            status(&layer, Some("10.0.0.1"), "/").await.0,
            StatusCode::OK
        );
        let (s, body) = status(&layer, Some("192.0.2.1"), "/").await;
        assert_eq!(
            (s, &body[..]),
            (StatusCode::FORBIDDEN, &b"403 Forbidden\n"[..])
        );
        // Unknown client under allow,deny: denied.
        assert_eq!(status(&layer, None, "/").await.0, StatusCode::FORBIDDEN);
        assert_eq!(layer.stats(), AclStats { denied: 2 });
    }

    #[tokio::test]
    async fn locations_replace_the_global_policy() {
        let layer = AclLayer::builder()
            .global(Policy::order(Order::DenyAllow).allow(src("all")))
            .location(
                "/paid_user/",
                Policy::first_match(Access::Deny).allow(src("10.0.0.0/8")),
            )
            .location("/paid_user/public", Policy::default())
            .build();
        let outside = Some("192.0.2.1");
        assert_eq!(status(&layer, outside, "/").await.0, StatusCode::OK);
        assert_eq!(
            status(&layer, outside, "/paid_users").await.0,
            StatusCode::OK
        );
        assert_eq!(
            status(&layer, outside, "/paid_user").await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(&layer, outside, "/paid_user/x").await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(&layer, Some("10.2.3.4"), "/paid_user/x").await.0,
            StatusCode::OK
        );
        assert_eq!(
            status(&layer, outside, "/paid_user/public/x").await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn reads_the_client_address_not_the_peer() {
        let layer = AclLayer::new(Policy::first_match(Access::Allow).deny(src("203.0.113.7")));
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
        let mut req = Request::get("/").body(()).unwrap();
        req.extensions_mut()
            .insert(PeerAddr("10.0.0.2:1".parse().unwrap()));
        req.extensions_mut()
            .insert(ClientAddr("203.0.113.7".parse().unwrap()));
        assert_eq!(
            svc.oneshot(req).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }
}
