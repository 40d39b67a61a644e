//! The service: checks the head, then hands the inner service a body that cannot pass the
//! limit.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version, header};
use http_body::Body;
use tower_service::Service;

use crate::body::{RequestBody, Tripwire};
use crate::future::ResponseFuture;
use crate::layer::{Exceeded, Stats};
use crate::{RequestLimitsConfig, RequestLimitsLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Length of the version in a request line: `HTTP/1.1` and `HTTP/1.0` alike.
const VERSION_LEN: usize = 8;

/// Applies request limits to an inner service; made by [`RequestLimitsLayer`]. See the crate
/// docs.
#[derive(Debug, Clone)]
pub struct RequestLimits<S> {
    pub(crate) inner: S,
    pub(crate) config: RequestLimitsConfig,
    pub(crate) stats: Arc<Stats>,
}

// === impl RequestLimits ===

impl<S> RequestLimits<S> {
    /// A layer with Apache's default limits, to be changed with its builder methods.
    pub fn layer() -> RequestLimitsLayer {
        RequestLimitsLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service out.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The limits in force.
    pub fn config(&self) -> &RequestLimitsConfig {
        &self.config
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestLimits<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let limits = self.config;
        if let Some(exceeded) = check_head(&limits, &req) {
            return self.refuse(exceeded);
        }
        let limit = limits.body;
        if limit == 0 {
            return ResponseFuture::inner(self.inner.call(req.map(RequestBody::unlimited)), None);
        }
        let hint = req.body().size_hint();
        let declared = content_length(req.headers()).or(hint.exact());
        if let Some(len) = declared
            .filter(|&len| len > limit)
            .or((hint.lower() > limit).then(|| hint.lower()))
        {
            tracing::debug!(
                target: "towergate_request_limits",
                directive = "LimitRequestBody",
                limit,
                len,
                "request refused: declared body too large (413)"
            );
            return self.refuse(Exceeded::BodyDeclared);
        }
        if hint.exact().is_some() {
            // Its length is known and within the limit; hyper's bodies are held to it.
            return ResponseFuture::inner(self.inner.call(req.map(RequestBody::unlimited)), None);
        }
        let tripwire = Tripwire::new(self.stats.clone());
        let req = req.map(|body| RequestBody::counted(body, limit, tripwire.clone()));
        ResponseFuture::inner(self.inner.call(req), Some(tripwire))
    }
}

impl<S> RequestLimits<S> {
    fn refuse<F>(&self, exceeded: Exceeded) -> ResponseFuture<F> {
        self.stats.count(exceeded);
        ResponseFuture::refused(match exceeded {
            Exceeded::Line => StatusCode::URI_TOO_LONG,
            Exceeded::Fields | Exceeded::FieldSize => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Exceeded::BodyDeclared | Exceeded::BodyStreamed => StatusCode::PAYLOAD_TOO_LARGE,
        })
    }
}

/// The first limit the request's head passes, if any.
fn check_head<B>(limits: &RequestLimitsConfig, req: &Request<B>) -> Option<Exceeded> {
    if limits.line != 0 {
        let len = request_line_len(req);
        if len > limits.line {
            tracing::debug!(
                target: "towergate_request_limits",
                directive = "LimitRequestLine",
                limit = limits.line,
                len,
                "request refused: request line too long (414)"
            );
            return Some(Exceeded::Line);
        }
    }
    let headers = req.headers();
    if limits.fields != 0 && headers.len() > limits.fields {
        tracing::debug!(
            target: "towergate_request_limits",
            directive = "LimitRequestFields",
            limit = limits.fields,
            fields = headers.len(),
            "request refused: too many header fields (431)"
        );
        return Some(Exceeded::Fields);
    }
    if limits.field_size != 0 {
        for (name, value) in headers {
            let len = field_len(name.as_str(), value.as_bytes());
            if len > limits.field_size {
                tracing::debug!(
                    target: "towergate_request_limits",
                    directive = "LimitRequestFieldSize",
                    limit = limits.field_size,
                    len,
                    field = name.as_str(),
                    "request refused: header field too large (431)"
                );
                return Some(Exceeded::FieldSize);
            }
        }
    }
    None
}

/// The length of a request's request line as [`LimitRequestLine`] counts it: method, space,
/// request target, space and an 8-byte version (`HTTP/1.1`), without the line's CRLF.
///
/// The target is counted as parsed: an HTTP/1 origin-form target (`/path?query`) or
/// absolute-form target (`http://host/path?query`) as sent; a `CONNECT` authority as sent. An
/// HTTP/2 request has no request line: its `:path` (or `CONNECT`'s `:authority`) is counted as
/// the target, as if it had come in an HTTP/1.1 origin-form line.
///
/// [`LimitRequestLine`]: RequestLimitsConfig::line
pub fn request_line_len<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let path_and_query = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let target = match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority)) if req.version() < Version::HTTP_2 => {
            scheme.as_str().len() + 3 + authority.as_str().len() + path_and_query
        }
        (_, Some(authority)) if path_and_query == 0 => authority.as_str().len(),
        _ => path_and_query,
    };
    req.method().as_str().len() + 1 + target + 1 + VERSION_LEN
}

