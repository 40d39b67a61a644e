//! Body wrappers that count bytes: the response body writes the line when it ends or is
//! dropped (as tower-http's trace body acts at end of stream).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::entry::Entry;
use crate::layer::Shared;

pin_project! {
    /// A request body that counts the bytes read from it, for `%I` and `%S`. Frames and
    /// errors pass through unchanged.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        counter: Option<Arc<AtomicU64>>,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B, counter: Option<Arc<AtomicU64>>) -> Self {
        Self { inner, counter }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The wrapped body, unwrapped.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let (Some(counter), Some(Ok(frame))) = (this.counter.as_ref(), &frame) {
            if let Some(data) = frame.data_ref() {
                counter.fetch_add(data.remaining() as u64, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request's entry waiting for its response body to finish.
///
/// Boxed where it is carried: the entry is some 600 bytes, and the response future and body
/// that hold it live in room hyper keeps for them on every connection, idle or not.
pub(crate) struct Pending {
    pub(crate) entry: Entry,
    pub(crate) shared: Arc<Shared>,
}

impl Pending {
    pub(crate) fn write(mut self: Box<Self>) {
        self.entry.finish();
        self.shared.writer.log(&self.shared.format, &self.entry);
    }
}

pin_project! {
    /// The response body of [`AccessLog`](crate::AccessLog): the inner body, counted; the
    /// line is written when it ends, fails, or is dropped unfinished (a client that went
    /// away), with the bytes sent until then.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        pending: Option<Box<Pending>>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(p) = this.project().pending.take() {
                p.write();
            }
        }
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, pending: Option<Box<Pending>>) -> Self {
        Self { inner, pending }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(p) = this.pending.as_mut() {
            let done = match &frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        p.entry.sent(data.remaining() as u64);
                    }
                    this.inner.is_end_stream()
                }
                // The end, or a failure: the line says what was sent.
                None | Some(Err(_)) => true,
            };
            if done {
                if let Some(p) = this.pending.take() {
                    p.write();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("logging", &self.pending.is_some())
            .finish()
    }
}

impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B: From<bytes::Bytes>> From<bytes::Bytes> for ResponseBody<B> {
    fn from(b: bytes::Bytes) -> Self {
        Self::new(B::from(b), None)
    }
}
