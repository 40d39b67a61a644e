//! Forwarding errors: where it failed, whether a retry elsewhere is safe, and the status
//! the client gets.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where forwarding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardErrorKind {
    /// No connection to the upstream could be made; nothing was sent.
    Connect,
    /// The upstream did not answer with response headers in time.
    Timeout,
    /// The connection failed after the request was (partly) sent, or the answer was not HTTP.
    Upstream,
    /// Reading the client's request body failed (malformed chunking, a body limit, the
    /// client went away): the client's fault, answered 400 unless a layer knows better.
    RequestBody,
    /// The request carried no [`Target`](crate::Target): a stack assembly error.
    NoTarget,
}

/// A failure to forward a request.
#[derive(Debug)]
pub struct ForwardError {
    kind: ForwardErrorKind,
    source: Option<BoxError>,
    extensions: http::Extensions,
}

impl ForwardError {
    pub(crate) fn new(kind: ForwardErrorKind, source: Option<BoxError>) -> Self {
        Self {
            kind,
            source,
            extensions: http::Extensions::new(),
        }
    }

    /// Hands the failed request's extensions back with the error.
    pub(crate) fn with_extensions(mut self, extensions: http::Extensions) -> Self {
        self.extensions = extensions;
        self
    }

    /// The failed request's extensions ([`Forward`](crate::Forward) hands them back with
    /// every error), so that a retry elsewhere carries them without a copy made up front.
    /// Empty when taken before, or when the failing service kept them.
    pub fn take_extensions(&mut self) -> http::Extensions {
        std::mem::take(&mut self.extensions)
    }

    /// Where it failed.
    pub fn kind(&self) -> ForwardErrorKind {
        self.kind
    }

    /// True when nothing reached the upstream, so the request may go to another member.
    pub fn is_retryable(&self) -> bool {
        self.kind == ForwardErrorKind::Connect
    }

    /// The status the client is answered with: 504 for a timeout, 500 for a missing
    /// target, 502 otherwise.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ForwardErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ForwardErrorKind::NoTarget => StatusCode::INTERNAL_SERVER_ERROR,
            ForwardErrorKind::RequestBody => StatusCode::BAD_REQUEST,
            ForwardErrorKind::Connect | ForwardErrorKind::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    /// The answer for the client: the status with a short plain-text body. After a
    /// request body failure the connection is closed, since its framing is in doubt.
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut res = status_response(self.status());
        if self.kind == ForwardErrorKind::RequestBody {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }

    /// The first error of type `T` in the source chain, e.g. a body layer's own error
    /// that explains a [`ForwardErrorKind::RequestBody`] failure.
    pub fn find_source<T: std::error::Error + 'static>(&self) -> Option<&T> {
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<T>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

/// A response with `status` and its reason phrase as a short plain-text body.
pub fn status_response<B: From<Bytes>>(status: StatusCode) -> Response<B> {
    let text = match status {
        StatusCode::BAD_GATEWAY => "502 Bad Gateway\n",
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Timeout\n",
        StatusCode::SERVICE_UNAVAILABLE => "503 Service Unavailable\n",
        StatusCode::BAD_REQUEST => "400 Bad Request\n",
        StatusCode::FORBIDDEN => "403 Forbidden\n",
        StatusCode::NOT_FOUND => "404 Not Found\n",
        StatusCode::METHOD_NOT_ALLOWED => "405 Method Not Allowed\n",
        StatusCode::PAYLOAD_TOO_LARGE => "413 Content Too Large\n",
        StatusCode::URI_TOO_LONG => "414 URI Too Long\n",
        _ => "500 Internal Server Error\n",
    };
    let mut res = Response::new(B::from(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    res
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ForwardErrorKind::Connect => "could not connect to the upstream",
            ForwardErrorKind::Timeout => "the upstream did not answer in time",
            ForwardErrorKind::Upstream => "the upstream connection failed",
            ForwardErrorKind::RequestBody => "reading the request body failed",
            ForwardErrorKind::NoTarget => "the request has no upstream target",
        };
        match &self.source {
            Some(source) => write!(f, "{what}: {source}"),
            None => f.write_str(what),
        }
    }
}

impl std::error::Error for ForwardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}
