//! The data plane's threads: one single-threaded tokio runtime per worker, each accepting
//! on its own socket of every listen address (`SO_REUSEPORT`, so the kernel spreads new
//! connections over the workers), as nginx's worker processes do.
//!
//! A connection lives on one worker, with the upstream connections its requests use (the
//! forwarder keeps one pool per thread): a request never waits for another thread to be
//! woken, and no lock is shared between workers on the hot path. The kernel's spread of new
//! connections over the sockets is a hash, uneven for a few connections (16 can split 12 to
//! 4, leaving one core idle while the other queues); a worker already serving more than the
//! least busy one hands a new connection over to it ([`Spread`]).
//! Background work (health checks, table sweeps, the admin listener) stays on the main
//! runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Connections a listen socket queues before the gateway accepts them (nginx's default
/// `backlog` on Linux is 511; the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 1024;

/// The worker threads; dropping this stops them (and drops whatever still runs on them).
pub struct Workers {
    shared: Arc<Shared>,
    _stop: Vec<oneshot::Sender<()>>,
}

/// What every worker's accept loops share: the runtimes, how many connections each
/// serves, and how many they may serve together.
struct Shared {
    handles: Vec<Handle>,
    active: Vec<Count>,
    /// `max_connections`; `0`: no limit.
    limit: AtomicUsize,
    /// An accept loop waits for a connection to close.
    waiting: AtomicBool,
    /// Wakes the waiting accept loops.
    room: Notify,
    /// When the limit was last reported (seconds since the Unix epoch).
    warned: AtomicU64,
}

impl Shared {
    fn total(&self) -> usize {
        self.active.iter().map(|c| c.0.load(Ordering::SeqCst)).sum()
    }

    fn full(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        limit != 0 && self.total() >= limit
    }

    /// Warns that the limit is reached, at most once a minute.
    fn report_limit(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.warned.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.limit.load(Ordering::Relaxed),
                "server.max_connections reached: new connections wait in the listen queue until others close"
            );
        }
    }
}

/// A connection count on a cache line of its own: each worker writes only its own, so the
/// counts never bounce between cores on a worker's hot path.
#[repr(align(128))]
#[derive(Default)]
struct Count(AtomicUsize);

impl Workers {
    /// Starts `count` workers (at least one); `0` means one per CPU. Together they serve at
    /// most `max_connections` connections at once (`0`: no limit).
    pub fn start(count: usize, max_connections: usize) -> anyhow::Result<Self> {
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
        let active = (0..handles.len()).map(|_| Count::default()).collect();
        Ok(Self {
            shared: Arc::new(Shared {
                handles,
                active,
                limit: AtomicUsize::new(max_connections),
                waiting: AtomicBool::new(false),
                room: Notify::new(),
                warned: AtomicU64::new(0),
            }),
            _stop: stop,
        })
    }

    /// How worker `index`'s accept loops place the connections they accept.
    pub fn spread(&self, index: usize) -> Spread {
        Spread {
            index: index % self.shared.handles.len(),
            shared: self.shared.clone(),
        }
    }

    /// Connections each worker serves now.
    pub fn connections(&self) -> Vec<usize> {
        self.load().connections()
    }

