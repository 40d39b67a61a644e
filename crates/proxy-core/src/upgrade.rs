//! Protocol upgrades (WebSocket and any other HTTP/1.1 `Upgrade`), Apache's
//! `ProxyPass ... upgrade=websocket` / mod_proxy_wstunnel.
//!
//! An HTTP/1.1 request with `Connection: upgrade` and an `Upgrade` header is forwarded
//! with both headers. When the upstream answers `101 Switching Protocols`, the answer is
//! relayed with its `Upgrade` and `Connection` headers, and once both connections have
//! switched, bytes are copied both ways until both sides have closed, or until neither
//! side has sent anything for the idle timeout. Any other answer is an ordinary response.
//!
//! `Upgrade: h2c` is not forwarded (RFC 9113 deprecates it; a client wanting cleartext
//! HTTP/2 talks it to the gateway directly).

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::Target;
use crate::client::{Upgraded, UpstreamUpgrade};

static UPGRADE_VALUE: HeaderValue = HeaderValue::from_static("upgrade");

/// A client's upgrade request, waiting for the upstream's answer.
pub(crate) struct PendingUpgrade {
    client: OnUpgrade,
    protocol: HeaderValue,
    idle_timeout: Duration,
}

impl PendingUpgrade {
    /// Takes the upgrade from an HTTP/1.1 request that asks for one (`Connection:
    /// upgrade` and one `Upgrade` header, other than `h2c`) and that the server can hand
    /// over (hyper's `OnUpgrade` extension, present with `serve_connection_with_upgrades`).
    pub(crate) fn take(
        parts: &mut http::request::Parts,
        idle_timeout: Duration,
    ) -> Option<PendingUpgrade> {
        if parts.version != Version::HTTP_11 {
            return None;
        }
        let protocol = single(&parts.headers, &header::UPGRADE)?;
        if protocol.as_bytes().len() >= 3 && protocol.as_bytes()[..3].eq_ignore_ascii_case(b"h2c") {
            return None;
        }
        if !has_token(&parts.headers, "upgrade") {
            return None;
        }
        // A copy (a shared handle): the extensions stay whole for a retry elsewhere.
        let client = parts.extensions.get::<OnUpgrade>()?.clone();
        Some(PendingUpgrade {
            client,
            protocol,
            idle_timeout,
        })
    }

    /// Puts `Connection: upgrade` and the `Upgrade` header back after the hop-by-hop
    /// headers were removed.
    pub(crate) fn restore_request_headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, UPGRADE_VALUE.clone());
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    /// Called with the upstream's answer before its hop-by-hop headers go. On a 101,
    /// starts the tunnel and returns the `Upgrade` value to put back with
    /// [`restore_response_headers`]; on anything else the upgrade is dropped.
    pub(crate) fn switch<B>(self, res: &mut Response<B>, target: &Target) -> Option<HeaderValue> {
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return None;
        }
        let protocol = res
            .headers()
            .get(header::UPGRADE)
            .cloned()
            .unwrap_or(self.protocol);
        let upstream = res.extensions_mut().remove::<UpstreamUpgrade>()?.take()?;
        let tunnel = Tunnel::default();
        res.extensions_mut().insert(tunnel.clone());
        tracing::debug!(target: "towergate_proxy", route = %target.route.name, upstream = %target.upstream, protocol = ?protocol, "switching protocols");
        tokio::spawn(run(
            self.client,
            upstream,
            self.idle_timeout,
            tunnel,
            target.clone(),
        ));
        Some(protocol)
    }
}

/// Puts `Connection: upgrade` and `Upgrade` back on a relayed 101.
pub(crate) fn restore_response_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, UPGRADE_VALUE.clone());
    headers.insert(header::UPGRADE, protocol);
}

fn single(headers: &HeaderMap, name: &header::HeaderName) -> Option<HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then(|| first.clone())
}

fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The tunnel behind a relayed `101 Switching Protocols`, found in that response's
/// extensions.
///
/// A layer that counts requests in flight (a balancer's busyness) hands its guard to
/// [`Tunnel::hold`] so the upgraded connection counts until it closes.
#[derive(Clone, Default)]
pub struct Tunnel {
    inner: Arc<Held>,
}

