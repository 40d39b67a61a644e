//! The response body the proxy hands out: the upstream's streamed body, or a small
//! buffer of its own (error texts, guard answers).
//!
//! An upstream body may carry a [`BodyWatch`], told when the body failed and when it is
//! over ([`WatchBody`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::client::ConnBody;
use crate::watch::{BodyWatch, WatchBody};

/// Why an upstream's answer body ended before its framing said it was complete: the
/// connection broke or closed, or the chunked framing was invalid.
pub type BodyError = std::io::Error;

/// An upstream's answer body, streamed straight from its connection. The connection goes
/// back to the pool as soon as the body's framing says it is complete; a body dropped
/// before that closes the connection, since the rest of the answer would still be on it.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Option<ConnBody>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: ConnBody) -> Self {
        Self { inner: Some(inner) }
    }

    /// An answer without a body (a relayed `101 Switching Protocols`).
    pub(crate) fn empty() -> Self {
        Self { inner: None }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Some(inner) => inner.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(ConnBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), ConnBody::size_hint)
    }
}

pin_project! {
    /// Either an upstream's body, streamed, or a complete body made here.
    ///
    /// One concrete type for every answer lets each layer keep the response type, so the
    /// gateway can switch layers on and off without boxing.
    #[derive(Debug)]
    pub struct ProxyBody {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind {
        Upstream { #[pin] body: UpstreamBody, watch: Option<BodyWatch> },
        Full { data: Option<Bytes> },
    }
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full { data: None },
        }
    }

    /// A complete body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// A streamed upstream body.
    pub fn upstream(body: impl Into<UpstreamBody>) -> Self {
        Self {
            kind: Kind::Upstream {
                body: body.into(),
                watch: None,
            },
        }
    }
}

impl WatchBody for ProxyBody {
    fn watch(&mut self, new: BodyWatch) {
        if let Kind::Upstream { watch, .. } = &mut self.kind {
            *watch = Some(new);
        }
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for ProxyBody {
    fn from(data: Bytes) -> Self {
        Self::full(data)
    }
}

impl From<&'static str> for ProxyBody {
    fn from(data: &'static str) -> Self {
        Self::full(Bytes::from_static(data.as_bytes()))
    }
}

impl From<String> for ProxyBody {
    fn from(data: String) -> Self {
        Self::full(data)
    }
}

impl From<UpstreamBody> for ProxyBody {
    fn from(body: UpstreamBody) -> Self {
        Self::upstream(body)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Upstream { body, watch } => {
                let poll = body.poll_frame(cx);
                if watch.is_some() {
                    match &poll {
                        // Cut short by the upstream: the error goes on to the client's
                        // connection, which is closed so the body cannot look complete.
                        Poll::Ready(Some(Err(e))) => watch.take().expect("checked").failed(e),
                        Poll::Ready(None) => *watch = None,
                        _ => {}
                    }
                }
                poll
            }
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::watch::tests::Recorder;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The body of an upstream's `answer` (raw bytes), after which it closes.
    async fn upstream_body(answer: &'static [u8]) -> UpstreamBody {
        use tower_service::Service;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await;
            stream.write_all(answer).await.unwrap();
        });
        let mut req = http::Request::get("/")
            .header("host", "upstream")
            .body(Empty::<Bytes>::new())
            .unwrap();
        req.extensions_mut().insert(crate::Target {
            route: Arc::new(crate::RouteInfo::new("root", "/")),
            upstream: Arc::new(crate::Upstream::parse(&format!("http://{addr}")).unwrap()),
        });
        let mut forward = crate::Forward::new(crate::ForwardConfig::default());
        forward.call(req).await.unwrap().into_body()
    }

    async fn watched(answer: &'static [u8]) -> (bool, Vec<String>) {
        let recorder = Arc::new(Recorder::default());
        let mut body = ProxyBody::upstream(upstream_body(answer).await);
        body.watch(BodyWatch::new(recorder.clone(), 7));
        let complete = body.collect().await.is_ok();
        let told = recorder.0.lock().unwrap().clone();
        (complete, told)
    }

    #[tokio::test]
    async fn watch_is_told_when_the_upstream_cuts_the_body_short() {
        let short_length = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
        assert_eq!(
            watched(short_length).await,
            (false, vec!["failed 7".into(), "over 7".into()])
        );
        let no_last_chunk = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
        assert_eq!(
            watched(no_last_chunk).await,
            (false, vec!["failed 7".into(), "over 7".into()])
        );
        let complete = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(watched(complete).await, (true, vec!["over 7".into()]));

        // A body made here has nothing to watch: the watch ends at once.
        let recorder = Arc::new(Recorder::default());
        ProxyBody::from("local").watch(BodyWatch::new(recorder.clone(), 1));
        assert_eq!(*recorder.0.lock().unwrap(), ["over 1"]);
    }

    #[tokio::test]
    async fn full_body_yields_once_with_exact_size() {
        let body = ProxyBody::from("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        let empty = ProxyBody::default();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }
}
