//! The request body as the inner service sees it: counted against `LimitRequestBody` when
//! its length is not known up front, and cut off with [`BodyTooLarge`] when it passes the
//! limit.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::layer::{Exceeded, Stats};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The error a [`RequestBody`] yields instead of the data that would take it past the
/// limit.
///
/// A forwarding client that reads the body (hyper's, for one) fails the upstream request
/// with it, so the upstream never gets a complete request; the [`RequestLimits`] service
/// then answers the client 413, whatever the inner service made of the failure. Error
/// mappings elsewhere can recognise it in a source chain with [`BodyTooLarge::find_in`].
///
/// [`RequestLimits`]: crate::RequestLimits
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    limit: u64,
}

impl BodyTooLarge {
    /// The limit the body passed, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Looks for a `BodyTooLarge` in `err` and its chain of sources, e.g. in the error of an
    /// HTTP client whose request body was cut off.
    pub fn find_in<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a BodyTooLarge> {
        let mut next = Some(err);
        while let Some(err) = next {
            if let Some(found) = err.downcast_ref::<BodyTooLarge>() {
                return Some(found);
            }
            next = err.source();
        }
        None
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body larger than the limit of {} bytes (LimitRequestBody)",
            self.limit
        )
    }
}

impl StdError for BodyTooLarge {}

/// Set when a counted body passes the limit; shared between the body and the service's
/// response future.
#[derive(Debug)]
pub(crate) struct Tripwire {
    tripped: AtomicBool,
    stats: Arc<Stats>,
}

impl Tripwire {
    pub(crate) fn new(stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(Self {
            tripped: AtomicBool::new(false),
            stats,
        })
    }

    pub(crate) fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    fn trip(&self) {
        if !self.tripped.swap(true, Ordering::AcqRel) {
            self.stats.count(Exceeded::BodyStreamed);
        }
    }
}

pin_project! {
    /// The request body the inner service of [`RequestLimits`](crate::RequestLimits) gets.
    ///
    /// A body whose length was declared (`Content-Length`, or an exact size hint) and is
    /// within the limit passes through untouched. Any other body is counted frame by frame:
    /// the frame that would take it past the limit is not handed out; a [`BodyTooLarge`]
    /// error is, from then on.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
        tripwire: Option<Arc<Tripwire>>,
    }
}

impl<B> RequestBody<B> {
    /// A body that is not counted.
    pub fn unlimited(inner: B) -> Self {
        Self {
            inner,
            remaining: u64::MAX,
            limit: 0,
            tripwire: None,
        }
    }

    pub(crate) fn counted(inner: B, limit: u64, tripwire: Arc<Tripwire>) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            tripwire: Some(tripwire),
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The wrapped body, for the limit to be bypassed.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(tripwire) = this.tripwire.as_ref() else {
            return this.inner.poll_frame(cx).map_err(Into::into);
        };
        let too_large = || BodyTooLarge { limit: *this.limit };
        if tripwire.is_tripped() {
            return Poll::Ready(Some(Err(too_large().into())));
        }
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.remaining() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        tripwire.trip();
                        tracing::debug!(
                            target: "towergate_request_limits",
                            limit = *this.limit,
                            "request body passed LimitRequestBody while streaming; cut off"
                        );
                        return Poll::Ready(Some(Err(too_large().into())));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use bytes::Bytes;
    use http_body_util::BodyExt;

    /// A body of data frames of the given sizes, of unknown length.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(sizes: &[usize]) -> Chunks {
        Chunks(sizes.iter().map(|&n| Bytes::from(vec![b'x'; n])).collect())
    }

    #[tokio::test]
    async fn exactly_the_limit_passes() {
        let wire = Tripwire::new(Arc::default());
        let body = RequestBody::counted(chunks(&[4, 6]), 10, wire.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 10);
        assert!(!wire.is_tripped());
    }

    #[tokio::test]
    async fn the_frame_past_the_limit_is_withheld() {
        let stats = Arc::<Stats>::default();
        let wire = Tripwire::new(stats.clone());
        let mut body = RequestBody::counted(chunks(&[4, 6, 1, 5]), 10, wire.clone());
        let mut seen = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => seen += f.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("body ended without an error"),
            }
        };
        assert_eq!(seen, 10);
        assert!(wire.is_tripped());
        assert_eq!(BodyTooLarge::find_in(&*err).map(|e| e.limit()), Some(10));
        // It stays cut off.
        assert!(body.frame().await.unwrap().is_err());
    }
}
