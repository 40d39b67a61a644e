//! The request body as the balancer hands it on: one that can be taken back when nobody
//! read it, so a request whose connection failed can go to another member whole.
//!
//! A forwarder takes the request when it is called, even one it never gets a connection
//! for. The balancer therefore keeps the client's body in a shared slot and gives the
//! forwarder a
//! [`ReplayBody`] that moves the body out of the slot on its first read. If the attempt
//! fails before anything read it, the body is still in the slot and goes with the next
//! attempt. Nothing is buffered or copied; a body that was read once is never replayed.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

type Slot<B> = Arc<Mutex<Option<B>>>;

pin_project! {
    /// A request body that the balancer can take back while it is unread.
    ///
    /// Where a request can only go to one member, it is the client's body as it is
    /// ([`ReplayBody::new`]), without the shared slot.
    #[derive(Debug)]
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Direct { #[pin] body: B },
        Shared { slot: Slot<B>, #[pin] taken: Option<B> },
        Ended,
    }
}

impl<B> ReplayBody<B> {
    /// The body as it is, for a request that goes to one place only.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Direct { body },
        }
    }

    /// The body of a request that has none (it was over before it began): every attempt
    /// gets one, with nothing to keep.
    pub(crate) fn ended() -> Self {
        Self { kind: Kind::Ended }
    }

    pub(crate) fn shared(slot: &Slot<B>) -> Self {
        Self {
            kind: Kind::Shared {
                slot: slot.clone(),
                taken: None,
            },
        }
    }
}

pub(crate) fn slot<B>(body: B) -> Slot<B> {
    Arc::new(Mutex::new(Some(body)))
}

/// True while the body in the slot has not been read by any attempt.
pub(crate) fn unread<B>(slot: &Slot<B>) -> bool {
    lock(slot).is_some()
}

fn lock<B>(slot: &Slot<B>) -> MutexGuard<'_, Option<B>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Direct { body } => body.poll_frame(cx),
            KindProj::Shared { slot, mut taken } => {
                if taken.is_none() {
                    match lock(slot).take() {
                        Some(body) => taken.set(Some(body)),
                        // Another attempt read it first: this attempt was abandoned.
                        None => return Poll::Ready(None),
                    }
                }
                match taken.as_pin_mut() {
                    Some(body) => body.poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
            KindProj::Ended => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Direct { body } => body.is_end_stream(),
            Kind::Shared {
                taken: Some(body), ..
            } => body.is_end_stream(),
            Kind::Shared { slot, taken: None } => {
                lock(slot).as_ref().is_none_or(|b| b.is_end_stream())
            }
            Kind::Ended => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Direct { body } => body.size_hint(),
            Kind::Shared {
                taken: Some(body), ..
            } => body.size_hint(),
            Kind::Shared { slot, taken: None } => lock(slot)
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
            Kind::Ended => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn unread_body_is_given_back() {
        let slot = slot(Full::new(Bytes::from_static(b"hello")));
        let first = ReplayBody::shared(&slot);
        assert_eq!(first.size_hint().exact(), Some(5));
        assert!(!first.is_end_stream());
        drop(first);
        assert!(unread(&slot));
        let second = ReplayBody::shared(&slot);
        assert_eq!(second.collect().await.unwrap().to_bytes(), "hello");
        assert!(!unread(&slot));
        // A third attempt after a read finds nothing and says so by ending at once.
        let third = ReplayBody::shared(&slot);
        assert!(third.is_end_stream());
    }

    #[tokio::test]
    async fn direct_body_passes_through() {
        let body = ReplayBody::new(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    }
}