#[derive(Default)]
struct Held {
    closed: AtomicBool,
    guards: Mutex<Vec<Box<dyn Any + Send>>>,
}

impl Tunnel {
    /// Keeps `guard` alive until the tunnel closes (dropped at once if it already has).
    pub fn hold(&self, guard: impl Send + 'static) {
        let mut guards = self.inner.guards.lock().unwrap_or_else(|e| e.into_inner());
        if !self.inner.closed.load(Ordering::Acquire) {
            guards.push(Box::new(guard));
        }
    }

    /// True once both connections are closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        let guards = {
            let mut guards = self.inner.guards.lock().unwrap_or_else(|e| e.into_inner());
            self.inner.closed.store(true, Ordering::Release);
            std::mem::take(&mut *guards)
        };
        drop(guards);
    }
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("closed", &self.is_closed())
            .finish()
    }
}

async fn run(
    client: OnUpgrade,
    upstream: Upgraded,
    idle_timeout: Duration,
    tunnel: Tunnel,
    target: Target,
) {
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            tracing::debug!(target: "towergate_proxy", route = %target.route.name, upstream = %target.upstream, error = %e, "upgrade did not complete");
            tunnel.close();
            return;
        }
    };
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let mut client = Watched {
        io: TokioIo::new(client),
        start,
        last: &last,
    };
    let mut upstream = Watched {
        io: upstream,
        start,
        last: &last,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let outcome = loop {
        let seen = last.load(Ordering::Relaxed);
        let deadline = start + Duration::from_millis(seen) + idle_timeout;
        tokio::select! {
            done = &mut copy => break done.map_err(|e| e.to_string()),
            _ = tokio::time::sleep_until(deadline) => {
                if last.load(Ordering::Relaxed) == seen {
                    break Err(format!("idle for {idle_timeout:?}"));
                }
            }
        }
    };
    match outcome {
        Ok((up, down)) => {
            tracing::debug!(target: "towergate_proxy", route = %target.route.name, upstream = %target.upstream, bytes_up = up, bytes_down = down, "tunnel closed")
        }
        Err(reason) => {
            tracing::debug!(target: "towergate_proxy", route = %target.route.name, upstream = %target.upstream, %reason, "tunnel cut")
        }
    }
    tunnel.close();
}

/// An upgraded connection that notes when it last received bytes.
struct Watched<'a, T> {
    io: T,
    start: Instant,
    last: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.start.elapsed().as_millis() as u64;
            self.last.store(now, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut req = http::Request::get("/chat");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        // Stands in for what hyper's server attaches (never fulfilled here).
        parts
            .extensions
            .insert(hyper::upgrade::on(http::Request::new(())));
        parts
    }

    #[test]
    fn only_http11_upgrade_requests_are_taken() {
        let d = Duration::from_secs(1);
        let mut p = parts(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let up = PendingUpgrade::take(&mut p, d).expect("an upgrade");
        assert_eq!(up.protocol, "websocket");
        // A shared handle is taken; the extension stays for a retry at another member.
        assert!(p.extensions.get::<OnUpgrade>().is_some());

        assert!(PendingUpgrade::take(&mut parts(&[("upgrade", "websocket")]), d).is_none());
        assert!(
            PendingUpgrade::take(
                &mut parts(&[("connection", "upgrade"), ("upgrade", "h2c")]),
                d
            )
            .is_none()
        );
        let mut h10 = parts(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        h10.version = Version::HTTP_10;
        assert!(PendingUpgrade::take(&mut h10, d).is_none());
        let mut no_ext = parts(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        no_ext.extensions.clear();
        assert!(PendingUpgrade::take(&mut no_ext, d).is_none());
    }

    #[test]
    fn tunnel_drops_guards_when_closed() {
        let tunnel = Tunnel::default();
        let guard = Arc::new(());
        tunnel.hold(guard.clone());
        assert_eq!(Arc::strong_count(&guard), 2);
        tunnel.close();
        assert_eq!(Arc::strong_count(&guard), 1);
        tunnel.hold(guard.clone());
        assert_eq!(
            Arc::strong_count(&guard),
            1,
            "held after close: dropped at once"
        );
    }
}
