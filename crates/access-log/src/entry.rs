//! One request's log entry: what a format needs, captured as the request passes and
//! completed as the response is sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
};
use towergate_client_addr::{ClientAddr, client_ip, peer_addr};

use crate::LocalAddr;
use crate::format::{LogFormat, status_or_500};

/// What one access log line is made of, captured from a request and its response.
///
/// [`AccessLog`](crate::AccessLog) makes these by itself; use an `Entry` directly to log
/// from a service of your own or to a sink of your own:
/// [`Entry::new`] with the request, [`Entry::response`] with the response head,
/// [`Entry::sent`] per body chunk, then [`Entry::write`].
///
/// Capturing clones what the format logs (header values, the method and URI share their
/// bytes with the request) and allocates nothing, except for a header the request repeats
/// (its values are joined with `, `), more than three `%{..}i` or `%{..}o` headers in a
/// format, and the body counter of `%I`/`%S`.
#[derive(Debug)]
pub struct Entry {
    pub(crate) start: SystemTime,
    pub(crate) started: Instant,
    pub(crate) ended: Option<Instant>,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) client: Option<IpAddr>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) host: Option<HeaderValue>,
    pub(crate) server_name: Option<Arc<str>>,
    pub(crate) request_headers: Captures,
    pub(crate) response_headers: Captures,
    pub(crate) status: Option<StatusCode>,
    pub(crate) head_in: u64,
    pub(crate) body_in: u64,
    pub(crate) body_in_counter: Option<Arc<AtomicU64>>,
    pub(crate) head_out: u64,
    pub(crate) body_out: u64,
    chunked_out: bool,
}

impl Entry {
    /// Captures what `format` logs of `req`, and the time it started.
    pub fn new<B>(format: &LogFormat, req: &Request<B>) -> Self {
        let needs = format.needs();
        let ext = req.extensions();
        let headers = req.headers();
        let host = if needs.host {
            headers.get(header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            })
        } else {
            None
        };
        let (head_in, body_in_counter) = if needs.request_bytes {
            (request_head_len(req), Some(Arc::new(AtomicU64::new(0))))
        } else {
            (0, None)
        };
        Self {
            start: SystemTime::now(),
            started: Instant::now(),
            ended: None,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            client: client_ip(req),
            peer: peer_addr(ext),
            local: ext.get::<LocalAddr>().map(|l| l.0),
            host,
            server_name: None,
            request_headers: Captures::capture(format.request_headers(), headers),
            response_headers: Captures::default(),
            status: None,
            head_in,
            body_in: 0,
            body_in_counter,
            head_out: 0,
            body_out: 0,
            chunked_out: false,
        }
    }

    /// Sets the name `%v` logs (and `%V` when the request names no host).
    pub fn set_server_name(&mut self, name: Option<Arc<str>>) {
        self.server_name = name;
    }

    /// Captures what `format` logs of the response head: status, headers, and the client
    /// address if a layer inside recorded it in the response's extensions
    /// ([`LogClientAddrLayer`](crate::LogClientAddrLayer)).
    pub fn response<B: http_body::Body>(&mut self, format: &LogFormat, res: &Response<B>) {
        self.status = Some(res.status());
        if let Some(ClientAddr(ip)) = res.extensions().get::<ClientAddr>() {
            self.client = Some(*ip);
        }
        self.response_headers = Captures::capture(format.response_headers(), res.headers());
        if format.needs().response_head_bytes {
            self.head_out = self.response_head_len(res);
        }
    }

    /// Counts `bytes` of response body sent.
    pub fn sent(&mut self, bytes: u64) {
        self.body_out += bytes;
        if self.chunked_out && bytes > 0 {
            // `<hex size>\r\n` before the chunk, `\r\n` after it.
            self.head_out += u64::from(hex_len(bytes)) + 4;
        }
    }

    /// Counts `bytes` of request body received.
    pub fn received(&mut self, bytes: u64) {
        self.body_in += bytes;
    }

    /// Stops the clock for `%D` and `%T`; [`write`](Self::write) does so if not done yet.
    pub fn finish(&mut self) {
        if self.ended.is_none() {
            self.ended = Some(Instant::now());
        }
    }

    /// Appends the line for this entry in `format` (which must be the one it was captured
    /// for), newline included.
    pub fn write(&self, format: &LogFormat, out: &mut Vec<u8>) {
        format.write(self, out);
    }

    pub(crate) fn body_in_counter(&self) -> Option<Arc<AtomicU64>> {
        self.body_in_counter.clone()
    }

    pub(crate) fn status_code(&self) -> u16 {
        status_or_500(self.status)
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.ended
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started)
    }

    pub(crate) fn start_unix(&self) -> Duration {
        self.start.duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    pub(crate) fn bytes_in(&self) -> u64 {
        let counted = self
            .body_in_counter
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        self.head_in + self.body_in + counted
    }

    pub(crate) fn bytes_out(&self) -> u64 {
        self.head_out + self.body_out
    }

    /// The host the request named, without its port.
    pub(crate) fn host_name(&self) -> Option<&[u8]> {
        let host = self.host.as_ref()?.as_bytes();
        let name = if host.starts_with(b"[") {
            // [v6]:port
            match host.iter().position(|&b| b == b']') {
                Some(i) => &host[..=i],
                None => host,
            }
        } else {
            match host.iter().rposition(|&b| b == b':') {
                Some(i) => &host[..i],
                None => host,
            }
        };
        (!name.is_empty()).then_some(name)
    }

    /// The port the request's `Host` names, if any.
    pub(crate) fn host_port(&self) -> Option<u16> {
        let host = self.host.as_ref()?.as_bytes();
        let after = match host.iter().rposition(|&b| b == b':' || b == b']') {
            Some(i) if host[i] == b':' => &host[i + 1..],
            _ => return None,
        };
        std::str::from_utf8(after).ok()?.parse().ok()
    }

    /// The response head as hyper writes it for HTTP/1: status line, headers, the `date`
    /// and framing headers hyper adds, the blank line.
    fn response_head_len<B: http_body::Body>(&mut self, res: &Response<B>) -> u64 {
        let status = res.status();
        let reason = status.canonical_reason().unwrap_or("").len() as u64;
        // "HTTP/1.1 200 OK\r\n"
        let mut n = 9 + 3 + 1 + reason + 2;
        n += headers_len(res.headers());
        let headers = res.headers();
        if !headers.contains_key(header::DATE) {
            n += "date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".len() as u64;
        }
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || self.method == Method::HEAD;
        if self.version != Version::HTTP_2
            && !bodiless
            && !headers.contains_key(header::CONTENT_LENGTH)
            && !headers.contains_key(header::TRANSFER_ENCODING)
        {
            match res.body().size_hint().exact() {
                Some(len) => {
                    n += "content-length: \r\n".len() as u64 + u64::from(dec_len(len));
                }
                None if self.version == Version::HTTP_11 => {
                    n += "transfer-encoding: chunked\r\n".len() as u64;
                    // The last chunk, `0\r\n\r\n`.
                    n += 5;
                    self.chunked_out = true;
                }
                None => {}
            }
        }
        n + 2
    }
}

