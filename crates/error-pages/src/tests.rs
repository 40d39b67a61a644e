//! The service with an inner `service_fn`: which answers are replaced, and how.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

use crate::{ErrorDocumentRequest, ErrorPagesLayer, OverrideErrors, RequestBody, UpstreamResponse};

type Body = Full<Bytes>;

fn layer() -> ErrorPagesLayer {
    ErrorPagesLayer::builder()
        .text(403, "your_custom_error_message_here")
        .text("5xx", "server trouble")
        .text(503, "come back later")
        .path(404, "/missing.html")
        .path(410, "/broken.html")
        .url(402, "http://www.example.com/subscription_info.html")
        .url("4xx", "http://www.example.com/help")
        .build()
        .unwrap()
}

/// The inner service: the path's first segment is the status; `/missing.html` is a
/// document, `/broken.html` fails; `?upstream` marks the answer as a backend's,
/// `?override` asks for it to be replaced anyway.
async fn inner(req: Request<RequestBody<Body>>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    if path == "/missing.html" {
        let doc = req
            .extensions()
            .get::<ErrorDocumentRequest>()
            .cloned()
            .expect("marked");
        let body = format!(
            "missing: {} was {} ({})",
            doc.original_uri,
            doc.status.as_u16(),
            req.method()
        );
        let mut res = Response::new(Full::from(body.clone()));
        res.headers_mut()
            .insert("content-type", "text/html".parse().unwrap());
        res.headers_mut()
            .insert("content-length", body.len().into());
        res.headers_mut()
            .insert("cache-control", "max-age=7200".parse().unwrap());
        assert!(req.headers().get("range").is_none());
        assert_eq!(req.headers()["x-client"], "kept");
        return Ok(res);
    }
    if path == "/broken.html" {
        let mut res = Response::new(Full::from("nope"));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(res);
    }
    let code: u16 = path.trim_start_matches('/').parse().unwrap();
    let mut res = Response::new(Full::from("original body"));
    *res.status_mut() = StatusCode::from_u16(code).unwrap();
    let h = res.headers_mut();
    h.insert("content-type", "text/x-original".parse().unwrap());
    h.insert("content-length", 13.into());
    h.insert("etag", "\"abc\"".parse().unwrap());
    h.insert("retry-after", "5".parse().unwrap());
    if query.contains("upstream") {
        res.extensions_mut().insert(UpstreamResponse);
    }
    if query.contains("override") {
        res.extensions_mut().insert(OverrideErrors);
    }
    Ok(res)
}

async fn send(layer: &ErrorPagesLayer, method: &str, uri: &str) -> (Response<()>, Bytes) {
    let svc = layer.layer(service_fn(inner));
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-client", "kept")
        .header("range", "bytes=0-1")
        .body(Full::default())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (
        Response::from_parts(parts, ()),
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn own_answers_get_the_text_with_exact_headers() {
    let l = layer();
    let (res, body) = send(&l, "GET", "/403").await;
    assert_eq!(res.status(), 403);
    assert_eq!(body, "your_custom_error_message_here");
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.headers()["content-length"], "30");
    assert!(
        res.headers().get("etag").is_none(),
        "headers of the old body go with it"
    );
    assert_eq!(res.headers()["retry-after"], "5", "other headers are kept");

    let (res, body) = send(&l, "GET", "/503").await;
    assert_eq!(
        (res.status().as_u16(), &body[..]),
        (503, &b"come back later"[..]),
        "exact wins over class"
    );
    let (res, body) = send(&l, "GET", "/502").await;
    assert_eq!(
        (res.status().as_u16(), &body[..]),
        (502, &b"server trouble"[..])
    );
    assert_eq!(l.stats().snapshot().text, 3);
}

#[tokio::test]
async fn head_gets_headers_and_no_body() {
    let l = layer();
    let (res, body) = send(&l, "HEAD", "/403").await;
    assert_eq!(res.status(), 403);
    assert!(body.is_empty());
    assert_eq!(res.headers()["content-length"], "30");
    let (res, body) = send(&l, "HEAD", "/404").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        body, "missing: /404 was 404 (HEAD)",
        "fetched with HEAD; hyper sends no body for HEAD"
    );
}

