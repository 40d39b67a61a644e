//! The admin listener: the status page, its JSON, Prometheus metrics, and operator
//! actions. Loopback only by default; `allow` widens it by network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use ipnet::IpNet;
use serde::Deserialize;

use crate::status::Status;

/// `[admin]`: where the status page and metrics are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener, e.g. `"127.0.0.1:9901"`.
    pub listen: SocketAddr,
    /// Client networks allowed to use it (default: loopback only).
    #[serde(default = "loopback")]
    pub allow: Vec<IpNet>,
}

fn loopback() -> Vec<IpNet> {
    vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
}

/// What the admin service reads: the current generation's status.
#[derive(Clone)]
pub struct Admin {
    status: Arc<ArcSwap<Status>>,
    allow: Arc<[IpNet]>,
}

impl Admin {
    /// An admin service over `status`, for clients in `allow`.
    pub fn new(status: Arc<ArcSwap<Status>>, allow: &[IpNet]) -> Self {
        Self {
            status,
            allow: allow.into(),
        }
    }

    /// Answers one admin request from `peer`.
    pub async fn handle(
        &self,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        if !self.allow.iter().any(|net| net.contains(&peer.ip())) {
            return Ok(text(StatusCode::FORBIDDEN, "403 Forbidden\n"));
        }
        let status = self.status.load();
        let path = req.uri().path().to_owned();
        let res = match (req.method(), path.as_str()) {
            (&Method::GET, "/") => page("text/html; charset=utf-8", status.to_html()),
            (&Method::GET, "/status.json") => {
                page("application/json", status.to_json().to_string())
            }
            (&Method::GET, "/metrics") => page("text/plain; version=0.0.4", status.metrics_text()),
            (&Method::POST, p) => match status.member_action(p) {
                Ok(done) => {
                    let mut res = Response::new(Full::new(Bytes::from(format!("{done}\n"))));
                    *res.status_mut() = StatusCode::SEE_OTHER;
                    res.headers_mut()
                        .insert(header::LOCATION, HeaderValue::from_static("/"));
                    res
                }
                Err(why) => {
                    let mut res = Response::new(Full::new(Bytes::from(format!("{why}\n"))));
                    *res.status_mut() = StatusCode::NOT_FOUND;
                    res
                }
            },
            _ => text(StatusCode::NOT_FOUND, "404 Not Found\n"),
        };
        Ok(res)
    }
}

fn page(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A short plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Serves the admin listener until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Admin,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::server::stopped(&mut stop) => return,
        };
        let admin = admin.clone();
        let service = hyper::service::service_fn(move |req| {
            let admin = admin.clone();
            async move { admin.handle(peer, req).await }
        });
        let conn = builder
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
