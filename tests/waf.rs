//! `[waf]` through the real gateway: the OWASP Core Rule Set (Debian's `modsecurity-crs`)
//! on libmodsecurity, inline rules, DetectionOnly, and `towergate check` on a bad rules
//! file. Built only with `--features waf`; each test reports itself skipped when the CRS
//! is not installed.

mod common;

use std::io::Write as _;
use std::path::Path;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use towergate_testkit::client::TestResponse;

/// The CRS as Debian installs it, in the order of its `owasp-crs.load`.
const CRS: &str = r#"rules_files = [
  "/etc/modsecurity/crs/crs-setup.conf",
  "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf",
  "/usr/share/modsecurity-crs/rules/*.conf",
  "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf",
]"#;

fn crs_missing() -> bool {
    if Path::new("/etc/modsecurity/crs/crs-setup.conf").exists()
        && Path::new("/usr/share/modsecurity-crs/rules").is_dir()
    {
        return false;
    }
    eprintln!("skipped: the OWASP CRS is not installed (Debian package modsecurity-crs)");
    true
}

/// A request as a browser sends it (the CRS scores a missing `User-Agent` or a numeric
/// `Host`).
fn browser(method: &str, path: &str, body: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "front.test")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )
        .header("accept", "text/html,application/xhtml+xml")
        .header("accept-language", "en");
    if !body.is_empty() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    req.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn send(client: &Client, method: &str, path: &str, body: &'static str) -> TestResponse {
    client
        .request(browser(method, path, body))
        .await
        .expect("the gateway answers")
}

#[tokio::test]
async fn crs_blocks_sql_injection_and_xss_and_passes_ordinary_requests() {
    if crs_missing() {
        return;
    }
    let backend = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&format!("{}\n[waf]\n{CRS}\n", route("/", &backend.url()))).await;
    let client = Client::new(gw.addr());

    let res = send(&client, "GET", "/?id=1%27%20OR%20%271%27=%271", "").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.text());
    let res = send(
        &client,
        "GET",
        "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "",
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // In a form body (phase 2, the body read and inspected first).
    let res = send(&client, "POST", "/login", "user=bob&pass=1' OR '1'='1").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(backend.requests(), 0, "no attack reached the backend");

    let res = send(&client, "GET", "/news_rss/today.html?page=2", "").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        res.echo("path").as_deref(),
        Some("/news_rss/today.html?page=2")
    );
    // An ordinary form: inspected, then forwarded whole.
    let res = send(&client, "POST", "/login", "user=bob&pass=secret").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.echo("body-bytes").as_deref(), Some("20"));
    assert_eq!(backend.requests(), 2);
}

