//! The balancer's response future: watches each attempt's outcome, keeps the pool's view
//! of its members up to date, and sends the request on to the next member where that is
//! safe.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use pin_project_lite::pin_project;
use tower_service::Service;
use towergate_proxy::{
    BodyWatch, ForwardError, ForwardErrorKind, RouteInfo, Target, Tunnel, WatchBody,
    status_response,
};

use crate::body::{self, ReplayBody};
use crate::pool::{MemberSet, Pool, PoolInner, bit};

pin_project! {
    /// Response future of [`Balancer`](crate::Balancer).
    pub struct ResponseFuture<F, S, B> {
        #[pin]
        state: State<F>,
        attempt: Option<InFlight>,
        retry: Option<Retry<S, B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// No member can take the request: answer 503.
        Unavailable,
        /// An attempt is in flight.
        Calling { #[pin] future: F },
        /// The next attempt waits for the service to be ready.
        Retrying,
    }
}

/// What a retry needs: a service, the request head, the body slot, who was tried.
pub(crate) struct Retry<S, B> {
    pub(crate) service: S,
    pub(crate) head: Head,
    /// `None` for a request without a body: every attempt gets an empty one.
    pub(crate) slot: Option<Arc<Mutex<Option<B>>>>,
    pub(crate) tried: MemberSet,
    /// Idempotent method, empty body: may be sent again after it reached a member.
    pub(crate) replay_after_reach: bool,
    /// The member the request's sticky route names.
    pub(crate) sticky: Option<usize>,
    pub(crate) route: Arc<RouteInfo>,
}

/// A request in flight at a member; counts it out when dropped, unless the count was
/// handed on to the response body or tunnel.
struct InFlight {
    pool: Option<Pool>,
    member: usize,
}

impl InFlight {
    fn new(pool: Pool, member: usize) -> Self {
        Self {
            pool: Some(pool),
            member,
        }
    }

    fn pool(&self) -> &Pool {
        self.pool.as_ref().expect("counted until handed on")
    }

    /// Hands the count on to the response: a tunnel holds it until it closes; a body
    /// until it is over, and the body's failure counts against the member.
    fn hand_on<B: WatchBody>(mut self, res: &mut Response<B>) {
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(tunnel) = res.extensions().get::<Tunnel>() {
                tunnel.hold(self);
                return;
            }
        }
        let pool = self.pool.take().expect("counted until handed on");
        res.body_mut()
            .watch(BodyWatch::new(pool.inner, self.member));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.inner.finish(self.member);
        }
    }
}

impl<F, S, B> ResponseFuture<F, S, B> {
    pub(crate) fn unavailable(pool: Pool) -> Self {
        pool.inner.count_unavailable();
        Self {
            state: State::Unavailable,
            attempt: None,
            retry: None,
        }
    }

    /// `pool.start(member)` has been counted for `future`.
    pub(crate) fn called(pool: Pool, member: usize, future: F, retry: Option<Retry<S, B>>) -> Self {
        Self {
            state: State::Calling { future },
            attempt: Some(InFlight::new(pool, member)),
            retry,
        }
    }
}

/// The client's request head as it was before the first attempt, for the next one.
pub(crate) struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// Copied up front only where a retry can follow an answer (`failonstatus`), which
    /// hands nothing back; otherwise the failed attempt's error hands them back.
    extensions: Option<Extensions>,
    keep_extensions: bool,
}

impl Head {
    pub(crate) fn copy(parts: &Parts, keep_extensions: bool) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: keep_extensions.then(|| parts.extensions.clone()),
            keep_extensions,
        }
    }

    /// The failed attempt's extensions, for the next attempt.
    fn handed_back(&mut self, extensions: Extensions) {
        if !self.keep_extensions {
            self.extensions = Some(extensions);
        }
    }

    fn request<B>(&mut self, body: B) -> Request<B> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        let extensions = if self.keep_extensions {
            self.extensions.clone()
        } else {
            self.extensions.take()
        };
        if let Some(extensions) = extensions {
            *req.extensions_mut() = extensions;
        }
        req
    }
}

