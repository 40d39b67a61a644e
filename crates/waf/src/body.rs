//! A body handed on after inspection, request or response: the chunks read for it, then
//! whatever has not arrived yet.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A body whose first part was read (and inspected) by the WAF: that part is replayed,
/// then the rest streams as it arrives. Errors of the body (e.g. a request cut off by a
/// size limit) come out in their place. Every request and every answer through the WAF
/// has one; those not inspected only pass through it.
#[derive(Debug)]
pub struct WafBody<B: Body> {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    error: Option<B::Error>,
    rest: Option<B>,
}

impl<B: Body> WafBody<B> {
    /// The body, untouched.
    pub fn new(body: B) -> Self {
        Self {
            chunks: VecDeque::new(),
            trailers: None,
            error: None,
            rest: Some(body),
        }
    }

    /// A body read so far into `chunks`; `rest` (if any) follows them.
    pub(crate) fn replay(
        chunks: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
        error: Option<B::Error>,
        rest: Option<B>,
    ) -> Self {
        Self {
            chunks,
            trailers,
            error,
            rest,
        }
    }
}

/// A body of its own (a refusal's text, a document), not read by the WAF.
impl<B: Body + From<Bytes>> From<Bytes> for WafBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::new(B::from(bytes))
    }
}

impl<B: Body + Default> Default for WafBody<B> {
    fn default() -> Self {
        Self::new(B::default())
    }
}

impl<B> Body for WafBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.error.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        let hint = match &self.rest {
            Some(rest) => rest.size_hint(),
            None => SizeHint::with_exact(0),
        };
        let mut out = SizeHint::new();
        if let Some(upper) = hint.upper() {
            out.set_upper(upper + buffered);
        }
        out.set_lower(hint.lower() + buffered);
        out
    }
}
