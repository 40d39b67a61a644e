//! The HTTP/1.1 client side of the proxy: one request at a time over a kept-alive
//! upstream connection, driven by whoever waits for the answer.
//!
//! Why not hyper's client connection: it runs every upstream connection as a task of its
//! own and passes each request and answer across a channel, so every proxied request
//! costs two task hand-overs, a oneshot and the channel's bookkeeping (about a third of
//! the gateway's user-space work per small request). Here the future that asked for the
//! answer writes the request and reads the answer's head, and the answer's body
//! ([`ConnBody`]) reads the connection when the front connection's task polls it; the
//! connection goes back to its pool the moment the body's framing says it is complete.
//!
//! What a proxy's upstream side needs of HTTP/1.1 and no more: request bodies are sent
//! with their `Content-Length`, or chunked when the length is unknown; answers are framed
//! as RFC 9112 section 6.3 says (no body for `HEAD`, 204 and 304; chunked; length;
//! until close); interim 1xx answers are skipped; `101 Switching Protocols` hands the
//! connection over ([`UpstreamUpgrade`]). Heads are bounded in size and field count.

mod chunked;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, request};
use http_body::{Body, Frame};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::LazySleep;
use crate::pool::Lease;
use chunked::{ChunkedDecoder, Decoded};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream connection's byte stream: plain TCP or TLS.
pub(crate) type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// The most bytes an answer's head may take (nginx stops at 4 or 8 KiB by default).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields an answer's head may have.
const MAX_HEADERS: usize = 100;
/// Fields the gateway's layers may add to an answer.
const ADDED_FIELDS: usize = 4;
/// Room made in the read buffer before a read.
const READ_MIN: usize = 8 * 1024;
/// The most a body read asks for at once.
const READ_MAX: usize = 64 * 1024;
/// Request body data up to this size is copied next to its chunk framing, so it goes out
/// in one write; larger data is written from its own buffer.
const COPY_MAX: usize = 16 * 1024;

/// One upstream connection with its buffers, reused request after request.
pub(crate) struct Conn {
    io: Io,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
    /// The wait for the upstream (an answer's head, a body's next bytes), made the first
    /// time a wait needs it and kept for the connection's next requests.
    timer: Option<LazySleep>,
}

impl Conn {
    pub(crate) fn new(io: Io) -> Box<Self> {
        Box::new(Self {
            io,
            read_buf: BytesMut::with_capacity(READ_MIN),
            write_buf: Vec::with_capacity(1024),
            timer: None,
        })
    }

    /// Ready once `deadline` has passed; registers the task to be woken then.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = match &mut self.timer {
            Some(timer) => {
                timer.set(deadline);
                timer
            }
            None => self.timer.insert(LazySleep::until(deadline)),
        };
        timer.poll_expired(cx)
    }

    /// False when an idle connection was closed by the upstream (or sent something
    /// unasked): it must not take a request. Costs no system call unless the socket
    /// became readable since it was last read.
    pub(crate) fn is_usable(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        if self.read_buf.capacity() == 0 {
            self.read_buf.reserve(READ_MIN);
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(
            tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.read_buf),
            Poll::Pending
        )
    }

    /// Reads more into the read buffer, with room for at least `want` bytes; `Ok(0)` at
    /// end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let want = want.clamp(READ_MIN, READ_MAX);
        if self.read_buf.capacity() - self.read_buf.len() < want / 2 {
            self.read_buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf)
    }

    /// Encodes a request's head to be sent ([`encode_head`]).
    pub(crate) fn encode_request<B: Body>(
        &mut self,
        parts: &request::Parts,
        body: &B,
    ) -> Result<RequestFraming, BoxError> {
        encode_head(parts, body, &mut self.write_buf)
    }

    /// Takes the encoded request head, to send it again over another connection.
    pub(crate) fn take_request(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.write_buf)
    }

    /// Puts an encoded request head (from [`take_request`](Self::take_request)) in place.
    pub(crate) fn set_request(&mut self, head: Vec<u8>) {
        self.write_buf = head;
    }
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestFraming {
    /// No body is sent.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Encodes the request head into the connection's write buffer and says how the body
/// goes. `Transfer-Encoding` and other hop-by-hop fields are expected to be gone already.
fn encode_head<B: Body>(
    parts: &request::Parts,
    body: &B,
    dst: &mut Vec<u8>,
) -> Result<RequestFraming, BoxError> {
    dst.clear();
    dst.extend_from_slice(parts.method.as_str().as_bytes());
    dst.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let ended = body.is_end_stream();
    let declared = if ended {
        None
    } else {
        content_length(&parts.headers)
    };
    if let Some(Err(())) = declared {
        return Err("the request's Content-Length is not one number".into());
    }
    let framing = if ended {
        RequestFraming::Empty
    } else if let Some(Ok(length)) = declared {
        RequestFraming::Length(length)
    } else if let Some(length) = body.size_hint().exact().filter(|_| declared.is_none()) {
        use std::io::Write;
        let _ = write!(dst, "content-length: {length}\r\n");
        RequestFraming::Length(length)
    } else if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) {
        // These almost never carry a body; like hyper, send none rather than a chunked one.
        RequestFraming::Empty
    } else {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        RequestFraming::Chunked
    };
    dst.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// The `Content-Length` of a message: `None` without one, an error when the values are
/// not one number (several equal values, as lines or a list, count as one).
fn content_length(headers: &HeaderMap) -> Option<Result<u64, ()>> {
    let mut found: Option<Result<u64, ()>> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        found = Some(match (found, content_length_value(value)) {
            (Some(Err(())), _) | (_, Err(())) | (None, Ok(None)) => Err(()),
            (Some(Ok(a)), Ok(Some(b))) if a != b => Err(()),
            (_, Ok(Some(n))) => Ok(n),
            (Some(prev), Ok(None)) => prev,
        });
    }
    found
}

