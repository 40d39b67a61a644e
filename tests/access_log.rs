//! `[access_log]` and `[error_log]` through the real gateway over loopback sockets: one
//! well-formed `combined` line per request under concurrent load, Apache's escaping of
//! what clients send, refused requests logged too, rotation on SIGUSR1.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, Client, GatewayProcess, route, server_section, start_gateway};
use http::Request;
use http_body_util::Full;
use regex::Regex;
use towergate_testkit::client::{raw, raw_status};

/// Apache's `combined`, field by field: quoted fields may hold backslash escapes only.
fn combined_re() -> Regex {
    Regex::new(concat!(
        r#"^(\S+) (\S+) (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "#,
        r#""((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$"#,
    ))
    .unwrap()
}

fn access_log_section(path: &Path, extra: &str) -> String {
    format!(
        "[access_log]\npath = \"{}\"\nformat = \"combined\"\n{extra}\n",
        path.display()
    )
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The log's lines once it has `n` (a line is queued as its response ends, which can be
/// a moment after the client has read it), flushing the gateway's writer between looks.
async fn wait_lines(gw: &common::RunningGateway, path: &Path, n: usize) -> Vec<String> {
    let writer = gw.access_log().expect("the access log is on");
    let start = Instant::now();
    loop {
        writer.flush().await.unwrap();
        let lines = read_lines(path);
        if lines.len() >= n || start.elapsed() > Duration::from_secs(30) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_from_eight_clients_give_one_combined_line_each() {
    const CLIENTS: usize = 8;
    const EACH: usize = 1250;
    let backend = Backend::echo("web").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access_log");
    let gw = start_gateway(&format!(
        "{}{}{}",
        server_section(""),
        route("/", &backend.url()),
        access_log_section(&log, "")
    ))
    .await;

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = Client::new(gw.addr());
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let target = format!("/load/{c}/{i}?n={i}");
                let req = Request::get(&target)
                    .header("user-agent", format!("loadgen/{c}"))
                    .header("referer", format!("http://front.test/{c}"))
                    .body(Full::<Bytes>::default())
                    .unwrap();
                let res = client.request(req).await.expect("request succeeds");
                assert_eq!(res.status, 200, "{target}");
                sent.push((target, res.body.len(), c));
            }
            sent
        }));
    }
    let mut expected: HashMap<String, (usize, usize)> = HashMap::new();
    for t in tasks {
        for (target, len, c) in t.await.unwrap() {
            expected.insert(format!("GET {target} HTTP/1.1"), (len, c));
        }
    }
    assert_eq!(expected.len(), CLIENTS * EACH);

    let lines = wait_lines(&gw, &log, CLIENTS * EACH).await;
    // Nothing more arrives later either.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.access_log().unwrap().flush().await.unwrap();
    let lines_after = read_lines(&log);
    assert_eq!(lines_after.len(), lines.len());
    assert_eq!(lines.len(), CLIENTS * EACH, "one line per request");

    let re = combined_re();
    let mut seen = HashSet::new();
    for line in &lines {
        let f = re
            .captures(line)
            .unwrap_or_else(|| panic!("not a combined line: {line:?}"));
        assert_eq!(&f[1], "127.0.0.1", "{line}");
        assert_eq!((&f[2], &f[3]), ("-", "-"), "{line}");
        let request = &f[5];
        let (len, c) = expected
            .get(request)
            .unwrap_or_else(|| panic!("a request nobody sent: {line}"));
        assert!(seen.insert(request.to_owned()), "logged twice: {line}");
        assert_eq!(&f[6], "200", "{line}");
        assert_eq!(f[7].parse::<usize>().unwrap(), *len, "bytes sent: {line}");
        assert_eq!(&f[8], format!("http://front.test/{c}"), "{line}");
        assert_eq!(&f[9], format!("loadgen/{c}"), "{line}");
    }
    assert_eq!(seen.len(), CLIENTS * EACH);
    let stats = gw.access_log().unwrap().stats();
    assert_eq!(stats.dropped, 0, "{stats:?}");
}

