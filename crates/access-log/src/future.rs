//! The response futures.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use towergate_client_addr::ClientAddr;

use crate::body::{Pending, ResponseBody};

pin_project! {
    /// The response future of [`AccessLog`](crate::AccessLog).
    ///
    /// An inner error is logged at once with status 500. A future dropped before the
    /// response head (the client went away) is logged with status 499.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Box<Pending>>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(mut p) = this.project().pending.take() {
                p.entry.status = StatusCode::from_u16(499).ok();
                p.write();
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, pending: Option<Box<Pending>>) -> Self {
        Self { inner, pending }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let pending = this.pending.take();
        Poll::Ready(match result {
            Ok(res) => {
                let pending = pending.map(|mut p| {
                    p.entry.response(&p.shared.format, &res);
                    p
                });
                Ok(res.map(|body| ResponseBody::new(body, pending)))
            }
            Err(e) => {
                if let Some(p) = pending {
                    p.write();
                }
                Err(e)
            }
        })
    }
}

pin_project! {
    /// The response future of [`LogClientAddr`](crate::LogClientAddr).
    pub struct LogClientAddrFuture<F> {
        #[pin]
        inner: F,
        client: Option<IpAddr>,
    }
}

impl<F> LogClientAddrFuture<F> {
    pub(crate) fn new(inner: F, client: Option<IpAddr>) -> Self {
        Self { inner, client }
    }
}

impl<F, B, E> Future for LogClientAddrFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(res), Some(ip)) = (&mut result, this.client.take()) {
            res.extensions_mut().insert(ClientAddr(ip));
        }
        Poll::Ready(result)
    }
}