/// One `Content-Length` field: its number (`None` if empty), or an error when its list
/// holds differing or invalid values.
fn content_length_value(value: &HeaderValue) -> Result<Option<u64>, ()> {
    let mut found = None;
    for part in value.as_bytes().split(|&b| b == b',') {
        let n = parse_decimal(trim(part)).ok_or(())?;
        if found.is_some_and(|prev| prev != n) {
            return Err(());
        }
        found = Some(n);
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &bytes[s..=e],
        _ => &[],
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// The connection ended before a byte of an answer came back.
    Closed(io::Error),
    /// The connection broke, or the answer was not valid HTTP.
    Upstream(BoxError),
    /// The client's request body failed.
    RequestBody(BoxError),
    /// No answer came by the deadline.
    TimedOut,
}

/// An answer's head, parsed.
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    /// A reason phrase other than the status code's usual one.
    pub(crate) reason: Option<Bytes>,
    pub(crate) framing: BodyFraming,
    /// The connection may take another request once the body is read.
    pub(crate) keep_alive: bool,
}

/// How an answer's body is delimited.
#[derive(Debug)]
pub(crate) enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304, `Content-Length: 0`).
    Empty,
    /// This many bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the upstream closes the connection.
    Eof,
    /// `101 Switching Protocols`: the connection now carries another protocol.
    Upgrade,
}

/// The rest of a request body still to be sent when the answer's head came first.
pub(crate) type RestOfRequest = Box<dyn SendRest>;