#[tokio::test]
async fn what_clients_send_is_escaped_as_apache_does() {
    let backend = Backend::echo("web").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access_log");
    let gw = start_gateway(&format!(
        "{}{}{}",
        server_section(""),
        route("/", &backend.url()),
        access_log_section(&log, "")
    ))
    .await;
    // A quote and a backslash in the path (hyper refuses control characters in the target,
    // and a quote in the query, with a 400 of its own before any layer sees it); a
    // user agent that tries to close its field and start a new line's worth of fields,
    // with a tab and a byte outside ASCII (hyper accepts those in header values).
    let answer = raw(
        gw.addr(),
        b"GET /esc/a\"b\\c?q=1 HTTP/1.1\r\nHost: front.test\r\n\
          User-Agent: evil\" 200 1 \"-\" \"\t\xff\r\n\
          Referer: \\\"\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let status = raw_status(&answer);
    assert!(status != 0, "{answer}");

    let lines = wait_lines(&gw, &log, 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    let expected_tail = format!(r#""GET /esc/a\"b\\c?q=1 HTTP/1.1" {status} "#);
    assert!(line.contains(&expected_tail), "{line}");
    assert!(
        line.ends_with(r#" "\\\"" "evil\" 200 1 \"-\" \"\t\xff""#),
        "{line}"
    );
    let f = combined_re()
        .captures(line)
        .unwrap_or_else(|| panic!("not a combined line: {line:?}"));
    assert_eq!(&f[5], r#"GET /esc/a\"b\\c?q=1 HTTP/1.1"#);
    assert_eq!(&f[6], status.to_string());
    assert_eq!(&f[8], r#"\\\""#);
    assert_eq!(&f[9], r#"evil\" 200 1 \"-\" \"\t\xff"#);
    assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
}

#[tokio::test]
async fn refused_requests_are_logged_with_their_status() {
    let backend = Backend::echo("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access_log");
    let gw = start_gateway(&format!(
        "{}{}[limits]\nbody = 10\n{}",
        server_section(""),
        route("/app/", &backend.url()),
        access_log_section(&log, "")
    ))
    .await;
    let cases: [(&[u8], u16, &str); 4] = [
        // No Host in HTTP/1.1: the canonical layer's 400.
        (
            b"GET /app/x HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
            "GET /app/x HTTP/1.1",
        ),
        // Absolute form naming another host: never a forward proxy.
        (
            b"GET http://elsewhere.test/app/x HTTP/1.1\r\nHost: elsewhere.test\r\nConnection: close\r\n\r\n",
            400,
            "GET http://elsewhere.test/app/x HTTP/1.1",
        ),
        // Over [limits] body: 413 before the backend is asked; 12 bytes counted nowhere.
        (
            b"POST /app/up HTTP/1.1\r\nHost: front.test\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello world!",
            413,
            "POST /app/up HTTP/1.1",
        ),
        // No route.
        (
            b"GET /nowhere HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n",
            404,
            "GET /nowhere HTTP/1.1",
        ),
    ];
    for (request, status, _) in &cases {
        let answer = raw(gw.addr(), request).await.unwrap();
        assert_eq!(raw_status(&answer), *status, "{answer}");
    }
    assert_eq!(backend.requests(), 0);
    let lines = wait_lines(&gw, &log, cases.len()).await;
    assert_eq!(lines.len(), cases.len(), "{lines:#?}");
    let re = combined_re();
    let mut logged: Vec<(String, u16, String)> = lines
        .iter()
        .map(|l| {
            let f = re.captures(l).unwrap_or_else(|| panic!("{l}"));
            (f[5].to_owned(), f[6].parse().unwrap(), f[7].to_owned())
        })
        .collect();
    logged.sort();
    let mut want: Vec<(String, u16)> = cases
        .iter()
        .map(|(_, s, line)| (line.to_string(), *s))
        .collect();
    want.sort();
    assert_eq!(
        logged
            .iter()
            .map(|(l, s, _)| (l.clone(), *s))
            .collect::<Vec<_>>(),
        want
    );
    // Each refusal's short text body was counted as sent.
    for (line, _, bytes) in &logged {
        assert!(bytes.parse::<u64>().unwrap() > 0, "{line}: {bytes}");
    }
}

#[tokio::test]
async fn a_bad_format_is_a_located_config_error() {
    let text = format!(
        "{}{}[access_log]\nformat = '%h %Z \"%r\"'\n",
        server_section(""),
        route("/", "http://127.0.0.1:1/")
    );
    let e = towergate::Config::from_toml(&text, Path::new("front.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("front.toml"), "{e}");
    assert!(e.contains("access_log.format"), "{e}");
    assert!(e.contains("`%Z`"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{}{}",
        server_section(""),
        route("/", "http://127.0.0.1:1/"),
        access_log_section(&dir.path().join("logs/access_log"), "")
    );
    let config = towergate::Config::from_toml(&text, Path::new("front.toml")).unwrap();
    let e = match towergate::RunningGateway::start(config).await {
        Ok(_) => panic!("started without its log directory"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("access_log.path"), "{e}");
    assert!(e.contains("create its directory"), "{e}");
}

/// Polls `path` until `pred` holds for its text.
async fn wait_for(path: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never showed {what}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigusr1_reopens_both_logs_after_rotation() {
    let backend = Backend::echo("web").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access_log");
    let errors = dir.path().join("error_log");
    let toml = format!(
        "{}{}[error_log]\npath = \"{}\"\nlevel = \"info\"\n",
        route("/", &backend.url()),
        access_log_section(&access, "flush_interval = \"10ms\""),
        errors.display()
    );
    // Without RUST_LOG, which would override the configured level.
    let gw = GatewayProcess::start_with_rust_log(&toml, "", None).await;
    wait_for(&errors, "the listening message", |t| {
        t.contains("listening")
    })
    .await;

    let c = Client::new(gw.addr);
    assert_eq!(c.get("/before").await.unwrap().status, 200);
    wait_for(&access, "the first request", |t| t.contains("GET /before ")).await;

    std::fs::rename(&access, dir.path().join("access_log.1")).unwrap();
    std::fs::rename(&errors, dir.path().join("error_log.1")).unwrap();
    gw.signal("USR1");
    wait_for(&errors, "the reopen message", |t| t.contains("reopen")).await;
    // The access log's writer thread recreates the file as it reopens it.
    let start = Instant::now();
    while !access.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "access log not reopened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.get("/after").await.unwrap().status, 200);
    let new = wait_for(&access, "the second request", |t| t.contains("GET /after ")).await;
    assert_eq!(new.lines().count(), 1, "{new}");
    let old = std::fs::read_to_string(dir.path().join("access_log.1")).unwrap();
    assert!(
        old.contains("GET /before ") && !old.contains("GET /after "),
        "{old}"
    );
    assert!(combined_re().is_match(new.trim_end()), "{new}");
}

#[tokio::test]
async fn a_reload_reopens_the_file_and_applies_a_new_format() {
    let backend = Backend::echo("web").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access_log");
    let text = |format: &str| {
        format!(
            "{}{}[access_log]\npath = \"{}\"\nformat = '{format}'\n",
            server_section(""),
            route("/", &backend.url()),
            log.display()
        )
    };
    let gw = start_gateway(&text("common")).await;
    let c = Client::new(gw.addr());
    assert_eq!(c.get("/one").await.unwrap().status, 200);
    let before = wait_lines(&gw, &log, 1).await;
    assert!(
        before[0].contains("] \"GET /one HTTP/1.1\" 200 "),
        "{before:?}"
    );

    // Rotated away, then reloaded with another format: the same writer reopens the path.
    std::fs::rename(&log, dir.path().join("access_log.1")).unwrap();
    let config = towergate::Config::from_toml(&text("%m %U %>s %v"), Path::new("t.toml")).unwrap();
    gw.reload(&config).unwrap();
    // The writer reopens on its own thread; a flush waits for that.
    gw.access_log().unwrap().flush().await.unwrap();
    assert!(log.exists(), "reopened by path");
    assert_eq!(c.get("/two").await.unwrap().status, 200);
    let after = wait_lines(&gw, &log, 1).await;
    assert_eq!(after, ["GET /two 200 front.test"]);
    let rotated = read_lines(&dir.path().join("access_log.1"));
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(gw.access_log().unwrap().stats().reopens, 1);
}