/// A header field's length as [`LimitRequestFieldSize`] counts it: `name: value`, i.e. the
/// name, a colon and one space, and the value without surrounding whitespace.
///
/// [`LimitRequestFieldSize`]: RequestLimitsConfig::field_size
pub fn field_len(name: &str, value: &[u8]) -> usize {
    name.len() + 2 + value.len()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full};
    use tower::{ServiceExt, service_fn};

    use super::*;

    /// An inner service that reads the whole body and answers with its length, or 502 when
    /// reading fails (as a proxy would).
    async fn drain(
        req: Request<RequestBody<Full<Bytes>>>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        match req.into_body().collect().await {
            Ok(body) => Ok(Response::new(Full::from(body.to_bytes().len().to_string()))),
            Err(_) => {
                let mut res = Response::new(Full::from("bad gateway"));
                *res.status_mut() = StatusCode::BAD_GATEWAY;
                Ok(res)
            }
        }
    }

    async fn status(layer: &RequestLimitsLayer, req: Request<Full<Bytes>>) -> StatusCode {
        let svc = tower::ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(drain));
        svc.oneshot(req).await.unwrap().status()
    }

    fn article() -> RequestLimitsLayer {
        RequestLimitsLayer::new()
            .body(100)
            .fields(4)
            .field_size(20)
            .line(30)
    }

    #[test]
    fn request_line_is_counted_like_apache() {
        let req = Request::get("/abc?x=1").body(()).unwrap();
        assert_eq!(request_line_len(&req), "GET /abc?x=1 HTTP/1.1".len());
        let req = Request::get("http://example.com/abc").body(()).unwrap();
        assert_eq!(
            request_line_len(&req),
            "GET http://example.com/abc HTTP/1.1".len()
        );
        let req = Request::connect("example.com:443").body(()).unwrap();
        assert_eq!(
            request_line_len(&req),
            "CONNECT example.com:443 HTTP/1.1".len()
        );
        let req = Request::options("*").body(()).unwrap();
        assert_eq!(request_line_len(&req), "OPTIONS * HTTP/1.1".len());
        let req = Request::post("https://example.com/abc?q")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(request_line_len(&req), "POST /abc?q HTTP/1.1".len());
    }

    #[tokio::test]
    async fn line_boundary() {
        let layer = article();
        // "GET " + target + " HTTP/1.1" = 13 + target
        let ok = format!("/{}", "a".repeat(30 - 13 - 1));
        assert_eq!(
            status(&layer, Request::get(&ok).body(Full::default()).unwrap()).await,
            StatusCode::OK
        );
        let long = format!("{ok}b");
        assert_eq!(
            status(&layer, Request::get(&long).body(Full::default()).unwrap()).await,
            StatusCode::URI_TOO_LONG
        );
        assert_eq!(layer.stats().line, 1);
    }

    #[tokio::test]
    async fn fields_boundary_counts_repeated_fields() {
        let layer = article();
        let mut req = Request::get("/").body(Full::default()).unwrap();
        for _ in 0..4 {
            req.headers_mut().append("x-a", "1".parse().unwrap());
        }
        assert_eq!(status(&layer, req.clone()).await, StatusCode::OK);
        req.headers_mut().append("x-a", "1".parse().unwrap());
        assert_eq!(
            status(&layer, req).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(layer.stats().fields, 1);
    }

    #[tokio::test]
    async fn field_size_boundary() {
        let layer = article();
        // "x-long: " is 8 bytes.
        let req = |n: usize| {
            Request::get("/")
                .header("x-long", "v".repeat(n))
                .body(Full::default())
                .unwrap()
        };
        assert_eq!(status(&layer, req(12)).await, StatusCode::OK);
        assert_eq!(
            status(&layer, req(13)).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(layer.stats().field_size, 1);
    }

    #[tokio::test]
    async fn declared_body_is_refused_unread() {
        let layer = article();
        let body = |n: usize| Full::from(vec![b'x'; n]);
        assert_eq!(
            status(&layer, Request::post("/").body(body(100)).unwrap()).await,
            StatusCode::OK
        );
        let res = tower::ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(|_: Request<RequestBody<Full<Bytes>>>| async {
                panic!("the inner service must not be called");
                #[allow(unreachable_code)]
                Ok::<Response<Full<Bytes>>, Infallible>(Response::default())
            }))
            .oneshot(Request::post("/").body(body(101)).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(res.headers()["content-length"], "22");
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes(),
            "413 Content Too Large\n"
        );
        // A Content-Length header alone is enough.
        let req = Request::post("/")
            .header("content-length", "101")
            .body(body(0))
            .unwrap();
        assert_eq!(status(&layer, req).await, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(layer.stats().body_declared, 2);
    }

    #[tokio::test]
    async fn zero_means_unlimited() {
        let layer = RequestLimitsLayer::new()
            .body(0)
            .fields(0)
            .field_size(0)
            .line(0);
        let mut req = Request::post(format!("/{}", "a".repeat(20_000)))
            .header("x-long", "v".repeat(20_000))
            .body(Full::from(vec![b'x'; 2 << 20]))
            .unwrap();
        for _ in 0..500 {
            req.headers_mut().append("x-a", "1".parse().unwrap());
        }
        assert_eq!(status(&layer, req).await, StatusCode::OK);
        assert_eq!(layer.stats(), Default::default());
    }
}
