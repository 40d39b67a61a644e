//! The cost of the request guards on a typical request, layer by layer and stacked as the
//! gateway stacks them (canonical request, request limits, client address, ACL, character
//! filter), in front of an inner service that answers at once. No sockets: this measures
//! the layers alone.
//!
//! ```text
//! cargo bench --bench guard_stack -- --measurement-time 3
//! ```

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, ServiceBuilder};
use towergate_acl::{AclLayer, Order, Policy};
use towergate_charfilter::{CharFilterLayer, Pattern};
use towergate_client_addr::{ClientAddrLayer, PeerAddr};
use towergate_proxy::CanonicalRequestLayer;
use towergate_request_limits::RequestLimitsLayer;

type Body = Full<Bytes>;

/// A typical browser request for a page, from 127.0.0.2 through a proxy at 10.0.0.2 when
/// `proxied`.
fn request(path: &str, proxied: bool) -> Request<Body> {
    let mut req = Request::get(path)
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
        .header("referer", "https://your_hostname.com/news_rss/")
        .header("cookie", "session=8f14e45fceea167a5a36dedd4bea2543")
        .body(Body::default())
        .unwrap();
    let peer = if proxied {
        "10.0.0.2:50000"
    } else {
        "127.0.0.2:50000"
    };
    req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
    if proxied {
        req.headers_mut()
            .insert("x-forwarded-for", "192.0.2.44, 10.0.0.7".parse().unwrap());
    }
    req
}

/// The innermost service: answers at once, whatever the request body type.
#[derive(Clone, Copy)]
struct Answer;

impl<B> Service<Request<B>> for Answer {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        drop(black_box(req));
        std::future::ready(Ok(Response::new(Body::default())))
    }
}

fn inner() -> Answer {
    Answer
}

fn acl() -> AclLayer {
    // The article's `Order deny,allow / Allow from all`, with a few denied networks.
    AclLayer::new(
        Policy::order(Order::DenyAllow)
            .allow(towergate_acl::Source::All)
            .deny("198.51.100.0/24".parse::<ipnet::IpNet>().unwrap())
            .deny("203.0.113.0/24".parse::<ipnet::IpNet>().unwrap())
            .deny("2001:db8:bad::/48".parse::<ipnet::IpNet>().unwrap()),
    )
}

fn client_addr() -> ClientAddrLayer {
    ClientAddrLayer::builder()
        .trusted_proxy("10.0.0.0/8".parse().unwrap())
        .build()
}

/// Calls `svc` once per iteration with a fresh request (built outside the timing).
fn bench<S, F>(c: &mut Criterion, name: &str, path: &str, proxied: bool, svc: S)
where
    S: Service<Request<Body>, Future = F> + Clone,
    F: Future<Output = Result<S::Response, S::Error>>,
    S::Error: std::fmt::Debug,
{
    let mut svc = svc;
    c.bench_function(name, |b| {
        b.iter_batched(
            || request(path, proxied),
            |req| {
                black_box(
                    svc.call(req)
                        .now_or_never()
                        .expect("ready at once")
                        .unwrap(),
                )
            },
            BatchSize::SmallInput,
        )
    });
}

const PAGE: &str = "/news_rss/2024/06/front-page_story.html?page=2";

fn guards(c: &mut Criterion) {
    bench(c, "inner service alone", PAGE, false, inner());
    bench(
        c,
        "canonical",
        PAGE,
        false,
        CanonicalRequestLayer::new(["your_hostname.com"]).layer(inner()),
    );
    bench(
        c,
        "request-limits",
        PAGE,
        false,
        RequestLimitsLayer::new()
            .line(1000)
            .fields(40)
            .field_size(1000)
            .body(102400)
            .layer(inner()),
    );
    bench(
        c,
        "client-addr (peer)",
        PAGE,
        false,
        client_addr().layer(inner()),
    );
    bench(
        c,
        "client-addr (behind a proxy)",
        PAGE,
        true,
        client_addr().layer(inner()),
    );
    bench(c, "acl", PAGE, false, acl().layer(inner()));
    bench(
        c,
        "charfilter (article)",
        PAGE,
        false,
        CharFilterLayer::article().layer(inner()),
    );

    let stack = || {
        ServiceBuilder::new()
            .layer(
                RequestLimitsLayer::new()
                    .line(1000)
                    .fields(40)
                    .field_size(1000)
                    .body(102400),
            )
            .layer(CanonicalRequestLayer::new(["your_hostname.com"]))
            .layer(client_addr())
            .layer(acl())
            .layer(CharFilterLayer::article())
            .service(inner())
    };
    bench(c, "full guard stack", PAGE, false, stack());
    bench(c, "full guard stack (behind a proxy)", PAGE, true, stack());
    bench(
        c,
        "full guard stack (escaped path)",
        "/news_rss/caf%C3%A9s/%7Eedition.html",
        false,
        stack(),
    );

    let pattern = Pattern::new(towergate_charfilter::ARTICLE_RULE).unwrap();
    c.bench_function("article pattern on a 40-byte path", |b| {
        b.iter(|| pattern.is_match_decoded(black_box(b"/news_rss/2024/06/front-page_story.html")))
    });
    c.bench_function("article pattern on a 40-byte path with escapes", |b| {
        b.iter(|| pattern.is_match_decoded(black_box(b"/news_rss/2024/06/front-p%61ge_story.html")))
    });
}

criterion_group!(benches, guards);
criterion_main!(benches);
