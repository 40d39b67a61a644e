//! Keep-alive connections to upstreams, kept on hyper's own HTTP/1 client connections.
//!
//! Why not hyper-util's pooled client: per request it hashes its pool key twice (SipHash),
//! boxes its future, and spawns a task to put the connection back once it is idle; and a
//! request whose pooled connection turned out to be closed can only be sent again if the
//! caller kept a copy. Here a connection is found by the slot its upstream was given when
//! the URL was parsed ([`Upstream::pool_slot`]), is lent for exactly one request, and comes
//! back when that answer's body is over: the body carries the [`Lease`]. A request a
//! connection never wrote goes on to the next connection as it is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::Upstream;
use crate::body::UpstreamBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made (or it closed before taking the request): nothing was
    /// sent.
    Connect(BoxError),
    /// The connection failed once the request was (perhaps partly) written.
    Upstream(hyper::Error),
}

/// The connections of one forwarder: one [`Shelf`] for all threads, or one per thread.
pub(crate) struct Pools<B: Send> {
    connector: HttpsConnector<HttpConnector>,
    handshake: http1::Builder,
    max_idle: usize,
    sweep_every: Duration,
    shelves: Shelves<B>,
}

enum Shelves<B: Send> {
    Shared(Arc<Shelf<B>>),
    PerThread(Box<thread_local::ThreadLocal<Arc<Shelf<B>>>>),
}

