//! The character filter end to end: the article's `RewriteRule [^a-zA-Z0-9|\.|/|_|-] - [F]`
//! in front of real backends, with the inputs it exists for.

mod common;

use std::path::Path;

use common::*;
use towergate_testkit::client::{raw, raw_status};

const ARTICLE_RULE: &str = "[[charfilter.rule]]\ndeny = '[^a-zA-Z0-9|\\.|/|_|-]'\n";

/// The article's rule in front of a news backend and a catch-all web backend.
async fn article() -> (RunningGateway, Backend, Backend) {
    let news = Backend::echo("news_server").await.unwrap();
    let web = Backend::echo("webserver_one").await.unwrap();
    let config = [
        route("/news_rss/", &format!("{}/news_rss/", news.url())),
        route("/", &web.url()),
        ARTICLE_RULE.to_owned(),
    ]
    .concat();
    (start_gateway(&config).await, news, web)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn the_articles_rule_answers_each_input_as_expected() {
    let (gw, news, web) = article().await;
    let client = Client::new(gw.addr());
    // (target as sent, expected status, why)
    let cases: &[(&str, u16, &str)] = &[
        ("/", 200, "plain path"),
        (
            "/news_rss/2024/today-s_news.html",
            200,
            "only allowed characters",
        ),
        (
            "/a|b",
            200,
            "`|` is inside the article's brackets, so it is allowed",
        ),
        (
            "/search?q=a%20b;c:d@e",
            200,
            "the query is not matched (as with RewriteRule)",
        ),
        ("/a%20b", 403, "%20 decodes to a space"),
        ("/~user/", 403, "`~` is not in the class"),
        ("/%7Euser/", 403, "%7E is normalised to `~`"),
        ("/a;jsessionid=1", 403, "`;`"),
        ("/a:b", 403, "`:`"),
        ("/user@host", 403, "`@`"),
        ("/caf%C3%A9", 403, "UTF-8 bytes of `é`"),
        ("/%E2%80%AE", 403, "a right-to-left override"),
        ("/%FF", 403, "a byte that is not UTF-8 at all"),
        ("/a%0Ab", 403, "an encoded line feed"),
        ("/100%25", 403, "an encoded percent sign"),
        (
            "/a%2Fb",
            400,
            "an encoded slash is refused before any rule (AllowEncodedSlashes Off)",
        ),
        ("/a%2fb", 400, "lower-case encoded slash"),
        ("/a%5Cb", 400, "an encoded backslash"),
        ("/a%zzb", 400, "a malformed escape"),
    ];
    for (target, status, why) in cases {
        let res = client.get(target).await.unwrap();
        assert_eq!(res.status.as_u16(), *status, "{target}: {why}");
        if *status == 403 {
            assert_eq!(res.text(), "403 Forbidden\n", "{target}");
            assert_eq!(
                res.header("content-type"),
                Some("text/plain; charset=utf-8")
            );
        }
    }
    // Only the four accepted requests reached a backend.
    assert_eq!(news.requests() + web.requests(), 4);
}

#[tokio::test]
async fn dot_segments_are_resolved_before_the_rule() {
    let (gw, news, web) = article().await;
    let client = Client::new(gw.addr());
    // `%2e%2e` is `..`: normalised away, so the rule sees `/paid_user/x` and lets it pass,
    // and the request goes where the normalised path leads, not to the news backend.
    let res = client.get("/news_rss/%2e%2e/paid_user/x").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-backend"), Some("webserver_one"));
    assert_eq!(res.echo("path").as_deref(), Some("/paid_user/x"));
    let res = client.get("/news_rss/%2E%2e/%2e/x.html").await.unwrap();
    assert_eq!(res.echo("path").as_deref(), Some("/x.html"));
    // An encoded slash after the dots is still refused.
    let res = client.get("/news_rss/%2e%2e%2fpaid_user").await.unwrap();
    assert_eq!(res.status, 400);
    assert_eq!(news.requests(), 0);
    assert_eq!(web.requests(), 2);
}

#[tokio::test]
async fn raw_request_targets() {
    let (gw, news, web) = article().await;
    // A literal space ends the request target: `GET /a b HTTP/1.1` is not HTTP.
    let answer = raw(gw.addr(), get("/a b").as_bytes()).await.unwrap();
    assert_eq!(raw_status(&answer), 400, "{answer}");
    // Raw UTF-8 in the target passes the parser and meets the rule.
    let answer = raw(gw.addr(), get("/café").as_bytes()).await.unwrap();
    assert_eq!(raw_status(&answer), 403, "{answer}");
    // So do raw `~` and `@`, legal in a target.
    let answer = raw(gw.addr(), get("/~root").as_bytes()).await.unwrap();
    assert_eq!(raw_status(&answer), 403, "{answer}");
    let answer = raw(gw.addr(), get("/root@host").as_bytes()).await.unwrap();
    assert_eq!(raw_status(&answer), 403, "{answer}");
    let answer = raw(gw.addr(), get("/ok.html").as_bytes()).await.unwrap();
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(news.requests() + web.requests(), 1);
}

#[tokio::test]
async fn actions_scopes_and_rule_order_from_the_config() {
    let web = Backend::echo("web").await.unwrap();
    let config = [
        route("/", &web.url()),
        "[[charfilter.rule]]\ndeny = 'admin'\naction = \"log\"\n".to_owned(),
        "[[charfilter.rule]]\ndeny = '(?i)\\.php$'\naction = \"G\"\n".to_owned(),
        "[[charfilter.rule]]\ndeny = \"['<>]\"\nscope = \"query\"\naction = 400\n".to_owned(),
        "[[charfilter.rule]]\nallow = '^/[a-z0-9/._-]*$'\n".to_owned(),
    ]
    .concat();
    let gw = start_gateway(&config).await;
    let client = Client::new(gw.addr());
    for (target, status) in [
        ("/admin/index.html", 200),
        ("/old/login.PHP", 410),
        ("/search?q=%3Cscript%3E", 400),
        ("/search?q=fine", 200),
        ("/Upper", 403),
    ] {
        let res = client.get(target).await.unwrap();
        assert_eq!(res.status.as_u16(), status, "{target}");
    }
    let res = client.get("/old/login.php").await.unwrap();
    assert_eq!(res.text(), "410 Gone\n");
    assert_eq!(web.requests(), 2);
}

#[test]
fn a_rule_that_does_not_compile_is_a_located_config_error() {
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[charfilter.rule]]\ndeny = '[^a-zA-Z0-9|\\.|/|_|-'\n";
    let err = towergate::Config::from_toml(text, Path::new("front.toml"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "front.toml:5:8: charfilter.rule: pattern `[^a-zA-Z0-9|\\.|/|_|-` does not compile: unclosed character class"
    );
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[charfilter.rule]]\ndeny = 'x'\naction = \"redirect\"\n";
    let err = towergate::Config::from_toml(text, Path::new("front.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("front.toml:5:10: charfilter.rule.action"),
        "{err}"
    );
}
