//! The status page in a real browser (Debian's chromium, headless): it renders the pools,
//! and draining a member through the admin listener takes effect on traffic and on the page.
//! Without chromium installed the test says it was skipped (`.ci/run` installs it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use towergate_testkit::client;

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// The page's DOM after chromium has loaded and rendered it.
fn render(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_chromium_and_a_drain_takes_effect() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: chromium is not installed (apt-get install chromium); the status page was not rendered"
        );
        return;
    };
    let one = Backend::echo("webserver_one").await.unwrap();
    let two = Backend::echo("webserver_two").await.unwrap();
    let config = format!(
        "{}[[route]]\nprefix = \"/\"\npool = \"web_servers\"\n[pool.web_servers]\nmembers = [{{ url = \"{}\" }}, {{ url = \"{}\" }}]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        server_section(""),
        one.url(),
        two.url()
    );
    let gw = start_gateway(&config).await;
    let admin = gw.admin_addr().unwrap();
    let web = Client::new(gw.addr());
    for _ in 0..10 {
        assert_eq!(web.get("/").await.unwrap().status, 200);
    }
    assert_eq!((one.requests(), two.requests()), (5, 5));

    let url = format!("http://{admin}/");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || render(browser, &url)
    })
    .await
    .unwrap();
    assert!(dom.contains("Pool web_servers"), "{dom}");
    assert_eq!(
        dom.matches("<tr class=\"up\">").count(),
        2,
        "both members up: {dom}"
    );
    assert!(dom.contains(&one.url()) && dom.contains(&two.url()));

    // The drain button's form posts here.
    let req = http::Request::post(format!("http://{admin}/pools/web_servers/members/0/drain"))
        .body(http_body_util::Full::default())
        .unwrap();
    let res = Client::new(admin).request(req).await.unwrap();
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(res.header("location"), Some("/"));
    for _ in 0..10 {
        assert_eq!(web.get("/").await.unwrap().status, 200);
    }
    assert_eq!(
        (one.requests(), two.requests()),
        (5, 15),
        "the drained member took no new traffic"
    );

    let dom = tokio::task::spawn_blocking(move || render(browser, &url))
        .await
        .unwrap();
    assert_eq!(dom.matches("<tr class=\"drained\">").count(), 1, "{dom}");
    let json: serde_json::Value =
        serde_json::from_slice(&client::get(admin, "/status.json").await.body).unwrap();
    assert_eq!(
        json["pools"][0]["members"][0]["intent"], "drained",
        "{json}"
    );

    // Enabling puts it back.
    let req = http::Request::post(format!("http://{admin}/pools/web_servers/members/0/enable"))
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(Client::new(admin).request(req).await.unwrap().status, 303);
    tokio::time::sleep(Duration::from_millis(10)).await;
    for _ in 0..10 {
        web.get("/").await.unwrap();
    }
    assert!(one.requests() > 5, "the enabled member takes traffic again");
    // Unknown pools and members are 404s, not panics.
    let req = http::Request::post(format!("http://{admin}/pools/nope/members/0/drain"))
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(Client::new(admin).request(req).await.unwrap().status, 404);
    let req = http::Request::post(format!("http://{admin}/pools/web_servers/members/9/drain"))
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(Client::new(admin).request(req).await.unwrap().status, 404);
}