fn request_head_len<B>(req: &Request<B>) -> u64 {
    let uri = req.uri();
    let mut target = uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    if req.version() != Version::HTTP_2 {
        if let (Some(s), Some(a)) = (uri.scheme_str(), uri.authority()) {
            target += s.len() + 3 + a.as_str().len();
        }
    }
    // "GET /x HTTP/1.1\r\n"
    let line = req.method().as_str().len() + 1 + target + 1 + 8 + 2;
    line as u64 + headers_len(req.headers()) + 2
}

fn headers_len(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().len() + 2 + value.len() + 2) as u64)
        .sum()
}

fn hex_len(n: u64) -> u32 {
    (64 - n.leading_zeros()).div_ceil(4).max(1)
}

fn dec_len(n: u64) -> u32 {
    n.checked_ilog10().map_or(1, |l| l + 1)
}

/// Header values captured for a format: three inline, more on the heap.
#[derive(Debug, Default)]
pub(crate) struct Captures {
    inline: [Option<HeaderValue>; 3],
    more: Vec<Option<HeaderValue>>,
}

impl Captures {
    fn capture(names: &[HeaderName], headers: &HeaderMap) -> Self {
        let mut c = Self::default();
        if names.is_empty() || headers.is_empty() {
            return c;
        }
        for (i, name) in names.iter().enumerate() {
            let value = joined(headers, name);
            match c.inline.get_mut(i) {
                Some(slot) => *slot = value,
                None => c.more.push(value),
            }
        }
        c
    }

    pub(crate) fn get(&self, i: usize) -> Option<&HeaderValue> {
        match self.inline.get(i) {
            Some(v) => v.as_ref(),
            None => self.more.get(i - self.inline.len())?.as_ref(),
        }
    }
}

/// A header's value; a repeated header's values joined with `, ` (as Apache merges them).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(first.clone());
    };
    let mut bytes = Vec::with_capacity(first.len() + second.len() + 2);
    bytes.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(all) {
        bytes.extend_from_slice(b", ");
        bytes.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(hex_len(1), 1);
        assert_eq!(hex_len(15), 1);
        assert_eq!(hex_len(16), 2);
        assert_eq!(hex_len(0x1000), 4);
        assert_eq!(dec_len(0), 1);
        assert_eq!(dec_len(9), 1);
        assert_eq!(dec_len(10), 2);
        assert_eq!(dec_len(102_400), 6);
    }

    #[test]
    fn request_head_is_counted_as_written() {
        let req = Request::get("/a?b=c").header("host", "x").body(()).unwrap();
        // "GET /a?b=c HTTP/1.1\r\nhost: x\r\n\r\n"
        assert_eq!(request_head_len(&req), 21 + 9 + 2);
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let name = HeaderName::from_static("x-a");
        assert_eq!(joined(&h, &name).unwrap(), "1, 2");
        let names: Vec<HeaderName> = (0..5).map(|i| format!("h{i}").parse().unwrap()).collect();
        let mut h = HeaderMap::new();
        h.insert("h4", HeaderValue::from_static("four"));
        let c = Captures::capture(&names, &h);
        assert_eq!(c.get(4).unwrap(), "four");
        assert!(c.get(0).is_none());
        assert!(c.get(9).is_none());
    }

    #[test]
    fn host_parts() {
        let f = LogFormat::parse("%V %p").unwrap();
        for (host, name, port) in [
            ("example.com:8080", Some(&b"example.com"[..]), Some(8080)),
            ("example.com", Some(&b"example.com"[..]), None),
            ("[::1]:81", Some(&b"[::1]"[..]), Some(81)),
            ("[::1]", Some(&b"[::1]"[..]), None),
        ] {
            let req = Request::get("/").header("host", host).body(()).unwrap();
            let e = Entry::new(&f, &req);
            assert_eq!(e.host_name(), name, "{host}");
            assert_eq!(e.host_port(), port, "{host}");
        }
    }
}
