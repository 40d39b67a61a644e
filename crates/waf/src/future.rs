//! The response future: reads and inspects the request body when there is one, calls the
//! inner service, then inspects the response headers.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tower_service::Service;

use crate::body::WafBody;
use crate::layer::{Ctx, INLINE_BODY, too_large};

/// A request body being read for inspection.
struct Reading<S, B: Body> {
    service: S,
    parts: http::request::Parts,
    body: B,
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// Bytes read so far.
    seen: usize,
    ctx: Ctx,
}

/// A request whose body is read, waiting for (or having) its phase 2 verdict.
struct Evaluated<S, B: Body> {
    service: S,
    req: Request<WafBody<B>>,
}

pin_project! {
    /// The [`Waf`](crate::Waf) service's response future.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<WafBody<B>>>,
        B: Body,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<WafBody<B>>>,
        B: Body,
    {
        Refused { response: Option<S::Response> },
        Reading { reading: Option<Box<Reading<S, B>>> },
        Evaluating {
            handle: JoinHandle<Ctx>,
            waiting: Option<Box<Evaluated<S, B>>>,
        },
        Inner {
            #[pin]
            future: S::Future,
            ctx: Option<Ctx>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<WafBody<B>>>,
    B: Body,
{
    pub(crate) fn refused(response: S::Response) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    pub(crate) fn pass(future: S::Future) -> Self {
        Self {
            state: State::Inner { future, ctx: None },
        }
    }

    pub(crate) fn call(mut service: S, req: Request<WafBody<B>>, ctx: Ctx) -> Self {
        Self {
            state: State::Inner {
                future: service.call(req),
                ctx: Some(ctx),
            },
        }
    }

    pub(crate) fn read_body(service: S, req: Request<B>, ctx: Ctx) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            state: State::Reading {
                reading: Some(Box::new(Reading {
                    service,
                    parts,
                    body,
                    chunks: VecDeque::new(),
                    trailers: None,
                    seen: 0,
                    ctx,
                })),
            },
        }
    }
}

/// What reading the body came to.
enum Read<E> {
    /// The whole body is read (or it failed: the error is replayed to the inner service).
    Done(Option<E>),
    /// The limit was reached with more to come.
    OverLimit,
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<WafBody<B>>, Response = Response<ResBody>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.state.as_mut().project() {
                StateProj::Refused { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
                StateProj::Inner { future, ctx } => {
                    let res = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(match ctx.take() {
                        Some(ctx) => ctx.response(res),
                        None => res,
                    }));
                }
                StateProj::Reading { reading } => {
                    let r = reading.as_mut().expect("polled after completion");
                    let outcome = ready!(read(r, cx));
                    let r = reading.take().expect("polled after completion");
                    let limit = r.ctx.shared.body_limit;
                    let (error, rest) = match outcome {
                        Read::Done(error) => (error, None),
                        Read::OverLimit if r.ctx.shared.reject_over_limit => {
                            let res = too_large(&r.ctx);
                            r.ctx.finish();
                            this.state.set(State::Refused {
                                response: Some(res),
                            });
                            continue;
                        }
                        Read::OverLimit => (None, Some(r.body)),
                    };
                    let Reading {
                        service,
                        parts,
                        chunks,
                        trailers,
                        seen,
                        mut ctx,
                        ..
                    } = *r;
                    let req =
                        Request::from_parts(parts, WafBody::replay(chunks, trailers, error, rest));
                    let inspected = seen.min(limit);
                    match tokio::runtime::Handle::try_current() {
                        Ok(rt) if inspected > INLINE_BODY => State::Evaluating {
                            handle: rt.spawn_blocking(move || {
                                let _ = ctx.txn.process_request_body();
                                ctx
                            }),
                            waiting: Some(Box::new(Evaluated { service, req })),
                        },
                        _ => {
                            let _ = ctx.txn.process_request_body();
                            decide(ctx, service, req)
                        }
                    }
                }
                StateProj::Evaluating { handle, waiting } => {
                    let ctx = match ready!(Pin::new(handle).poll(cx)) {
                        Ok(ctx) => ctx,
                        // The evaluation panicked: libmodsecurity is not expected to, so
                        // nothing sane can be done but to propagate it.
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    };
                    let Evaluated { service, req } =
                        *waiting.take().expect("polled after completion");
                    decide(ctx, service, req)
                }
            };
            this.state.set(next);
        }
    }
}

/// After phase 2: the rule's answer, or the inner service's future.
fn decide<S, B, ResBody>(mut ctx: Ctx, mut service: S, req: Request<WafBody<B>>) -> State<S, B>
where
    S: Service<Request<WafBody<B>>, Response = Response<ResBody>>,
    B: Body,
    ResBody: From<Bytes>,
{
    match ctx.intervene() {
        Some(refusal) => {
            ctx.finish();
            State::Refused {
                response: Some(refusal),
            }
        }
        None => State::Inner {
            future: service.call(req),
            ctx: Some(ctx),
        },
    }
}

/// Reads body frames, feeding the first `limit` bytes to the transaction, until the body
/// ends, fails, or goes past the limit.
fn read<S, B>(r: &mut Reading<S, B>, cx: &mut Context<'_>) -> Poll<Read<B::Error>>
where
    B: Body<Data = Bytes> + Unpin,
{
    let limit = r.ctx.shared.body_limit;
    loop {
        if r.seen > limit {
            return Poll::Ready(Read::OverLimit);
        }
        match ready!(Pin::new(&mut r.body).poll_frame(cx)) {
            None => return Poll::Ready(Read::Done(None)),
            Some(Err(e)) => return Poll::Ready(Read::Done(Some(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let room = limit.saturating_sub(r.seen);
                    let take = data.len().min(room);
                    if take > 0 {
                        let _ = r.ctx.txn.append_request_body(&data[..take]);
                    }
                    r.seen += data.len();
                    if !data.is_empty() {
                        r.chunks.push_back(data);
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        r.trailers = Some(trailers);
                    }
                }
            },
        }
    }
}
