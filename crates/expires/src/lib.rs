//! Caching headers for responses: `Expires` and `Cache-Control: max-age`, from a default
//! rule and rules by content type. This is Apache's `mod_expires` (`ExpiresActive`,
//! `ExpiresDefault`, `ExpiresByType`) as a tower layer.
//!
//! The article's front end tells clients to keep what they fetched for two hours:
//!
//! ```apache
//! ExpiresActive On
//! ExpiresDefault "access plus 2 hours"
//! ```
//!
//! becomes `[expires] default = "access plus 2 hours"`, and every successful answer gets
//! `Expires: <now + 2h>` and `Cache-Control: max-age=7200`.
//!
//! # What it does
//!
//! - **Rules** are written in Apache's syntax and parsed into an [`ExpiresRule`]:
//!   `access plus 1 month 15 days 2 hours`, `modification plus 30 minutes`, or the short
//!   codes `A7200` / `M7200` (see [`ExpiresRule`] for units and errors).
//! - **Which rule**: the response's media type (without parameters, case-insensitive)
//!   looked up in `by_type`; then a `major/*` wildcard; then `default`. No rule, nothing
//!   is done.
//! - **Which responses**: all but errors. Like Apache (`ap_is_HTTP_ERROR`), statuses
//!   from 400 up are left alone, and 2xx and 3xx (including 304 and redirects) get the
//!   headers.
//! - **A response that already has `Expires`** (a backend decided) is left as it is.
//! - **`Cache-Control`**: `max-age=N` is added to an existing header as one merged value
//!   (`public, max-age=7200`), never as a second header line.
//! - **`access` rules** count from the moment the response passes the layer; `Expires`
//!   is that time plus the rule, `max-age` the rule's seconds.
//! - **`modification` rules** count from the response's `Last-Modified`. Without a
//!   parsable one, nothing is done. An expiry already in the past gives `max-age=0` and
//!   `Expires` = now, as in Apache.
//!
//! # Differences from Apache
//!
//! - `modification` uses the `Last-Modified` header: Apache uses the modification time
//!   of a file on its own disk, so behind `mod_proxy` its `modification` rules never
//!   apply. A `Last-Modified` in the future counts as now.
//! - A response whose `Cache-Control` already has a `max-age` is left alone entirely.
//!   Apache appends a second `max-age` (and a new `Expires`), leaving caches to pick one.
//! - `access` counts from the time the response is produced rather than from the time the
//!   request arrived, so `Expires` minus the `Date` hyper sends equals `max-age` even
//!   for slow backends.
//! - Units must be written out (`hours`, `hour`); Apache also takes any prefix (`h`, and
//!   `m` meaning months). Rules longer than 2^31 - 1 seconds (about 68 years) are refused.
//! - `ExpiresByType` wildcards (`text/*`) are supported as in Apache 2.4.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::Request;
//! use tower::ServiceExt;
//! use towergate_expires::ExpiresLayer;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let expires = ExpiresLayer::builder()
//!     .default("access plus 2 hours")
//!     .by_type("image/png", "access plus 1 month")
//!     .build()
//!     .unwrap();
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(expires.clone());
//!
//! let res = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["cache-control"], "max-age=7200");
//! assert!(res.headers().contains_key("expires"));
//! assert_eq!(expires.stats().snapshot().applied, 1);
//! # });
//! ```
//!
//! From a config file (`[expires]`, see [`ExpiresConfig`]):
//!
//! ```
//! use towergate_expires::{ExpiresConfig, ExpiresLayer};
//!
//! let config: ExpiresConfig = toml::from_str(r#"
//!     default = "access plus 2 hours"
//!     by_type = { "image/png" = "access plus 1 month", "text/css" = "A86400" }
//! "#).unwrap();
//! let layer = ExpiresLayer::from_config(&config);
//! # let _ = layer;
//! ```
//!
//! Decisions are logged at `trace` level under the target `towergate_expires` and counted
//! in [`ExpiresLayer::stats`].

mod config;
mod layer;
mod rule;

pub use config::{ExpiresBuilder, ExpiresConfig, ExpiresError, MediaRange};
pub use layer::{Expires, ExpiresLayer, ExpiresSnapshot, ExpiresStats, ResponseFuture};
pub use rule::{ExpiresBase, ExpiresRule, RuleError};