/// Writes the request (head and body) and reads the answer's head. Returns the head and,
/// when the upstream answered before it had the whole request body (an echo, a progress
/// stream, an early refusal), the writer of the rest: the answer's body keeps sending it
/// while it is read ([`ConnBody`]), as an upstream reading both at once expects.
pub(crate) async fn exchange<B>(
    conn: &mut Conn,
    body: Option<B>,
    framing: RequestFraming,
    method: &Method,
    deadline: Instant,
) -> Result<(Head, Option<RestOfRequest>), ExchangeError>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut writer = Writer {
        body: match framing {
            RequestFraming::Empty => None,
            _ => body,
        },
        framing,
        pos: 0,
        pending: Bytes::new(),
        crlf_after_pending: false,
        done: false,
        unflushed: true,
        started: false,
    };
    let mut write_error: Option<io::Error> = None;
    let mut received = false;
    poll_fn(|cx| {
        if !writer.done && write_error.is_none() {
            match writer.poll(conn, cx) {
                Poll::Ready(Ok(())) => writer.done = true,
                Poll::Ready(Err(WriteError::Body(e))) => {
                    return Poll::Ready(Err(ExchangeError::RequestBody(e)));
                }
                // The upstream may have answered and closed (an early 413): read on, and
                // report the write error only if no answer comes.
                Poll::Ready(Err(WriteError::Io(e))) => write_error = Some(e),
                Poll::Pending => {}
            }
        }
        loop {
            match parse_head(&mut conn.read_buf, method) {
                Ok(Some(head)) => {
                    let rest = (!writer.done && write_error.is_none()).then(|| {
                        Box::new(std::mem::replace(&mut writer, Writer::finished()))
                            as RestOfRequest
                    });
                    return Poll::Ready(Ok((head, rest)));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(ExchangeError::Upstream(e))),
            }
            if conn.read_buf.len() >= MAX_HEAD {
                return Poll::Ready(Err(ExchangeError::Upstream(
                    "the upstream's answer head is too large".into(),
                )));
            }
            match conn.poll_fill(cx, READ_MIN) {
                Poll::Ready(Ok(0)) => {
                    let error = write_error.take().unwrap_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the upstream closed the connection without a complete answer",
                        )
                    });
                    return Poll::Ready(Err(if received {
                        ExchangeError::Upstream(error.into())
                    } else {
                        ExchangeError::Closed(error)
                    }));
                }
                Poll::Ready(Ok(_)) => received = true,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(if received {
                        ExchangeError::Upstream(e.into())
                    } else {
                        ExchangeError::Closed(e)
                    }));
                }
                // After a failed write too: the upstream's answer, its close or the
                // deadline ends the wait.
                Poll::Pending => {
                    return match conn.poll_deadline(cx, deadline) {
                        Poll::Ready(()) => Poll::Ready(Err(ExchangeError::TimedOut)),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    })
    .await
}

