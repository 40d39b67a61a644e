//! The innermost service: finds the route, says where the request goes, forwards it, and
//! turns forwarding errors into answers (the one place where they become statuses).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::RouteMetrics;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower::util::MapResponse;
use tower::{Layer, Service, ServiceExt};
use towergate_balancer::{Balancer, BalancerLayer, ReplayBody};
use towergate_error_pages::{OverrideErrors, UpstreamResponse};
use towergate_proxy::{
    Forward, ForwardError, ProxyBody, RouteTable, Target, Upstream, UpstreamBody, status_response,
};
use towergate_request_limits::BodyTooLarge;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The answer for a forwarding failure. A request body cut off by `[limits]` while it
/// streamed is the client's request being too large: 413, and the connection closed since
/// the rest of the body is still on it.
fn failure_response(e: &ForwardError) -> Response<ProxyBody> {
    if e.find_source::<BodyTooLarge>().is_none() {
        return e.to_response();
    }
    let mut res = status_response(StatusCode::PAYLOAD_TOO_LARGE);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// What a route leads to.
#[derive(Debug)]
pub enum RouteAction {
    /// A single origin.
    Origin(Arc<Upstream>),
    /// A balancer pool (its layer carries the route, so member URLs replace its prefix).
    Pool(BalancerLayer),
}

/// The one place backend answers come in: error answers are marked so that error-pages
/// tells them from the gateway's own (the balancer's 503 included). Only statuses from 400
/// up can get an error document, so the others go unmarked: marking costs the answer its
/// own extension map.
fn upstream_answer(res: Response<UpstreamBody>) -> Response<ProxyBody> {
    let mut res = res.map(ProxyBody::upstream);
    if res.status().as_u16() >= 400 {
        res.extensions_mut().insert(UpstreamResponse);
    }
    res
}

type ToProxy = fn(Response<UpstreamBody>) -> Response<ProxyBody>;
/// The forwarder as a pool's balancer sees it.
type PoolForward<B> = MapResponse<Forward<ReplayBody<B>>, ToProxy>;
/// The future of a pool route.
type PoolFuture<B> = <Balancer<PoolForward<B>> as Service<Request<B>>>::Future;
/// The future of an origin route.
type OriginFuture<B> = <Forward<ReplayBody<B>> as Service<Request<ReplayBody<B>>>>::Future;

/// A route's action and its metric handles.
#[derive(Debug)]
pub struct Routed {
    /// Where the route leads.
    pub action: RouteAction,
    /// Its metrics.
    pub metrics: Arc<RouteMetrics>,
    /// Backend error answers get `[error_pages]` documents too (`ProxyErrorOverride`).
    pub override_errors: bool,
}

/// Routes requests and forwards them. Request bodies go out as [`ReplayBody`]s, so that a
/// pool can send a request whose member could not be reached to another member whole.
pub struct Dispatch<B: Send> {
    routes: Arc<RouteTable<Routed>>,
    forward: Forward<ReplayBody<B>>,
    /// Where each route's requests go, by the route's place in the table: made once (and
    /// copied with the dispatcher, for each connection) rather than for each request, which
    /// copied the forwarder's and the pool's shared handles.
    services: Vec<RouteService<B>>,
}

/// Where one route's requests go.
enum RouteService<B: Send> {
    /// To a single origin: the target every request is given.
    Origin(Target),
    /// Through a pool's balancer over the forwarder.
    Pool(Balancer<PoolForward<B>>),
}

impl<B: Send> Clone for RouteService<B> {
    fn clone(&self) -> Self {
        match self {
            Self::Origin(target) => Self::Origin(target.clone()),
            Self::Pool(balancer) => Self::Pool(balancer.clone()),
        }
    }
}

impl<B: Send> Clone for Dispatch<B> {
    fn clone(&self) -> Self {
        Self {
            routes: self.routes.clone(),
            forward: self.forward.clone(),
            services: self.services.clone(),
        }
    }
}

impl<B> Dispatch<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// A dispatcher over `routes` forwarding with `forward`.
    pub fn new(routes: RouteTable<Routed>, forward: Forward<ReplayBody<B>>) -> Self {
        let services = routes
            .iter()
            .map(|route| match &route.value().action {
                RouteAction::Origin(upstream) => RouteService::Origin(Target {
                    route: route.info().clone(),
                    upstream: upstream.clone(),
                }),
                RouteAction::Pool(layer) => RouteService::Pool(
                    layer.layer(forward.clone().map_response(upstream_answer as ToProxy)),
                ),
            })
            .collect();
        Self {
            routes: Arc::new(routes),
            forward,
            services,
        }
    }
}

