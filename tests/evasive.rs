//! Flood blocking (mod_evasive) end to end: the real gateway on loopback, clients bound
//! to different loopback addresses (127.0.0.1, .2, .3, ...), a real backend behind it.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;
use towergate_testkit::client::get_from;

const ONE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const TWO: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const THREE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// The article's settings (`DOSPageCount 2`, `DOSSiteCount 30`, per second, 30 s blocks).
const ARTICLE: &str = r#"
page_count = 2
page_interval = "1s"
site_count = 30
site_interval = "1s"
blocking_period = "30s"
max_tracked = 314739
"#;

async fn gateway(evasive: &str) -> (RunningGateway, Backend) {
    let web = Backend::echo("webserver_one").await.unwrap();
    let config = format!("{}\n[evasive]\n{evasive}\n", route("/", &web.url()));
    (start_gateway(&config).await, web)
}

async fn status(gw: &RunningGateway, from: IpAddr, path: &str) -> u16 {
    get_from(from, gw.addr(), path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {from}: {e}"))
        .status
        .as_u16()
}

#[tokio::test]
async fn the_third_request_for_one_uri_within_a_second_is_refused() {
    let (gw, web) = gateway(ARTICLE).await;
    let started = Instant::now();
    assert_eq!(status(&gw, TWO, "/index.html").await, 200);
    assert_eq!(status(&gw, TWO, "/index.html?again").await, 200);
    let third = get_from(TWO, gw.addr(), "/index.html").await.unwrap();
    assert_eq!(
        third.status,
        403,
        "third request {:?} after the first",
        started.elapsed()
    );
    assert_eq!(third.text(), "403 Forbidden\n");
    assert_eq!(
        web.requests(),
        2,
        "the refused request never reached the backend"
    );
    // Blocked for the whole site now, not only that URI.
    assert_eq!(status(&gw, TWO, "/other.html").await, 403);
    // The other address is not affected.
    for _ in 0..2 {
        assert_eq!(status(&gw, THREE, "/index.html").await, 200);
    }
    assert_eq!(web.requests(), 4);
}

#[tokio::test]
async fn thirty_one_requests_across_distinct_uris_within_a_second_trip_the_site_limit() {
    let (gw, web) = gateway(ARTICLE).await;
    let started = Instant::now();
    for n in 0..30 {
        assert_eq!(
            status(&gw, TWO, &format!("/page/{n}.html")).await,
            200,
            "{n}"
        );
    }
    assert_eq!(
        status(&gw, TWO, "/page/30.html").await,
        403,
        "31st request {:?} after the first",
        started.elapsed()
    );
    assert_eq!(web.requests(), 30);
    assert_eq!(status(&gw, THREE, "/page/30.html").await, 200);
}

#[tokio::test]
async fn a_blocked_address_stays_blocked_while_it_sends_and_is_released_after_silence() {
    let (gw, _web) = gateway(
        r#"
page_count = 2
page_interval = "1s"
site_count = 30
site_interval = "1s"
blocking_period = "2s"
"#,
    )
    .await;
    for _ in 0..2 {
        assert_eq!(status(&gw, TWO, "/").await, 200);
    }
    assert_eq!(status(&gw, TWO, "/").await, 403);
    // Keeps sending every 250 ms for 4 s, twice the blocking period: each request
    // extends the block, so every one is refused.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            status(&gw, TWO, "/").await,
            403,
            "{:?} into the block",
            started.elapsed()
        );
    }
    // Meanwhile others pass.
    assert_eq!(status(&gw, THREE, "/").await, 200);
    // A blocking period of silence (2 s, and a margin): released.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(&gw, TWO, "/").await, 200);
    assert_eq!(status(&gw, TWO, "/").await, 200);
}

#[tokio::test]
async fn whitelisted_addresses_and_networks_are_never_blocked() {
    let config = format!("{ARTICLE}whitelist = [\"127.0.0.1\", \"127.0.0.4/30\"]\n");
    let (gw, web) = gateway(&config).await;
    for from in [ONE, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))] {
        for n in 0..40 {
            assert_eq!(status(&gw, from, "/same").await, 200, "{from} request {n}");
        }
    }
    assert_eq!(web.requests(), 80);
    for _ in 0..2 {
        assert_eq!(status(&gw, TWO, "/same").await, 200);
    }
    assert_eq!(status(&gw, TWO, "/same").await, 403);
}

#[tokio::test]
async fn normal_browsing_below_the_thresholds_is_never_blocked() {
    let (gw, web) = gateway(ARTICLE).await;
    // Three page views, each a page and 13 assets, every one fetched twice (a reload):
    // 28 requests, each URI twice, then a pause before the next view.
    for view in 0..3 {
        let mut paths = vec![format!("/article/{view}.html")];
        paths.extend((0..13).map(|n| format!("/static/{n}.png")));
        for path in &paths {
            for _ in 0..2 {
                assert_eq!(status(&gw, TWO, path).await, 200, "view {view}: {path}");
            }
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    assert_eq!(web.requests(), 3 * 28);
}

#[tokio::test]
async fn the_demo_whitelists_localhost_and_applies_the_articles_limits_to_others() {
    let backends = towergate::demo::DemoBackends::start().await.unwrap();
    let config = backends.config("127.0.0.1:0".parse().unwrap()).unwrap();
    let evasive = config.evasive.as_ref().expect("the demo enables evasive");
    assert_eq!((evasive.page_count, evasive.site_count), (2, 30));
    assert_eq!(evasive.blocking_period, Duration::from_secs(30));
    assert!(evasive.whitelist.iter().any(|w| w == "127.0.0.1"));
    let gw = RunningGateway::start(config).await.unwrap();
    for _ in 0..10 {
        assert_eq!(status(&gw, ONE, "/news_rss/today").await, 200);
    }
    for _ in 0..2 {
        assert_eq!(status(&gw, TWO, "/news_rss/today").await, 200);
    }
    assert_eq!(status(&gw, TWO, "/news_rss/today").await, 403);
}

#[tokio::test]
async fn blocks_survive_a_reload_that_leaves_the_section_unchanged() {
    let web = Backend::echo("webserver_one").await.unwrap();
    let text = |evasive: &str| {
        format!(
            "{}{}\n[evasive]\n{evasive}\n",
            server_section(""),
            route("/", &web.url())
        )
    };
    let parse = |text: String| {
        towergate::Config::from_toml(&text, std::path::Path::new("reload.toml")).unwrap()
    };
    let gw = start_gateway(&text(ARTICLE)).await;
    for _ in 0..2 {
        assert_eq!(status(&gw, TWO, "/").await, 200);
    }
    assert_eq!(status(&gw, TWO, "/").await, 403);
    gw.reload(&parse(text(ARTICLE))).expect("reload");
    assert_eq!(
        status(&gw, TWO, "/").await,
        403,
        "the block survived the reload"
    );
    assert_eq!(status(&gw, THREE, "/").await, 200);
    // A changed section starts a new table.
    gw.reload(&parse(text(&format!(
        "{ARTICLE}whitelist = [\"127.0.0.9\"]\n"
    ))))
    .expect("reload");
    assert_eq!(status(&gw, TWO, "/").await, 200);
}
