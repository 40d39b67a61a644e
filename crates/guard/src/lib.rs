//! The response future every towergate guard layer (ACL, flood blocker, character
//! filter) returns: either the layer's own refusal, ready at once, or the inner service's
//! answer. One type, so each guard writes only its decision.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

pin_project! {
    /// A guard's response future: its own refusal, or the inner service's future.
    pub struct GuardFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Refused { response: Option<Response<B>> },
        Inner { #[pin] future: F },
    }
}

impl<F, B> GuardFuture<F, B> {
    /// The guard answers itself with `response`.
    pub fn refused(response: Response<B>) -> Self {
        Self {
            kind: Kind::Refused {
                response: Some(response),
            },
        }
    }

    /// The request passed: the inner service's future.
    pub fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }
}

impl<F, B, E> Future for GuardFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            KindProj::Inner { future } => future.poll(cx),
        }
    }
}
