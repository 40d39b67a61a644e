//! Request size limits for any tower HTTP service: Apache's `LimitRequestLine`,
//! `LimitRequestFields`, `LimitRequestFieldSize` and `LimitRequestBody` as one layer,
//! [`RequestLimitsLayer`]. Oversize requests are refused before any other work is done.
//!
//! | limit | replaces | what is counted | over the limit |
//! |---|---|---|---|
//! | `line` | `LimitRequestLine` | the request line `METHOD target HTTP/1.1`, without its CRLF ([`request_line_len`]) | 414 URI Too Long |
//! | `fields` | `LimitRequestFields` | header fields; a repeated name counts once per field | 431 Request Header Fields Too Large |
//! | `field_size` | `LimitRequestFieldSize` | each field as `name: value`, without its CRLF ([`field_len`]) | 431 Request Header Fields Too Large |
//! | `body` | `LimitRequestBody` | body bytes, after chunked decoding | 413 Content Too Large |
//!
//! A value of `0` turns that limit off, as in Apache. The limit itself passes: with
//! `line = 1000`, a 1000-byte request line is served and a 1001-byte one refused. Refusals
//! are short plain-text answers (`431 Request Header Fields Too Large\n`), logged with
//! `tracing` (target `towergate_request_limits`, level debug) and counted
//! ([`RequestLimitsLayer::stats`]).
//!
//! # Bodies
//!
//! - A body whose length is declared (`Content-Length`, or an exact size hint) over the limit
//!   is refused with 413 before the inner service is called: not one body byte is read.
//!   A declared length within the limit is passed through uncounted (hyper holds a body to
//!   its `Content-Length`).
//! - A body of unknown length (chunked, or HTTP/2 without `content-length`) reaches the inner
//!   service as a [`RequestBody`] that counts the bytes as they stream. The frame that would
//!   take it past the limit is withheld and the body fails with [`BodyTooLarge`] instead, so
//!   nothing beyond the limit is handed on. A proxy reading it (hyper's client) aborts the
//!   upstream request, and the upstream never sees a complete request. Whatever the inner
//!   service then answers (a 502 from a proxy, a 400 from an extractor) or fails with, the
//!   layer answers 413, with `Connection: close` since the rest of the body is still unread
//!   on the connection. Error mappings can recognise the cut-off too, with
//!   [`BodyTooLarge::find_in`].
//! - An inner service that answers before the body passes the limit keeps its answer; the
//!   rest of the body is still never handed on.
//!
//! # The server's own parser
//!
//! A layer only sees a request once its head has been read. [`ServerLimits`]
//! ([`RequestLimitsConfig::server_limits`]) gives hyper's HTTP/1 and HTTP/2 parser ceilings
//! just above the limits, so a head far over them is refused while it is read instead of
//! being buffered whole. hyper answers those with the same statuses: 431 for a head that
//! outgrows its buffer or has more fields than its table, 414 for a target of 65534 bytes or
//! more.
//!
//! # Differences from Apache
//!
//! - Too many fields, or one too large, get 431 (RFC 6585), where Apache answers 400. It is
//!   the status hyper's parser gives the same requests, so one status holds whichever of the
//!   two refuses.
//! - Counting starts from the parsed request: a field counts as `name: value` however much
//!   whitespace the client put around the value, and the target as parsed (a `#fragment`,
//!   which clients do not send, is not counted). Folded header lines (obs-fold) never get here:
//!   the parser refuses them with 400.
//! - HTTP/2 has no request line: its `:path` counts as the target of an HTTP/1.1 line.
//! - `LimitRequestBody` is enforced on every request, proxied ones included, and on chunked
//!   bodies while they stream (Apache 2.4 does not apply it to requests it proxies).
//! - Apache documents `0` as "no limit" for `LimitRequestBody` and `LimitRequestFields`; here
//!   it turns off `line` and `field_size` too, leaving the parser's ceilings.
//! - Defaults are current Apache's (`body` 1 GiB since 2.4.54, `fields` 100, `field_size` and
//!   `line` 8190); Apache 2.2, the article's, had no body limit.
//! - Trailer fields are not counted against `fields` or `field_size`.
//!
//! # Example
//!
//! The article's limits in front of a plain axum router:
//!
//! ```
//! use axum::{Router, body::Body, routing::post};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use towergate_request_limits::RequestLimitsLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = Router::new()
//!     .route("/upload", post(|body: String| async move { format!("got {} bytes", body.len()) }))
//!     .layer(RequestLimitsLayer::new().body(102400).fields(40).field_size(1000).line(1000));
//!
//! // Within the limits.
//! let res = app.clone().oneshot(Request::post("/upload").body(Body::from("hello")).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//!
//! // A request line over 1000 bytes.
//! let long = format!("/upload?{}", "q".repeat(1000));
//! let res = app.clone().oneshot(Request::post(long).body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::URI_TOO_LONG);
//!
//! // A body of unknown length, cut off when it passes 102400 bytes.
//! let chunks = (0..101).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024]));
//! let body = Body::from_stream(futures_util::stream::iter(chunks));
//! let res = app.oneshot(Request::post("/upload").body(body).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
//! # }
//! ```
//!
//! From configuration, `[limits]` in TOML ([`RequestLimitsConfig`]), checked by
//! [`RequestLimitsConfig::build`]:
//!
//! ```
//! use towergate_request_limits::RequestLimitsConfig;
//!
//! let config: RequestLimitsConfig = toml::from_str("body = 102400\nfields = 40\nfield_size = 1000\nline = 1000").unwrap();
//! let layer = config.build().unwrap();
//! assert_eq!(layer.config().fields, 40);
//! ```

mod body;
mod config;
mod future;
mod layer;
mod service;

pub use body::{BodyTooLarge, RequestBody};
pub use config::{
    DEFAULT_BODY, DEFAULT_FIELD_SIZE, DEFAULT_FIELDS, DEFAULT_LINE, LimitsConfigError,
    MAX_HEAD_BUFFER, RequestLimitsConfig, ServerLimits,
};
pub use future::ResponseFuture;
pub use layer::{LimitsStats, RequestLimitsLayer};
pub use service::{RequestLimits, field_len, request_line_len};
