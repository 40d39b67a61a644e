//! The PROXY protocol (versions 1 and 2) on accepted connections: the real client address
//! through an L4 balancer, accepted from trusted balancers only.
//!
//! A TCP balancer in front of several gateways (HAProxy in `mode tcp`, AWS NLB, a cloud
//! load balancer) opens its own connection to the gateway, so the socket peer is the
//! balancer. With the PROXY protocol it first sends a small header naming the client's
//! address, then the client's bytes (TLS or HTTP) unchanged. [`ProxyProtocol::accept`]
//! reads that header off a freshly accepted connection, before anything else, and gives
//! the client's address; the caller makes it the connection's peer address (in towergate,
//! the `PeerAddr` extension every layer reads through `towergate_client_addr::client_ip`).
//!
//! This is HAProxy's `accept-proxy` bind option and nginx's `listen ... proxy_protocol`
//! with `set_real_ip_from`; Apache 2.2, which towergate replaces, had no equivalent
//! (Apache 2.4.31 added `RemoteIPProxyProtocol On` to mod_remoteip). Behaviour:
//!
//! - only peers in the trusted networks may connect at all: a connection from anywhere
//!   else is refused (closed before a byte is read), so nobody outside the balancers can
//!   claim an address; a connection without a valid header is refused too (Apache's
//!   `RemoteIPProxyProtocolExceptions` has no counterpart: a listener speaks the PROXY
//!   protocol or it does not);
//! - both versions are recognised by their first bytes; version 2's `LOCAL` command and
//!   version 1's `UNKNOWN` (the balancer's own health checks) keep the socket peer as the
//!   client, as the specification asks; TLVs are skipped;
//! - the header is read byte-exact (what follows stays in the socket for TLS or HTTP),
//!   within a timeout (nginx's `proxy_protocol_timeout`), and is bounded: version 1 ends
//!   within 107 bytes, version 2 is accepted up to [`MAX_V2_LEN`] bytes; a client can
//!   neither hold a connection open nor make the reader buffer more;
//! - every outcome is counted ([`ProxyProtocolStats`]); refusals are logged under the
//!   target `towergate_proxy_protocol`, one warning per 10 seconds at most.
//!
//! Parsing is done by the [`ppp`] crate. Reading happens once per connection, in the
//! connection's own task (never in the accept loop, so a slow peer holds up nobody);
//! requests on the connection then cost nothing more.
//!
//! # Examples
//!
//! An axum app behind a balancer, with the `axum` feature: [`ProxyProtocolListener`]
//! reads the headers and hands axum the client's address as the connection's.
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # async fn demo() -> std::io::Result<()> {
//! use std::net::SocketAddr;
//! use axum::{Router, extract::ConnectInfo, routing::get, serve::ListenerExt};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//! use towergate_proxy_protocol::{ProxyProtocol, ProxyProtocolListener};
//!
//! let app = Router::new().route(
//!     "/",
//!     get(|ConnectInfo(client): ConnectInfo<SocketAddr>| async move { client.ip().to_string() }),
//! );
//! let tcp = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = tcp.local_addr()?;
//! let proxy_protocol = ProxyProtocol::builder()
//!     .trusted("127.0.0.1/32".parse().unwrap()) // the balancer
//!     .build();
//! let listener = ProxyProtocolListener::new(tcp, proxy_protocol)?
//!     .tap_io(|tcp| { let _ = tcp.set_nodelay(true); });
//! tokio::spawn(async move {
//!     axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! });
//!
//! // The balancer's side: a version 1 header for client 203.0.113.7, then the request.
//! let mut conn = TcpStream::connect(addr).await?;
//! conn.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 50000 80\r\n").await?;
//! conn.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await?;
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).await?;
//! assert!(answer.ends_with("\r\n\r\n203.0.113.7"), "{answer}");
//! # Ok(())
//! # }
//! # #[cfg(feature = "axum")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! An accept loop of one's own that takes the client's address from the header. The
//! same loop serving HTTP hands the stream to hyper and inserts the address into each
//! request (the gateway inserts `towergate_client_addr::PeerAddr`, which every towergate
//! layer reads).
//!
//! ```
//! use std::net::SocketAddr;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//! use towergate_proxy_protocol::ProxyProtocol;
//!
//! # async fn demo() -> std::io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let proxy_protocol = ProxyProtocol::builder()
//!     .trusted("127.0.0.1/32".parse().unwrap()) // the balancer
//!     .build();
//! tokio::spawn(async move {
//!     loop {
//!         let (mut stream, peer) = listener.accept().await.unwrap();
//!         let proxy_protocol = proxy_protocol.clone();
//!         tokio::spawn(async move {
//!             let Ok(header) = proxy_protocol.accept(&mut stream, peer).await else {
//!                 return; // refused: dropping the stream closes it
//!             };
//!             let client = header.source.unwrap_or(peer);
//!             let _ = stream.write_all(client.ip().to_string().as_bytes()).await;
//!         });
//!     }
//! });
//!
//! // The balancer's side: a version 2 header for client 203.0.113.7.
//! let mut conn = TcpStream::connect(addr).await?;
//! let client: SocketAddr = "203.0.113.7:50000".parse().unwrap();
//! let header = ppp::v2::Builder::with_addresses(0x21, ppp::v2::Protocol::Stream, (client, addr))
//!     .build()?;
//! conn.write_all(&header).await?;
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).await?;
//! assert_eq!(answer, "203.0.113.7");
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

mod acceptor;
mod header;
#[cfg(feature = "axum")]
mod listener;

pub use acceptor::{DEFAULT_TIMEOUT, ProxyProtocol, ProxyProtocolBuilder, ProxyProtocolStats};
pub use header::{MAX_V1_LEN, MAX_V2_LEN, ProxyHeader, ProxyProtocolError, read_header};
#[cfg(feature = "axum")]
pub use listener::ProxyProtocolListener;
