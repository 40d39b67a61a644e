//! [`ProxyProtocolListener`]: an `axum::serve::Listener` whose connections have had their
//! PROXY protocol header read.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ProxyProtocol;

/// Connections whose header was read and that axum has not taken yet.
const READY: usize = 128;

/// A listener for [`axum::serve`] that reads each connection's PROXY protocol header and
/// gives the client's address (the header's source, or the socket peer for `LOCAL` and
/// `UNKNOWN`) as the connection's address; refused connections are closed and never
/// reach axum.
///
/// Headers are read in a task per connection, so a slow peer holds up nobody. Wrap the
/// listener with [`tap_io`](axum::serve::ListenerExt::tap_io) (setting `TCP_NODELAY`, say)
/// to serve it with `into_make_service_with_connect_info::<SocketAddr>()`: handlers then
/// read the client in `ConnectInfo<SocketAddr>`, as does `towergate-client-addr` with its
/// `axum` feature. See the [crate docs](crate) for an example.
///
/// Dropping the listener stops accepting.
#[derive(Debug)]
pub struct ProxyProtocolListener {
    ready: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl ProxyProtocolListener {
    /// Starts accepting on `listener` (spawns a task: call it within a tokio runtime).
    pub fn new(listener: TcpListener, proxy_protocol: ProxyProtocol) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY);
        let accepting = tokio::spawn(async move {
            loop {
                let (mut stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: back off.
                            tracing::warn!(target: "towergate_proxy_protocol", error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let (tx, proxy_protocol) = (tx.clone(), proxy_protocol.clone());
                tokio::spawn(async move {
                    if let Ok(header) = proxy_protocol.accept(&mut stream, peer).await {
                        let _ = tx.send((stream, header.source.unwrap_or(peer))).await;
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for ProxyProtocolListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for ProxyProtocolListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it only does when the listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