    /// A handle that reads the connections per worker, for the status page.
    pub fn load(&self) -> WorkerLoad {
        WorkerLoad(self.shared.clone())
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
        let mut listeners = Vec::with_capacity(self.shared.handles.len());
        for handle in &self.shared.handles {
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
        let handles = &self.shared.handles;
        handles[index % handles.len()].spawn(future)
    }
}

/// Places the connections one worker accepts: on that worker, unless it serves more than
/// one connection more than the least busy worker, which then gets it. Balanced workers
/// pay two relaxed loads per worker and one increment per connection.
#[derive(Clone)]
pub struct Spread {
    index: usize,
    shared: Arc<Shared>,
}

impl Spread {
    /// The worker for a connection just accepted, with the connection counted there until
    /// the returned [`Active`] is dropped.
    pub fn place(&self) -> (usize, Active) {
        let active = &self.shared.active;
        let mine = active[self.index].0.load(Ordering::Relaxed);
        let (least, fewest) = active
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, n)| n)
            .unwrap_or((self.index, mine));
        let target = if mine > fewest + 1 { least } else { self.index };
        active[target].0.fetch_add(1, Ordering::Relaxed);
        (
            target,
            Active {
                shared: self.shared.clone(),
                index: target,
            },
        )
    }

    /// True when `worker` is the one this spread accepts on.
    pub fn is_local(&self, worker: usize) -> bool {
        worker == self.index
    }

    /// Resolves while fewer than `max_connections` connections are served; at the limit,
    /// once one of them closes. New connections meanwhile wait in the listen queue, as
    /// nginx's and HAProxy's do at theirs.
    pub async fn room(&self) {
        let shared = &*self.shared;
        if !shared.full() {
            return;
        }
        shared.report_limit();
        loop {
            let notified = shared.room.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            // Set before the count is read again: a connection that closes after the read
            // sees it and wakes this loop.
            shared.waiting.store(true, Ordering::SeqCst);
            if !shared.full() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `future` on `worker`.
    pub fn spawn_on<F>(&self, worker: usize, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared.handles[worker].spawn(future);
    }
}

/// Reads how many connections each worker serves.
#[derive(Clone)]
pub struct WorkerLoad(Arc<Shared>);

impl WorkerLoad {
    /// Sets `max_connections` (`0`: no limit); accept loops waiting at the old limit look
    /// again.
    pub fn set_max_connections(&self, max: usize) {
        self.0.limit.store(max, Ordering::Relaxed);
        self.0.waiting.store(false, Ordering::SeqCst);
        self.0.room.notify_waiters();
    }

    /// `server.max_connections` now (`0`: no limit).
    pub fn max_connections(&self) -> usize {
        self.0.limit.load(Ordering::Relaxed)
    }

    /// Connections each worker serves now, by worker.
    pub fn connections(&self) -> Vec<usize> {
        self.0
            .active
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .collect()
    }
}

impl std::fmt::Debug for WorkerLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkerLoad")
            .field(&self.connections())
            .finish()
    }
}

/// One connection counted at its worker until dropped.
pub struct Active {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for Active {
    fn drop(&mut self) {
        let shared = &*self.shared;
        shared.active[self.index].0.fetch_sub(1, Ordering::SeqCst);
        if shared.waiting.load(Ordering::SeqCst) && shared.waiting.swap(false, Ordering::SeqCst) {
            shared.room.notify_waiters();
        }
    }
}

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busier_worker_hands_new_connections_to_the_least_busy_one() {
        let workers = Workers::start(3, 0).unwrap();
        // Nine connections accepted on worker 0's socket: it keeps one while it is within
        // one of the least busy worker, else the least busy gets it.
        let placed: Vec<(usize, Active)> = (0..9).map(|_| workers.spread(0).place()).collect();
        assert_eq!(workers.connections(), [4, 3, 2]);
        // Worker 1 is within one of the least busy (2): it keeps what it accepts.
        let (w, kept) = workers.spread(1).place();
        assert_eq!((w, workers.connections()), (1, vec![4, 4, 2]));
        // Worker 0 is two ahead of worker 2: worker 2 gets it.
        let (w, handed) = workers.spread(0).place();
        assert_eq!((w, workers.connections()), (2, vec![4, 4, 3]));
        drop((placed, kept, handed));
        assert_eq!(workers.connections(), [0, 0, 0]);
    }

    #[tokio::test]
    async fn at_the_limit_accepting_waits_until_a_connection_closes_or_the_limit_rises() {
        let workers = Workers::start(1, 1).unwrap();
        let spread = workers.spread(0);
        let wait = |spread: &Spread| {
            let spread = spread.clone();
            tokio::spawn(async move { spread.room().await })
        };
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(50));
        let within = std::time::Duration::from_secs(5);

        spread.room().await;
        let (_, first) = spread.place();
        let waiting = wait(&spread);
        pause().await;
        assert!(!waiting.is_finished(), "one connection of one allowed");
        drop(first);
        tokio::time::timeout(within, waiting)
            .await
            .unwrap()
            .unwrap();

        let (_, second) = spread.place();
        let waiting = wait(&spread);
        pause().await;
        assert!(!waiting.is_finished());
        workers.load().set_max_connections(2);
        tokio::time::timeout(within, waiting)
            .await
            .unwrap()
            .unwrap();
        drop(second);
    }
}
