//! Header work on both sides of the proxy: hop-by-hop removal, `X-Forwarded-*`, and
//! ProxyPassReverse on redirects.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static URI_HEADER: HeaderName = HeaderName::from_static("uri");

/// Removes hop-by-hop headers, those named in `Connection` first, then the fixed set
/// (RFC 9110 section 7.6.1). `Upgrade` goes too; [`Forward`](crate::Forward) puts it back
/// (with `Connection: upgrade`) on the upgrade requests it tunnels.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
    if headers.contains_key(header::UPGRADE) {
        headers.remove(header::UPGRADE);
    }
}

/// Appends `peer` to `X-Forwarded-For` (joining earlier values into one field) and sets
/// `X-Forwarded-Host` and `X-Forwarded-Proto`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    host: Option<&HeaderValue>,
    https: bool,
) {
    if let Some(ip) = peer {
        let mut joined = String::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(v) = v.to_str() {
                joined.push_str(v);
                joined.push_str(", ");
            }
        }
        use std::fmt::Write;
        let _ = write!(joined, "{ip}");
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    }
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
}

/// What ProxyPassReverse needs to map an upstream URL back to the front.
pub struct ReverseMap<'a> {
    /// The upstream's `scheme://authority`.
    pub upstream_origin: &'a str,
    /// The upstream's base path, without trailing slash.
    pub upstream_path: &'a str,
    /// `scheme://host` of the front as the client addressed it.
    pub front_origin: &'a str,
    /// The route's front prefix, without trailing slash.
    pub front_prefix: &'a str,
}

impl ReverseMap<'_> {
    /// Rewrites `Location`, `Content-Location` and `URI` values that point into the
    /// upstream (absolute, or path-absolute under its base path) to the front.
    pub fn rewrite(&self, headers: &mut HeaderMap) {
        for name in [&header::LOCATION, &header::CONTENT_LOCATION, &URI_HEADER] {
            if let Some(value) = headers.get_mut(name) {
                if let Some(new) = value.to_str().ok().and_then(|v| self.map(v)) {
                    if let Ok(new) = HeaderValue::from_str(&new) {
                        *value = new;
                    }
                }
            }
        }
    }

    /// The front URL for an upstream URL, or `None` if it does not point into the upstream.
    pub fn map(&self, value: &str) -> Option<String> {
        let (absolute, path) = match value.strip_prefix(self.upstream_origin) {
            Some(rest) if rest.is_empty() || rest.starts_with(['/', '?', '#']) => (true, rest),
            Some(_) => return None,
            None if value.starts_with('/')
                && !value.starts_with("//")
                && self.upstream_path != self.front_prefix =>
            {
                (false, value)
            }
            None => return None,
        };
        let rest = path.strip_prefix(self.upstream_path)?;
        if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            return None;
        }
        let mut out = String::with_capacity(
            self.front_origin.len() + self.front_prefix.len() + rest.len() + 1,
        );
        if absolute {
            out.push_str(self.front_origin);
        }
        out.push_str(self.front_prefix);
        if self.front_prefix.is_empty() && !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        h.append(&X_FORWARDED_FOR, "2.2.2.2".parse().unwrap());
        set_forwarded(
            &mut h,
            Some("127.0.0.1".parse().unwrap()),
            Some(&"front".parse().unwrap()),
            false,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_HOST], "front");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn reverse_map() {
        let m = ReverseMap {
            upstream_origin: "http://paid_one.lan",
            upstream_path: "/paid_user",
            front_origin: "http://front.com",
            front_prefix: "/paid_user",
        };
        assert_eq!(
            m.map("http://paid_one.lan/paid_user/x").as_deref(),
            Some("http://front.com/paid_user/x")
        );
        assert_eq!(
            m.map("http://paid_one.lan/paid_user").as_deref(),
            Some("http://front.com/paid_user")
        );
        assert_eq!(m.map("http://paid_one.lan/other"), None);
        assert_eq!(m.map("http://paid_one.lanx/paid_user"), None);
        assert_eq!(
            m.map("/paid_user/x"),
            None,
            "same path on both sides needs no rewrite"
        );
        let m = ReverseMap {
            upstream_origin: "http://b.lan:81",
            upstream_path: "/app",
            front_origin: "http://front.com",
            front_prefix: "/shop",
        };
        assert_eq!(
            m.map("http://b.lan:81/app/login?x=1").as_deref(),
            Some("http://front.com/shop/login?x=1")
        );
        assert_eq!(m.map("/app/login").as_deref(), Some("/shop/login"));
        assert_eq!(m.map("http://b.lan:81/").as_deref(), None);
        let m = ReverseMap {
            upstream_origin: "http://w.lan",
            upstream_path: "",
            front_origin: "http://f",
            front_prefix: "",
        };
        assert_eq!(m.map("http://w.lan/a").as_deref(), Some("http://f/a"));
        assert_eq!(m.map("http://w.lan").as_deref(), Some("http://f/"));
    }
}
