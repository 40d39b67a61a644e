//! Header work on both sides of the proxy: hop-by-hop removal, `X-Forwarded-*`, and
//! ProxyPassReverse on redirects.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static URI_HEADER: HeaderName = HeaderName::from_static("uri");

/// The hop-by-hop headers (RFC 9110 section 7.6.1), `Upgrade` included.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Standard names compare as an enum tag; only the three custom ones compare bytes.
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Removes hop-by-hop headers, those named in `Connection` first, then the fixed set
/// (RFC 9110 section 7.6.1). `Upgrade` goes too; [`Forward`](crate::Forward) puts it back
/// (with `Connection: upgrade`) on the upgrade requests it tunnels.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names decides, without a lookup per
    // hop-by-hop name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
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
    let hop_by_hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop_by_hop {
        headers.remove(name);
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
        let text = IpText::new(ip);
        let value = match headers.get(&X_FORWARDED_FOR) {
            None => HeaderValue::from_bytes(text.as_bytes()).ok(),
            Some(_) => {
                let mut joined = Vec::with_capacity(64);
                for v in headers.get_all(&X_FORWARDED_FOR) {
                    joined.extend_from_slice(v.as_bytes());
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(text.as_bytes());
                HeaderValue::from_bytes(&joined).ok()
            }
        };
        if let Some(v) = value {
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

/// An address as text without `fmt` (which costs more than the rest of the header work):
/// IPv4 by hand, IPv6 through `Display` (rarer, and its zero compression is not worth
/// repeating).
struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        let mut text = Self {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut cursor = std::io::Cursor::new(&mut text.buf[..]);
                let _ = write!(cursor, "{v6}");
                text.len = cursor.position() as usize;
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
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
    fn addresses_as_text_match_display() {
        let samples: [IpAddr; 7] = [
            "0.0.0.0".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "10.20.100.255".parse().unwrap(),
            "203.0.113.7".parse().unwrap(),
            "::1".parse().unwrap(),
            "2001:db8::8a2e:370:7334".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .unwrap(),
        ];
        for ip in samples {
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
        for a in 0..=255u8 {
            let ip = IpAddr::from([a, 255 - a, a / 3, 9]);
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
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
