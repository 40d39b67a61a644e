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
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tower::Service;
use towergate_error_pages::{OverrideErrors, UpstreamResponse};
use towergate_proxy::{
    Forward, ForwardError, ProxyBody, RouteTable, Target, Upstream, status_response,
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
}

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

/// Routes requests and forwards them.
pub struct Dispatch<B> {
    routes: Arc<RouteTable<Routed>>,
    forward: Forward<B>,
}

impl<B> Clone for Dispatch<B> {
    fn clone(&self) -> Self {
        Self {
            routes: self.routes.clone(),
            forward: self.forward.clone(),
        }
    }
}

impl<B> Dispatch<B> {
    /// A dispatcher over `routes` forwarding with `forward`.
    pub fn new(routes: RouteTable<Routed>, forward: Forward<B>) -> Self {
        Self {
            routes: Arc::new(routes),
            forward,
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
    type Future = DispatchFuture<<Forward<B> as Service<Request<B>>>::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(route) = self.routes.find(req.uri().path()) else {
            return DispatchFuture::ready(status_response(StatusCode::NOT_FOUND));
        };
        let routed = route.value();
        match &routed.action {
            RouteAction::Origin(upstream) => {
                req.extensions_mut().insert(Target {
                    route: route.info().clone(),
                    upstream: upstream.clone(),
                });
                DispatchFuture::forward(
                    self.forward.call(req),
                    routed.metrics.clone(),
                    routed.override_errors,
                )
            }
        }
    }
}

pin_project! {
    /// The future of [`Dispatch`].
    pub struct DispatchFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Ready { response: Option<Response<ProxyBody>> },
        Forward { #[pin] future: F, metrics: Arc<RouteMetrics>, started: Instant, override_errors: bool },
    }
}

impl<F> DispatchFuture<F> {
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
                metrics,
                started: Instant::now(),
                override_errors,
            },
        }
    }
}

impl<F> Future for DispatchFuture<F>
where
    F: Future<Output = Result<Response<Incoming>, ForwardError>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            KindProj::Forward {
                future,
                metrics,
                started,
                override_errors,
            } => future.poll(cx).map(|result| {
                let res = match result {
                    Ok(res) => {
                        // The one place backend answers come in: marked so that
                        // error-pages tells them from the gateway's own answers.
                        let mut res = res.map(ProxyBody::upstream);
                        res.extensions_mut().insert(UpstreamResponse);
                        if *override_errors {
                            res.extensions_mut().insert(OverrideErrors);
                        }
                        res
                    }
                    Err(e) => {
                        metrics.upstream_error(e.kind());
                        failure_response(&e)
                    }
                };
                metrics.record(res.status().as_u16(), started.elapsed());
                Ok(res)
            }),
        }
    }
}
