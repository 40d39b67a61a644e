//! Keep-alive connections to upstreams ([`client::Conn`]), by upstream.
//!
//! A connection is found by the slot its upstream was given when the URL was parsed
//! ([`Upstream::pool_slot`], no key hashing), is lent for exactly one request, and comes
//! back when that answer's body is over: the body carries the [`Lease`]. An idle
//! connection the upstream closed is noticed when it is taken (or swept), without a
//! task watching it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower_service::Service;

use crate::Upstream;
use crate::body::UpstreamBody;
use crate::client::{self, Conn, ConnBody, ExchangeError, UpstreamUpgrade};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made: nothing was sent.
    Connect(BoxError),
    /// The connection failed once the request was (perhaps partly) written, or the answer
    /// was not valid HTTP.
    Upstream(BoxError),
    /// The client's request body failed.
    RequestBody(BoxError),
    /// No answer came within the timeout.
    TimedOut,
}

/// The connections of one forwarder: one [`Shelf`] for all threads, or one per thread.
pub(crate) struct Pools {
    connector: HttpsConnector<HttpConnector>,
    /// The longest an answer's head may take to come (connecting included), and its body
    /// may wait for the upstream's next bytes.
    timeout: Duration,
    max_idle: usize,
    sweep_every: Duration,
    shelves: Shelves,
}

enum Shelves {
    Shared(Arc<Shelf>),
    PerThread(Box<thread_local::ThreadLocal<Arc<Shelf>>>),
}

impl Pools {
    /// `timeout`: a request whose answer's head has not come this long after it was sent
    /// (connecting included), or an answer's body that waits this long for the upstream's
    /// next bytes, fails. `idle_timeout`: an idle connection is closed after between one
    /// and one and a half times this. `max_idle`: idle connections kept per upstream (per
    /// thread when `per_thread`).
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        timeout: Duration,
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
            timeout,
            max_idle,
            sweep_every: (idle_timeout / 2).max(Duration::from_millis(10)),
            shelves,
        }
    }

    /// This thread's shelf (the shared one unless per thread). A new shelf gets a sweeper
    /// on the runtime it is first used on.
    fn shelf(&self) -> &Arc<Shelf> {
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

    /// Sends `req` to `upstream` over an idle connection, or a new one when none is left.
    ///
    /// A reused connection the upstream closed just as the request went out (nothing came
    /// back) gets the request again over a new connection, when the request is
    /// idempotent and has no body.
    pub(crate) async fn send<B>(
        &self,
        upstream: &Upstream,
        req: Request<B>,
    ) -> Result<Response<UpstreamBody>, SendError>
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let deadline = Instant::now() + self.timeout;
        let shelf = self.shelf();
        let slot = upstream.pool_slot();
        let (parts, body) = req.into_parts();
        let (mut conn, reused) = match shelf.checkout(slot) {
            Some(conn) => (conn, true),
            None => (self.connect(upstream, deadline).await?, false),
        };
        let framing = conn
            .encode_request(&parts, &body)
            .map_err(SendError::RequestBody)?;
        let resendable =
            matches!(framing, client::RequestFraming::Empty) && parts.method.is_idempotent();
        let method = parts.method;
        drop(parts.headers);
        let result = client::exchange(&mut conn, Some(body), framing, &method, deadline).await;
        let result = match result {
            Err(ExchangeError::Closed(e)) if reused && resendable => {
                tracing::debug!(target: "towergate_proxy", upstream = %upstream, error = %e, "kept-alive connection closed under the request; sending it again");
                let head = conn.take_request();
                conn = self.connect(upstream, deadline).await?;
                conn.set_request(head);
                client::exchange::<B>(&mut conn, None, framing, &method, deadline).await
            }
            other => other,
        };
        let (head, rest) = match result {
            Ok(answer) => answer,
            Err(ExchangeError::Closed(e)) => return Err(SendError::Upstream(e.into())),
            Err(ExchangeError::Upstream(e)) => return Err(SendError::Upstream(e)),
            Err(ExchangeError::RequestBody(e)) => return Err(SendError::RequestBody(e)),
            Err(ExchangeError::TimedOut) => return Err(SendError::TimedOut),
        };
        let mut res = Response::new(());
        *res.status_mut() = head.status;
        *res.version_mut() = head.version;
        *res.headers_mut() = head.headers;
        if let Some(reason) = head
            .reason
            .and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok())
        {
            res.extensions_mut().insert(reason);
        }
        let body = if matches!(head.framing, client::BodyFraming::Upgrade) {
            res.extensions_mut().insert(UpstreamUpgrade::new(conn));
            UpstreamBody::empty()
        } else {
            let lease = Lease {
                shelf: shelf.clone(),
                slot: slot as u32,
                max_idle: self.max_idle as u32,
            };
            UpstreamBody::new(ConnBody::new(
                conn,
                head.framing,
                Some(lease),
                head.keep_alive,
                rest,
                self.timeout,
            ))
        };
        Ok(res.map(|()| body))
    }

    /// A new connection, made by `deadline` (a TLS handshake included).
    ///
    /// Boxed: its future (TCP, maybe TLS) is several times the rest of `send`'s, which
    /// every request moves around, while most requests reuse a kept-alive connection.
    fn connect<'a>(
        &'a self,
        upstream: &'a Upstream,
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Result<Box<Conn>, SendError>> + Send + 'a>> {
        Box::pin(async move {
            let mut connector = self.connector.clone();
            let connecting = connector.call(upstream.connect_uri().clone());
            match tokio::time::timeout_at(deadline, connecting).await {
                Ok(Ok(io)) => Ok(Conn::new(TokioIo::new(io))),
                Ok(Err(e)) => Err(SendError::Connect(e)),
                Err(_) => Err(SendError::TimedOut),
            }
        })
    }
}