impl<B> Service<Request<B>> for Dispatch<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    /// Boxed: the forwarding future is the largest part of a request's state, and every
    /// layer above wraps the one below by value. Boxed once here, it is not copied again
    /// at each layer (one allocation instead of kilobytes of moves per request).
    type Future = Pin<Box<DispatchFuture<OriginFuture<B>, PoolFuture<B>>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some((index, route)) = self.routes.find_indexed(req.uri().path()) else {
            return Box::pin(DispatchFuture::ready(status_response(
                StatusCode::NOT_FOUND,
            )));
        };
        let routed = route.value();
        match &mut self.services[index] {
            RouteService::Origin(target) => {
                req.extensions_mut().insert(target.clone());
                Box::pin(DispatchFuture::forward(
                    self.forward.call(req.map(ReplayBody::new)),
                    routed.metrics.clone(),
                    routed.override_errors,
                ))
            }
            RouteService::Pool(balancer) => Box::pin(DispatchFuture::pool(
                balancer.call(req),
                routed.metrics.clone(),
                routed.override_errors,
            )),
        }
    }
}

pin_project! {
    /// The future of [`Dispatch`].
    pub struct DispatchFuture<F, P> {
        #[pin]
        kind: Kind<F, P>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, P> {
        Ready { response: Option<Response<ProxyBody>> },
        Forward { #[pin] future: F, done: Done },
        Pool { #[pin] future: P, done: Done },
    }
}

/// What happens when the answer is in: metrics, error answers, ProxyErrorOverride.
struct Done {
    metrics: Arc<RouteMetrics>,
    started: Instant,
    override_errors: bool,
}

impl Done {
    fn new(metrics: Arc<RouteMetrics>, override_errors: bool) -> Self {
        Self {
            metrics,
            started: Instant::now(),
            override_errors,
        }
    }

    fn finish(&self, result: Result<Response<ProxyBody>, ForwardError>) -> Response<ProxyBody> {
        let res = match result {
            Ok(mut res) => {
                if self.override_errors && res.extensions().get::<UpstreamResponse>().is_some() {
                    res.extensions_mut().insert(OverrideErrors);
                }
                res
            }
            Err(e) => {
                self.metrics.upstream_error(e.kind());
                failure_response(&e)
            }
        };
        self.metrics
            .record(res.status().as_u16(), self.started.elapsed());
        res
    }
}

impl<F, P> DispatchFuture<F, P> {
    fn ready(response: Response<ProxyBody>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    fn forward(future: F, metrics: Arc<RouteMetrics>, override_errors: bool) -> Self {
        Self {
            kind: Kind::Forward {
                future,
                done: Done::new(metrics, override_errors),
            },
        }
    }

    fn pool(future: P, metrics: Arc<RouteMetrics>, override_errors: bool) -> Self {
        Self {
            kind: Kind::Pool {
                future,
                done: Done::new(metrics, override_errors),
            },
        }
    }
}

impl<F, P> Future for DispatchFuture<F, P>
where
    F: Future<Output = Result<Response<UpstreamBody>, ForwardError>>,
    P: Future<Output = Result<Response<ProxyBody>, ForwardError>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            KindProj::Forward { future, done } => future
                .poll(cx)
                .map(|result| Ok(done.finish(result.map(upstream_answer)))),
            KindProj::Pool { future, done } => {
                future.poll(cx).map(|result| Ok(done.finish(result)))
            }
        }
    }
}
