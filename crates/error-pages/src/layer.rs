//! The layer, the service, and the responses they make.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, Method, Request, Response, StatusCode, Uri, Version};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::RequestBody;
use crate::config::{ErrorPagesBuilder, ErrorPagesConfig, ErrorPagesError, Prepared, StatusMatch};
use crate::future::ResponseFuture;
use crate::marker::{ErrorDocumentRequest, OverrideErrors, UpstreamResponse};

pub(crate) const TARGET: &str = "towergate_error_pages";

/// Replaces error answers with configured documents (Apache `ErrorDocument`).
///
/// Cheap to clone: the documents and counters are shared. See the crate docs.
#[derive(Debug, Clone)]
pub struct ErrorPagesLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// For statuses 400..=599: index into `docs`.
    table: [Option<u16>; 200],
    docs: Box<[Prepared]>,
    override_backend: bool,
    has_local: bool,
    stats: ErrorPagesStats,
}

impl ErrorPagesLayer {
    /// A layer for `config`; fails on a document that cannot be used or a status given
    /// twice.
    pub fn from_config(config: &ErrorPagesConfig) -> Result<Self, ErrorPagesError> {
        let mut docs = Vec::with_capacity(config.documents.len());
        let mut table = [None; 200];
        let mut exact = [false; 200];
        for (i, (status, document)) in config.documents.iter().enumerate() {
            if config.documents[..i].iter().any(|(s, _)| s == status) {
                return Err(ErrorPagesError::Duplicate { status: *status });
            }
            let prepared = document.prepare(status)?;
            let index = u16::try_from(docs.len()).map_err(|_| ErrorPagesError::Document {
                status: *status,
                reason: "too many documents; share one document between statuses with a list"
                    .into(),
            })?;
            let redirect = matches!(prepared, Prepared::Redirect { .. });
            docs.push(prepared);
            match status {
                StatusMatch::Exact(code) => {
                    if let Some(slot) = code
                        .as_u16()
                        .checked_sub(400)
                        .map(usize::from)
                        .filter(|i| *i < 200)
                    {
                        table[slot] = Some(index);
                        exact[slot] = true;
                    }
                }
                StatusMatch::Class(class) => {
                    let from = (usize::from(*class) - 4) * 100;
                    for slot in from..from + 100 {
                        // A URL cannot answer 401 (the client would lose the challenge).
                        let url_for_401 = redirect && slot == 1;
                        if !exact[slot] && !url_for_401 {
                            table[slot] = Some(index);
                        }
                    }
                }
            }
        }
        let has_local = docs.iter().any(|d| matches!(d, Prepared::Local { .. }));
        Ok(Self {
            shared: Arc::new(Shared {
                table,
                docs: docs.into_boxed_slice(),
                override_backend: config.override_backend,
                has_local,
                stats: ErrorPagesStats::default(),
            }),
        })
    }

    /// A layer with no documents: it changes nothing, so a stack can keep one type
    /// whether error pages are configured or not.
    pub fn disabled() -> Self {
        Self::from_config(&ErrorPagesConfig::default()).expect("an empty config is valid")
    }

    /// Builds a layer in code.
    pub fn builder() -> ErrorPagesBuilder {
        ErrorPagesBuilder::new()
    }

    /// The layer's counters, shared by every service it made.
    pub fn stats(&self) -> &ErrorPagesStats {
        &self.shared.stats
    }
}

impl<S> Layer<S> for ErrorPagesLayer {
    type Service = ErrorPages<S>;

    fn layer(&self, inner: S) -> ErrorPages<S> {
        ErrorPages {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`ErrorPagesLayer`]. See the crate docs.
#[derive(Debug, Clone)]
pub struct ErrorPages<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ErrorPages<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ErrorPages<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let internal = req.extensions().get::<ErrorDocumentRequest>().is_some();
        let head = req.method() == Method::HEAD;
        // Only a local document needs the request again; capture it only then.
        let replay = (self.shared.has_local && !internal).then(|| {
            Box::new(Replay {
                service: self.inner.clone(),
                uri: req.uri().clone(),
                version: req.version(),
                headers: req.headers().clone(),
                extensions: req.extensions().clone(),
            })
        });
        let future = self.inner.call(req.map(RequestBody::new));
        ResponseFuture::new(future, self.shared.clone(), head, internal, replay)
    }
}

/// What the internal request for a local document is made of.
pub(crate) struct Replay<S> {
    pub(crate) service: S,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

/// Request headers that describe a body or make the request conditional or partial:
/// the internal request has no body and wants the whole document.
const NOT_REPLAYED: [HeaderName; 11] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::EXPECT,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

impl<S> Replay<S> {
    /// The internal request for `path`, replacing an answer with `status`.
    pub(crate) fn request<B>(
        self,
        path: &http::uri::PathAndQuery,
        status: StatusCode,
        head: bool,
    ) -> (S, Request<RequestBody<B>>) {
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(path.clone());
        let uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from(path.clone()));
        let mut req = Request::new(RequestBody::empty());
        // Apache sends the internal redirect as GET (HEAD stays HEAD).
        *req.method_mut() = if head { Method::HEAD } else { Method::GET };
        *req.uri_mut() = uri;
        *req.version_mut() = self.version;
        let mut headers = self.headers;
        for name in &NOT_REPLAYED {
            headers.remove(name);
        }
        *req.headers_mut() = headers;
        let mut extensions = self.extensions;
        extensions.insert(ErrorDocumentRequest {
            status,
            original_uri: self.uri,
        });
        *req.extensions_mut() = extensions;
        (self.service, req)
    }
}

