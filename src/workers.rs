//! The data plane's threads: one single-threaded tokio runtime per worker, each accepting
//! on its own socket of every listen address (`SO_REUSEPORT`, so the kernel spreads new
//! connections over the workers), as nginx's worker processes do.
//!
//! A connection lives on the worker that accepted it, with the upstream connections its
//! requests use (the forwarder keeps one pool per thread): a request never waits for
//! another thread to be woken, and no lock is shared between workers on the hot path.
//! Background work (health checks, table sweeps, the admin listener) stays on the main
//! runtime.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Connections a listen socket queues before the gateway accepts them (nginx's default
/// `backlog` on Linux is 511; the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 1024;

/// The worker threads; dropping this stops them (and drops whatever still runs on them).
pub struct Workers {
    handles: Vec<Handle>,
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` workers (at least one); `0` means one per CPU.
    pub fn start(count: usize) -> anyhow::Result<Self> {
        let count = if count == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            count
        };
        let mut handles = Vec::with_capacity(count);
        let mut stop = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a worker runtime")?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("towergate-worker-{i}"))
                .spawn(move || {
                    // Runs the worker's tasks until the gateway lets go of it.
                    let _ = runtime.block_on(rx);
                })
                .context("cannot start a worker thread")?;
        }
        Ok(Self {
            handles,
            _stop: stop,
        })
    }

    /// Binds `addr` once per worker (the first bind picks the port when `addr` asks for
    /// port 0; the others share it). Returns the bound address and each worker's listener.
    pub fn bind(&self, addr: SocketAddr) -> anyhow::Result<(SocketAddr, Vec<TcpListener>)> {
        // A plain bind first, so an address another process listens on is refused as it
        // would be without SO_REUSEPORT (a second gateway started on the same port must
        // fail, not silently take half the connections). Port 0 needs no check: the
        // first worker's socket gets a port nobody holds.
        if addr.port() != 0 {
            new_socket(addr)
                .and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.bind(addr)
                })
                .with_context(|| format!("cannot listen on {addr}"))?;
        }
        let mut bound = addr;
        let mut listeners = Vec::with_capacity(self.handles.len());
        for handle in &self.handles {
            let socket = new_socket(addr)
                .and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.set_reuseport(true)?;
                    s.bind(bound)?;
                    Ok(s)
                })
                .with_context(|| format!("cannot listen on {addr}"))?;
            // The listener registers with the runtime of the worker that will accept on it.
            let _entered = handle.enter();
            let listener = socket
                .listen(BACKLOG)
                .with_context(|| format!("cannot listen on {addr}"))?;
            bound = listener.local_addr()?;
            listeners.push(listener);
        }
        Ok((bound, listeners))
    }

    /// Runs `future` on worker `index`.
    pub fn spawn<F>(&self, index: usize, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[index % self.handles.len()].spawn(future)
    }
}

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}