enum WriteError {
    Io(io::Error),
    Body(BoxError),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Writes the encoded head, then the body frame by frame as the client sends it.
struct Writer<B> {
    body: Option<B>,
    framing: RequestFraming,
    /// How much of the write buffer is written.
    pos: usize,
    /// Body data written from its own buffer.
    pending: Bytes,
    /// A chunk's closing CRLF is due once `pending` is written.
    crlf_after_pending: bool,
    done: bool,
    unflushed: bool,
    /// The body was polled once before anything was written.
    started: bool,
}

/// Sends what is left of a request while its answer is read.
pub(crate) trait SendRest: Send {
    /// Ready once all is written (`Err` when the upstream or the client's body failed:
    /// the connection is not reused then).
    fn poll_send(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), ()>>;
}

impl<B> SendRest for Writer<B>
where
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: Into<BoxError>,
{
    fn poll_send(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.poll(conn, cx).map_err(|e| {
            if let WriteError::Body(e) = e {
                tracing::debug!(target: "towergate_proxy", error = %e, "request body failed after the answer began");
            }
        })
    }
}

impl<B> Writer<B> {
    /// A writer with nothing left to write.
    fn finished() -> Self {
        Self {
            body: None,
            framing: RequestFraming::Empty,
            pos: 0,
            pending: Bytes::new(),
            crlf_after_pending: false,
            done: true,
            unflushed: false,
            started: true,
        }
    }
}

impl<B> Writer<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        if !self.started {
            self.start(conn, cx)?;
        }
        loop {
            while self.pos < conn.write_buf.len() {
                let n = ready!(Pin::new(&mut conn.io).poll_write(cx, &conn.write_buf[self.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.pos += n;
                self.unflushed = true;
            }
            if self.body.is_none() && self.pending.is_empty() && !self.crlf_after_pending {
                // All written. The buffer is kept whole: a bodyless request may be sent
                // again from it ([`Conn::take_request`]).
                if self.unflushed {
                    ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                    self.unflushed = false;
                }
                return Poll::Ready(Ok(()));
            }
            conn.write_buf.clear();
            self.pos = 0;
            while !self.pending.is_empty() {
                let n = ready!(Pin::new(&mut conn.io).poll_write(cx, &self.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.pending.advance(n);
                self.unflushed = true;
            }
            if std::mem::take(&mut self.crlf_after_pending) {
                conn.write_buf.extend_from_slice(b"\r\n");
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // Out with what is written before waiting on the client.
                    if !conn.write_buf.is_empty() {
                        continue;
                    }
                    if self.unflushed {
                        ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            };
            self.on_frame(conn, frame)?;
        }
    }

    /// Before the head goes out: a body whose first frame is at hand sends it with the
    /// head, and one that fails at once (malformed chunking) sends nothing at all.
    fn start(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Result<(), WriteError> {
        self.started = true;
        let Some(body) = self.body.as_mut() else {
            return Ok(());
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(frame) => self.on_frame(conn, frame),
            Poll::Pending => Ok(()),
        }
    }

    fn on_frame(
        &mut self,
        conn: &mut Conn,
        frame: Option<Result<Frame<Bytes>, B::Error>>,
    ) -> Result<(), WriteError> {
        match frame {
            None => {
                self.body = None;
                match self.framing {
                    RequestFraming::Length(0) | RequestFraming::Empty => {}
                    RequestFraming::Length(_) => {
                        return Err(WriteError::Body(
                            "the request body is shorter than its Content-Length".into(),
                        ));
                    }
                    RequestFraming::Chunked => conn.write_buf.extend_from_slice(b"0\r\n\r\n"),
                }
                Ok(())
            }
            Some(Err(e)) => Err(WriteError::Body(e.into())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.queue(conn, data),
                Err(frame) => {
                    if let (Ok(trailers), RequestFraming::Chunked) =
                        (frame.into_trailers(), self.framing)
                    {
                        conn.write_buf.extend_from_slice(b"0\r\n");
                        for (name, value) in &trailers {
                            conn.write_buf.extend_from_slice(name.as_str().as_bytes());
                            conn.write_buf.extend_from_slice(b": ");
                            conn.write_buf.extend_from_slice(value.as_bytes());
                            conn.write_buf.extend_from_slice(b"\r\n");
                        }
                        conn.write_buf.extend_from_slice(b"\r\n");
                        self.body = None;
                        self.framing = RequestFraming::Empty;
                    }
                    Ok(())
                }
            },
        }
    }

    /// Queues one frame of body data with its framing.
    fn queue(&mut self, conn: &mut Conn, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            RequestFraming::Length(remaining) => {
                let len = data.len() as u64;
                if len > *remaining {
                    return Err(WriteError::Body(
                        "the request body is longer than its Content-Length".into(),
                    ));
                }
                *remaining -= len;
            }
            RequestFraming::Chunked => {
                use std::io::Write;
                let _ = write!(conn.write_buf, "{:X}\r\n", data.len());
                self.crlf_after_pending = true;
            }
            RequestFraming::Empty => return Ok(()),
        }
        if data.len() <= COPY_MAX {
            conn.write_buf.extend_from_slice(&data);
            if std::mem::take(&mut self.crlf_after_pending) {
                conn.write_buf.extend_from_slice(b"\r\n");
            }
        } else {
            self.pending = data;
        }
        Ok(())
    }
}

/// Parses an answer's head from the front of `buf`, skipping interim (1xx) answers;
/// `Ok(None)` while incomplete.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, BoxError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Offsets of each field's name and value, found while httparse borrows the buffer
        // (a head is at most `MAX_HEAD` bytes, so they fit in 16 bits).
        let mut fields = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
        let mut raw =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut raw);
        let (len, code, minor, count, reason) = match parsed {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err("the upstream's answer head is too large".into());
            }
            Ok(httparse::Status::Complete(len)) => {
                let base = buf.as_ptr() as usize;
                let at = |part: &[u8]| (part.as_ptr() as usize - base) as u16;
                for (slot, field) in fields.iter_mut().zip(res.headers.iter()) {
                    let (name, value) = (at(field.name.as_bytes()), at(field.value));
                    *slot = (
                        name,
                        name + field.name.len() as u16,
                        value,
                        value + field.value.len() as u16,
                    );
                }
                let code = res.code.unwrap_or(0);
                let reason = res.reason.unwrap_or("");
                let canonical = StatusCode::from_u16(code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .is_some_and(|c| c == reason);
                let reason = (!canonical && !reason.is_empty()).then(|| {
                    let start = at(reason.as_bytes()) as usize;
                    (start, start + reason.len())
                });
                (
                    len,
                    code,
                    res.version.unwrap_or(1),
                    res.headers.len(),
                    reason,
                )
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err("the upstream's answer has too many header fields".into());
            }
            Err(e) => return Err(format!("the upstream's answer is not HTTP/1: {e}").into()),
        };
        let status = StatusCode::from_u16(code)?;
        let head = buf.split_to(len).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        let version = if minor == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        // The fields framing depends on are noted on the way, rather than looked up after.
        let mut framing_fields = FramingFields::default();
        // Room for the fields the layers above add (`Expires`, `Cache-Control`, `Server`,
        // `Via`...), so that adding them does not grow the map again.
        let mut headers = HeaderMap::with_capacity(count + ADDED_FIELDS);
        for &(ns, ne, vs, ve) in &fields[..count] {
            let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))?;
            framing_fields.note(&name, &value);
            headers.append(name, value);
        }
        if framing_fields.chunked.is_some() && framing_fields.length.is_some() {
            // Transfer-Encoding wins (RFC 9112 section 6.3); a length passed on would
            // frame the client's copy wrongly once Transfer-Encoding is dropped as hop-by-hop.
            headers.remove(header::CONTENT_LENGTH);
        }
        let reason = reason.map(|(s, e)| head.slice(s..e));
        let framing = body_framing(status, version, method, &framing_fields)?;
        let keep_alive = matches!(
            framing,
            BodyFraming::Empty | BodyFraming::Length(_) | BodyFraming::Chunked(_)
        ) && !(framing_fields.chunked.is_some()
            && framing_fields.length.is_some())
            && !framing_fields.close
            && (version == Version::HTTP_11 || framing_fields.keep_alive);
        return Ok(Some(Head {
            status,
            version,
            headers,
            reason,
            framing,
            keep_alive,
        }));
    }
}

