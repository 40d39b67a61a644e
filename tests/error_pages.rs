//! ErrorDocument end to end: the real gateway on a loopback port in front of real
//! backends, with the article's `ErrorDocument NNN "your_custom_error_message_here"`.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use towergate_testkit::TestResponse;
use towergate_testkit::client::{raw, raw_status};

const TEXT: &str = "your_custom_error_message_here";

/// The article's 24 ErrorDocument lines.
const ARTICLE: &str = r#"
[error_pages]
[[error_pages.document]]
status = [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417,
          500, 501, 502, 503, 504, 505]
text = "your_custom_error_message_here"
"#;

/// A backend answering the status its path names (`/status/404`), with its own page.
async fn backend() -> Backend {
    Backend::with_handler("origin", |req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_owned();
        if let Some(code) = path.strip_prefix("/status/") {
            return Response::builder()
                .status(code.parse::<u16>().unwrap())
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from_static(
                    b"<p>the backend's own page</p>",
                )))
                .unwrap();
        }
        Response::builder()
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from(format!("<p>document {path}</p>"))))
            .unwrap()
    })
    .await
    .unwrap()
}

fn assert_article_text(res: &TestResponse, status: u16) {
    assert_eq!(res.status, status);
    assert_eq!(res.text(), TEXT);
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(res.header("content-length"), Some("30"));
}

#[tokio::test]
async fn the_articles_text_on_a_502_when_the_backend_is_down() {
    let mut origin = backend().await;
    let (_gw, client) = in_front_of(&origin, &[ARTICLE]).await;
    origin.stop();
    let res = client.get("/index.html").await.unwrap();
    assert_article_text(&res, 502);
}

#[tokio::test]
async fn the_articles_text_on_a_413_over_the_body_limit() {
    let origin = backend().await;
    let (_gw, client) = in_front_of(&origin, &[ARTICLE, "[limits]\nbody = 100"]).await;
    let req = Request::post("/upload")
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_article_text(&res, 413);
    assert_eq!(origin.requests(), 0, "refused before the backend");
}

#[tokio::test]
async fn the_articles_text_on_a_403_from_the_character_filter() {
    let origin = backend().await;
    let charfilter = "[[charfilter.rule]]\ndeny = '[^a-zA-Z0-9|\\.|/|_|-]'";
    let (_gw, client) = in_front_of(&origin, &[ARTICLE, charfilter]).await;
    let res = client.get("/news_rss/today.html").await.unwrap();
    assert_eq!(res.status, 200);
    let res = client.get("/cgi-bin/x;cat%20passwd").await.unwrap();
    assert_article_text(&res, 403);
    assert_eq!(
        origin.requests(),
        1,
        "the refused request never reached the backend"
    );
}

#[tokio::test]
async fn the_gateways_own_404_gets_the_text() {
    let origin = backend().await;
    let gw = start_gateway(&[route("/only/", &origin.url()), ARTICLE.into()].concat()).await;
    let res = Client::new(gw.addr()).get("/elsewhere").await.unwrap();
    assert_article_text(&res, 404);
}

#[tokio::test]
async fn head_gets_the_headers_and_no_body() {
    let gw = start_gateway(&[route("/", "http://127.0.0.1:1/"), ARTICLE.into()].concat()).await;
    let answer = raw(
        gw.addr(),
        b"HEAD /x HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&answer), 502, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-length: 30\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\n"),
        "no body after the head: {answer:?}"
    );
}

#[tokio::test]
async fn a_backends_own_error_page_passes_unless_overridden() {
    let origin = backend().await;
    let config = format!(
        "{}{}[[route]]\nprefix = \"/override/\"\nupstream = \"{}/\"\noverride_errors = true\n{ARTICLE}",
        route("/", &origin.url()),
        route("/plain/", &format!("{}/", origin.url())),
        origin.url(),
    );
    let gw = start_gateway(&config).await;
    let client = Client::new(gw.addr());
    let res = client.get("/status/404").await.unwrap();
    assert_eq!(res.status, 404);
    assert_eq!(res.text(), "<p>the backend's own page</p>");
    assert_eq!(res.header("content-type"), Some("text/html"));
    // ProxyErrorOverride for one route.
    let res = client.get("/override/status/404").await.unwrap();
    assert_article_text(&res, 404);
    let res = client.get("/override/status/200").await.unwrap();
    assert_eq!(res.status, 200, "success answers are never replaced");

    // ... and for all of them.
    let global = format!(
        "{}{}",
        route("/", &origin.url()),
        ARTICLE.replace("[error_pages]", "[error_pages]\noverride_backend = true")
    );
    let gw = start_gateway(&global).await;
    let res = Client::new(gw.addr()).get("/status/503").await.unwrap();
    assert_article_text(&res, 503);
}

