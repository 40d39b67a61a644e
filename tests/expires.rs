//! mod_expires end to end: the real gateway on a loopback port in front of real backends,
//! with the article's `ExpiresDefault "access plus 2 hours"`.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;

const ARTICLE: &str = "[expires]\ndefault = \"access plus 2 hours\"\n";

/// A backend whose answer is chosen by path: `/png` is an image, `/own-expires` sets its
/// own `Expires`, `/public` a `Cache-Control`, `/old.pdf` a `Last-Modified`, `/404` and
/// `/500` are errors; anything else is a plain 200.
async fn backend() -> Backend {
    Backend::with_handler("origin", |req: Request<hyper::body::Incoming>| async move {
        let mut res = Response::builder().header("content-type", "text/html");
        res = match req.uri().path() {
            "/png" => Response::builder().header("content-type", "image/png"),
            "/own-expires" => res.header("expires", "Thu, 01 Dec 1994 16:00:00 GMT"),
            "/public" => res.header("cache-control", "public"),
            "/old.pdf" => Response::builder()
                .header("content-type", "application/pdf")
                .header(
                    "last-modified",
                    httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(600)),
                ),
            "/404" => res.status(404),
            "/500" => res.status(500),
            "/moved" => res.status(301).header("location", "/new"),
            _ => res,
        };
        res.body(Full::new(Bytes::from_static(b"body"))).unwrap()
    })
    .await
    .unwrap()
}

fn secs_between(later: &str, earlier: &str) -> i64 {
    let at = |s: &str| {
        httpdate::parse_http_date(s)
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    at(later) - at(earlier)
}

#[tokio::test]
async fn a_backends_200_gets_expires_and_max_age_7200() {
    let origin = backend().await;
    let (_gw, client) = in_front_of(&origin, &[ARTICLE]).await;
    let res = client.get("/index.html").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("cache-control"), Some("max-age=7200"));
    let expires = res.header("expires").expect("Expires is set");
    let date = res.header("date").expect("Date is set");
    let delta = secs_between(expires, date);
    assert!((7199..=7201).contains(&delta), "Expires - Date = {delta}s");
    // A redirect is not an error: Apache sets the headers on it too.
    let res = client.get("/moved").await.unwrap();
    assert_eq!(res.status, 301);
    assert_eq!(res.header("cache-control"), Some("max-age=7200"));
}

#[tokio::test]
async fn a_backends_own_expires_is_kept_and_cache_control_merged() {
    let origin = backend().await;
    let (_gw, client) = in_front_of(&origin, &[ARTICLE]).await;
    let res = client.get("/own-expires").await.unwrap();
    assert_eq!(res.header("expires"), Some("Thu, 01 Dec 1994 16:00:00 GMT"));
    assert_eq!(res.header("cache-control"), None);

    let res = client.get("/public").await.unwrap();
    let values: Vec<_> = res.headers.get_all("cache-control").iter().collect();
    assert_eq!(values, ["public, max-age=7200"]);
}

#[tokio::test]
async fn expires_by_type_overrides_the_default() {
    let origin = backend().await;
    let by_type = "[expires.by_type]\n\"image/png\" = \"access plus 1 month\"\n\"application/pdf\" = \"modification plus 1 hour\"";
    let (_gw, client) = in_front_of(&origin, &[ARTICLE, by_type]).await;
    let res = client.get("/png").await.unwrap();
    assert_eq!(res.header("cache-control"), Some("max-age=2592000"));
    let res = client.get("/page.html").await.unwrap();
    assert_eq!(res.header("cache-control"), Some("max-age=7200"));
    // Modified ten minutes ago, plus one hour: about fifty minutes left.
    let res = client.get("/old.pdf").await.unwrap();
    let age: u64 = res.header("cache-control").unwrap()["max-age=".len()..]
        .parse()
        .unwrap();
    assert!((2995..=3001).contains(&age), "max-age={age}");
}

#[tokio::test]
async fn error_answers_get_no_caching_headers() {
    let origin = backend().await;
    let down = route("/down/", "http://127.0.0.1:1/");
    let (_gw, client) = in_front_of(&origin, &[&down, ARTICLE]).await;
    for (path, status) in [("/404", 404), ("/500", 500), ("/down/x", 502)] {
        let res = client.get(path).await.unwrap();
        assert_eq!(res.status, status, "{path}");
        assert_eq!(res.header("expires"), None, "{path}");
        assert_eq!(res.header("cache-control"), None, "{path}");
    }
}

#[tokio::test]
async fn a_bad_rule_is_a_located_config_error() {
    let err = config_error("[expires]\ndefault = \"access plus 2 hourz\"\n");
    assert!(err.starts_with("t.toml:9:"), "{err}");
    assert!(err.contains("unknown unit `hourz`"), "{err}");
}
