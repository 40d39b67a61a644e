//! The response future: reads and inspects the request body when there is one, calls the
//! inner service, inspects the response headers, and the response body when its type is
//! one to inspect.

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
use crate::ffi::{CallFailed, Transaction};
use crate::layer::{Ctx, INLINE_BODY, response_too_large, too_large};

/// What has been read of a body held for inspection.
#[derive(Default)]
struct Held {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// Bytes read so far.
    seen: usize,
}

/// A request body being read for inspection.
struct Reading<S, B: Body> {
    service: S,
    parts: http::request::Parts,
    body: B,
    held: Held,
    ctx: Ctx,
}

/// A request whose body is read, waiting for (or having) its phase 2 verdict.
struct Evaluated<S, B: Body> {
    service: S,
    req: Request<WafBody<B>>,
}

/// An answer whose body is read for phase 4; the body itself stays in `res`.
struct Answer<R> {
    res: R,
    held: Held,
    /// The body was read to its end.
    ended: bool,
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
        ReadingAnswer {
            answer: Option<Box<Answer<S::Response>>>,
            ctx: Option<Ctx>,
        },
        EvaluatingAnswer {
            handle: JoinHandle<Ctx>,
            answer: Option<Box<Answer<S::Response>>>,
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
                    held: Held::default(),
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
    ResBody: Body<Data = Bytes> + From<Bytes> + Unpin,
    ResBody::Error: Unpin,
{
    type Output = Result<Response<WafBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.state.as_mut().project() {
                StateProj::Refused { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(WafBody::new)));
                }
                StateProj::Inner { future, ctx } => {
                    let res = ready!(future.poll(cx))?;
                    let Some(mut ctx) = ctx.take() else {
                        return Poll::Ready(Ok(res.map(WafBody::new)));
                    };
                    if let Some(refusal) = ctx.response_headers::<_, ResBody>(&res) {
                        ctx.finish();
                        return Poll::Ready(Ok(refusal.map(WafBody::new)));
                    }
                    if !ctx.inspects_body(&res) {
                        ctx.pass();
                        return Poll::Ready(Ok(res.map(WafBody::new)));
                    }
                    State::ReadingAnswer {
                        answer: Some(Box::new(Answer {
                            res,
                            held: Held::default(),
                            ended: false,
                        })),
                        ctx: Some(ctx),
                    }
                }
                StateProj::ReadingAnswer { answer, ctx } => {
                    let a = answer.as_mut().expect("polled after completion");
                    let c = ctx.as_mut().expect("polled after completion");
                    let limit = c.shared.response_body.as_ref().map_or(0, |r| r.limit);
                    let outcome = ready!(read(a.res.body_mut(), &mut a.held, limit, cx, |chunk| {
                        let _ = c.txn.append_response_body(chunk);
                    }));
                    let mut a = answer.take().expect("polled after completion");
                    let ctx = ctx.take().expect("polled after completion");
                    match outcome {
                        Read::Done(None) => a.ended = true,
                        // A broken body is not inspected: the client gets what came, then
                        // the break.
                        Read::Done(Some(e)) => {
                            ctx.pass();
                            let Held {
                                chunks, trailers, ..
                            } = a.held;
                            let (parts, _) = a.res.into_parts();
                            let body = WafBody::replay(chunks, trailers, Some(e), None);
                            return Poll::Ready(Ok(Response::from_parts(parts, body)));
                        }
                        Read::OverLimit if rejects_large_answers(&ctx) => {
                            let res = response_too_large::<ResBody>(&ctx);
                            ctx.finish();
                            return Poll::Ready(Ok(res.map(WafBody::new)));
                        }
                        Read::OverLimit => {}
                    }
                    let inspected = a.held.seen.min(limit);
                    match evaluate(ctx, inspected, Transaction::process_response_body) {
                        Evaluation::Done(ctx) => return Poll::Ready(Ok(answer_decided(ctx, *a))),
                        Evaluation::Running(handle) => State::EvaluatingAnswer {
                            handle,
                            answer: Some(a),
                        },
                    }
                }
                StateProj::EvaluatingAnswer { handle, answer } => {
                    let ctx = ready!(evaluated(handle, cx));
                    let a = answer.take().expect("polled after completion");
                    return Poll::Ready(Ok(answer_decided(ctx, *a)));
                }
                StateProj::Reading { reading } => {
                    let r = reading.as_mut().expect("polled after completion");
                    let limit = r.ctx.shared.body_limit;
                    let txn = &mut r.ctx.txn;
                    let outcome = ready!(read(&mut r.body, &mut r.held, limit, cx, |chunk| {
                        let _ = txn.append_request_body(chunk);
                    }));
                    let r = reading.take().expect("polled after completion");
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
                        held,
                        ctx,
                        ..
                    } = *r;
                    let inspected = held.seen.min(limit);
                    let body = WafBody::replay(held.chunks, held.trailers, error, rest);
                    let req = Request::from_parts(parts, body);
                    match evaluate(ctx, inspected, Transaction::process_request_body) {
                        Evaluation::Done(ctx) => decide(ctx, service, req),
                        Evaluation::Running(handle) => State::Evaluating {
                            handle,
                            waiting: Some(Box::new(Evaluated { service, req })),
                        },
                    }
                }
                StateProj::Evaluating { handle, waiting } => {
                    let ctx = ready!(evaluated(handle, cx));
                    let Evaluated { service, req } =
                        *waiting.take().expect("polled after completion");
                    decide(ctx, service, req)
                }
            };
            this.state.set(next);
        }
    }
}

