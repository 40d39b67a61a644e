//! The client address that every towergate layer reads, and the layer that decides it.
//!
//! The accept loop inserts [`PeerAddr`] (the socket peer) into every request's extensions.
//! [`ClientAddrLayer`] then decides who the client is and inserts [`ClientAddr`]: the
//! socket peer by default, or, when the peer is one of the configured trusted proxies,
//! the right-most untrusted address those proxies reported in `X-Forwarded-For` (or the
//! standard `Forwarded` header). Layers such as the ACL, the flood blocker and the access
//! log call [`client_ip`] instead of looking at sockets, so one decision about who the
//! client is holds for all of them.
//!
//! This replaces Apache's `mod_remoteip` (`RemoteIPHeader X-Forwarded-For`,
//! `RemoteIPTrustedProxy 10.0.0.0/8`), which the article's single front end does not
//! need but a front end behind a CDN or an L4 balancer does. Differences from Apache:
//!
//! - one header is read, `X-Forwarded-For` or `Forwarded` (RFC 7239, its `for=`
//!   parameters), chosen in the configuration; the other is ignored, so a client cannot
//!   slip an address past the proxies in the header they do not write;
//! - trusted proxies are given as addresses or CIDR networks only (no host names, no
//!   `RemoteIPInternalProxyList` files); IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`)
//!   count as their IPv4 address;
//! - the header is left as it is (mod_remoteip removes the addresses it consumed); the
//!   forwarding core appends the socket peer to `X-Forwarded-For` on the way upstream;
//! - an entry that is not an address (`unknown`, an obfuscated `Forwarded` identifier)
//!   ends the walk: the client is the last trusted hop that reported it.
//!
//! A peer that is not a trusted proxy cannot choose its address: its `X-Forwarded-For`
//! is ignored (and counted in [`ClientAddrStats::untrusted_header`]).
//!
//! # Example
//!
//! Behind a load balancer at `10.0.0.2`, the client is what it reports. Outside axum,
//! the accept loop inserts [`PeerAddr`]; an axum app served with
//! `into_make_service_with_connect_info::<SocketAddr>()` can instead turn on this crate's
//! `axum` feature, which reads axum's `ConnectInfo<SocketAddr>` when no `PeerAddr` is set.
//!
//! ```
//! use axum::{Router, routing::get, extract::Request};
//! use towergate_client_addr::{ClientAddrLayer, PeerAddr, client_ip};
//! use tower::ServiceExt;
//!
//! # async fn demo() {
//! let layer = ClientAddrLayer::builder()
//!     .trusted_proxy("10.0.0.0/8".parse().unwrap())
//!     .build();
//! let app = Router::new()
//!     .route("/", get(|req: Request| async move { client_ip(&req).unwrap().to_string() }))
//!     .layer(layer);
//!
//! // From the trusted balancer: the client it reports.
//! let mut req = Request::get("/")
//!     .header("x-forwarded-for", "203.0.113.7, 10.0.0.3")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! req.extensions_mut().insert(PeerAddr("10.0.0.2:50000".parse().unwrap()));
//! let res = app.clone().oneshot(req).await.unwrap();
//! let body = axum::body::to_bytes(res.into_body(), 64).await.unwrap();
//! assert_eq!(&body[..], b"203.0.113.7");
//!
//! // From anyone else: the socket peer, whatever the header says.
//! let mut req = Request::get("/")
//!     .header("x-forwarded-for", "10.0.0.3")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! req.extensions_mut().insert(PeerAddr("198.51.100.9:50000".parse().unwrap()));
//! let res = app.oneshot(req).await.unwrap();
//! let body = axum::body::to_bytes(res.into_body(), 64).await.unwrap();
//! assert_eq!(&body[..], b"198.51.100.9");
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```

use std::net::{IpAddr, SocketAddr};

use http::{Extensions, Request};

mod config;
mod layer;

pub use config::{ClientAddrConfig, NetSpec, NetSpecError};
pub use layer::{
    ClientAddrBuilder, ClientAddrLayer, ClientAddrStats, ForwardedHeader, SetClientAddr,
};

/// The socket address of the connection's peer, as accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The address the guards treat as the client: the socket peer, or, behind trusted
/// proxies, the client those proxies report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// The client address of a request: [`ClientAddr`] if set, else the [`PeerAddr`]'s IP.
pub fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    client_ip_of(req.extensions())
}

/// [`client_ip`] for a request's extensions alone (after `into_parts`).
pub fn client_ip_of(ext: &Extensions) -> Option<IpAddr> {
    ext.get::<ClientAddr>()
        .map(|c| c.0)
        .or_else(|| peer_ip(ext))
}

/// The socket peer's IP, from [`PeerAddr`] (with the `axum` feature, from axum's
/// `ConnectInfo<SocketAddr>` when no `PeerAddr` is set).
pub fn peer_ip(ext: &Extensions) -> Option<IpAddr> {
    peer_addr(ext).map(|p| p.ip())
}

/// The socket peer's address, from [`PeerAddr`] (with the `axum` feature, from axum's
/// `ConnectInfo<SocketAddr>` when no `PeerAddr` is set).
pub fn peer_addr(ext: &Extensions) -> Option<SocketAddr> {
    if let Some(p) = ext.get::<PeerAddr>() {
        return Some(p.0);
    }
    #[cfg(feature = "axum")]
    if let Some(c) = ext.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(c.0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addr_wins_over_peer() {
        let mut req = Request::new(());
        assert_eq!(client_ip(&req), None);
        req.extensions_mut()
            .insert(PeerAddr("127.0.0.2:4000".parse().unwrap()));
        assert_eq!(client_ip(&req), Some("127.0.0.2".parse().unwrap()));
        req.extensions_mut()
            .insert(ClientAddr("10.0.0.9".parse().unwrap()));
        assert_eq!(client_ip(&req), Some("10.0.0.9".parse().unwrap()));
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info_is_the_peer() {
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo::<SocketAddr>(
                "[::1]:4000".parse().unwrap(),
            ));
        assert_eq!(client_ip(&req), Some("::1".parse().unwrap()));
        req.extensions_mut()
            .insert(PeerAddr("127.0.0.2:4000".parse().unwrap()));
        assert_eq!(client_ip(&req), Some("127.0.0.2".parse().unwrap()));
    }
}
