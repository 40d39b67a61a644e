//! The request body inside the layer: the client's, or none for an internal request.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The request body services inside [`ErrorPages`](crate::ErrorPages) receive: the
    /// client's body, or an empty one for the internal request that fetches a local
    /// error document.
    ///
    /// Layers inside stay generic over the body; only the type changes.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Client { #[pin] body: B },
        Empty,
    }
}

impl<B> RequestBody<B> {
    /// The client's body.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Client { body },
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// The client's body, if this is one.
    pub fn into_inner(self) -> Option<B> {
        match self.kind {
            Kind::Client { body } => Some(body),
            Kind::Empty => None,
        }
    }
}

impl<B> Default for RequestBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Client { body } => body.poll_frame(cx),
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Client { body } => body.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Client { body } => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}
