//! The response future: the layer's own refusal, or the inner answer, replaced by 413 when
//! the body was cut off on the way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;

use crate::body::Tripwire;

pin_project! {
    /// The future of [`RequestLimits`](crate::RequestLimits).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Refused { status: StatusCode },
        Inner {
            #[pin]
            future: F,
            tripwire: Option<Arc<Tripwire>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn refused(status: StatusCode) -> Self {
        Self {
            kind: Kind::Refused { status },
        }
    }

    pub(crate) fn inner(future: F, tripwire: Option<Arc<Tripwire>>) -> Self {
        Self {
            kind: Kind::Inner { future, tripwire },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<Bytes>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { status } => Poll::Ready(Ok(refusal(*status))),
            KindProj::Inner { future, tripwire } => {
                let result = ready!(future.poll(cx));
                if tripwire.as_ref().is_some_and(|w| w.is_tripped()) {
                    // The body was cut off before the answer was made: whatever the inner
                    // service made of that (a 502 from a proxy, a 400 from an extractor, an
                    // error), the client's request was too large.
                    tracing::debug!(
                        target: "towergate_request_limits",
                        directive = "LimitRequestBody",
                        inner = ?result.as_ref().map(|r| r.status()).ok(),
                        "request refused: body passed the limit while streaming (413)"
                    );
                    // The rest of the body is still on the connection, unread: close it.
                    let mut res = refusal(StatusCode::PAYLOAD_TOO_LARGE);
                    res.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return Poll::Ready(Ok(res));
                }
                Poll::Ready(result)
            }
        }
    }
}

/// The layer's own answer: the status with a short plain-text body.
pub(crate) fn refusal<B: From<Bytes>>(status: StatusCode) -> Response<B> {
    let text: &'static str = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "413 Content Too Large\n",
        StatusCode::URI_TOO_LONG => "414 URI Too Long\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "431 Request Header Fields Too Large\n",
        _ => "400 Bad Request\n",
    };
    let mut res = Response::new(B::from(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    res
}