/// A body phase (2 or 4) run on the calling task, or still running on the blocking pool.
enum Evaluation {
    Done(Ctx),
    Running(JoinHandle<Ctx>),
}

/// Runs `phase` on the transaction: here for up to [`INLINE_BODY`] inspected bytes, on
/// tokio's blocking pool for more, so that a long evaluation does not hold up other
/// requests.
fn evaluate(
    mut ctx: Ctx,
    inspected: usize,
    phase: fn(&mut Transaction) -> Result<(), CallFailed>,
) -> Evaluation {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if inspected > INLINE_BODY => Evaluation::Running(rt.spawn_blocking(move || {
            let _ = phase(&mut ctx.txn);
            ctx
        })),
        _ => {
            let _ = phase(&mut ctx.txn);
            Evaluation::Done(ctx)
        }
    }
}

/// The transaction back from the blocking pool.
fn evaluated(handle: &mut JoinHandle<Ctx>, cx: &mut Context<'_>) -> Poll<Ctx> {
    match ready!(Pin::new(handle).poll(cx)) {
        Ok(ctx) => Poll::Ready(ctx),
        // The evaluation panicked: libmodsecurity is not expected to, so nothing sane can
        // be done but to propagate it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn rejects_large_answers(ctx: &Ctx) -> bool {
    ctx.shared
        .response_body
        .as_ref()
        .is_some_and(|r| r.reject_over_limit)
}

/// After phase 4: the rule's answer, or the answer with what was read of its body replayed
/// before the rest.
fn answer_decided<R>(mut ctx: Ctx, answer: Answer<Response<R>>) -> Response<WafBody<R>>
where
    R: Body + From<Bytes>,
{
    if let Some(refusal) = ctx.intervene::<R>() {
        ctx.finish();
        return refusal.map(WafBody::new);
    }
    ctx.pass();
    let Answer { res, held, ended } = answer;
    let (parts, body) = res.into_parts();
    let rest = (!ended).then_some(body);
    Response::from_parts(
        parts,
        WafBody::replay(held.chunks, held.trailers, None, rest),
    )
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

/// Reads body frames into `held`, handing the first `limit` bytes to `inspect`, until the
/// body ends, fails, or goes past the limit.
fn read<B>(
    body: &mut B,
    held: &mut Held,
    limit: usize,
    cx: &mut Context<'_>,
    mut inspect: impl FnMut(&[u8]),
) -> Poll<Read<B::Error>>
where
    B: Body<Data = Bytes> + Unpin,
{
    loop {
        if held.seen > limit {
            return Poll::Ready(Read::OverLimit);
        }
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            None => return Poll::Ready(Read::Done(None)),
            Some(Err(e)) => return Poll::Ready(Read::Done(Some(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let room = limit.saturating_sub(held.seen);
                    let take = data.len().min(room);
                    if take > 0 {
                        inspect(&data[..take]);
                    }
                    held.seen += data.len();
                    if !data.is_empty() {
                        held.chunks.push_back(data);
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        held.trailers = Some(trailers);
                    }
                }
            },
        }
    }
}
