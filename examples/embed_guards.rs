//! towergate's request guards in a plain axum app: the real client address behind a
//! trusted proxy, an ACL, and the article's character filter, as three tower layers.
//!
//! The app trusts `127.0.0.2` as a proxy (its `X-Forwarded-For` names the client), lets
//! in only loopback clients and the documentation network `192.0.2.0/24` (Apache's
//! `Order allow,deny`), and refuses paths with characters outside the article's
//! `[^a-zA-Z0-9|\.|/|_|-]` class. axum hands the socket peer to the layers through
//! `ConnectInfo<SocketAddr>` (the `axum` feature of `towergate-client-addr`).
//!
//! Run it with
//!
//! ```text
//! cargo run --example embed_guards [ADDR]      # ADDR defaults to 127.0.0.1:3000
//! ```
//!
//! It first sends a few requests to itself and prints the answers, then keeps serving;
//! try for yourself:
//!
//! ```text
//! curl -i http://127.0.0.1:3000/hello                                  # 200
//! curl -i http://127.0.0.1:3000/hello%20world                          # 403 (charfilter)
//! curl -i --interface 127.0.0.2 -H 'X-Forwarded-For: 203.0.113.9' \
//!      http://127.0.0.1:3000/hello                                     # 403 (acl)
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::Full;
use tower::ServiceBuilder;
use towergate_acl::{AclLayer, Order, Policy};
use towergate_charfilter::CharFilterLayer;
use towergate_client_addr::{ClientAddrLayer, client_ip};
use towergate_testkit::client::send_from;

/// The handler says who it thinks the client is.
async fn hello(req: Request) -> String {
    match client_ip(&req) {
        Some(ip) => format!("hello, {ip}\n"),
        None => "hello, whoever you are\n".to_owned(),
    }
}

fn app() -> Router {
    let client_addr = ClientAddrLayer::builder()
        .trusted_proxy("127.0.0.2/32".parse().unwrap())
        .build();
    let acl = AclLayer::new(
        Policy::order(Order::AllowDeny)
            .allow("127.0.0.0/8".parse::<ipnet::IpNet>().unwrap())
            .allow("::1/128".parse::<ipnet::IpNet>().unwrap())
            .allow("192.0.2.0/24".parse::<ipnet::IpNet>().unwrap()),
    );
    Router::new().route("/{*path}", get(hello)).layer(
        // Outermost first: decide the client, then the ACL, then the path filter.
        ServiceBuilder::new()
            .layer(client_addr)
            .layer(acl)
            .layer(CharFilterLayer::article()),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned())
        .parse()
        .expect("ADDR is an address like 127.0.0.1:3000");
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr}");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app().into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    if addr.ip().is_loopback() && addr.is_ipv4() {
        for (from, path, xff) in [
            ("127.0.0.1", "/hello", None),
            ("127.0.0.1", "/hello%20world", None),
            ("127.0.0.1", "/~root/.ssh", None),
            ("127.0.0.2", "/hello", Some("192.0.2.7")),
            ("127.0.0.2", "/hello", Some("203.0.113.9")),
            ("127.0.0.3", "/hello", Some("203.0.113.9")),
        ] {
            let mut req = http::Request::get(path).header("host", "example");
            if let Some(xff) = xff {
                req = req.header("x-forwarded-for", xff);
            }
            let req = req.body(Full::<Bytes>::default()).unwrap();
            let res = send_from(from.parse().unwrap(), addr, req).await?;
            let via = xff
                .map(|x| format!(" (X-Forwarded-For: {x})"))
                .unwrap_or_default();
            println!(
                "{from} GET {path}{via} -> {} {}",
                res.status,
                res.text().trim_end()
            );
        }
    }
    println!("serving until Ctrl-C");
    tokio::select! {
        r = server => r.expect("server task").map(|_| ()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