impl<B> Pools<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static + Unpin,
    B::Error: Into<BoxError>,
{
    /// `idle_timeout`: an idle connection is closed after between one and one and a half
    /// times this. `max_idle`: idle connections kept per upstream (per thread when
    /// `per_thread`).
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        idle_timeout: Duration,
        max_idle: usize,
        per_thread: bool,
    ) -> Self {
        let shelves = if per_thread {
            Shelves::PerThread(Box::default())
        } else {
            Shelves::Shared(Arc::new(Shelf::new()))
        };
        Self {
            connector,
            handshake: http1::Builder::new(),
            max_idle,
            sweep_every: (idle_timeout / 2).max(Duration::from_millis(10)),
            shelves,
        }
    }

    /// This thread's shelf (the shared one unless per thread). A new shelf gets a sweeper
    /// on the runtime it is first used on.
    fn shelf(&self) -> &Arc<Shelf<B>> {
        match &self.shelves {
            Shelves::Shared(shelf) => {
                shelf.start_sweeping(self.sweep_every);
                shelf
            }
            Shelves::PerThread(shelves) => shelves.get_or(|| {
                let shelf = Arc::new(Shelf::new());
                shelf.start_sweeping(self.sweep_every);
                shelf
            }),
        }
    }

    /// Sends `req` to `upstream` over an idle connection, or a new one when none takes it.
    pub(crate) async fn send(
        &self,
        upstream: &Upstream,
        mut req: Request<B>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let shelf = self.shelf();
        let slot = upstream.pool_slot();
        let mut stale = 0;
        while let Some(mut sender) = shelf.checkout(slot) {
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let lease = shelf.lend(slot, sender, self.max_idle);
                    return Ok(res.map(|body| UpstreamBody::leased(body, lease)));
                }
                Err(mut e) => match e.take_message() {
                    // Never written (closed meanwhile, or not idle after all): the next.
                    Some(unsent) => {
                        req = unsent;
                        stale += 1;
                        if stale > 2 {
                            break;
                        }
                        shelf.put_back(slot, sender, self.max_idle, false);
                    }
                    None => return Err(SendError::Upstream(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(upstream).await?;
        match sender.try_send_request(req).await {
            Ok(res) => {
                let lease = shelf.lend(slot, sender, self.max_idle);
                Ok(res.map(|body| UpstreamBody::leased(body, lease)))
            }
            Err(mut e) => Err(match e.take_message() {
                Some(_) => SendError::Connect(e.into_error().into()),
                None => SendError::Upstream(e.into_error()),
            }),
        }
    }

    /// A new connection, its HTTP/1 task spawned on this runtime.
    async fn connect(&self, upstream: &Upstream) -> Result<SendRequest<B>, SendError> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(upstream.connect_uri().clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = self
            .handshake
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(target: "towergate_proxy", error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// Idle and lent connections, by upstream slot.
pub(crate) struct Shelf<B> {
    inner: Mutex<Shelved<B>>,
    /// A sweeper runs for this shelf.
    sweeping: AtomicBool,
}

/// What a [`Shelf`] guards.
struct Shelved<B> {
    /// Idle connections by upstream slot; the last one in is the first out.
    idle: Vec<Vec<Idle<B>>>,
    /// Connections lent for one request; `None` where free.
    lent: Vec<Option<SendRequest<B>>>,
    free: Vec<u32>,
    /// Sweeps done so far: an idle connection notes the sweep it came back after.
    sweeps: u32,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since_sweep: u32,
}

impl<B: Send + 'static> Shelf<B> {
    fn new() -> Self {
        Self {
            inner: Mutex::new(Shelved {
                idle: Vec::new(),
                lent: Vec::new(),
                free: Vec::new(),
                sweeps: 0,
            }),
            sweeping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shelved<B>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `slot` that is still open.
    fn checkout(&self, slot: usize) -> Option<SendRequest<B>> {
        let mut inner = self.lock();
        let idle = inner.idle.get_mut(slot)?;
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Keeps `sender` while it serves one request.
    fn lend(self: &Arc<Self>, slot: usize, sender: SendRequest<B>, max_idle: usize) -> Lease {
        let mut inner = self.lock();
        let index = match inner.free.pop() {
            Some(index) => {
                inner.lent[index as usize] = Some(sender);
                index
            }
            None => {
                inner.lent.push(Some(sender));
                (inner.lent.len() - 1) as u32
            }
        };
        drop(inner);
        Lease {
            shelf: Some(self.clone()),
            slot: slot as u32,
            index,
            max_idle: max_idle as u32,
        }
    }

    fn take_lent(&self, index: u32) -> Option<SendRequest<B>> {
        let mut inner = self.lock();
        let sender = inner.lent.get_mut(index as usize)?.take();
        inner.free.push(index);
        sender
    }

    /// Back among the idle connections: on top, or at the bottom for one that was not
    /// ready to take a request.
    fn put_back(&self, slot: usize, sender: SendRequest<B>, max_idle: usize, on_top: bool) {
        if sender.is_closed() {
            return;
        }
        let mut inner = self.lock();
        let since_sweep = inner.sweeps;
        let idle = inner.idle_mut(slot);
        if idle.len() < max_idle {
            let entry = Idle {
                sender,
                since_sweep,
            };
            if on_top {
                idle.push(entry);
            } else {
                idle.insert(0, entry);
            }
        }
    }

    /// Starts the sweeper the first time a shelf is used within a runtime.
    fn start_sweeping(self: &Arc<Self>, every: Duration) {
        if self.sweeping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            runtime.spawn(sweep(Arc::downgrade(self), every));
        }
    }

    /// Closes connections idle for two sweeps or more, and drops closed ones.
    fn sweep(&self) {
        let mut inner = self.lock();
        inner.sweeps = inner.sweeps.wrapping_add(1);
        let now = inner.sweeps;
        for idle in &mut inner.idle {
            idle.retain(|e| now.wrapping_sub(e.since_sweep) < 3 && !e.sender.is_closed());
        }
    }
}

impl<B> Shelved<B> {
    fn idle_mut(&mut self, slot: usize) -> &mut Vec<Idle<B>> {
        if self.idle.len() <= slot {
            self.idle.resize_with(slot + 1, Vec::new);
        }
        &mut self.idle[slot]
    }
}

async fn sweep<B: Send + 'static>(shelf: Weak<Shelf<B>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shelf) = shelf.upgrade() else {
            return;
        };
        shelf.sweep();
    }
}

/// Gives a lent connection back, whatever its body type.
trait GiveBack: Send + Sync {
    fn give_back(&self, slot: u32, index: u32, max_idle: u32, reusable: bool);
}

impl<B: Send + 'static> GiveBack for Shelf<B> {
    fn give_back(&self, slot: u32, index: u32, max_idle: u32, reusable: bool) {
        let Some(sender) = self.take_lent(index) else {
            return;
        };
        if reusable {
            self.put_back(slot as usize, sender, max_idle as usize, true);
        }
    }
}

/// A connection lent for one request. Given back as idle when its answer's body was
/// read to the end ([`Lease::finish`]); closed when dropped before.
pub(crate) struct Lease {
    shelf: Option<Arc<dyn GiveBack>>,
    slot: u32,
    index: u32,
    max_idle: u32,
}

impl Lease {
    /// The answer is over: the connection can take the next request.
    pub(crate) fn finish(mut self) {
        if let Some(shelf) = self.shelf.take() {
            shelf.give_back(self.slot, self.index, self.max_idle, true);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(shelf) = self.shelf.take() {
            shelf.give_back(self.slot, self.index, self.max_idle, false);
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("slot", &self.slot).finish()
    }
}
