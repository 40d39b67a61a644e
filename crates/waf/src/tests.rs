//! The layer over an inner service that echoes the request body, with inline rules and,
//! where Debian's `modsecurity-crs` is installed, the Core Rule Set.

use std::convert::Infallible;
use std::path::Path;
use std::sync::OnceLock;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{BodyLimitAction, Engine, WafBody, WafConfig, WafError, WafLayer};

/// The CRS as Debian installs it, in `owasp-crs.load`'s order.
pub(crate) const CRS: [&str; 4] = [
    "/etc/modsecurity/crs/crs-setup.conf",
    "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf",
    "/usr/share/modsecurity-crs/rules/*.conf",
    "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf",
];

fn skip(why: &str) -> bool {
    eprintln!("skipped: {why}");
    true
}

fn no_lib() -> bool {
    !crate::available() && skip("towergate-waf was built without libmodsecurity")
}

/// The CRS layer, compiled once for all tests (it takes a while).
fn crs() -> Option<WafLayer> {
    static LAYER: OnceLock<Option<WafLayer>> = OnceLock::new();
    if no_lib() {
        return None;
    }
    if !Path::new(CRS[0]).exists() {
        skip("the OWASP CRS is not installed (Debian package modsecurity-crs)");
        return None;
    }
    LAYER
        .get_or_init(|| {
            let config = WafConfig {
                rules_files: CRS.iter().map(|s| s.to_string()).collect(),
                ..WafConfig::default()
            };
            Some(config.build(Path::new("/")).expect("the CRS loads"))
        })
        .clone()
}

async fn echo(req: Request<WafBody<Body>>) -> Result<Response<Body>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    Ok(Response::new(Body::from(body.unwrap_or_default())))
}

async fn send(layer: &WafLayer, req: Request<Body>) -> (StatusCode, Bytes) {
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(echo));
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = res.status();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("host", "example.com")
        .header("user-agent", "Mozilla/5.0 test")
        .header("accept", "text/html")
        .body(Body::empty())
        .unwrap()
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header("host", "example.com")
        .header("user-agent", "Mozilla/5.0 test")
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.into())
        .unwrap()
}

const DENY_ADMIN: &str = r#"SecRule REQUEST_URI "@contains /admin" "id:1001,phase:1,deny,status:403,log,msg:'admin area'"
SecRule ARGS:q "@streq evil" "id:1002,phase:2,deny,status:406,log,msg:'evil query'"
SecRule ARGS:go "@streq away" "id:1003,phase:1,redirect:http://example.com/gone,log,msg:'go away'"
SecRule REQUEST_HEADERS:X-Bad "@rx ." "id:1004,phase:1,pass,log,msg:'bad header seen'""#;

#[tokio::test]
async fn inline_rules_deny_redirect_and_pass() {
    if no_lib() {
        return;
    }
    let layer = WafLayer::from_rules(DENY_ADMIN).unwrap();
    assert_eq!(send(&layer, get("/admin/x")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send(&layer, get("/public")).await.0, StatusCode::OK);
    // Phase 2 rule on a body argument: the body is inspected, then replayed intact.
    assert_eq!(
        send(&layer, post("/form", "q=evil")).await.0,
        StatusCode::NOT_ACCEPTABLE
    );
    let (status, body) = send(&layer, post("/form", "q=good&x=1")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"q=good&x=1"[..]));
    // The same rule on the query string (phase 2 runs for requests without a body too).
    assert_eq!(
        send(&layer, get("/?q=evil")).await.0,
        StatusCode::NOT_ACCEPTABLE
    );
    let mut svc = layer.layer(service_fn(echo));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get("/?go=away"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "http://example.com/gone");
    let mut req = get("/");
    req.headers_mut().insert("x-bad", "1".parse().unwrap());
    assert_eq!(send(&layer, req).await.0, StatusCode::OK);
    let stats = layer.stats();
    assert_eq!(stats.inspected, 7);
    assert_eq!(stats.blocked, 4);
    assert_eq!(stats.detected, 1);
}

