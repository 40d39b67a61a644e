//! [`BalancerLayer`] and the [`Balancer`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;
use towergate_proxy::{ForwardError, RouteInfo, Target, WatchBody};

use crate::body::{self, ReplayBody};
use crate::future::{Head, ResponseFuture, Retry};
use crate::pool::{Pool, bit};
use crate::sticky;

/// Balances requests over a [`Pool`]: picks a member, sets the request's
/// [`Target`], and sends requests whose member failed on to another member.
///
/// See the crate docs for an example.
#[derive(Debug, Clone)]
pub struct BalancerLayer {
    pool: Pool,
    route: Option<Arc<RouteInfo>>,
}

impl BalancerLayer {
    /// Balances over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool, route: None }
    }

    /// The route whose prefix member URLs replace, for requests that carry no [`Target`]
    /// of their own. Without it, the whole path is appended to the member URL's path.
    pub fn route(mut self, route: RouteInfo) -> Self {
        self.route = Some(Arc::new(route));
        self
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl<S> Layer<S> for BalancerLayer {
    type Service = Balancer<S>;

    fn layer(&self, inner: S) -> Balancer<S> {
        Balancer {
            inner,
            pool: self.pool.clone(),
            route: self
                .route
                .clone()
                .unwrap_or_else(|| self.pool.inner.default_route.clone()),
        }
    }
}

/// The balancing service; see [`BalancerLayer`].
///
/// The inner service is the forwarder (`towergate_proxy::Forward`, its response mapped
/// to a body type that can carry the balancer's own 503) or anything that sends a
/// request to the upstream its [`Target`] names and fails with a [`ForwardError`].
#[derive(Debug, Clone)]
pub struct Balancer<S> {
    inner: S,
    pool: Pool,
    route: Arc<RouteInfo>,
}

impl<S> Balancer<S> {
    /// Balances over `pool` in front of `inner`.
    pub fn new(inner: S, pool: Pool) -> Self {
        BalancerLayer::new(pool).layer(inner)
    }

    /// A layer balancing over `pool`.
    pub fn layer(pool: Pool) -> BalancerLayer {
        BalancerLayer::new(pool)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutable.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl<S, B, ResBody> Service<Request<B>> for Balancer<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>, Error = ForwardError> + Clone,
    B: Body<Data = Bytes>,
    ResBody: From<Bytes> + WatchBody,
{
    type Response = Response<ResBody>;
    type Error = ForwardError;
    type Future = ResponseFuture<S::Future, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let pool = &self.pool.inner;
        let sticky = pool
            .sticky_name()
            .and_then(|name| sticky::route(name, req.uri(), req.headers()))
            .and_then(|route| pool.route_index(route));
        let Some(member) = pool.select(sticky, 0) else {
            return ResponseFuture::unavailable(self.pool.clone());
        };
        let (mut parts, body) = req.into_parts();
        let route = match parts.extensions.get::<Target>() {
            Some(t) => t.route.clone(),
            None => self.route.clone(),
        };
        let target = Target {
            route: route.clone(),
            upstream: pool.member(member).upstream().clone(),
        };

        if pool.members.len() == 1 {
            parts.extensions.insert(target);
            pool.start(member);
            let future = self
                .inner
                .call(Request::from_parts(parts, ReplayBody::new(body)));
            return ResponseFuture::called(self.pool.clone(), member, future, None);
        }
        let empty = body.is_end_stream();
        let replay_after_reach = empty && pool.retries_after_reach(&parts.method);
        // The head as the client sent it; the extensions only where an answer can be
        // retried (an error hands them back).
        let head = Head::copy(&parts, pool.retries_answers());
        parts.extensions.insert(target);
        let (body, slot) = if empty {
            (ReplayBody::ended(), None)
        } else {
            let slot = body::slot(body);
            (ReplayBody::shared(&slot), Some(slot))
        };
        let retry = Retry {
            service: self.inner.clone(),
            head,
            slot,
            tried: bit(member),
            replay_after_reach,
            sticky,
            route,
        };
        pool.start(member);
        let future = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture::called(self.pool.clone(), member, future, Some(retry))
    }
}
