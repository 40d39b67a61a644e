//! The layer and its service, and the small inner layer that tells it the client address.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;
use towergate_client_addr::{client_ip, peer_ip};

use crate::body::{Pending, RequestBody, ResponseBody};
use crate::entry::Entry;
use crate::format::LogFormat;
use crate::future::{LogClientAddrFuture, ResponseFuture};
use crate::writer::{LogWriter, LogWriterStats};

// === impl AccessLogLayer ===

/// Logs every request that passes, in an Apache [`LogFormat`], to a [`LogWriter`].
///
/// Cheap to clone. See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
pub struct AccessLogLayer {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) format: LogFormat,
    pub(crate) writer: LogWriter,
    pub(crate) server_name: Option<Arc<str>>,
}

impl AccessLogLayer {
    /// Logs in `format` to `writer`.
    pub fn new(format: LogFormat, writer: LogWriter) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                format,
                writer,
                server_name: None,
            })),
        }
    }

    /// A layer that logs nothing but keeps the same types, for stacks where the access
    /// log is switched off by configuration.
    pub fn disabled() -> Self {
        Self { shared: None }
    }

    /// The server's name, for `%v` (Apache's `ServerName`); without it `%v` logs the
    /// host the request named.
    pub fn server_name(self, name: impl Into<Arc<str>>) -> Self {
        let shared = self.shared.map(|s| {
            let s = Arc::unwrap_or_clone(s);
            Arc::new(Shared {
                server_name: Some(name.into()),
                ..s
            })
        });
        Self { shared }
    }

    /// The writer, to [`reopen`](LogWriter::reopen) or [`flush`](LogWriter::flush) it;
    /// `None` when disabled.
    pub fn writer(&self) -> Option<&LogWriter> {
        self.shared.as_ref().map(|s| &s.writer)
    }

    /// The format; `None` when disabled.
    pub fn format(&self) -> Option<&LogFormat> {
        self.shared.as_ref().map(|s| &s.format)
    }

    /// The writer's counters (all zero when disabled).
    pub fn stats(&self) -> LogWriterStats {
        self.writer().map(|w| w.stats()).unwrap_or_default()
    }
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Self {
            format: self.format.clone(),
            writer: self.writer.clone(),
            server_name: self.server_name.clone(),
        }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl AccessLog ===

/// The service of [`AccessLogLayer`]. See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

impl<S> AccessLog<S> {
    /// Wraps `inner`, logging as `layer` does.
    pub fn new(inner: S, layer: &AccessLogLayer) -> Self {
        layer.layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AccessLog<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(shared) = &self.shared else {
            let req = req.map(|b| RequestBody::new(b, None));
            return ResponseFuture::new(self.inner.call(req), None);
        };
        let mut entry = Entry::new(&shared.format, &req);
        if shared.server_name.is_some() && shared.format.needs().host {
            entry.set_server_name(shared.server_name.clone());
        }
        let counter = entry.body_in_counter();
        let req = req.map(|b| RequestBody::new(b, counter));
        let pending = Box::new(Pending {
            entry,
            shared: shared.clone(),
        });
        ResponseFuture::new(self.inner.call(req), Some(pending))
    }
}

// === impl LogClientAddrLayer ===

/// Tells an [`AccessLogLayer`] further out the client address decided further in.
///
/// The access log sits outermost, so it sees the request before
/// `towergate_client_addr::ClientAddrLayer` has decided who the client is (behind trusted
/// proxies, not the socket peer). Put this layer just inside that one: when the client
/// address differs from the peer's, it records it in the response's extensions, where the
/// access log reads it for `%h` and `%a`. When they are the same it does nothing at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogClientAddrLayer;

impl LogClientAddrLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for LogClientAddrLayer {
    type Service = LogClientAddr<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LogClientAddr { inner }
    }
}

/// The service of [`LogClientAddrLayer`].
#[derive(Debug, Clone)]
pub struct LogClientAddr<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LogClientAddr<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LogClientAddrFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let client = client_ip(&req).filter(|ip| Some(*ip) != peer_ip(req.extensions()));
        LogClientAddrFuture::new(self.inner.call(req), client)
    }
}