#[tokio::test]
async fn an_inline_rule_blocks_what_it_names() {
    let backend = Backend::echo("paid").await.unwrap();
    let gw = start_gateway(&format!(
        r#"{}
[waf]
rules = [
  '''SecRule REQUEST_URI "@beginsWith /paid_user/admin" "id:10001,phase:1,deny,status:403,log,msg:'paid admin is closed'"''',
  '''SecRule ARGS:coupon "@rx ^FREE" "id:10002,phase:2,deny,status:402,log,msg:'no free coupons'"''',
]
"#,
        route("/", &backend.url())
    ))
    .await;
    let client = Client::new(gw.addr());
    // Refusals say what they are in a line of text, as the other guards' do.
    let admin = send(&client, "GET", "/paid_user/admin/users", "").await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.text(), "403 Forbidden\n");
    assert_eq!(
        admin.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let coupon = send(&client, "POST", "/paid_user/cart", "coupon=FREE100").await;
    assert_eq!(coupon.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(coupon.text(), "402 Payment Required\n");
    assert_eq!(
        send(&client, "GET", "/paid_user/cart", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&client, "POST", "/paid_user/cart", "coupon=SAVE10")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(backend.requests(), 2);
}

#[tokio::test]
async fn detection_only_passes_the_attack_and_logs_it() {
    if crs_missing() {
        return;
    }
    let backend = Backend::echo("web").await.unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let gw = GatewayProcess::start_with_rust_log(
        &format!(
            "{}\n[waf]\nengine = \"DetectionOnly\"\n{CRS}\n[error_log]\npath = \"{}\"\nlevel = \"warn\"\n",
            route("/", &backend.url()),
            log.path().display()
        ),
        "",
        None,
    )
    .await;
    let client = Client::new(gw.addr);
    let res = send(&client, "GET", "/?id=1%27%20OR%20%271%27=%271", "").await;
    assert_eq!(res.status, StatusCode::OK, "DetectionOnly never blocks");
    assert_eq!(backend.requests(), 1);
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(log.path()).unwrap();
        if text.contains("949110") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("rule matched") && text.contains("towergate_waf"),
        "{text}"
    );
    // A CRS SQL injection rule (942xxx), and the anomaly score that would have blocked.
    assert!(text.contains("rule_id=942"), "{text}");
    assert!(text.contains("rule_id=949110"), "{text}");
    assert!(!text.contains("request blocked"), "{text}");
}

#[test]
fn check_names_a_bad_rules_file_and_modsecuritys_message() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("local-rules.conf");
    std::fs::write(
        &rules,
        "SecRule REQUEST_URI \"@contains /x\" \"id:1,phase:1,deny\"\nSecRuel ARGS \"@rx y\" \"id:2\"\n",
    )
    .unwrap();
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(
        config,
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[route]]\nprefix = \"/\"\nupstream = \"http://a.lan\"\n\n[waf]\nrules_files = [\"{}\"]\n",
        dir.path().join("*.conf").display()
    )
    .unwrap();
    let out = towergate_command(["check".as_ref(), "-c".as_ref(), config.path().as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let expected = format!(
        "{}:7:1: waf.rules_files: `{}`",
        config.path().display(),
        rules.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    // ModSecurity's own message, with the line it stopped at.
    assert!(stderr.contains("Line: 2"), "{stderr}");

    // The same file, fixed, checks.
    std::fs::write(
        &rules,
        "SecRule REQUEST_URI \"@contains /x\" \"id:1,phase:1,deny\"\n",
    )
    .unwrap();
    towergate_ok("check", config.path());
}

#[tokio::test]
async fn the_status_page_counts_inspected_and_blocked_requests() {
    let backend = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n[waf]\nrules = ['''SecRule ARGS:x \"@streq 1\" \"id:7,phase:1,deny,log,msg:'x'\"''']\n",
        route("/", &backend.url())
    ))
    .await;
    let client = Client::new(gw.addr());
    assert_eq!(
        send(&client, "GET", "/?x=1", "").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&client, "GET", "/?x=2", "").await.status,
        StatusCode::OK
    );
    let admin = gw.admin_addr().unwrap();
    let status: serde_json::Value = serde_json::from_slice(
        &towergate_testkit::client::get(admin, "/status.json")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(status["waf"]["inspected"], 2, "{status}");
    assert_eq!(status["waf"]["blocked"], 1, "{status}");
    let metrics = towergate_testkit::client::get(admin, "/metrics")
        .await
        .text();
    assert!(
        metrics.contains("towergate_waf_requests{outcome=\"blocked\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_audit_log_records_the_status_a_refused_request_got() {
    let backend = Backend::echo("web").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let gw = start_gateway(&format!(
        r#"{}
[waf]
rules = [
  'SecAuditEngine RelevantOnly',
  'SecAuditLogType Serial',
  'SecAuditLogParts ABFHZ',
  'SecAuditLog {}',
  '''SecRule REQUEST_URI "@beginsWith /closed" "id:10003,phase:1,deny,status:403,log,msg:'closed'"''',
]
"#,
        route("/", &backend.url()),
        audit.display()
    ))
    .await;
    let client = Client::new(gw.addr());
    assert_eq!(
        send(&client, "GET", "/closed/x", "").await.status,
        StatusCode::FORBIDDEN
    );
    // The audit log is written off the runtime: wait for the record.
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains("-Z--") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(text.contains("GET /closed/x"), "{text}");
    let response_part = text
        .split("-F--")
        .nth(1)
        .unwrap_or_else(|| panic!("no response part: {text}"));
    assert!(
        response_part.trim_start().starts_with("HTTP/1.1 403"),
        "{text}"
    );
}

/// An origin with answers for the response-body rules: `/leak`, `/late` and `/big` carry
/// the phrase a rule refuses (`/late` only after its first 100 bytes, `/big` after 40 KB),
/// `/json` carries it in a type that is not inspected, `/fine` and `/big-fine` do not.
async fn leaky_origin() -> Backend {
    Backend::with_handler("leaky", |req: Request<hyper::body::Incoming>| async move {
        let (kind, body) = match req.uri().path() {
            "/leak" => ("text/html", "<p>your card number is 4111</p>".to_owned()),
            "/late" => ("text/html", format!("{}card number", "x".repeat(100))),
            "/json" => ("application/json", r#"{"card number": 4111}"#.to_owned()),
            "/big" => ("text/html", format!("{}card number", "x".repeat(40_000))),
            "/big-fine" => ("text/html", "x".repeat(40_000)),
            _ => ("text/plain; charset=utf-8", "nothing to see".to_owned()),
        };
        http::Response::builder()
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn response_bodies_of_the_listed_types_are_inspected_up_to_the_limit() {
    let origin = leaky_origin().await;
    let waf = |action: &str| {
        format!(
            r#"{}
[waf]
response_body_access = true
response_body_limit = 64
response_body_limit_action = "{action}"
rules = ['''SecRule RESPONSE_BODY "@contains card number" "id:10020,phase:4,deny,status:403,log,msg:'leak'"''']
"#,
            route("/", &origin.url())
        )
    };
    let gw = start_gateway(&waf("ProcessPartial")).await;
    let client = Client::new(gw.addr());
    let leak = send(&client, "GET", "/leak", "").await;
    assert_eq!(leak.status, StatusCode::FORBIDDEN);
    assert_eq!(leak.text(), "403 Forbidden\n");
    let fine = send(&client, "GET", "/fine", "").await;
    assert_eq!(
        (fine.status, fine.text().as_str()),
        (StatusCode::OK, "nothing to see")
    );
    // Not a type to inspect: passes as it is.
    let json = send(&client, "GET", "/json", "").await;
    assert_eq!(json.status, StatusCode::OK);
    assert!(json.text().contains("card number"));
    // Only the first 64 bytes are inspected; the whole answer is sent.
    let late = send(&client, "GET", "/late", "").await;
    assert_eq!(late.status, StatusCode::OK);
    assert_eq!(late.body.len(), 111);

    // With Reject, an answer over the limit is refused.
    let gw = start_gateway(&waf("Reject")).await;
    let client = Client::new(gw.addr());
    let late = send(&client, "GET", "/late", "").await;
    assert_eq!(late.status, StatusCode::INTERNAL_SERVER_ERROR);
    let fine = send(&client, "GET", "/fine", "").await;
    assert_eq!(fine.status, StatusCode::OK);

    // Bodies over 16 KiB are evaluated on the blocking pool, with the same outcome.
    let gw = start_gateway(&waf("ProcessPartial").replace("response_body_limit = 64\n", "")).await;
    let client = Client::new(gw.addr());
    assert_eq!(
        send(&client, "GET", "/big", "").await.status,
        StatusCode::FORBIDDEN
    );
    let big = send(&client, "GET", "/big-fine", "").await;
    assert_eq!((big.status, big.body.len()), (StatusCode::OK, 40_000));
}