#[tokio::test]
async fn success_and_unconfigured_statuses_pass() {
    let l = ErrorPagesLayer::builder().text(403, "x").build().unwrap();
    let (res, body) = send(&l, "GET", "/200").await;
    assert_eq!(
        (res.status().as_u16(), &body[..]),
        (200, &b"original body"[..])
    );
    let (res, body) = send(&l, "GET", "/500").await;
    assert_eq!(
        (res.status().as_u16(), &body[..]),
        (500, &b"original body"[..])
    );
    assert_eq!(res.headers()["content-type"], "text/x-original");
    let (_, body) = send(&ErrorPagesLayer::disabled(), "GET", "/403").await;
    assert_eq!(body, "original body");
}

#[tokio::test]
async fn backend_answers_pass_unless_overridden() {
    let l = layer();
    let (res, body) = send(&l, "GET", "/502?upstream").await;
    assert_eq!(
        (res.status().as_u16(), &body[..]),
        (502, &b"original body"[..])
    );
    assert_eq!(l.stats().snapshot().backend_kept, 1);
    let (_, body) = send(&l, "GET", "/502?upstream,override").await;
    assert_eq!(body, "server trouble", "per-route override");
    let global = ErrorPagesLayer::builder()
        .text(502, "global")
        .override_backend(true)
        .build()
        .unwrap();
    let (_, body) = send(&global, "GET", "/502?upstream").await;
    assert_eq!(body, "global");
}

#[tokio::test]
async fn local_document_keeps_the_original_status() {
    let l = layer();
    let (res, body) = send(&l, "GET", "/404?q=1").await;
    assert_eq!(res.status(), 404);
    assert_eq!(body, "missing: /404?q=1 was 404 (GET)");
    assert_eq!(res.headers()["content-type"], "text/html");
    assert_eq!(
        res.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(
        res.headers()["retry-after"],
        "5",
        "the original's headers stay"
    );
    assert!(
        res.headers().get("cache-control").is_none(),
        "the document's caching headers do not"
    );
    assert!(res.headers().get("etag").is_none());
    assert_eq!(l.stats().snapshot().local, 1);
}

#[tokio::test]
async fn failing_local_document_gives_the_original_answer() {
    let l = layer();
    let (res, body) = send(&l, "GET", "/410").await;
    assert_eq!(res.status(), 410);
    assert_eq!(body, "original body");
    assert_eq!(res.headers()["content-type"], "text/x-original");
    assert_eq!(l.stats().snapshot().local_failed, 1);
}

#[tokio::test]
async fn a_document_that_is_itself_an_error_page_does_not_recurse() {
    // 404's document is /missing.html, which answers 404 through the same layer.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let l = ErrorPagesLayer::builder()
        .path(404, "/missing.html")
        .build()
        .unwrap();
    // Nested: the same layer twice in one stack.
    let svc = l.layer(l.layer(service_fn(
        move |_req: Request<RequestBody<RequestBody<Body>>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                let mut res = Response::new(Body::from("not found"));
                *res.status_mut() = StatusCode::NOT_FOUND;
                Ok::<_, Infallible>(res)
            }
        },
    )));
    let res = svc
        .oneshot(Request::get("/x").body(Body::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "not found"
    );
    // The request, the inner layer's document fetch, the outer layer's document fetch.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn url_documents_redirect() {
    let l = layer();
    let (res, body) = send(&l, "GET", "/402").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        res.headers()["location"],
        "http://www.example.com/subscription_info.html"
    );
    assert_eq!(res.headers()["content-length"], "0");
    assert!(res.headers().get("content-type").is_none());
    assert!(body.is_empty());
    let (res, _) = send(&l, "GET", "/418").await;
    assert_eq!(
        res.headers()["location"],
        "http://www.example.com/help",
        "class"
    );
    let (res, body) = send(&l, "GET", "/401").await;
    assert_eq!(
        (res.status().as_u16(), &body[..]),
        (401, &b"original body"[..]),
        "a URL never answers 401"
    );
}
