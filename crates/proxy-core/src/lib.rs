//! The forwarding core of towergate: what Apache's `mod_proxy` with `ProxyPass`,
//! `ProxyPassReverse` and `ProxyPreserveHost` does, as tower parts.
//!
//! - [`CanonicalRequestLayer`] refuses smuggling and forward-proxy requests and normalises
//!   the path, so every later layer sees the path the upstream will get.
//! - [`RouteTable`] finds the longest matching route prefix.
//! - [`Forward`] sends a request to the [`Upstream`] its [`Target`] extension names, over
//!   a pooled keep-alive client, streaming both bodies.
//!
//! The router (or a balancer) decides *where* a request goes by inserting a [`Target`];
//! [`Forward`] decides *how* it is sent. Errors come back as [`ForwardError`]s saying
//! whether a retry on another member is safe, and become 502/504 answers in one place,
//! [`ForwardError::to_response`].
//!
//! ```
//! use std::sync::Arc;
//! use towergate_proxy::{Forward, ForwardConfig, RouteInfo, Target, Upstream};
//! use tower::ServiceExt;
//!
//! # async fn demo() {
//! let forward = Forward::new(ForwardConfig::default());
//! let target = Target {
//!     route: Arc::new(RouteInfo::new("news", "/news_rss/")),
//!     upstream: Arc::new(Upstream::parse("http://127.0.0.1:9/news_rss/").unwrap()),
//! };
//! let mut req = http::Request::get("/news_rss/today")
//!     .header("host", "example.com")
//!     .body(http_body_util::Empty::<bytes::Bytes>::new())
//!     .unwrap();
//! req.extensions_mut().insert(target);
//! // Nothing listens on port 9: a connect error, safe to retry elsewhere, answered 502.
//! let err = forward.oneshot(req).await.unwrap_err();
//! assert!(err.is_retryable());
//! assert_eq!(err.status(), 502);
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```

mod body;
mod canonical;
mod client;
mod error;
mod forward;
pub mod headers;
mod lazy_sleep;
mod path;
mod pool;
mod route;
mod upgrade;
mod upstream;
mod upstream_tls;
mod watch;

pub use body::{BodyError, ProxyBody, UpstreamBody};
pub use canonical::{CanonicalRequest, CanonicalRequestLayer, Refusal};
pub use error::{ForwardError, ForwardErrorKind, status_response};
pub use forward::{Forward, ForwardConfig, ForwardFuture, FrontTls, Target};
pub use lazy_sleep::LazySleep;
pub use path::{PathError, normalize_path};
pub use route::{Route, RouteInfo, RouteTable};
pub use upgrade::Tunnel;
pub use upstream::{Upstream, UpstreamError};
pub use upstream_tls::{UpstreamTls, UpstreamTlsError};
pub use watch::{BodyObserver, BodyWatch, WatchBody};
