//! The response body the proxy hands out: the upstream's streamed body, or a small
//! buffer of its own (error texts, guard answers).
//!
//! An upstream body may carry a [`BodyWatch`], told when the body failed and when it is
//! over ([`WatchBody`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::pool::Lease;
use crate::watch::{BodyWatch, WatchBody};

pin_project! {
    /// An upstream's answer body, streamed. Its connection goes back to the pool once the
    /// body has been read to the end; dropped before that, the connection is closed, since
    /// the rest of the answer would still be on it.
    #[derive(Debug)]
    pub struct UpstreamBody {
        #[pin]
        body: Incoming,
        lease: Option<Lease>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(lease) = this.lease.take() {
                if this.body.is_end_stream() {
                    lease.finish();
                }
            }
        }
    }
}

impl UpstreamBody {
    pub(crate) fn leased(body: Incoming, lease: Lease) -> Self {
        Self {
            body,
            lease: Some(lease),
        }
    }
}

impl From<Incoming> for UpstreamBody {
    /// A body with no pooled connection behind it.
    fn from(body: Incoming) -> Self {
        Self { body, lease: None }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let poll = this.body.poll_frame(cx);
        if let Poll::Ready(None) = poll {
            if let Some(lease) = this.lease.take() {
                lease.finish();
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        Self::upstream(body)
    }
}

impl From<UpstreamBody> for ProxyBody {
    fn from(body: UpstreamBody) -> Self {
        Self::upstream(body)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

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
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The body of an upstream's `answer` (raw bytes), after which it closes.
    async fn upstream_body(answer: &'static [u8]) -> Incoming {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await;
            stream.write_all(answer).await.unwrap();
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/")
            .header("host", "upstream")
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap().into_body()
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
