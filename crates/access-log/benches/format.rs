//! The cost of one `combined` line: capturing a typical request and response into an
//! `Entry` and formatting it; formatting alone; and a whole request through the layer into
//! a writer (capture, format, queue; the writer thread writes to `io::sink`).
//!
//! cargo bench -p towergate-access-log

// criterion_group! makes an undocumented public function.
#![allow(missing_docs)]

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, service_fn};
use towergate_access_log::{AccessLogLayer, Entry, LogFormat, LogWriter, RequestBody};
use towergate_client_addr::PeerAddr;

fn typical_get() -> Request<Full<Bytes>> {
    let mut req = Request::get("/news_rss/today.xml?page=2")
        .header("host", "your_hostname.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .header("referer", "http://your_hostname.com/news_blog/")
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .header("accept-encoding", "gzip, deflate, br")
        .header("cookie", "session=0123456789abcdef0123456789abcdef")
        .body(Full::default())
        .unwrap();
    req.extensions_mut()
        .insert(PeerAddr("203.0.113.77:51234".parse().unwrap()));
    req
}

fn ok_response() -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/rss+xml")
        .header("content-length", "5120")
        .body(Full::new(Bytes::from_static(&[b'x'; 5120])))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let format = LogFormat::combined();
    let req = typical_get();
    let res = ok_response();
    let mut out = Vec::with_capacity(512);

    c.bench_function("combined: capture + format", |b| {
        b.iter(|| {
            let mut e = Entry::new(&format, &req);
            e.response(&format, &res);
            e.sent(5120);
            out.clear();
            e.write(&format, &mut out);
            std::hint::black_box(&out);
        })
    });

    let mut e = Entry::new(&format, &req);
    e.response(&format, &res);
    e.sent(5120);
    e.finish();
    c.bench_function("combined: format only", |b| {
        b.iter(|| {
            out.clear();
            e.write(&format, &mut out);
            std::hint::black_box(&out);
        })
    });
    out.clear();
    e.write(&format, &mut out);
    eprintln!("line: {}", String::from_utf8_lossy(&out).trim_end());

    let writer = LogWriter::builder()
        .buffer(16 << 20)
        .writer(std::io::sink())
        .unwrap();
    let mut plain =
        service_fn(|_req: Request<Full<Bytes>>| async { Ok::<_, Infallible>(ok_response()) });
    let mut logged = ServiceBuilder::new()
        .layer(AccessLogLayer::new(format.clone(), writer.clone()))
        .service(service_fn(
            |_req: Request<RequestBody<Full<Bytes>>>| async { Ok::<_, Infallible>(ok_response()) },
        ));
    let mut group = c.benchmark_group("request through the layer");
    group.bench_function("without", |b| {
        b.iter_batched(
            typical_get,
            |req| {
                let res = plain.call(req).now_or_never().unwrap().unwrap();
                res.into_body().collect().now_or_never().unwrap().unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("with combined log", |b| {
        b.iter_batched(
            typical_get,
            |req| {
                let res = logged.call(req).now_or_never().unwrap().unwrap();
                res.into_body().collect().now_or_never().unwrap().unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    writer.flush_blocking().unwrap();
    let stats = writer.stats();
    eprintln!("writer: {stats:?}");
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench
}
criterion_main!(benches);