#[tokio::test]
async fn body_limit_reject_and_process_partial() {
    if no_lib() {
        return;
    }
    let config = |action| WafConfig {
        rules: vec![DENY_ADMIN.into()],
        request_body_limit: 1024,
        request_body_limit_action: action,
        ..WafConfig::default()
    };
    let reject = config(BodyLimitAction::Reject)
        .build(Path::new("."))
        .unwrap();
    let big = "a".repeat(4000);
    assert_eq!(
        send(&reject, post("/form", big.clone())).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // A streamed body (no Content-Length) is counted as it is read.
    let chunks = futures_chunks(&big);
    assert_eq!(
        send(&reject, post("/form", chunks)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let partial = config(BodyLimitAction::ProcessPartial)
        .build(Path::new("."))
        .unwrap();
    let (status, body) = send(&partial, post("/form", futures_chunks(&big))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), big.len(), "the whole body is forwarded");
    // What is within the limit is still inspected.
    let evil = format!("q=evil&pad={big}");
    assert_eq!(
        send(&partial, post("/form", futures_chunks(&evil))).await.0,
        StatusCode::NOT_ACCEPTABLE
    );
    // A body over 16 KiB is evaluated on the blocking pool, with the same verdicts.
    let large = WafConfig {
        rules: vec![DENY_ADMIN.into()],
        request_body_limit: 1 << 20,
        ..WafConfig::default()
    }
    .build(Path::new("."))
    .unwrap();
    let evil = format!("pad={}&q=evil", "b".repeat(100_000));
    assert_eq!(
        send(&large, post("/form", evil)).await.0,
        StatusCode::NOT_ACCEPTABLE
    );
    let good = format!("pad={}&q=good", "b".repeat(100_000));
    let (status, body) = send(&large, post("/form", good.clone())).await;
    assert_eq!((status, body.len()), (StatusCode::OK, good.len()));
}

/// A body in 100-byte chunks, without a length.
fn futures_chunks(s: &str) -> Body {
    let chunks: Vec<Result<Bytes, Infallible>> = s
        .as_bytes()
        .chunks(100)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn detection_only_logs_but_passes() {
    if no_lib() {
        return;
    }
    let layer = WafConfig {
        engine: Engine::DetectionOnly,
        rules: vec![DENY_ADMIN.into()],
        request_body_limit: 10,
        ..WafConfig::default()
    }
    .build(Path::new("."))
    .unwrap();
    assert_eq!(send(&layer, get("/admin/x")).await.0, StatusCode::OK);
    // Over the limit, but DetectionOnly never rejects.
    assert_eq!(
        send(&layer, post("/form", "a".repeat(100))).await.0,
        StatusCode::OK
    );
    let stats = layer.stats();
    assert_eq!((stats.blocked, stats.detected), (0, 1));
}

#[test]
fn load_errors_name_the_file_and_carry_modsecuritys_message() {
    if no_lib() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "SecRule ARGS \"@rx x\" \"id:1,phase:9,deny\"\nSecNoSuchDirective on\n",
    )
    .unwrap();
    let config = WafConfig {
        rules_files: vec![bad.to_str().unwrap().into()],
        ..WafConfig::default()
    };
    let err = config.build(Path::new(".")).unwrap_err();
    assert!(matches!(err, WafError::RulesFile { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("bad.conf"), "{text}");
    let err = WafLayer::from_rules("SecRule ARGS")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("waf.rules[0]: "), "{err}");
    let err = WafConfig {
        rules_files: vec!["nothing-here/*.conf".into()],
        ..WafConfig::default()
    }
    .build(dir.path())
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "waf.rules_files: `nothing-here/*.conf`: matches no file"
    );
    let err = WafConfig {
        response_body_mime_types: vec!["text/html".into(), "html".into()],
        ..WafConfig::default()
    }
    .build(dir.path())
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("waf.response_body_mime_types: `html` is not a media type"),
        "{err}"
    );
    let err = WafConfig {
        response_body_limit: 0,
        ..WafConfig::default()
    }
    .build(dir.path())
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("waf.response_body_limit: 0 is out of range"),
        "{err}"
    );
    // No type at all is allowed: nothing is inspected then.
    WafConfig {
        response_body_access: true,
        response_body_mime_types: Vec::new(),
        ..WafConfig::default()
    }
    .build(dir.path())
    .unwrap();
}

#[tokio::test]
async fn crs_blocks_sqli_and_xss_and_passes_ordinary_requests() {
    let Some(layer) = crs() else { return };
    assert_eq!(
        send(&layer, get("/?id=1%27%20OR%20%271%27=%271")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&layer, get("/search?q=%3Cscript%3Ealert(1)%3C/script%3E"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&layer, post("/login", "user=bob&pass=1' OR '1'='1"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&layer, get("/news_rss/today.html?page=2")).await.0,
        StatusCode::OK
    );
    let (status, body) = send(&layer, post("/login", "user=bob&pass=secret")).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"user=bob&pass=secret"[..])
    );
}

#[test]
fn version_names_libmodsecurity() {
    if no_lib() {
        return;
    }
    assert!(
        crate::version().starts_with("ModSecurity v3"),
        "{}",
        crate::version()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transactions_share_one_rule_set() {
    let Some(layer) = crs() else { return };
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let layer = layer.clone();
            tokio::spawn(async move {
                let (req, expected) = match i % 3 {
                    0 => (get("/?id=1%27%20OR%20%271%27=%271"), StatusCode::FORBIDDEN),
                    1 => (
                        post("/f", format!("pad={}&q=ok", "x".repeat(20_000))),
                        StatusCode::OK,
                    ),
                    _ => (get(&format!("/page/{i}?n={i}")), StatusCode::OK),
                };
                assert_eq!(send(&layer, req).await.0, expected, "request {i}");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
