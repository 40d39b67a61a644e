//! An Apache-format access log for any tower HTTP service: `LogFormat` and `CustomLog`
//! (mod_log_config) with mod_logio's byte counts, as one layer, [`AccessLogLayer`].
//!
//! The format string is parsed once into a [`LogFormat`]; unknown directives are refused
//! with an error naming them. Each request gets one line, written when its response body
//! has been sent (or has failed, or was dropped because the client went away), so the
//! byte counts and the duration are real. Lines go to a [`LogWriter`]: a file or stdout,
//! written by a thread of its own, never by the async runtime.
//!
//! # Directives
//!
//! The built-in formats are Apache's: [`COMMON`], [`COMBINED`] (the article's
//! `CustomLog logs/access_log combined`) and [`COMBINEDIO`].
//!
//! | directive | logs |
//! |---|---|
//! | `%h`, `%a` | the client address ([`towergate_client_addr::client_ip`]) |
//! | `%{c}h`, `%{c}a` | the connection's peer address |
//! | `%A` | the local address the request came in on ([`LocalAddr`]) |
//! | `%l`, `%u` | `-` (no identd, no authentication here) |
//! | `%t` | the time the request started, `[10/Oct/2000:13:55:36 +0000]` |
//! | `%{sec}t` `%{msec}t` `%{usec}t` `%{msec_frac}t` `%{usec_frac}t` | the same as numbers |
//! | `%r` | the request line as received: `GET /a?b HTTP/1.1` |
//! | `%m` `%U` `%q` `%H` | method, path, `?query` (or nothing), protocol |
//! | `%s`, `%>s` | the status sent |
//! | `%b`, `%B` | response body bytes sent; `%b` logs `-` for none |
//! | `%O`, `%I`, `%S` | bytes sent, received, both, headers included (mod_logio) |
//! | `%{Name}i`, `%{Name}o` | a request or response header (repeated ones joined by `, `) |
//! | `%D`, `%T`, `%{ms}T`, `%{us}T` | time taken, in microseconds, seconds, ms, µs |
//! | `%v`, `%V` | the server's name, the host the request named |
//! | `%p`, `%{local}p`, `%{remote}p` | the port the request named (else the local one), local, peer |
//! | `%P` | the process id |
//! | `%%` | a percent sign |
//!
//! Conditions work as in Apache: `%400,501{User-Agent}i` logs the header only for those
//! statuses and `-` otherwise; `%!200,304{Referer}i` the opposite. `\n`, `\t`, `\"`, `\\`
//! in the format stand for themselves as in httpd.conf.
//!
//! Every value a client controls is escaped exactly as Apache's `ap_escape_logitem` does:
//! `"` and `\` get a backslash, `\n` `\r` `\t` `\b` `\v` their C escapes, other control
//! characters and bytes outside printable ASCII `\xhh`. A client cannot end a line or a
//! quoted field, so it cannot forge lines.
//!
//! # Writing
//!
//! A finished line is formatted into a reusable per-thread buffer and copied into a
//! bounded buffer (sharded by thread, each shard behind its own briefly held mutex). A
//! dedicated writer thread writes the buffers out with blocking I/O every
//! `flush_interval` (1 s by default), sooner when a buffer is half full. **When the writer
//! falls behind** (a stalled disk, a blocked stdout pipe) and the buffer is full, new lines
//! are dropped, counted ([`LogWriterStats::dropped`]) and reported at `warn` level by the
//! writer: memory stays bounded and no request waits for the disk.
//! [`LogWriter::flush`] waits until everything queued so far is written;
//! [`LogWriter::reopen`] reopens the file by its path after log rotation moved it (the
//! towergate gateway calls it on `SIGUSR1` and on reload). Lines from different threads
//! are written in batches, so they are not strictly in completion order (nor are
//! Apache's, whose `%t` is the start time).
//!
//! # Differences from Apache
//!
//! - `%t` is in UTC (`+0000`): the process never reads the local time zone. Only the
//!   listed `%{...}t` forms are known; strftime formats are refused.
//! - `%h` is always an address (`HostnameLookups Off`). Behind trusted proxies it is the
//!   client they report, like `%a` with mod_remoteip: the access log sits outside the
//!   layer that decides the client, so that layer's decision reaches it through
//!   [`LogClientAddrLayer`] placed just inside it. Requests refused before that point
//!   log the socket peer, as Apache does for requests it refuses before mod_remoteip runs.
//! - `%s` and `%>s` are the same: the status sent (there are no internal redirects whose
//!   first status could differ).
//! - `%U` is the path as received, not decoded or normalised: the layer is outermost.
//!   `%r` is rebuilt from the parsed request (method, target as sent, version), which
//!   is the line the client sent except for how it spaced it. HTTP/2 logs its `:path`
//!   as the target and `HTTP/2.0` as the protocol, as mod_http2 does.
//! - `%u` and `%l` log `-`; cookies (`%{..}C`), environment variables (`%{..}e`), notes,
//!   file names and connection status (`%X`) are refused with an error saying so.
//! - `%I`, `%O`, `%S` count the heads as hyper writes them for HTTP/1.1 (status line,
//!   headers, the `date` and framing headers hyper adds, chunk framing) and the body bytes
//!   as read and sent; TLS is not counted, HTTP/2 heads count uncompressed. `%O`/`%b`
//!   count a chunk when it is handed to the server: a connection that fails mid-write may
//!   have sent a little less. `%I` counts body bytes as the service reads them.
//! - A request whose inner service failed is logged with status 500; one whose client
//!   went away before the answer began, with 499 (nginx's code; Apache would log the
//!   status it eventually had).
//!
//! # Example
//!
//! The article's `combined` format, in a plain axum app:
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use towergate_access_log::{AccessLogLayer, LogFormat, LogWriter};
//! use towergate_client_addr::PeerAddr;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("access_log");
//! let writer = LogWriter::file(&path).unwrap();
//! let app = Router::new()
//!     .route("/", get(|| async { "hello\n" }))
//!     .layer(AccessLogLayer::new(LogFormat::combined(), writer.clone()));
//!
//! // The server puts the peer address on each request (here, by hand).
//! let mut req = Request::get("/?lang=en")
//!     .header("user-agent", "curl/8.5 \"quoted\"")
//!     .body(Body::empty())
//!     .unwrap();
//! req.extensions_mut().insert(PeerAddr("192.0.2.7:50000".parse().unwrap()));
//! let res = app.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//!
//! // The line is written once the body has been sent: here, read.
//! axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
//! writer.flush().await.unwrap();
//! let log = std::fs::read_to_string(&path).unwrap();
//! assert!(log.starts_with("192.0.2.7 - - ["), "{log}");
//! assert!(log.ends_with(r#"+0000] "GET /?lang=en HTTP/1.1" 200 6 "-" "curl/8.5 \"quoted\""
//! "#), "{log}");
//! # }
//! ```
//!
//! A custom format, and the configuration the gateway reads as `[access_log]`:
//!
//! ```
//! use towergate_access_log::{AccessLogConfig, LogFormat};
//!
//! let format = LogFormat::parse(r#"%h "%r" %>s %b %D "%{X-Request-Id}o""#).unwrap();
//! let config: AccessLogConfig = toml::from_str(r#"
//!     path = "-"            # stdout
//!     format = "combinedio"
//! "#).unwrap();
//! assert_eq!(config.validate().unwrap(), LogFormat::combinedio());
//!
//! let bad: AccessLogConfig = toml::from_str("format = '%h %Z'").unwrap();
//! assert!(bad.validate().unwrap_err().to_string().contains("`%Z`"));
//! ```

use std::net::SocketAddr;

mod body;
mod config;
mod entry;
mod escape;
mod format;
mod future;
mod layer;
mod time;
mod writer;

pub use body::{RequestBody, ResponseBody};
pub use config::{AccessLogConfig, AccessLogError};
pub use entry::Entry;
pub use format::{COMBINED, COMBINEDIO, COMMON, LogFormat, LogFormatError};
pub use future::{LogClientAddrFuture, ResponseFuture};
pub use layer::{AccessLog, AccessLogLayer, LogClientAddr, LogClientAddrLayer};
pub use writer::{
    DEFAULT_BUFFER, DEFAULT_FLUSH_INTERVAL, LogWriter, LogWriterBuilder, LogWriterStats,
    MAX_BUFFER, MIN_BUFFER,
};

/// The local address a request came in on, for `%A` and `%{local}p` (and `%p` when the
/// request names no port). The server inserts it into each request's extensions, beside
/// [`towergate_client_addr::PeerAddr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalAddr(pub SocketAddr);
