//! An upstream origin: where requests for a route (or a balancer member) are sent.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

/// A parsed upstream URL such as `http://paid_one.domain.lan/paid_user`, with what the
/// forwarding path needs precomputed.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    url: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    /// The URL's path without its trailing slash (`""` for the root).
    base_path: Arc<str>,
    host: HeaderValue,
    /// `scheme://authority`, for ProxyPassReverse matching.
    origin: Arc<str>,
    /// `scheme://authority/`: where connections are made.
    connect_uri: Uri,
    /// The connection pool's index for this scheme and authority.
    pool_slot: usize,
}

/// Pool slots by `scheme://authority` (lower case): every upstream parsed with the same
/// origin shares a slot, so connections are found by index instead of by hashing a key
/// on each request. Grows only with distinct origins ever configured.
fn pool_slot(origin: &str) -> usize {
    static SLOTS: std::sync::Mutex<Vec<Box<str>>> = std::sync::Mutex::new(Vec::new());
    let origin = origin.to_ascii_lowercase();
    let mut slots = SLOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match slots.iter().position(|o| **o == *origin) {
        Some(slot) => slot,
        None => {
            slots.push(origin.into());
            slots.len() - 1
        }
    }
}

/// Why an upstream URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Not a URL at all.
    #[error("`{0}` is not a valid URL")]
    Invalid(String),
    /// Only `http` and `https` are forwarded to.
    #[error("`{0}`: the scheme must be http or https")]
    Scheme(String),
    /// No host in the URL.
    #[error("`{0}` has no host")]
    NoHost(String),
    /// Upstream URLs name a base path, never a query.
    #[error("`{0}` has a query; an upstream URL names a base path only")]
    Query(String),
}

impl Upstream {
    /// Parses an upstream URL: `http://host[:port][/base/path]` or `https://...`.
    pub fn parse(url: &str) -> Result<Self, UpstreamError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| UpstreamError::Invalid(url.to_owned()))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| UpstreamError::Invalid(url.to_owned()))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(UpstreamError::Scheme(url.to_owned()));
        }
        let authority = uri
            .authority()
            .cloned()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| UpstreamError::NoHost(url.to_owned()))?;
        if uri.query().is_some() {
            return Err(UpstreamError::Query(url.to_owned()));
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| UpstreamError::Invalid(url.to_owned()))?;
        let origin = format!("{scheme}://{authority}");
        let connect_uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| UpstreamError::Invalid(url.to_owned()))?;
        Ok(Self {
            url: url.into(),
            pool_slot: pool_slot(&origin),
            connect_uri,
            origin: origin.into(),
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').into(),
            host,
        })
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for an `https://` upstream.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The `host[:port]` part.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The base path without trailing slash (`""` for the root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// `scheme://authority` of the upstream.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `scheme://authority/`, what a connector is asked to connect to.
    pub fn connect_uri(&self) -> &Uri {
        &self.connect_uri
    }

    /// The connection pool's index for this upstream's scheme and authority: the same
    /// for every upstream with the same origin.
    pub fn pool_slot(&self) -> usize {
        self.pool_slot
    }

    /// The `Host` header value naming this upstream.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// The request target (origin form, `/path?query`) at this upstream for a front
    /// request whose path past the route prefix is `remainder` (empty or starting with
    /// `/`); `front` is the front request's own path-and-query, reused as it is when the
    /// mapping leaves it unchanged.
    pub fn path_for(
        &self,
        front_prefix: &str,
        remainder: &str,
        front: Option<&PathAndQuery>,
    ) -> PathAndQuery {
        match front {
            Some(pq) if *self.base_path == *front_prefix && !remainder.is_empty() => pq.clone(),
            _ => {
                let query = front.and_then(|pq| pq.query());
                let len =
                    self.base_path.len() + remainder.len() + query.map_or(0, |q| q.len() + 1) + 1;
                let mut buf = BytesMut::with_capacity(len);
                buf.put_slice(self.base_path.as_bytes());
                buf.put_slice(remainder.as_bytes());
                if buf.is_empty() {
                    buf.put_u8(b'/');
                }
                if let Some(q) = query {
                    buf.put_u8(b'?');
                    buf.put_slice(q.as_bytes());
                }
                // The parts come from a parsed URI and a normalised path, so they are valid.
                PathAndQuery::from_maybe_shared(buf.freeze())
                    .unwrap_or_else(|_| PathAndQuery::from_static("/"))
            }
        }
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Upstream").field(&self.url).finish()
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(up: &str, prefix: &str, path_and_query: &str) -> String {
        let up = Upstream::parse(up).unwrap();
        let pq: PathAndQuery = path_and_query.parse().unwrap();
        let prefix = prefix.trim_end_matches('/');
        let remainder = &pq.path()[prefix.len()..];
        format!(
            "{}{}",
            up.origin(),
            up.path_for(prefix, remainder, Some(&pq))
        )
    }

    #[test]
    fn prefix_mapping_joins_slashes_once() {
        assert_eq!(
            uri("http://n.lan/news_rss/", "/news_rss/", "/news_rss/x?a=1"),
            "http://n.lan/news_rss/x?a=1"
        );
        assert_eq!(
            uri("http://p.lan/paid_user", "/paid_user", "/paid_user/x"),
            "http://p.lan/paid_user/x"
        );
        assert_eq!(
            uri("http://p.lan/paid_user", "/paid_user", "/paid_user"),
            "http://p.lan/paid_user"
        );
        assert_eq!(uri("http://w.lan", "/", "/a/b"), "http://w.lan/a/b");
        assert_eq!(uri("http://w.lan", "/", "/"), "http://w.lan/");
        assert_eq!(uri("http://w.lan/", "/", "/?q"), "http://w.lan/?q");
        assert_eq!(
            uri("http://b.lan/bar", "/foo/", "/foo/a"),
            "http://b.lan/bar/a"
        );
        assert_eq!(
            uri("http://b.lan/bar/", "/foo", "/foo?x=1"),
            "http://b.lan/bar?x=1"
        );
        assert_eq!(uri("http://b.lan/", "/foo", "/foo"), "http://b.lan/");
        assert_eq!(
            uri("http://b.lan:8080/x", "/", "/y"),
            "http://b.lan:8080/x/y"
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            Upstream::parse("ftp://a/"),
            Err(UpstreamError::Scheme(_))
        ));
        assert!(matches!(
            Upstream::parse("/just/a/path"),
            Err(UpstreamError::Invalid(_))
        ));
        assert!(matches!(
            Upstream::parse("http://a/?q=1"),
            Err(UpstreamError::Query(_))
        ));
        assert!(matches!(
            Upstream::parse("not a url"),
            Err(UpstreamError::Invalid(_))
        ));
    }
}