/// Headers that describe the replaced body; they go with it.
const REPRESENTATION: [HeaderName; 12] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
    header::CONTENT_RANGE,
    header::CONTENT_DISPOSITION,
    header::TRANSFER_ENCODING,
    header::TRAILER,
    header::ETAG,
    header::LAST_MODIFIED,
    header::ACCEPT_RANGES,
];

/// Headers of a local document's answer that travel with its body.
const DOCUMENT_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
];

/// What to do with an answer.
pub(crate) enum Decision<'a> {
    Keep,
    Text {
        body: &'a Bytes,
        content_type: &'a HeaderValue,
        content_length: &'a HeaderValue,
    },
    Redirect(&'a HeaderValue),
    Local(&'a http::uri::PathAndQuery),
}

impl Shared {
    pub(crate) fn decide<B>(&self, res: &Response<B>) -> Decision<'_> {
        let code = res.status().as_u16();
        let Some(index) = code
            .checked_sub(400)
            .and_then(|slot| self.table.get(usize::from(slot)))
            .copied()
            .flatten()
        else {
            return Decision::Keep;
        };
        let extensions = res.extensions();
        if extensions.get::<UpstreamResponse>().is_some()
            && !self.override_backend
            && extensions.get::<OverrideErrors>().is_none()
        {
            self.stats.backend_kept.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(target: TARGET, status = code, "backend error answer passed through");
            return Decision::Keep;
        }
        match &self.docs[usize::from(index)] {
            Prepared::Text {
                body,
                content_type,
                content_length,
            } => Decision::Text {
                body,
                content_type,
                content_length,
            },
            Prepared::Redirect { location } => Decision::Redirect(location),
            Prepared::Local { path } => Decision::Local(path),
        }
    }

    pub(crate) fn text<B: From<Bytes>>(
        &self,
        res: Response<B>,
        body: &Bytes,
        content_type: &HeaderValue,
        content_length: &HeaderValue,
        head: bool,
    ) -> Response<B> {
        let (mut parts, _replaced) = res.into_parts();
        strip_representation(&mut parts.headers);
        parts
            .headers
            .insert(header::CONTENT_TYPE, content_type.clone());
        parts
            .headers
            .insert(header::CONTENT_LENGTH, content_length.clone());
        self.stats.text.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: TARGET, status = parts.status.as_u16(), "error answer replaced by text");
        let body = if head { Bytes::new() } else { body.clone() };
        Response::from_parts(parts, B::from(body))
    }

    pub(crate) fn redirect<B: From<Bytes>>(
        &self,
        res: Response<B>,
        location: &HeaderValue,
    ) -> Response<B> {
        let (mut parts, _replaced) = res.into_parts();
        let status = parts.status;
        strip_representation(&mut parts.headers);
        parts.status = StatusCode::FOUND;
        parts.headers.insert(header::LOCATION, location.clone());
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        self.stats.redirect.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: TARGET, status = status.as_u16(), location = ?location, "error answer redirected");
        Response::from_parts(parts, B::from(Bytes::new()))
    }

    /// The original answer's status and headers with the document's body.
    pub(crate) fn local<B>(&self, original: Response<B>, document: Response<B>) -> Response<B> {
        let (mut parts, _replaced) = original.into_parts();
        strip_representation(&mut parts.headers);
        let (mut doc, body) = document.into_parts();
        for name in DOCUMENT_HEADERS {
            if let Some(v) = doc.headers.remove(&name) {
                parts.headers.insert(name, v);
            }
        }
        self.stats.local.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: TARGET, status = parts.status.as_u16(), "error answer replaced by a local document");
        Response::from_parts(parts, body)
    }

    pub(crate) fn local_failed(&self, status: StatusCode, why: &str) {
        self.stats.local_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: TARGET, status = status.as_u16(), "local error document unavailable ({why}); sending the original answer");
    }
}

fn strip_representation(headers: &mut HeaderMap) {
    for name in &REPRESENTATION {
        headers.remove(name);
    }
}

// === impl ErrorPagesStats ===

/// What the layer did, counted since it was built.
#[derive(Debug, Default)]
pub struct ErrorPagesStats {
    text: AtomicU64,
    redirect: AtomicU64,
    local: AtomicU64,
    local_failed: AtomicU64,
    backend_kept: AtomicU64,
}

/// A copy of [`ErrorPagesStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorPagesSnapshot {
    /// Answers replaced by a text document.
    pub text: u64,
    /// Answers turned into a redirect to a URL.
    pub redirect: u64,
    /// Answers replaced by a local document.
    pub local: u64,
    /// Local documents that could not be fetched (the original answer was sent).
    pub local_failed: u64,
    /// Backend error answers passed through (no override).
    pub backend_kept: u64,
}

impl ErrorPagesStats {
    /// The counters now.
    pub fn snapshot(&self) -> ErrorPagesSnapshot {
        ErrorPagesSnapshot {
            text: self.text.load(Ordering::Relaxed),
            redirect: self.redirect.load(Ordering::Relaxed),
            local: self.local.load(Ordering::Relaxed),
            local_failed: self.local_failed.load(Ordering::Relaxed),
            backend_kept: self.backend_kept.load(Ordering::Relaxed),
        }
    }
}
