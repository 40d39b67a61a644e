//! Character and pattern rules for the URL path, as a tower layer.
//!
//! [`CharFilterLayer`] refuses requests whose percent-decoded path breaks one of its
//! [`Rule`]s, with `403 Forbidden` unless the rule says otherwise. It replaces the
//! article's mod_rewrite filter,
//!
//! ```text
//! RewriteRule [^a-zA-Z0-9|\.|/|_|-]  -  [F]
//! ```
//!
//! which, in the config file, reads
//!
//! ```toml
//! [[charfilter.rule]]
//! deny = '[^a-zA-Z0-9|\.|/|_|-]'
//! ```
//!
//! A `deny` rule fires when its pattern matches anywhere in the path (as `RewriteRule`
//! does); an `allow` rule fires when its pattern does not match (`RewriteRule !pattern`).
//! Rules are tried in order and the first that fires answers; a rule with
//! [`Action::Log`] only logs and counts, so a new rule can be watched before it is
//! enforced. A rule's [`Scope`] can extend it to the query string.
//!
//! Patterns use the `regex` crate's syntax and are compiled to a DFA ([`Pattern`]): a match
//! takes time linear in the path, needs no lock, and allocates nothing, since `%XX`
//! escapes are decoded byte by byte as the automaton reads them.
//!
//! Differences from Apache:
//! - Apache decodes the path once and matches the result; so does this layer, but it
//!   expects the path normalised first (towergate's `CanonicalRequestLayer`, which also
//!   refuses encoded slashes with 400 and resolves `%2e%2e` segments). Without it, `%2F`
//!   decodes to `/` and `..` segments are matched as written.
//! - The query string is never matched by `RewriteRule`; here a rule can opt in with
//!   `scope = "query"` or `"both"` (percent-decoded, `+` left as it is).
//! - Patterns are regular expressions without PCRE's backtracking features (no
//!   look-around, no back-references); classes match bytes, as PCRE does in Apache
//!   without its UTF-8 flag. `(?i)` stands for `[NC]`. A pattern whose automaton would
//!   exceed 2 MiB is refused when it is read.
//! - Actions are a status (`[F]` = 403, `[G]` = 410, or any 4xx/5xx) or `log`; rewriting
//!   and redirecting are not this layer's job.
//!
//! Each refusal is logged (`tracing` target `towergate_charfilter`) and counted
//! ([`CharFilterLayer::stats`]).
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get, body::Body, http::{Request, StatusCode}};
//! use towergate_charfilter::{Action, CharFilterLayer, Rule};
//! use tower::ServiceExt;
//!
//! # async fn demo() {
//! let app = Router::new()
//!     .route("/{*path}", get(|| async { "hello" }))
//!     .layer(CharFilterLayer::article());
//!
//! let req = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
//! let res = app.clone().oneshot(req("/news_rss/today.html")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = app.clone().oneshot(req("/news_rss/to%20day.html")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! let res = app.oneshot(req("/~admin/")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//!
//! // Custom rules: 404 for PHP probes, and only watch query strings with quotes.
//! let layer = CharFilterLayer::new([
//!     Rule::deny(r"(?i)\.php$").unwrap().action(Action::Refuse(StatusCode::NOT_FOUND)),
//!     Rule::deny("['\"]").unwrap().scope(towergate_charfilter::Scope::Query).action(Action::Log),
//! ]);
//! let app = Router::new().route("/{*path}", get(|| async { "hello" })).layer(layer.clone());
//! let res = app.clone().oneshot(req("/wp-login.PHP")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::NOT_FOUND);
//! let res = app.oneshot(req("/search?q=%27%20or%201=1")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(layer.stats().logged, 1);
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```
//!
//! From a config file, see [`CharFilterConfig`].

mod config;
mod future;
mod layer;
mod pattern;
mod rule;

pub use config::CharFilterConfig;
pub use future::ResponseFuture;
pub use layer::{ARTICLE_RULE, CharFilter, CharFilterLayer, CharFilterStats};
pub use pattern::{Pattern, PatternError, SIZE_LIMIT};
pub use rule::{Action, Rule, RuleKind, Scope};