impl<S, B> Retry<S, B> {
    /// The next member to try, if a retry is allowed after this failure.
    fn next_member(&mut self, pool: &PoolInner, reached: bool) -> Option<usize> {
        if reached && !self.replay_after_reach {
            return None;
        }
        if self.slot.as_ref().is_some_and(|slot| !body::unread(slot)) {
            return None;
        }
        let next = pool.select(self.sticky, self.tried)?;
        self.tried |= bit(next);
        Some(next)
    }
}

impl<F, S, B, ResBody> Future for ResponseFuture<F, S, B>
where
    F: Future<Output = Result<Response<ResBody>, ForwardError>>,
    S: Service<
            Request<ReplayBody<B>>,
            Future = F,
            Response = Response<ResBody>,
            Error = ForwardError,
        >,
    ResBody: From<Bytes> + WatchBody,
{
    type Output = Result<Response<ResBody>, ForwardError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Unavailable => {
                    return Poll::Ready(Ok(status_response(StatusCode::SERVICE_UNAVAILABLE)));
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let attempt = this
                        .attempt
                        .take()
                        .expect("an attempt is in flight while calling");
                    let pool = &attempt.pool().inner;
                    let member = attempt.member;
                    let (reached, mut error) = match result {
                        Ok(mut res) => {
                            let status = res.status();
                            if !pool.fails_on(status.as_u16()) {
                                pool.observe_success(member);
                                attempt.hand_on(&mut res);
                                return Poll::Ready(Ok(res));
                            }
                            pool.mark_error(
                                member,
                                format!("answered {status}, a failonstatus status"),
                            );
                            if let Some(next) =
                                this.retry.as_mut().and_then(|r| r.next_member(pool, true))
                            {
                                // The member's answer is dropped: the next member answers.
                                drop(res);
                                let pool = attempt.pool().clone();
                                drop(attempt);
                                start_retry(this.retry, this.attempt, &pool, next);
                                this.state.set(State::Retrying);
                                continue;
                            }
                            attempt.hand_on(&mut res);
                            return Poll::Ready(Ok(res));
                        }
                        Err(e) => match e.kind() {
                            ForwardErrorKind::Connect => {
                                pool.mark_error(member, e.to_string());
                                (false, e)
                            }
                            ForwardErrorKind::Timeout => {
                                pool.mark_error(member, e.to_string());
                                (true, e)
                            }
                            ForwardErrorKind::Upstream => {
                                pool.observe_failure(member, e.to_string());
                                (true, e)
                            }
                            // Not the member's doing (the client's body, a missing target).
                            _ => return Poll::Ready(Err(e)),
                        },
                    };
                    if let Some(next) = this
                        .retry
                        .as_mut()
                        .and_then(|r| r.next_member(pool, reached))
                    {
                        if let Some(retry) = this.retry.as_mut() {
                            retry.head.handed_back(error.take_extensions());
                        }
                        let pool = attempt.pool().clone();
                        drop(attempt);
                        start_retry(this.retry, this.attempt, &pool, next);
                        this.state.set(State::Retrying);
                        continue;
                    }
                    if !reached {
                        // No member could be reached: the pool cannot serve this request.
                        pool.count_unavailable();
                        return Poll::Ready(Ok(status_response(StatusCode::SERVICE_UNAVAILABLE)));
                    }
                    return Poll::Ready(Err(error));
                }
                StateProj::Retrying => {
                    let retry = this.retry.as_mut().expect("a retry is prepared");
                    ready!(retry.service.poll_ready(cx))?;
                    let attempt = this.attempt.as_ref().expect("a retry attempt is counted");
                    let body = match &retry.slot {
                        Some(slot) => ReplayBody::shared(slot),
                        None => ReplayBody::ended(),
                    };
                    let mut req = retry.head.request(body);
                    req.extensions_mut().insert(Target {
                        route: retry.route.clone(),
                        upstream: attempt
                            .pool()
                            .inner
                            .member(attempt.member)
                            .upstream()
                            .clone(),
                    });
                    let future = retry.service.call(req);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

/// Counts the next attempt at `member`.
fn start_retry<S, B>(
    retry: &mut Option<Retry<S, B>>,
    attempt: &mut Option<InFlight>,
    pool: &Pool,
    member: usize,
) {
    debug_assert!(retry.is_some());
    pool.inner.count_failover();
    pool.inner.start(member);
    *attempt = Some(InFlight::new(pool.clone(), member));
}
