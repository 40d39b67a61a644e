//! Bodies stream through the gateway in constant memory: a 256 MiB upload and download
//! through the real `towergate` binary, watching its peak resident set size.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};

const BODY: u64 = 256 << 20;
const CHUNK: usize = 64 << 10;
/// "Far below the body size": a quarter of it, with the binary's own baseline included.
const RSS_LIMIT: u64 = 64 << 20;

/// A body of `remaining` bytes produced in 64 KiB chunks, never held whole.
struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    fn new(len: u64) -> Self {
        Self {
            remaining: len,
            chunk: Bytes::from(vec![b'x'; CHUNK]),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// A backend whose every answer is a generated 256 MiB body, and which counts uploads.
async fn big_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        if req.method() == http::Method::POST {
                            let mut body = req.into_body();
                            let mut n = 0u64;
                            while let Some(Ok(frame)) = body.frame().await {
                                n += frame.data_ref().map_or(0, |d| d.len() as u64);
                            }
                            let text =
                                http_body_util::Full::new(Bytes::from(format!("received {n}")));
                            Ok::<_, Infallible>(Response::new(text.map_err(|e| match e {}).boxed()))
                        } else {
                            Ok(Response::new(Generated::new(BODY).boxed()))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_download_and_upload_stream_in_constant_memory() {
    let backend = big_backend().await;
    let gw = GatewayProcess::start(&route("/", &format!("http://{backend}")), "").await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Generated>(hyper_util::client::legacy::connect::HttpConnector::new());

    // Download: count the bytes as they arrive, never holding the body.
    let req = Request::get(format!("http://{}/big", gw.addr))
        .body(Generated::new(0))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, BODY);

    // Upload: the backend reports how much it got.
    let req = Request::post(format!("http://{}/upload", gw.addr))
        .body(Generated::new(BODY))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, format!("received {BODY}"));

    let peak = gw.peak_rss();
    assert!(peak > 0, "could not read the gateway's memory use");
    assert!(
        peak < RSS_LIMIT,
        "the gateway's peak RSS was {} MiB for a {} MiB body",
        peak >> 20,
        BODY >> 20
    );
    eprintln!(
        "gateway peak RSS after 2 x {} MiB: {} MiB",
        BODY >> 20,
        peak >> 20
    );
}
