//! The flood blocker (mod_evasive) in a plain axum app, with the article's limits: a
//! client may request one URI twice per second and the site 30 times per second; the next
//! request is answered 403 and the client stays blocked until it has been silent for
//! 30 seconds. `127.0.0.1` is whitelisted, so your own curl commands keep working, while
//! requests from other loopback addresses meet the limits. axum hands the socket peer to
//! the layer through `ConnectInfo<SocketAddr>` (the `axum` feature of
//! `towergate-client-addr`).
//!
//! Run it with
//!
//! ```text
//! cargo run --example embed_evasive [ADDR]      # ADDR defaults to 127.0.0.1:3000
//! ```
//!
//! It first floods itself from 127.0.0.2 and prints the answers and the block list, then
//! keeps serving; try for yourself:
//!
//! ```text
//! for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:3000/; done
//!     # 200 200 200 200 (whitelisted)
//! for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code}\n' --interface 127.0.0.3 \
//!     http://127.0.0.1:3000/; done
//!     # 200 200 403 403
//! curl -s http://127.0.0.1:3000/blocks                 # the block list
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use towergate_evasive::EvasiveLayer;
use towergate_testkit::client::get_from;

/// The current blocks, one per line.
async fn blocks(State(evasive): State<EvasiveLayer>) -> String {
    let mut out = String::new();
    for b in evasive.blocks() {
        out.push_str(&format!(
            "{} over the {} limit, {} refused, until {}\n",
            b.client,
            b.reason,
            b.refused,
            humantime::format_rfc3339_seconds(b.until)
        ));
    }
    out
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "towergate_evasive=warn".into()),
        )
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned())
        .parse()
        .expect("ADDR is an address like 127.0.0.1:3000");

    // The three lines: build (the article's values), spawn the sweeper, add the layer.
    let (evasive, sweeper) = EvasiveLayer::builder()
        .page_count(2)
        .page_interval(Duration::from_secs(1))
        .site_count(30)
        .site_interval(Duration::from_secs(1))
        .blocking_period(Duration::from_secs(30))
        .max_tracked(314_739)
        .whitelist("127.0.0.1".parse::<IpAddr>().unwrap())
        .build()
        .expect("valid limits");
    tokio::spawn(sweeper.run());
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/{*path}", get(|| async { "hello\n" }))
        .route("/blocks", get(blocks))
        .with_state(evasive.clone())
        .layer(evasive.clone());

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr}");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    if addr.ip().is_loopback() && addr.is_ipv4() {
        for (from, path) in [
            ("127.0.0.1", "/"),
            ("127.0.0.1", "/"),
            ("127.0.0.1", "/"),
            ("127.0.0.2", "/"),
            ("127.0.0.2", "/"),
            ("127.0.0.2", "/"),
            ("127.0.0.2", "/elsewhere"),
            ("127.0.0.1", "/blocks"),
        ] {
            let res = get_from(from.parse().unwrap(), addr, path).await?;
            println!(
                "{from} GET {path} -> {} {}",
                res.status,
                res.text().trim_end()
            );
        }
        let stats = evasive.stats();
        println!(
            "stats: {} block(s), {} request(s) refused, {} client(s) tracked",
            stats.blocks, stats.rejected, stats.tracked
        );
    }
    println!("serving until Ctrl-C");
    tokio::select! {
        r = server => r.expect("server task").map(|_| ()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
