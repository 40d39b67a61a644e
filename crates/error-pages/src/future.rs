//! The response future: waits for the answer, then replaces it, fetching a local
//! document through the inner service when one is configured.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::RequestBody;
use crate::layer::{Decision, Replay, Shared};

pin_project! {
    /// The response future of [`ErrorPages`](crate::ErrorPages).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
        shared: Arc<Shared>,
        head: bool,
        internal: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        // Waiting for the answer to the client's request. What only a local document needs
        // is boxed, here and below: this future lives in room hyper keeps for it on every
        // connection, sized by its largest state.
        First {
            #[pin]
            future: S::Future,
            replay: Option<Box<Replay<S>>>,
        },
        // A local document is needed: waiting for the service to take its request.
        Ready {
            ready: Option<Box<ReadyDocument<S, B>>>,
        },
        // Waiting for the local document.
        Document {
            #[pin]
            future: S::Future,
            original: Option<Box<S::Response>>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>>,
{
    pub(crate) fn new(
        future: S::Future,
        shared: Arc<Shared>,
        head: bool,
        internal: bool,
        replay: Option<Box<Replay<S>>>,
    ) -> Self {
        Self {
            state: State::First { future, replay },
            shared,
            head,
            internal,
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let shared = &**this.shared;
            let next = match this.state.project() {
                StateProj::First { future, replay } => {
                    let res = ready!(future.poll(cx))?;
                    if *this.internal {
                        // The answer to our own document request: never replaced, so a
                        // failing document cannot recurse.
                        return Poll::Ready(Ok(res));
                    }
                    match shared.decide(&res) {
                        Decision::Keep => return Poll::Ready(Ok(res)),
                        Decision::Text {
                            body,
                            content_type,
                            content_length,
                        } => {
                            return Poll::Ready(Ok(shared.text(
                                res,
                                body,
                                content_type,
                                content_length,
                                *this.head,
                            )));
                        }
                        Decision::Redirect(location) => {
                            return Poll::Ready(Ok(shared.redirect(res, location)));
                        }
                        Decision::Local(path) => {
                            let Some(replay) = replay.take() else {
                                return Poll::Ready(Ok(res));
                            };
                            let (service, request) = replay.request(path, res.status(), *this.head);
                            State::Ready {
                                ready: Some(Box::new(ReadyDocument {
                                    service,
                                    request,
                                    original: res,
                                })),
                            }
                        }
                    }
                }
                StateProj::Ready { ready } => {
                    let pending = ready.as_mut().expect("polled after completion");
                    match pending.service.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => {
                            let pending = ready.take().expect("polled after completion");
                            let original = pending.original;
                            shared.local_failed(original.status(), "the service is not ready");
                            return Poll::Ready(Ok(original));
                        }
                        Poll::Ready(Ok(())) => {
                            let ReadyDocument {
                                mut service,
                                request,
                                original,
                            } = *ready.take().expect("polled after completion");
                            State::Document {
                                future: service.call(request),
                                original: Some(Box::new(original)),
                            }
                        }
                    }
                }
                StateProj::Document { future, original } => {
                    let result = ready!(future.poll(cx));
                    let original = *original.take().expect("polled after completion");
                    let status = original.status();
                    return Poll::Ready(Ok(match result {
                        Ok(document) if document.status().is_success() => {
                            shared.local(original, document)
                        }
                        Ok(document) => {
                            shared.local_failed(status, document_status(document.status()));
                            original
                        }
                        Err(_) => {
                            shared.local_failed(status, "the request failed");
                            original
                        }
                    }));
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

/// A local document's request, waiting for the service to take it, and the answer it
/// replaces.
struct ReadyDocument<S, B>
where
    S: Service<Request<RequestBody<B>>>,
{
    service: S,
    request: Request<RequestBody<B>>,
    original: S::Response,
}

fn document_status(status: StatusCode) -> &'static str {
    if status.is_client_error() {
        "it was answered with a client error"
    } else if status.is_server_error() {
        "it was answered with a server error"
    } else {
        "it was not answered with a success status"
    }
}
