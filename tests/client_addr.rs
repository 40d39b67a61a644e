//! The real client address end to end: the socket peer by default, the right-most
//! untrusted hop of `X-Forwarded-For` / `Forwarded` behind trusted proxies, and no way for
//! an untrusted peer to choose its address. The ACL shows which address was decided.

mod common;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use towergate_testkit::TestResponse;
use towergate_testkit::client::send_from;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// GET / from source address `from`, with extra headers; returns status and the echo.
async fn get(from: &str, addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, TestResponse) {
    let mut req = Request::get("/").header("host", "front.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = send_from(ip(from), addr, req.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    (res.status.as_u16(), res)
}

/// Only 127.0.0.50 passes the ACL: a request passes exactly when that is its client.
const ONLY_50: &str = "[acl]\norder = \"allow,deny\"\nallow = \"127.0.0.50\"\n";

async fn gateway(extra: &str) -> (RunningGateway, Backend) {
    let web = Backend::echo("web").await.unwrap();
    let gw =
        start_gateway(&[route("/", &web.url()), ONLY_50.to_owned(), extra.to_owned()].concat())
            .await;
    (gw, web)
}

#[tokio::test]
async fn without_trusted_proxies_the_socket_peer_is_the_client() {
    let (gw, web) = gateway("").await;
    assert_eq!(get("127.0.0.50", gw.addr(), &[]).await.0, 200);
    // A spoofed X-Forwarded-For or Forwarded from anyone changes nothing.
    let spoof = [
        ("x-forwarded-for", "127.0.0.50"),
        ("forwarded", "for=127.0.0.50"),
    ];
    assert_eq!(get("127.0.0.2", gw.addr(), &spoof).await.0, 403);
    // The claim is passed on upstream as history, with the real peer appended.
    let (status, res) = get("127.0.0.50", gw.addr(), &[("x-forwarded-for", "192.0.2.1")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        res.echo("x-forwarded-for").as_deref(),
        Some("192.0.2.1, 127.0.0.50")
    );
    assert_eq!(web.requests(), 2);
}

#[tokio::test]
async fn behind_a_trusted_proxy_its_report_decides() {
    let (gw, _web) =
        gateway("[client_addr]\ntrusted_proxies = [\"127.0.0.2\", \"127.0.1.0/24\"]\n").await;
    let addr = gw.addr();
    // The trusted proxy reports 127.0.0.50.
    assert_eq!(
        get("127.0.0.2", addr, &[("x-forwarded-for", "127.0.0.50")])
            .await
            .0,
        200
    );
    // Its own requests (no header): the proxy is the client.
    assert_eq!(get("127.0.0.2", addr, &[]).await.0, 403);
    // The right-most untrusted hop counts; what the client wrote to its left does not.
    let chain = [("x-forwarded-for", "127.0.0.99, 127.0.0.50, 127.0.1.7")];
    assert_eq!(get("127.0.0.2", addr, &chain).await.0, 200);
    let chain = [("x-forwarded-for", "127.0.0.50, 127.0.0.99")];
    assert_eq!(
        get("127.0.0.2", addr, &chain).await.0,
        403,
        "client spoofed behind the proxy"
    );
    let chain = [
        ("x-forwarded-for", "127.0.0.50"),
        ("x-forwarded-for", "127.0.1.7:8080"),
    ];
    assert_eq!(
        get("127.0.0.2", addr, &chain).await.0,
        200,
        "two header lines, a port"
    );
    // Only X-Forwarded-For is read by default.
    assert_eq!(
        get("127.0.0.2", addr, &[("forwarded", "for=127.0.0.50")])
            .await
            .0,
        403
    );
    // A peer that is not trusted cannot use the header, even naming the proxy.
    let spoof = [("x-forwarded-for", "127.0.0.50, 127.0.0.2")];
    assert_eq!(get("127.0.0.3", addr, &spoof).await.0, 403);
}

#[tokio::test]
async fn the_forwarded_header_when_configured() {
    let (gw, _web) =
        gateway("[client_addr]\ntrusted_proxies = [\"127.0.0.2\"]\nheader = \"Forwarded\"\n").await;
    let addr = gw.addr();
    let fwd = [("forwarded", "for=127.0.0.50;proto=https;by=127.0.0.2")];
    assert_eq!(get("127.0.0.2", addr, &fwd).await.0, 200);
    let fwd = [("forwarded", "for=\"127.0.0.50:4711\"")];
    assert_eq!(get("127.0.0.2", addr, &fwd).await.0, 200);
    let fwd = [("forwarded", "for=127.0.0.50, for=unknown")];
    assert_eq!(
        get("127.0.0.2", addr, &fwd).await.0,
        403,
        "an unknown hop stops the walk at the proxy"
    );
    // X-Forwarded-For is ignored now.
    assert_eq!(
        get("127.0.0.2", addr, &[("x-forwarded-for", "127.0.0.50")])
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn ipv6_proxies_and_clients() {
    let web = Backend::echo("web").await.unwrap();
    let config = format!(
        "[server]\nlisten = [\"[::1]:0\"]\nnames = [\"front.test\"]\n{}\
         [client_addr]\ntrusted_proxies = [\"::1\"]\nheader = \"forwarded\"\n\
         [acl]\norder = \"allow,deny\"\nallow = \"2001:db8::/32\"\n",
        route("/", &web.url())
    );
    let gw = start_gateway(&config).await;
    let fwd = [("forwarded", "for=\"[2001:db8:cafe::17]:4711\"")];
    assert_eq!(get("::1", gw.addr(), &fwd).await.0, 200);
    let fwd = [("forwarded", "for=\"[2001:db9::1]\"")];
    assert_eq!(get("::1", gw.addr(), &fwd).await.0, 403);
    assert_eq!(get("::1", gw.addr(), &[]).await.0, 403);
}

#[test]
fn a_bad_trusted_proxy_is_a_located_config_error() {
    let text =
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[client_addr]\ntrusted_proxies = [\"lb.lan\"]\n";
    let err = towergate::Config::from_toml(text, std::path::Path::new("front.toml"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "front.toml:4:19: client_addr.trusted_proxies: `lb.lan` is not an IP address"
        ),
        "{err}"
    );
}
