//! Custom error responses: when an answer has an error status, send a configured document
//! instead of its body. This is Apache's `ErrorDocument` (and, for backends' own error
//! pages, `ProxyErrorOverride`) as a tower layer.
//!
//! A document is one of Apache's three flavours ([`ErrorDocument`]):
//!
//! - **text** (`ErrorDocument 403 "your_custom_error_message_here"`): the text is the
//!   body, `Content-Type: text/plain; charset=utf-8` (or the `content_type` given),
//!   `Content-Length` exact, the status kept;
//! - **a local path** (`ErrorDocument 404 /missing.html`): an internal redirect. The path
//!   is requested through the service the layer wraps (so through the same stack: guards,
//!   router, backend), and its body is sent with the *original* status;
//! - **an external URL** (`ErrorDocument 402 http://www.example.com/info.html`): a
//!   `302 Found` with `Location`.
//!
//! Documents are chosen by exact status (400 to 599) or, as an extension, by class
//! (`4xx`, `5xx`); an exact status wins. Answers to `HEAD` get the same headers and no
//! body.
//!
//! # Whose answers are replaced
//!
//! The server's own answers always are: the 403 of a guard, a 413 or 414 of the limits,
//! the 502, 503 and 504 of the forwarder, an axum handler's 404. A backend's own error
//! page passes through unless overriding is asked for, globally (`override_backend`,
//! `ProxyErrorOverride On`) or per route ([`OverrideErrors`]).
//!
//! The two are told apart by one mark: a response relayed from a backend carries the
//! [`UpstreamResponse`] extension, inserted where upstream answers come in (towergate's
//! dispatch does it). Anything without it is the server's own answer, so layers that
//! answer by themselves need no cooperation, and a forgotten mark can only ever make a
//! backend's page be replaced, never hide a custom page from a client.
//!
//! # The internal redirect
//!
//! - The internal request is `GET` (`HEAD` stays `HEAD`) for the document's path, with
//!   the client's headers and request extensions (client address, TLS mark) minus
//!   body, conditional and range headers, plus an [`ErrorDocumentRequest`] extension
//!   naming the original status and URI.
//! - It goes to a clone of the inner service, made ready first as tower requires. The
//!   clone and the captured headers are taken only when a local document is configured.
//! - Loop-safe: an answer to a request carrying [`ErrorDocumentRequest`] is never
//!   replaced, and when the document cannot be fetched (error status, service error) the
//!   original answer is sent unchanged and the failure logged and counted.
//! - The answer keeps the original status and headers (`Retry-After`,
//!   `WWW-Authenticate`, `Connection: close`, ...) and takes the document's body with its
//!   `Content-Type`, `Content-Length`, `Content-Encoding` and `Content-Language`. The
//!   document's caching headers are not copied.
//! - Requests inside the layer have the body type [`RequestBody<B>`] (the client's body,
//!   or empty for the internal request); every layer inside stays generic over it.
//!
//! # Differences from Apache
//!
//! - Text is sent as `text/plain; charset=utf-8` (Apache: `text/html`), unless a
//!   `content_type` is given.
//! - A failing local document gives the original answer; Apache appends "Additionally,
//!   a ... error was encountered while trying to use an ErrorDocument".
//! - Classes (`5xx`) are an extension. A URL document for a class never answers 401,
//!   and a URL for 401 itself is refused (Apache only warns that the client loses the
//!   password prompt).
//! - Guards inside the layer see the internal request as Apache's access checks do: a
//!   client refused by an address rule is refused the document too, and gets the
//!   original 403. Layers that count requests can skip it by its
//!   [`ErrorDocumentRequest`] mark, as `mod_evasive` skips internal redirects.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt;
//! use tower::{Layer, ServiceExt};
//! use towergate_error_pages::ErrorPagesLayer;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let pages = ErrorPagesLayer::builder()
//!     .text(403, "your_custom_error_message_here")
//!     .path(404, "/missing.html")
//!     .build()
//!     .unwrap();
//! let router = Router::new()
//!     .route("/secret", get(|| async { (StatusCode::FORBIDDEN, "403 Forbidden\n") }))
//!     .route("/missing.html", get(|| async { "<h1>Not here</h1>" }));
//! // Wrap the whole router, so a local document is routed like any request
//! // (`Router::layer` would wrap each route on its own).
//! let app = pages.layer(router);
//!
//! let res = app.clone().oneshot(Request::get("/secret").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "your_custom_error_message_here");
//!
//! // No route: axum answers 404, and the local document is served with that status.
//! let res = app.oneshot(Request::get("/nowhere").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::NOT_FOUND);
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "<h1>Not here</h1>");
//! # });
//! ```
//!
//! From a config file (`[error_pages]`, see [`ErrorPagesConfig`]):
//!
//! ```
//! use towergate_error_pages::{ErrorPagesConfig, ErrorPagesLayer};
//!
//! let config: ErrorPagesConfig = toml::from_str(r#"
//!     403 = { text = "your_custom_error_message_here" }
//!     "5xx" = { text = "The server has made a mistake." }
//!     402 = { url = "http://www.example.com/subscription_info.html" }
//! "#).unwrap();
//! let layer = ErrorPagesLayer::from_config(&config).unwrap();
//! # let _ = layer;
//! ```
//!
//! Replacements are logged under the target `towergate_error_pages` (`debug`; a failing
//! local document at `warn`) and counted in [`ErrorPagesLayer::stats`].

mod body;
mod config;
mod future;
mod layer;
mod marker;

pub use body::RequestBody;
pub use config::{
    ErrorDocument, ErrorPagesBuilder, ErrorPagesConfig, ErrorPagesError, StatusMatch,
};
pub use future::ResponseFuture;
pub use layer::{ErrorPages, ErrorPagesLayer, ErrorPagesSnapshot, ErrorPagesStats};
pub use marker::{ErrorDocumentRequest, OverrideErrors, UpstreamResponse};

#[cfg(test)]
mod tests;
