//! The ACL end to end: Apache's `Order`/`Allow`/`Deny` and first-match lists over IPv4
//! and IPv6 client sockets, CIDR networks and per-location policies.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use common::*;
use towergate_testkit::client::get_from;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The gateway on `acl` (an `[acl]` section and more) in front of one echo backend.
async fn gateway(acl: &str) -> (RunningGateway, Backend) {
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&[route("/", &web.url()), acl.to_owned()].concat()).await;
    (gw, web)
}

async fn status_from(from: &str, addr: SocketAddr, path: &str) -> u16 {
    get_from(ip(from), addr, path)
        .await
        .unwrap()
        .status
        .as_u16()
}

#[tokio::test]
async fn the_articles_order_deny_allow_allow_from_all() {
    let (gw, web) = gateway("[acl]\norder = \"deny,allow\"\nallow = [\"all\"]\n").await;
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.77"] {
        assert_eq!(status_from(from, gw.addr(), "/").await, 200, "{from}");
    }
    assert_eq!(web.requests(), 3);
}

#[tokio::test]
async fn order_deny_allow_allow_overrides_deny() {
    // Order deny,allow / Deny from 127.0.0.0/29 / Allow from 127.0.0.3
    let (gw, web) = gateway(
        "[acl]\norder = \"deny,allow\"\ndeny = [\"127.0.0.0/29\"]\nallow = [\"127.0.0.3\"]\n",
    )
    .await;
    let res = get_from(ip("127.0.0.2"), gw.addr(), "/").await.unwrap();
    assert_eq!(res.status, 403);
    assert_eq!(res.text(), "403 Forbidden\n");
    assert_eq!(
        status_from("127.0.0.7", gw.addr(), "/").await,
        403,
        "inside the /29"
    );
    assert_eq!(
        status_from("127.0.0.3", gw.addr(), "/").await,
        200,
        "allowed by name"
    );
    assert_eq!(
        status_from("127.0.0.8", gw.addr(), "/").await,
        200,
        "outside the /29: default allow"
    );
    assert_eq!(web.requests(), 2);
}

#[tokio::test]
async fn order_allow_deny_deny_overrides_allow() {
    // Order allow,deny / Allow from 127.0.0.0/30 / Deny from 127.0.0.2
    let (gw, web) =
        gateway("[acl]\norder = \"allow,deny\"\nallow = \"127.0.0.0/30\"\ndeny = \"127.0.0.2\"\n")
            .await;
    assert_eq!(status_from("127.0.0.1", gw.addr(), "/").await, 200);
    assert_eq!(status_from("127.0.0.3", gw.addr(), "/").await, 200);
    assert_eq!(
        status_from("127.0.0.2", gw.addr(), "/").await,
        403,
        "named by both"
    );
    assert_eq!(
        status_from("127.0.0.4", gw.addr(), "/").await,
        403,
        "outside the /30: default deny"
    );
    assert_eq!(web.requests(), 2);
}

#[tokio::test]
async fn first_match_rule_list() {
    let (gw, _web) = gateway(
        "[acl]\ndefault = \"allow\"\n\
         [[acl.rule]]\nallow = \"127.0.0.5\"\n\
         [[acl.rule]]\ndeny = [\"127.0.0.4/30\", \"127.0.0.9\"]\n",
    )
    .await;
    assert_eq!(
        status_from("127.0.0.5", gw.addr(), "/").await,
        200,
        "first rule"
    );
    assert_eq!(
        status_from("127.0.0.6", gw.addr(), "/").await,
        403,
        "second rule"
    );
    assert_eq!(
        status_from("127.0.0.9", gw.addr(), "/").await,
        403,
        "second rule"
    );
    assert_eq!(
        status_from("127.0.0.8", gw.addr(), "/").await,
        200,
        "no rule: default"
    );
}

#[tokio::test]
async fn ipv6_and_ipv4_clients_on_one_gateway() {
    let web = Backend::echo("web").await.unwrap();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\nnames = [\"front.test\"]\n{}\
         [acl]\norder = \"allow,deny\"\nallow = [\"::1/128\", \"127.0.0.2\"]\n",
        route("/", &web.url())
    );
    let gw = start_gateway(&config).await;
    let (v4, v6) = (gw.addrs()[0], gw.addrs()[1]);
    assert!(v6.is_ipv6());
    assert_eq!(status_from("::1", v6, "/").await, 200);
    assert_eq!(status_from("127.0.0.1", v4, "/").await, 403);
    assert_eq!(status_from("127.0.0.2", v4, "/").await, 200);

    // An IPv6 network, and a deny of the IPv6 client only.
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\nnames = [\"front.test\"]\n{}\
         [acl]\ndefault = \"allow\"\n[[acl.rule]]\ndeny = \"::/96\"\n",
        route("/", &web.url())
    );
    let gw = start_gateway(&config).await;
    let (v4, v6) = (gw.addrs()[0], gw.addrs()[1]);
    assert_eq!(status_from("::1", v6, "/").await, 403);
    assert_eq!(status_from("127.0.0.1", v4, "/").await, 200);
}

#[tokio::test]
async fn locations_replace_the_global_policy_on_normalised_paths() {
    let (gw, _web) = gateway(
        "[acl]\norder = \"deny,allow\"\nallow = \"all\"\n\
         [[acl.location]]\nprefix = \"/paid_user\"\norder = \"allow,deny\"\nallow = \"127.0.0.2\"\n",
    )
    .await;
    assert_eq!(status_from("127.0.0.1", gw.addr(), "/").await, 200);
    assert_eq!(
        status_from("127.0.0.1", gw.addr(), "/paid_users").await,
        200,
        "segment boundary"
    );
    assert_eq!(
        status_from("127.0.0.1", gw.addr(), "/paid_user/file").await,
        403
    );
    assert_eq!(
        status_from("127.0.0.2", gw.addr(), "/paid_user/file").await,
        200
    );
    // Dot segments and encoded letters cannot walk around the location.
    assert_eq!(
        status_from("127.0.0.1", gw.addr(), "/news_rss/%2e%2e/paid_user/file").await,
        403
    );
    assert_eq!(
        status_from("127.0.0.1", gw.addr(), "/%70aid_user/file").await,
        403
    );
    assert_eq!(
        status_from("127.0.0.1", gw.addr(), "/./paid_user/file").await,
        403
    );
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    let parse = |acl: &str| {
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{acl}");
        towergate::Config::from_toml(&text, Path::new("front.toml"))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let err = parse("[acl]\norder = \"deny,allow\"\nallow = [\"all\", \"example.com\"]\n");
    assert!(
        err.starts_with("front.toml:5:9: acl.allow: `example.com` is not \"all\""),
        "{err}"
    );
    let err = parse("[acl]\nallow = \"all\"\n");
    assert!(
        err.contains("acl.order: say how `allow` and `deny` combine"),
        "{err}"
    );
    let err = parse("[acl]\norder = \"deny\"\n");
    assert!(
        err.starts_with("front.toml:4:9:") && err.contains("\"deny,allow\""),
        "{err}"
    );
}
