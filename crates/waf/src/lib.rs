//! ModSecurity rules, the OWASP Core Rule Set among them, as a tower layer.
//!
//! [`WafLayer`] runs one [libmodsecurity 3](https://github.com/owasp-modsecurity/ModSecurity)
//! transaction per request: the connection (client address), the request line, the request
//! headers (phase 1), the request body (phase 2, read up to `request_body_limit`), and,
//! once the inner service answers, the response headers (phase 3), the response body when
//! `response_body_access` is on and its type is listed (phase 4, read up to
//! `response_body_limit`), then the audit log (phase 5) as the rules configure it. When a rule's disruptive action fires (`deny`,
//! `block` under the CRS's anomaly scoring, `redirect`), the request is answered with the
//! status the rule names (usually `403 Forbidden`) or a redirect, and the rule's id and
//! message go to a `tracing` event (target `towergate_waf`, "request blocked"). Every rule
//! that logs is reported the same way ("rule matched"), so `SecRuleEngine DetectionOnly`
//! shows what would have been blocked.
//!
//! It replaces Apache's mod_security:
//!
//! ```text
//! <IfModule mod_security2.c>
//!     Include conf/modsecurity/*.conf
//! </IfModule>
//! ```
//!
//! which, in towergate's config file, with Debian's `modsecurity-crs` package, reads
//!
//! ```toml
//! [waf]
//! rules_files = [
//!   "/etc/modsecurity/crs/crs-setup.conf",
//!   "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf",
//!   "/usr/share/modsecurity-crs/rules/*.conf",
//!   "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf",
//! ]
//! ```
//!
//! See [`WafConfig`] for the keys.
//!
//! The request body is held in memory up to `request_body_limit` (`SecRequestBodyLimit`,
//! 128 KiB by default) and inspected; a larger one is refused with `413`
//! (`request_body_limit_action = "Reject"`, the default) or inspected up to the limit and
//! forwarded whole (`"ProcessPartial"`). The body is then replayed to the inner service,
//! followed by whatever the client has not sent yet. An answer whose body is inspected is
//! held back the same way, up to `response_body_limit` (512 KiB by default; over it,
//! `"ProcessPartial"`, the default for answers, inspects that much and sends the whole
//! answer, `"Reject"` answers `500`), so that a phase 4 rule can still refuse it; other
//! answers stream through untouched.
//!
//! Rules are compiled once ([`WafConfig::build`]) and shared by every clone of the layer;
//! each request gets its own transaction, so requests are inspected concurrently, without a
//! lock. Phase 1 and 2 of a request without a large body run on the calling task (a
//! fraction of a millisecond with the CRS); a body over 16 KiB is evaluated on tokio's
//! blocking pool, as is a response body over 16 KiB and the audit log of a request that
//! matched a rule.
//!
//! Differences from Apache's mod_security 2:
//! - The engine is libmodsecurity 3 (ModSecurity-nginx's), which reads the same rule
//!   language; a few directives of version 2 are not supported by it
//!   (see its reference manual).
//! - `engine`, `request_body_access`, `request_body_limit*` and `response_body_*` are keys
//!   of the section rather than directives; `SecRuleEngine` in a rules file still overrides
//!   `engine`, but response bodies are read only when `response_body_access` says so.
//!   The layer's own body limit (a memory bound) is enforced before ModSecurity sees the
//!   body; in `DetectionOnly` (the `engine` key) it never rejects.
//! - `SecServerSignature` is the gateway's `server.signature`.
//!
//! Counters (inspected, blocked, detected) are kept for metrics: [`WafLayer::stats`].
//!
//! Building needs libmodsecurity 3 and pkg-config (Debian: `apt install libmodsecurity-dev
//! pkg-config`, and `modsecurity-crs` for the CRS). Without them the crate still builds,
//! but [`WafConfig::build`] returns an error saying so ([`version`] tells which library
//! is linked); the `require-libmodsecurity` feature makes a missing library a build error.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get, body::Body, http::{Request, StatusCode}};
//! use towergate_waf::WafLayer;
//! use tower::ServiceExt;
//!
//! # async fn demo() {
//! # if !towergate_waf::available() { return; }
//! let waf = WafLayer::from_rules(
//!     r#"SecRule ARGS:debug "@streq 1" "id:10001,phase:1,deny,status:403,msg:'debug switch'""#,
//! ).unwrap();
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(waf.clone());
//!
//! let req = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
//! let res = app.clone().oneshot(req("/?page=1")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = app.oneshot(req("/?debug=1")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(waf.stats().blocked, 1);
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```

mod body;
mod config;
mod ffi;
mod future;
mod glob;
mod layer;

pub use body::WafBody;
pub use config::{BodyLimitAction, Engine, WafConfig, WafError};
pub use future::ResponseFuture;
pub use layer::{Waf, WafLayer, WafStats};

/// The linked libmodsecurity's version, e.g. `ModSecurity v3.0.9 (Linux)`.
pub fn version() -> String {
    ffi::version()
}

/// Whether this build has libmodsecurity (see the crate docs).
pub fn available() -> bool {
    ffi::AVAILABLE
}

#[cfg(test)]
mod tests;