/// What an answer's head says about its framing and its connection.
#[derive(Default)]
struct FramingFields {
    /// `Transfer-Encoding` was present; true when its last coding is `chunked`.
    chunked: Option<bool>,
    /// `Content-Length`, `Err` when its values are not one number.
    length: Option<Result<u64, ()>>,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive` (an HTTP/1.0 upstream's way to keep the connection).
    keep_alive: bool,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == header::CONTENT_LENGTH {
            self.length = Some(match (self.length, content_length_value(value)) {
                (Some(Err(())), _) | (_, Err(())) => Err(()),
                (Some(Ok(a)), Ok(Some(b))) if a != b => Err(()),
                (_, Ok(Some(n))) => Ok(n),
                (Some(prev), Ok(None)) => prev,
                (None, Ok(None)) => Err(()),
            });
        } else if *name == header::TRANSFER_ENCODING {
            let last = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(b"");
            self.chunked = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if *name == header::CONNECTION {
            if has_token(value, b"close") {
                self.close = true;
            } else if has_token(value, b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }
}

/// RFC 9112 section 6.3.
fn body_framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    fields: &FramingFields,
) -> Result<BodyFraming, BoxError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(BodyFraming::Upgrade);
    }
    if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || *method == Method::HEAD
    {
        return Ok(BodyFraming::Empty);
    }
    if let Some(chunked) = fields.chunked {
        if version == Version::HTTP_10 {
            return Err("the upstream sent Transfer-Encoding in an HTTP/1.0 answer".into());
        }
        return Ok(if chunked {
            BodyFraming::Chunked(ChunkedDecoder::new())
        } else {
            BodyFraming::Eof
        });
    }
    match fields.length {
        Some(Ok(0)) => Ok(BodyFraming::Empty),
        Some(Ok(n)) => Ok(BodyFraming::Length(n)),
        Some(Err(())) => Err("the upstream's answer has an invalid Content-Length".into()),
        None => Ok(BodyFraming::Eof),
    }
}

fn has_token(value: &HeaderValue, token: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// An answer's body read straight from its upstream connection. The connection goes
/// back to its pool (the [`Lease`]) as soon as the framing says the body is complete;
/// a body dropped before that closes it. An upstream that sends nothing for `idle` while
/// the body waits for it fails the body (Apache's `Timeout` between two reads, nginx's
/// `proxy_read_timeout`), so a stalled upstream cannot hold a client forever.
pub(crate) struct ConnBody {
    conn: Option<Box<Conn>>,
    framing: BodyFraming,
    lease: Option<Lease>,
    keep_alive: bool,
    /// The rest of the request, sent while the answer is read.
    rest: Option<RestOfRequest>,
    idle: Duration,
    /// When the wait for the upstream's next bytes fails; set the first time the body has
    /// to wait (most answers are whole by then), and again when bytes came since.
    idle_deadline: Option<Instant>,
    /// Bytes came since the deadline was last set.
    read_since_deadline: bool,
}

impl ConnBody {
    /// The body of an answer with head `framing` on `conn`; `keep_alive` when the
    /// connection may be reused after it; failed when the upstream sends nothing for
    /// `idle` while the body waits.
    pub(crate) fn new(
        conn: Box<Conn>,
        framing: BodyFraming,
        lease: Option<Lease>,
        keep_alive: bool,
        rest: Option<RestOfRequest>,
        idle: Duration,
    ) -> Self {
        let mut body = Self {
            conn: Some(conn),
            framing,
            lease,
            // Reused only once the whole request went out too.
            keep_alive: keep_alive && rest.is_none(),
            rest,
            idle,
            idle_deadline: None,
            read_since_deadline: false,
        };
        if matches!(body.framing, BodyFraming::Empty) {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to the pool if it can be reused.
    fn finish(&mut self) {
        self.framing = BodyFraming::Empty;
        let Some(conn) = self.conn.take() else { return };
        if let Some(lease) = self.lease.take() {
            if self.keep_alive && conn.read_buf.is_empty() {
                lease.give_back(conn);
            }
        }
    }

    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.framing = BodyFraming::Empty;
        Poll::Ready(Some(Err(error)))
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(rest) = self.rest.as_mut() {
                // Pending registers this task for the upstream's readiness to take more.
                if rest.poll_send(conn, cx).is_ready() {
                    self.rest = None;
                }
            }
            let want = match &mut self.framing {
                BodyFraming::Empty | BodyFraming::Upgrade => {
                    self.finish();
                    return Poll::Ready(None);
                }
                BodyFraming::Length(remaining) => {
                    if !conn.read_buf.is_empty() {
                        let n = (*remaining).min(conn.read_buf.len() as u64);
                        let data = conn.read_buf.split_to(n as usize).freeze();
                        *remaining -= n;
                        if *remaining == 0 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    usize::try_from(*remaining).unwrap_or(READ_MAX)
                }
                BodyFraming::Chunked(decoder) => match decoder.decode(&mut conn.read_buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => READ_MIN,
                    Err(e) => return self.fail(io::Error::new(io::ErrorKind::InvalidData, e)),
                },
                BodyFraming::Eof => {
                    if !conn.read_buf.is_empty() {
                        let data = conn.read_buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    READ_MAX
                }
            };
            let filled = match conn.poll_fill(cx, want) {
                Poll::Ready(filled) => filled,
                Poll::Pending => return self.poll_idle(cx),
            };
            match filled {
                Ok(0) => {
                    if matches!(self.framing, BodyFraming::Eof) {
                        self.conn = None;
                        self.framing = BodyFraming::Empty;
                        return Poll::Ready(None);
                    }
                    return self.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the body was complete",
                    ));
                }
                Ok(_) => self.read_since_deadline = true,
                Err(e) => return self.fail(e),
            }
        }
    }

    /// The body waits for the upstream: pending until `idle` has passed since the last
    /// bytes came (or since the wait began), then failed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let deadline = match self.idle_deadline {
            Some(deadline) if !self.read_since_deadline => deadline,
            _ => *self.idle_deadline.insert(Instant::now() + self.idle),
        };
        self.read_since_deadline = false;
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        ready!(conn.poll_deadline(cx, deadline));
        let idle = self.idle;
        self.fail(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the upstream sent nothing of the body for {idle:?}"),
        ))
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, BodyFraming::Empty)
    }

    pub(crate) fn size_hint(&self) -> http_body::SizeHint {
        match self.framing {
            _ if self.conn.is_none() => http_body::SizeHint::with_exact(0),
            BodyFraming::Empty | BodyFraming::Upgrade => http_body::SizeHint::with_exact(0),
            BodyFraming::Length(n) => http_body::SizeHint::with_exact(n),
            _ => http_body::SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for ConnBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnBody")
            .field("framing", &self.framing)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// The connection behind a `101 Switching Protocols` answer, in that answer's
/// extensions until the tunnel takes it.
#[derive(Clone)]
pub(crate) struct UpstreamUpgrade(Arc<Mutex<Option<Upgraded>>>);

impl UpstreamUpgrade {
    pub(crate) fn new(conn: Box<Conn>) -> Self {
        let Conn { io, read_buf, .. } = *conn;
        Self(Arc::new(Mutex::new(Some(Upgraded {
            io,
            read_ahead: read_buf.freeze(),
        }))))
    }

    /// The connection, once.
    pub(crate) fn take(&self) -> Option<Upgraded> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// An upstream connection that switched protocols; bytes read with the answer's head
/// come first.
pub(crate) struct Upgraded {
    io: Io,
    read_ahead: Bytes,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_ahead.is_empty() {
            let n = self.read_ahead.len().min(buf.remaining());
            buf.put_slice(&self.read_ahead[..n]);
            self.read_ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, method: Method) -> Result<Option<Head>, BoxError> {
        parse_head(&mut BytesMut::from(raw), &method)
    }

    #[test]
    fn answer_heads_are_framed_as_rfc_9112_says() {
        let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert!(matches!(head.framing, BodyFraming::Length(5)));
        assert!(head.keep_alive);
        assert!(head.reason.is_none());

        let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD)
            .unwrap()
            .unwrap();
        assert!(matches!(head.framing, BodyFraming::Empty));

        let head = parse(
            "HTTP/1.1 200 Fine\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(head.framing, BodyFraming::Chunked(_)));
        assert!(!head.keep_alive, "both framings: closed after");
        assert!(
            !head.headers.contains_key("content-length"),
            "the length is not passed on"
        );
        assert_eq!(head.reason.as_deref(), Some(&b"Fine"[..]));

        let head = parse("HTTP/1.0 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert!(matches!(head.framing, BodyFraming::Eof));
        assert!(!head.keep_alive);

        let head = parse(
            "HTTP/1.0 204 No Content\r\nconnection: keep-alive\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(head.keep_alive);

        let head = parse(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 1, 1\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(head.framing, BodyFraming::Length(1)));
        assert!(!head.keep_alive);

        assert!(
            parse(
                "HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
                Method::GET
            )
            .is_err()
        );
        assert!(parse("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", Method::GET).is_err());
        assert!(
            parse("HTTP/1.1 200 OK\r\ncontent-len", Method::GET)
                .unwrap()
                .is_none()
        );
        assert!(parse("SSH-2.0-OpenSSH\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn interim_answers_are_skipped_and_what_follows_stays() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
             HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        );
        let head = parse_head(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert!(!head.headers.contains_key("link"));
        assert_eq!(&buf[..], b"ok");
    }

    #[test]
    fn heads_with_too_many_fields_are_refused() {
        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            raw.push_str(&format!("x-{i}: 1\r\n"));
        }
        raw.push_str("\r\n");
        assert!(parse(&raw, Method::GET).is_err());
    }

    #[test]
    fn request_heads_say_how_the_body_goes() {
        let encode = |req: http::Request<http_body_util::Full<Bytes>>, ended: bool| {
            let (parts, body) = req.into_parts();
            let mut dst = Vec::new();
            let framing = if ended {
                encode_head(&parts, &http_body_util::Empty::<Bytes>::new(), &mut dst)
            } else {
                encode_head(&parts, &body, &mut dst)
            }
            .unwrap();
            (String::from_utf8(dst).unwrap(), framing)
        };
        let get = http::Request::get("/a?b=c")
            .header("host", "up")
            .body(Default::default())
            .unwrap();
        let (head, framing) = encode(get, true);
        assert_eq!(head, "GET /a?b=c HTTP/1.1\r\nhost: up\r\n\r\n");
        assert!(matches!(framing, RequestFraming::Empty));

        let post = http::Request::post("/f")
            .body(http_body_util::Full::new(Bytes::from_static(b"12345")))
            .unwrap();
        let (head, framing) = encode(post, false);
        assert_eq!(head, "POST /f HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
        assert!(matches!(framing, RequestFraming::Length(5)));
    }

    #[test]
    fn lengths_parse() {
        assert_eq!(parse_decimal(b"1234"), Some(1234));
        assert_eq!(parse_decimal(b"12a"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
    }
}
