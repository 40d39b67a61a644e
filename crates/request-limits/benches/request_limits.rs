//! The layer's cost per request: a typical GET through the layer against the same service
//! without it, and a small POST with a declared length, and a chunked one counted as it
//! streams.
//!
//! cargo bench -p towergate-request-limits

// criterion_group! makes an undocumented public function.
#![allow(missing_docs)]

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, service_fn};
use towergate_request_limits::RequestLimitsLayer;

fn typical_get() -> Request<Full<Bytes>> {
    Request::get("/news_rss/today.xml?page=2")
        .header("host", "your_hostname.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .header("accept-language", "en-US,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br")
        .header("cookie", "session=0123456789abcdef0123456789abcdef")
        .header("connection", "keep-alive")
        .body(Full::default())
        .unwrap()
}

async fn drain<B: http_body::Body>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = req.into_body().collect().await;
    Ok(Response::new(Full::default()))
}

/// A body of unknown length: four 1 KiB frames.
struct Chunked(u8);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            &[b'x'; 1024],
        )))))
    }
}

fn bench(c: &mut Criterion) {
    let layer = RequestLimitsLayer::new()
        .body(102400)
        .fields(40)
        .field_size(1000)
        .line(1000);
    // Requests are built outside the measurement; every future here completes on its first
    // poll, so no runtime is involved.
    let mut group = c.benchmark_group("request_limits");
    let mut bare = service_fn(drain::<Full<Bytes>>);
    group.bench_function("get_without_layer", |b| {
        b.iter_batched(
            typical_get,
            |req| bare.call(req).now_or_never().unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut limited = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(drain));
    group.bench_function("get_with_layer", |b| {
        b.iter_batched(
            typical_get,
            |req| limited.call(req).now_or_never().unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("post_4k_declared_with_layer", |b| {
        b.iter_batched(
            || typical_get().map(|_| Full::new(Bytes::from_static(&[b'x'; 4096]))),
            |req| limited.call(req).now_or_never().unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut bare_chunked = service_fn(drain::<Chunked>);
    group.bench_function("post_4k_chunked_without_layer", |b| {
        b.iter_batched(
            || typical_get().map(|_| Chunked(4)),
            |req| bare_chunked.call(req).now_or_never().unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut chunked = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(drain));
    group.bench_function("post_4k_chunked_with_layer", |b| {
        b.iter_batched(
            || typical_get().map(|_| Chunked(4)),
            |req| chunked.call(req).now_or_never().unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
