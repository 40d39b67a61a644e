//! What every towergate guard layer (ACL, flood blocker, character filter) shares, so
//! each guard writes only its decision:
//!
//! - [`GuardFuture`], the response future they return: either the layer's own refusal,
//!   ready at once, or the inner service's answer;
//! - [`refusal`], the short plain-text answer a guard refuses with;
//! - [`inner_service_accessors!`], the `get_ref`/`get_mut`/`into_inner` methods of a
//!   service that wraps an `inner` service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use pin_project_lite::pin_project;

/// A guard's refusal: `status` with `text` as a plain-text body (`Content-Type:
/// text/plain; charset=utf-8` and its `Content-Length`).
///
/// ```
/// use http::StatusCode;
/// let res: http::Response<bytes::Bytes> =
///     towergate_guard::refusal(StatusCode::FORBIDDEN, "403 Forbidden\n".into());
/// assert_eq!(res.status(), StatusCode::FORBIDDEN);
/// assert_eq!(res.headers()["content-length"], "14");
/// assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
/// ```
pub fn refusal<B: From<Bytes>>(status: StatusCode, text: Bytes) -> Response<B> {
    let len = text.len();
    let mut res = Response::new(B::from(text));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    res
}

/// Defines `get_ref`, `get_mut` and `into_inner` for a service `Foo<S>` that keeps its
/// inner service in a field named `inner`. Use it inside `impl<S> Foo<S> { ... }`.
///
/// ```
/// pub struct Guarded<S> {
///     inner: S,
/// }
///
/// impl<S> Guarded<S> {
///     towergate_guard::inner_service_accessors!();
/// }
///
/// let mut g = Guarded { inner: 1 };
/// *g.get_mut() += 1;
/// assert_eq!(*g.get_ref(), 2);
/// assert_eq!(g.into_inner(), 2);
/// ```
#[macro_export]
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// The inner service, unwrapped.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

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
