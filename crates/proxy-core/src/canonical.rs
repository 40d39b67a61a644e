//! The canonical-request layer: the first look at a request, before any guard or route.
//!
//! It refuses what a reverse proxy must never pass on and gives the rest one spelling:
//! - ambiguous framing (request smuggling): `Content-Length` with `Transfer-Encoding`, a
//!   `Transfer-Encoding` other than exactly `chunked`, HTTP/1.1 without exactly one
//!   `Host`: 400, and the connection is closed;
//! - forward-proxy use (Apache `ProxyRequests Off`): `CONNECT` gets 405, an absolute-form
//!   target naming a host that is not one of the server's names gets 400;
//! - the path is normalised ([`normalize_path`](crate::normalize_path)) and written back
//!   into the URI, so routing, the ACL and the character filter all see the path the
//!   upstream will get.
//!
//! hyper's parser has already refused differing duplicate `Content-Length`s, invalid chunk
//! sizes and chunked HTTP/1.0 bodies by the time a request gets here.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::status_response;
use crate::path::normalize_path;

/// Builds [`CanonicalRequest`] services.
#[derive(Debug, Clone, Default)]
pub struct CanonicalRequestLayer {
    names: Arc<[String]>,
}

impl CanonicalRequestLayer {
    /// A layer that accepts absolute-form targets only for the given host names (the
    /// server's `ServerName`/`ServerAlias`es, without port; case-insensitive).
    pub fn new(server_names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            names: server_names
                .into_iter()
                .map(|n| n.into().to_ascii_lowercase())
                .collect(),
        }
    }
}

impl<S> Layer<S> for CanonicalRequestLayer {
    type Service = CanonicalRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CanonicalRequest {
            inner,
            names: self.names.clone(),
        }
    }
}

/// Refuses smuggling and forward-proxy requests and normalises the path.
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct CanonicalRequest<S> {
    inner: S,
    names: Arc<[String]>,
}

/// Why a request was refused by [`CanonicalRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Framing a backend could read differently; the connection must close.
    Framing(&'static str),
    /// A malformed target or host.
    BadRequest(&'static str),
    /// CONNECT: towergate is no forward proxy.
    Connect,
}

impl Refusal {
    fn response<B: From<Bytes>>(self) -> Response<B> {
        let status = match self {
            Refusal::Framing(_) | Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
        };
        let mut res = status_response(status);
        if let Refusal::Framing(_) = self {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

impl<S> CanonicalRequest<S> {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), Refusal> {
        if req.method() == Method::CONNECT {
            return Err(Refusal::Connect);
        }
        let h1 = req.version() < Version::HTTP_2;
        let headers = req.headers();
        if h1 {
            if headers.contains_key(header::TRANSFER_ENCODING) {
                if headers.contains_key(header::CONTENT_LENGTH) {
                    return Err(Refusal::Framing(
                        "both Content-Length and Transfer-Encoding",
                    ));
                }
                let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
                let exactly_chunked = te
                    .next()
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
                    && te.next().is_none();
                if !exactly_chunked {
                    return Err(Refusal::Framing("Transfer-Encoding is not exactly chunked"));
                }
            }
            let mut hosts = headers.get_all(header::HOST).iter();
            let first_host = hosts.next();
            if hosts.next().is_some() {
                return Err(Refusal::Framing("more than one Host"));
            }
            if first_host.is_none() && req.version() == Version::HTTP_11 {
                return Err(Refusal::Framing("HTTP/1.1 without Host"));
            }
            if let Some(authority) = req.uri().authority() {
                // Absolute-form: a forward-proxy request unless it names us.
                let host = authority.host().to_ascii_lowercase();
                if !self.names.contains(&host) {
                    return Err(Refusal::BadRequest(
                        "absolute-form target for a foreign host",
                    ));
                }
                if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
        }
        self.normalize(req)
    }

    fn normalize<B>(&self, req: &mut Request<B>) -> Result<(), Refusal> {
        if req.uri().path() == "*" {
            return if req.method() == Method::OPTIONS {
                Ok(())
            } else {
                Err(Refusal::BadRequest("'*' target"))
            };
        }
        let path =
            normalize_path(req.uri().path()).map_err(|_| Refusal::BadRequest("malformed path"))?;
        let absolute = req.uri().scheme().is_some();
        if let std::borrow::Cow::Borrowed(_) = path {
            if !absolute || req.version() >= Version::HTTP_2 {
                return Ok(());
            }
        }
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        };
        let pq = PathAndQuery::try_from(pq).map_err(|_| Refusal::BadRequest("malformed target"))?;
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.path_and_query = Some(pq);
        if req.version() < Version::HTTP_2 {
            // Origin-form from here on; the host now lives in the Host header.
            parts.scheme = None;
            parts.authority = None;
        }
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|_| Refusal::BadRequest("malformed target"))?;
        Ok(())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CanonicalRequest<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.check(&mut req) {
            Ok(()) => futures_util::future::Either::Right(self.inner.call(req)),
            Err(refusal) => {
                tracing::info!(target: "towergate_proxy", ?refusal, method = %req.method(), uri = %req.uri(), "request refused");
                futures_util::future::Either::Left(std::future::ready(Ok(refusal.response())))
            }
        }
    }
}