#[tokio::test]
async fn a_local_document_is_served_with_the_original_status() {
    let origin = backend().await;
    let config = format!(
        "{}{}[error_pages]\n502 = {{ path = \"/errors/502.html?from=gw\" }}\n[expires]\ndefault = \"A7200\"\n",
        route("/down/", "http://127.0.0.1:1/"),
        route("/", &origin.url()),
    );
    let gw = start_gateway(&config).await;
    let client = Client::new(gw.addr());
    let res = client.get("/down/page").await.unwrap();
    assert_eq!(res.status, 502);
    assert_eq!(res.text(), "<p>document /errors/502.html</p>");
    assert_eq!(res.header("content-type"), Some("text/html"));
    assert_eq!(
        res.header("expires"),
        None,
        "the document's caching headers stay behind"
    );
    assert_eq!(res.header("cache-control"), None);
    assert_eq!(
        origin.requests(),
        1,
        "one internal request for the document"
    );

    // HEAD: the document is fetched with HEAD, and nothing follows the head.
    let answer = raw(
        gw.addr(),
        b"HEAD /down/page HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&answer), 502, "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "{answer:?}");
}

#[tokio::test]
async fn a_failing_local_document_gives_the_original_answer() {
    let config = format!(
        "{}[error_pages]\n502 = {{ path = \"/errors/502.html\" }}\n",
        route("/", "http://127.0.0.1:1/"),
    );
    let gw = start_gateway(&config).await;
    // The document's own request fails with 502 too: no loop, the original 502.
    let res = Client::new(gw.addr()).get("/x").await.unwrap();
    assert_eq!(res.status, 502);
    assert_eq!(res.text(), "502 Bad Gateway\n");
}

#[tokio::test]
async fn an_external_document_is_a_302() {
    let config = format!(
        "{}[error_pages]\n502 = {{ url = \"http://www.example.com/subscription_info.html\" }}\n",
        route("/", "http://127.0.0.1:1/"),
    );
    let gw = start_gateway(&config).await;
    let res = Client::new(gw.addr()).get("/x").await.unwrap();
    assert_eq!(res.status, 302);
    assert_eq!(
        res.header("location"),
        Some("http://www.example.com/subscription_info.html")
    );
    assert_eq!(res.header("content-length"), Some("0"));
    assert!(res.body.is_empty());
}

#[tokio::test]
async fn the_seed_cluster_example_carries_the_articles_documents() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/seed-cluster.toml"
    ))
    .unwrap();
    let config = towergate::Config::from_toml(&text, std::path::Path::new("seed-cluster.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let pages = config.error_pages.as_ref().expect("[error_pages] is set");
    let mut statuses: Vec<u16> = pages
        .documents
        .iter()
        .map(|(s, _)| s.to_string().parse().unwrap())
        .collect();
    statuses.sort_unstable();
    let article: Vec<u16> = (400..=417).chain(500..=505).collect();
    assert_eq!(statuses, article);
    assert!(
        pages
            .documents
            .iter()
            .all(|(_, d)| *d == towergate_error_pages::ErrorDocument::text(TEXT))
    );
    let expires = config.expires.as_ref().expect("[expires] is set");
    assert_eq!(expires.default.unwrap().seconds(), 7200);
}

#[tokio::test]
async fn a_bad_document_is_a_located_config_error() {
    let err = config_error("[error_pages]\n404 = { path = \"missing.html\" }\n");
    assert!(err.starts_with("t.toml:9:"), "{err}");
    assert!(err.contains("must start with '/'"), "{err}");
}
