//! The layer in front of a plain axum app over real loopback sockets, with another
//! layer's own answer (request-limits' 413) inside it.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{ServiceBuilder, ServiceExt};
use towergate_error_pages::ErrorPagesLayer;
use towergate_request_limits::RequestLimitsLayer;
use towergate_testkit::client::{Client, raw, raw_status};

const TEXT: &str = "your_custom_error_message_here";

/// Serves `ErrorPages(RequestLimits(router))` on an ephemeral loopback port.
async fn serve(pages: ErrorPagesLayer) -> SocketAddr {
    let router = Router::new()
        .route(
            "/",
            get(|| async { "home" })
                .post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
        )
        .route("/missing.html", get(|| async { "<h1>Not here</h1>" }));
    let app = ServiceBuilder::new()
        .layer(pages)
        .layer(RequestLimitsLayer::new().body(100))
        .service(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap()) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn another_layers_413_gets_the_text() {
    let addr = serve(ErrorPagesLayer::builder().text(413, TEXT).build().unwrap()).await;
    let client = Client::new(addr);
    let small = Request::post("/")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let res = client.request(small).await.unwrap();
    assert_eq!(
        (res.status, res.text().as_str()),
        (StatusCode::OK, "5 bytes")
    );

    let big = Request::post("/")
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .unwrap();
    let res = client.request(big).await.unwrap();
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.text(), TEXT);
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(res.header("content-length"), Some("30"));
}

#[tokio::test]
async fn a_local_document_through_the_same_stack_keeps_the_status() {
    let pages = ErrorPagesLayer::builder()
        .path(404, "/missing.html")
        .build()
        .unwrap();
    let addr = serve(pages.clone()).await;
    let res = Client::new(addr).get("/nowhere").await.unwrap();
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.text(), "<h1>Not here</h1>");
    assert_eq!(res.header("content-length"), Some("17"));

    let answer = raw(
        addr,
        b"HEAD /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&answer), 404, "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "no body: {answer:?}");
    assert_eq!(pages.stats().snapshot().local, 2);
}