/// Idle connections, by upstream slot.
pub(crate) struct Shelf {
    inner: Mutex<Shelved>,
    /// A sweeper runs for this shelf.
    sweeping: AtomicBool,
}

/// What a [`Shelf`] guards.
struct Shelved {
    /// Idle connections by upstream slot; the last one in is the first out.
    idle: Vec<Vec<Idle>>,
    /// Sweeps done so far: an idle connection notes the sweep it came back after.
    sweeps: u32,
}

struct Idle {
    conn: Box<Conn>,
    since_sweep: u32,
}

impl Shelf {
    fn new() -> Self {
        Self {
            inner: Mutex::new(Shelved {
                idle: Vec::new(),
                sweeps: 0,
            }),
            sweeping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shelved> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `slot` that is still open.
    fn checkout(&self, slot: usize) -> Option<Box<Conn>> {
        let mut inner = self.lock();
        let idle = inner.idle.get_mut(slot)?;
        while let Some(mut entry) = idle.pop() {
            if entry.conn.is_usable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Back among the idle connections, on top.
    fn put_back(&self, slot: usize, conn: Box<Conn>, max_idle: usize) {
        let mut inner = self.lock();
        let since_sweep = inner.sweeps;
        let idle = inner.idle_mut(slot);
        if idle.len() < max_idle {
            idle.push(Idle { conn, since_sweep });
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

    /// Closes connections idle for two sweeps or more, and those the upstream closed.
    fn sweep(&self) {
        let mut inner = self.lock();
        inner.sweeps = inner.sweeps.wrapping_add(1);
        let now = inner.sweeps;
        for idle in &mut inner.idle {
            idle.retain_mut(|e| now.wrapping_sub(e.since_sweep) < 3 && e.conn.is_usable());
        }
    }
}

impl Shelved {
    fn idle_mut(&mut self, slot: usize) -> &mut Vec<Idle> {
        if self.idle.len() <= slot {
            self.idle.resize_with(slot + 1, Vec::new);
        }
        &mut self.idle[slot]
    }
}

async fn sweep(shelf: Weak<Shelf>, every: Duration) {
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

/// Where a lent connection goes back to once its answer is over.
pub(crate) struct Lease {
    shelf: Arc<Shelf>,
    slot: u32,
    max_idle: u32,
}

impl Lease {
    /// The answer is over and `conn` can take the next request.
    pub(crate) fn give_back(self, conn: Box<Conn>) {
        self.shelf
            .put_back(self.slot as usize, conn, self.max_idle as usize);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("slot", &self.slot).finish()
    }
}
