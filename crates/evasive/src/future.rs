//! The response future: the layer's own 403, or the inner service's answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

pin_project! {
    /// Response future of [`Evasive`](crate::Evasive).
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Refused { response: Option<Response<B>> },
        Future { #[pin] future: F },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn refused(response: Response<B>) -> Self {
        Self {
            kind: Kind::Refused {
                response: Some(response),
            },
        }
    }

    pub(crate) fn future(future: F) -> Self {
        Self {
            kind: Kind::Future { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            KindProj::Future { future } => future.poll(cx),
        }
    }
}
