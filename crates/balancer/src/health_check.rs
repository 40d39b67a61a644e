//! Active health checks (Apache mod_proxy_hcheck, HAProxy `check`): every interval, each
//! member that is not disabled gets a request on a fresh connection; `rise` passes in a
//! row bring a member back, `fall` failures in a row take it out. An `https://` member is
//! checked over TLS, verified as forwarded requests are ([`UpstreamTls`]), with the
//! member's host as SNI.
//!
//! The checks run as a future the caller spawns ([`Pool::health_checks`]); it holds the
//! pool weakly and ends as soon as the last handle to the pool is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderValue, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use towergate_proxy::UpstreamTls;

use crate::config::CheckSettings;
use crate::pool::{Intent, Member, Pool, PoolInner};

/// The background task that runs a pool's health checks; spawn it
/// (`tokio::spawn(checks)`). It ends when the pool is dropped.
#[must_use = "health checks do nothing unless spawned"]
pub struct HealthChecks {
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecks").finish_non_exhaustive()
    }
}

impl Future for HealthChecks {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.future.as_mut().poll(cx)
    }
}

impl Pool {
    /// The pool's health-check task, when its configuration asks for checks. Spawn it
    /// once; it stops by itself when every handle to the pool (layers included) is gone.
    ///
    /// `https://` members are verified against the system's root certificates; use
    /// [`health_checks_with_tls`](Self::health_checks_with_tls) to check them as the
    /// forwarder reaches them.
    pub fn health_checks(&self) -> Option<HealthChecks> {
        self.health_checks_with_tls(UpstreamTls::system_roots())
    }

    /// [`health_checks`](Self::health_checks), with `https://` members verified as `tls`
    /// says: pass the forwarder's [`ForwardConfig::upstream_tls`] so that a member passes
    /// its checks exactly when requests can reach it.
    ///
    /// [`ForwardConfig::upstream_tls`]: towergate_proxy::ForwardConfig::upstream_tls
    pub fn health_checks_with_tls(&self, tls: UpstreamTls) -> Option<HealthChecks> {
        let settings = self.inner.settings.health_check.clone()?;
        let pool = Arc::downgrade(&self.inner);
        let alive = self.inner.alive.subscribe();
        let tls = TlsConnector::from(tls.client_config().clone());
        Some(HealthChecks {
            future: Box::pin(run(pool, alive, settings, tls)),
        })
    }
}

async fn run(
    pool: Weak<PoolInner>,
    mut alive: watch::Receiver<()>,
    settings: CheckSettings,
    tls: TlsConnector,
) {
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let user_agent = HeaderValue::from_static("towergate-health-check");
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            // The pool is gone (its sender dropped).
            _ = alive.changed() => return,
        }
        let Some(pool) = pool.upgrade() else { return };
        let checks = pool
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.intent() != Intent::Disabled)
            .map(|(i, m)| {
                let (settings, user_agent, tls) = (&settings, &user_agent, &tls);
                async move { (i, check(m, settings, user_agent, tls).await) }
            });
        for (i, outcome) in futures_util::future::join_all(checks).await {
            match outcome {
                Ok(()) => pool.check_passed(i, settings.rise),
                Err(why) => pool.check_failed(i, settings.fall, why),
            }
        }
    }
}

/// One check of one member: connect (with TLS for an `https://` member), send, read the
/// status, close.
async fn check(
    member: &Member,
    settings: &CheckSettings,
    user_agent: &HeaderValue,
    tls: &TlsConnector,
) -> Result<(), String> {
    let up = member.upstream();
    let host = up
        .authority()
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let https = up.is_https();
    let port = up
        .authority()
        .port_u16()
        .unwrap_or(if https { 443 } else { 80 });
    let path = format!("{}{}", up.base_path(), settings.path);
    let attempt = async {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("health check could not connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let req = Request::builder()
            .method(settings.method.clone())
            .uri(path.as_str())
            .header(HOST, up.host_header())
            .header(USER_AGENT, user_agent)
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("health check request: {e}"))?;
        let status = if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| format!("health check: `{host}` is not a TLS server name: {e}"))?;
            let stream = tls
                .connect(name, stream)
                .await
                .map_err(|e| format!("health check TLS handshake failed: {e}"))?;
            exchange(stream, req).await?
        } else {
            exchange(stream, req).await?
        };
        expect(status, settings.expect)
    };
    match tokio::time::timeout(settings.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "health check timed out after {:?}",
            settings.timeout
        )),
    }
}

/// Sends `req` over `io` as HTTP/1.1 and returns the answer's status.
async fn exchange<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("health check failed: {e}"))?;
    let send = sender.send_request(req);
    tokio::pin!(send, conn);
    // The connection may finish first (it closes after the answer); the answer is
    // then waiting for `send`, or `send` fails with the connection's error.
    let res = tokio::select! {
        biased;
        res = &mut send => res,
        _ = &mut conn => send.await,
    };
    res.map(|res| res.status())
        .map_err(|e| format!("health check failed: {e}"))
}

fn expect(status: StatusCode, (lo, hi): (u16, u16)) -> Result<(), String> {
    if (lo..=hi).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!(
            "health check answered {status}, expected {lo}-{hi}"
        ))
    }
}
