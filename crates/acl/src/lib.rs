//! Allow or deny requests by client address and network, as a tower layer.
//!
//! [`AclLayer`] answers `403 Forbidden` to clients its [`Policy`] denies and passes the
//! rest on. It replaces Apache 2.2's `mod_authz_host` directives `Order`, `Allow from`
//! and `Deny from` (the article's `Order deny,allow` / `Allow from all`), and covers what
//! Apache 2.4's `Require ip` and nginx's `allow`/`deny` express:
//!
//! - [`Policy::Order`]: Apache's evaluation. `Order deny,allow` allows unless a `deny`
//!   names the client and no `allow` does; `Order allow,deny` denies unless an `allow`
//!   names the client and no `deny` does (`mutual-failure` is accepted, with the same
//!   outcome).
//! - [`Policy::FirstMatch`]: a rule list as nginx reads it; the first rule naming the
//!   client decides, and a stated default answers everyone else.
//! - Per location: a policy for a path prefix replaces the global one below that prefix,
//!   as a `<Location>` block's directives do; the longest matching prefix wins.
//!
//! The client is whatever [`towergate_client_addr::client_ip`] says: the socket peer, or
//! the real client behind trusted proxies when
//! [`ClientAddrLayer`](towergate_client_addr::ClientAddrLayer) runs before this layer.
//! Sources are `all`, IPv4 and IPv6 addresses and CIDR networks; an IPv4-mapped IPv6
//! client (`::ffff:10.0.0.1`) counts as its IPv4 address. Locations match the path as it
//! arrives: put a path-normalising layer (towergate's `CanonicalRequestLayer`) in front so
//! `/open/../paid_user` cannot slip past a location.
//!
//! Differences from Apache:
//! - host names and partial addresses (`Allow from .example.com`, `Allow from 10.1`) are
//!   not accepted: write CIDR networks (`10.1.0.0/16`); `env=` variables are not
//!   supported;
//! - a config that lists `allow`/`deny` must name its `order` (Apache silently defaults
//!   to `Deny,Allow`, which lets everyone in when only `Allow from` lines are written),
//!   and a rule list must name its `default`;
//! - a client whose address is unknown (no socket address recorded) is named only by
//!   `all`.
//!
//! Each denial is logged (`tracing` target `towergate_acl`) and counted ([`AclLayer::stats`]).
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get, body::Body, http::{Request, StatusCode}};
//! use towergate_acl::{AclLayer, Order, Policy};
//! use towergate_client_addr::PeerAddr;
//! use tower::ServiceExt;
//!
//! # async fn demo() {
//! // Order allow,deny / Allow from 10.0.0.0/8 / Allow from 2001:db8::/32
//! let policy = Policy::order(Order::AllowDeny)
//!     .allow("10.0.0.0/8".parse::<ipnet::IpNet>().unwrap())
//!     .allow("2001:db8::/32".parse::<ipnet::IpNet>().unwrap());
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(AclLayer::new(policy));
//!
//! let from = |peer: &str| {
//!     let mut req = Request::get("/").body(Body::empty()).unwrap();
//!     req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
//!     req
//! };
//! let res = app.clone().oneshot(from("10.1.2.3:50000")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = app.clone().oneshot(from("[2001:db8::5]:50000")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = app.oneshot(from("192.0.2.1:50000")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```
//!
//! In an axum app served with `into_make_service_with_connect_info::<SocketAddr>()`, turn
//! on `towergate-client-addr`'s `axum` feature and the peer is read from `ConnectInfo`
//! instead of [`PeerAddr`](towergate_client_addr::PeerAddr).
//!
//! From a config file, see [`AclConfig`].

mod config;
mod future;
mod layer;
mod policy;

pub use config::{AclConfig, Location};
pub use future::ResponseFuture;
pub use layer::{Acl, AclBuilder, AclLayer, AclStats};
pub use policy::{Access, Order, Policy, Source, SourceError};
