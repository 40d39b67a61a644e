//! Incremental decoder for HTTP/1.1 chunked transfer coding (RFC 9112, section 7.1).
//!
//! The decoder works in place on the caller's read buffer so that a proxy can
//! stream upstream response bodies without copying: chunk data is handed out
//! with `BytesMut::split_to(..).freeze()`, framing bytes are dropped only once
//! they have been fully decoded, and every line it waits for is bounded so a
//! misbehaving upstream cannot make it buffer without limit.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Longest accepted chunk size line, extensions included, CRLF excluded.
/// Real servers send a few bytes; the cap keeps a broken upstream from
/// growing the buffer while we wait for a line end.
const MAX_SIZE_LINE: usize = 4096;
/// Largest accepted trailer section, including its final empty line.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Most trailer fields accepted; also sizes the parser's stack array.
const MAX_TRAILER_FIELDS: usize = 100;

/// Incremental chunked decoder; one per response body.
#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    state: State,
}

#[derive(Debug)]
pub(crate) enum Decoded {
    /// Body bytes, split off the front of the buffer without copying (`BytesMut::split_to(..).freeze()`). Never empty.
    Data(Bytes),
    /// The trailer fields after the last chunk (only when there were any); `End` follows on the next call.
    Trailers(HeaderMap),
    /// The body is complete: last chunk, trailers and the final CRLF consumed. Bytes after it stay in the buffer untouched.
    End,
    /// The buffer holds no complete item yet: read more into it and call again.
    NeedMore,
}

/// Malformed or oversized chunked framing. The body cannot be trusted past
/// this point, so the connection should not be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkedError(Reason);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    InvalidSizeLine,
    BareLf,
    SizeTooLarge,
    SizeLineTooLong,
    ExtensionsTooLong,
    InvalidExtension,
    MissingDataCrlf,
    TrailersTooLarge,
    TooManyTrailers,
    InvalidTrailer,
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Reason::InvalidSizeLine => "invalid chunk size line",
            Reason::BareLf => "bare LF in chunked framing (CRLF required)",
            Reason::SizeTooLarge => "chunk size too large",
            Reason::SizeLineTooLong => "chunk size line too long",
            Reason::ExtensionsTooLong => "chunk extensions too long",
            Reason::InvalidExtension => "invalid chunk extension",
            Reason::MissingDataCrlf => "missing CRLF after chunk data",
            Reason::TrailersTooLarge => "trailers too large",
            Reason::TooManyTrailers => "too many trailer fields",
            Reason::InvalidTrailer => "invalid trailer field",
        })
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug)]
enum State {
    /// Reading a chunk size line; it stays in the buffer until complete.
    Size(SizeLine),
    /// Inside chunk data; `remaining` is always > 0.
    Data {
        remaining: u64,
    },
    /// Chunk data consumed; the CRLF that closes it comes next.
    DataCrlf,
    /// After the last chunk. `line_start` is the offset of the first line not
    /// yet checked, so a partial section is never rescanned; `fields` counts
    /// the complete lines before it.
    Trailers {
        line_start: usize,
        fields: usize,
    },
    /// `Trailers` was returned; `End` is next.
    TrailersSent,
    Done,
    /// Framing errors are sticky: the rest of the stream is not body data.
    Failed(Reason),
}

impl Default for State {
    fn default() -> Self {
        State::Size(SizeLine::default())
    }
}

/// Resumable parser for `1*HEXDIG [ BWS ] *( ";" chunk-ext ) CRLF`.
///
/// It works byte by byte from where the previous call stopped, so garbage is
/// rejected as soon as it arrives rather than when a line end shows up.
#[derive(Debug, Default, Clone, Copy)]
struct SizeLine {
    size: u64,
    /// Bytes of the line examined so far (still in the buffer).
    len: usize,
    phase: Phase,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Start,
    Digits,
    /// Whitespace after the digits; only `;` or CR may follow.
    Ows,
    /// Inside extensions, which are skipped.
    Ext,
    /// CR seen; LF must follow.
    Cr,
}

impl SizeLine {
    /// Continues scanning `buf`; returns the line length including CRLF once
    /// the whole line is present.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Reason> {
        while let Some(&b) = buf.get(self.len) {
            if self.len >= MAX_SIZE_LINE && self.phase != Phase::Cr && b != b'\r' {
                return Err(match self.phase {
                    Phase::Ext => Reason::ExtensionsTooLong,
                    _ => Reason::SizeLineTooLong,
                });
            }
            self.len += 1;
            match self.phase {
                Phase::Start => match hex_value(b) {
                    Some(d) => {
                        self.size = d;
                        self.phase = Phase::Digits;
                    }
                    None if b == b'\n' => return Err(Reason::BareLf),
                    None => return Err(Reason::InvalidSizeLine),
                },
                Phase::Digits => match hex_value(b) {
                    Some(d) => {
                        if self.size > u64::MAX >> 4 {
                            return Err(Reason::SizeTooLarge);
                        }
                        self.size = self.size << 4 | d;
                    }
                    None => self.phase = after_size(b)?,
                },
                Phase::Ows => self.phase = after_size(b)?,
                Phase::Ext => {
                    // Extensions carry nothing we use: skip to the next control
                    // byte in one pass. Only the CR may sit at the limit index.
                    let start = self.len - 1;
                    let end = buf.len().min(MAX_SIZE_LINE + 1);
                    let rest = buf.get(start..end).unwrap_or_default();
                    match rest.iter().position(|&c| is_ctl(c) && c != b'\t') {
                        Some(i) => {
                            self.len = start + i + 1;
                            match rest[i] {
                                b'\r' => self.phase = Phase::Cr,
                                b'\n' => return Err(Reason::BareLf),
                                _ => return Err(Reason::InvalidExtension),
                            }
                        }
                        None if end > MAX_SIZE_LINE => return Err(Reason::ExtensionsTooLong),
                        None => self.len = end,
                    }
                }
                Phase::Cr if b == b'\n' => return Ok(Some(self.len)),
                Phase::Cr => return Err(Reason::InvalidSizeLine),
            }
        }
        Ok(None)
    }
}

/// The phase entered on a byte that ends the hex digits or whitespace.
fn after_size(b: u8) -> Result<Phase, Reason> {
    match b {
        b' ' | b'\t' => Ok(Phase::Ows),
        b';' => Ok(Phase::Ext),
        b'\r' => Ok(Phase::Cr),
        b'\n' => Err(Reason::BareLf),
        _ => Err(Reason::InvalidSizeLine),
    }
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Decodes the next item from the front of `buf`, consuming what it used.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        self.step(buf).map_err(|reason| {
            self.state = State::Failed(reason);
            ChunkedError(reason)
        })
    }

    /// True once `End` was returned.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Decoded, Reason> {
        loop {
            match &mut self.state {
                State::Size(line) => {
                    if line.len > buf.len() {
                        // The caller shrank the buffer: rescan rather than trust stale offsets.
                        *line = SizeLine::default();
                    }
                    let Some(len) = line.scan(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = line.size;
                    buf.advance(len);
                    self.state = if size == 0 {
                        State::Trailers {
                            line_start: 0,
                            fields: 0,
                        }
                    } else {
                        State::Data { remaining: size }
                    };
                }
                State::Data { remaining } => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    // Compare in u64 so sizes beyond usize never truncate.
                    let n = if *remaining < buf.len() as u64 {
                        *remaining as usize
                    } else {
                        buf.len()
                    };
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = State::DataCrlf;
                    }
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::DataCrlf => {
                    // Check each byte as it arrives so garbage fails early.
                    match (buf.first(), buf.get(1)) {
                        (Some(b'\r'), Some(b'\n')) => {}
                        (Some(b'\r'), None) | (None, _) => return Ok(Decoded::NeedMore),
                        _ => return Err(Reason::MissingDataCrlf),
                    }
                    buf.advance(2);
                    self.state = State::default();
                }
                State::Trailers { line_start, fields } => {
                    if *line_start > buf.len() {
                        *line_start = 0;
                        *fields = 0;
                    }
                    let Some(len) = scan_trailers(buf, line_start, fields)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if *fields == 0 {
                        buf.advance(len);
                        self.state = State::Done;
                        return Ok(Decoded::End);
                    }
                    let map = parse_trailers(&buf[..len])?;
                    buf.advance(len);
                    self.state = State::TrailersSent;
                    return Ok(Decoded::Trailers(map));
                }
                State::TrailersSent | State::Done => {
                    self.state = State::Done;
                    return Ok(Decoded::End);
                }
                State::Failed(reason) => return Err(*reason),
            }
        }
    }
}

/// Finds the empty line ending the trailer section, starting at `line_start`
/// and updating it and `fields` so the next call resumes there. Returns the
/// section length including the final CRLF.
///
/// Line ends are checked here because httparse also accepts bare LF.
fn scan_trailers(
    buf: &[u8],
    line_start: &mut usize,
    fields: &mut usize,
) -> Result<Option<usize>, Reason> {
    let window = &buf[..buf.len().min(MAX_TRAILER_BYTES)];
    while let Some(i) = window[*line_start..].iter().position(|&b| b == b'\n') {
        let lf = *line_start + i;
        if lf == *line_start || window[lf - 1] != b'\r' {
            return Err(Reason::BareLf);
        }
        if lf - 1 == *line_start {
            return Ok(Some(lf + 1));
        }
        *fields += 1;
        if *fields > MAX_TRAILER_FIELDS {
            return Err(Reason::TooManyTrailers);
        }
        *line_start = lf + 1;
    }
    if buf.len() >= MAX_TRAILER_BYTES {
        return Err(Reason::TrailersTooLarge);
    }
    Ok(None)
}

/// Parses a complete, CRLF-checked trailer section into a map.
fn parse_trailers(section: &[u8]) -> Result<HeaderMap, Reason> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let parsed = match httparse::parse_headers(section, &mut raw) {
        Ok(httparse::Status::Complete((used, parsed))) if used == section.len() => parsed,
        _ => return Err(Reason::InvalidTrailer),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Reason::InvalidTrailer)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| Reason::InvalidTrailer)?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a whole run of the decoder produced.
    #[derive(Debug, Default, PartialEq)]
    struct Outcome {
        data: Vec<u8>,
        trailers: Option<HeaderMap>,
        ended: bool,
        leftover: Vec<u8>,
    }

    /// Feeds `pieces` one after another, decoding until `NeedMore` after each,
    /// as a connection read loop would. Pieces after `End` go straight to the
    /// buffer so the leftover check sees everything that followed the body.
    fn run<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<Outcome, ChunkedError> {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Outcome::default();
        for piece in pieces {
            buf.extend_from_slice(piece);
            while !out.ended {
                match dec.decode(&mut buf)? {
                    Decoded::Data(d) => {
                        assert!(!d.is_empty(), "empty Data");
                        out.data.extend_from_slice(&d);
                    }
                    Decoded::Trailers(t) => {
                        assert!(out.trailers.is_none(), "trailers twice");
                        assert!(!t.is_empty(), "empty Trailers");
                        out.trailers = Some(t);
                    }
                    Decoded::End => {
                        assert!(dec.is_done());
                        out.ended = true;
                    }
                    Decoded::NeedMore => break,
                }
            }
        }
        out.leftover = buf.to_vec();
        Ok(out)
    }

    fn run_whole(input: &[u8]) -> Result<Outcome, ChunkedError> {
        run([input])
    }

    fn expect_err(input: &[u8], reason: Reason) {
        match run_whole(input) {
            Err(e) => assert_eq!(e, ChunkedError(reason), "input {input:?}: {e}"),
            Ok(out) => panic!("input {input:?} decoded: {out:?}"),
        }
    }

    const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

    fn multi_chunk_body() -> Vec<u8> {
        let mut v = b"5\r\nhello\r\n1\r\n \r\nb\r\nchunked wor\r\n2\r\nld\r\n0\r\n\r\n".to_vec();
        v.extend_from_slice(NEXT);
        v
    }

    fn body_with_extras() -> Vec<u8> {
        b"5;a=b \t;c=\"x y\"\r\nhello\r\nA\r\n0123456789\r\n3 \t\r\nabc\r\n\
          000\r\nx-checksum: abc\r\nx-other: 1\r\n\r\nrest"
            .to_vec()
    }

    #[test]
    fn several_chunks_then_end_and_leftover_untouched() {
        let out = run_whole(&multi_chunk_body()).unwrap();
        assert_eq!(out.data, b"hello chunked world");
        assert!(out.ended);
        assert!(out.trailers.is_none());
        assert_eq!(out.leftover, NEXT);
    }

    #[test]
    fn empty_body() {
        let out = run_whole(b"0\r\n\r\n").unwrap();
        assert!(out.data.is_empty());
        assert!(out.ended);
        assert!(out.leftover.is_empty());
    }

    #[test]
    fn byte_at_a_time_and_every_split_point() {
        for body in [multi_chunk_body(), body_with_extras()] {
            let whole = run_whole(&body).unwrap();
            assert!(whole.ended);

            let bytes = run(body.chunks(1)).unwrap();
            assert_eq!(bytes, whole);

            for at in 0..=body.len() {
                let (a, b) = body.split_at(at);
                assert_eq!(run([a, b]).unwrap(), whole, "split at {at}");
            }
        }
    }

    #[test]
    fn extensions_uppercase_hex_and_whitespace() {
        let out = run_whole(b"5;foo=bar;baz\r\nhello\r\nA \r\n0123456789\r\n1F\t;x\r\n").unwrap();
        // The 0x1F chunk is incomplete: only the first two chunks are out.
        assert_eq!(out.data, b"hello0123456789");
        assert!(!out.ended);

        let out = run_whole(b"5;foo=bar;baz\r\nhello\r\n0;last=1\r\n\r\n").unwrap();
        assert_eq!(out.data, b"hello");
        assert!(out.ended);

        let mut body = b"1F\t;x\r\n".to_vec();
        body.extend_from_slice(&[b'z'; 0x1f]);
        body.extend_from_slice(b"\r\n0 \r\n\r\n");
        let out = run_whole(&body).unwrap();
        assert_eq!(out.data, [b'z'; 0x1f]);
        assert!(out.ended);
    }

    #[test]
    fn trailers_then_end() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"0\r\nx-checksum: abc\r\nx-other: 1\r\n\r\nnext"[..]);
        let Decoded::Trailers(map) = dec.decode(&mut buf).unwrap() else {
            panic!("expected trailers");
        };
        assert_eq!(map.len(), 2);
        assert_eq!(map["x-checksum"], "abc");
        assert_eq!(map["x-other"], "1");
        assert!(!dec.is_done());
        assert!(matches!(dec.decode(&mut buf).unwrap(), Decoded::End));
        assert!(dec.is_done());
        assert_eq!(&buf[..], b"next");
        // Further calls keep reporting the end without touching the buffer.
        assert!(matches!(dec.decode(&mut buf).unwrap(), Decoded::End));
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn repeated_trailer_names_are_kept() {
        let out = run_whole(b"0\r\nx-a: 1\r\nX-A: 2\r\n\r\n").unwrap();
        let map = out.trailers.unwrap();
        let values: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn trailers_at_field_limit() {
        let mut body = b"0\r\n".to_vec();
        for i in 0..MAX_TRAILER_FIELDS {
            body.extend_from_slice(format!("x-f{i}: v\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        let out = run_whole(&body).unwrap();
        assert_eq!(out.trailers.unwrap().len(), MAX_TRAILER_FIELDS);
        assert!(out.ended);
    }

    #[test]
    fn trailers_at_byte_limit() {
        let mut body = b"0\r\nx-big: ".to_vec();
        body.resize(3 + MAX_TRAILER_BYTES - 4, b'v');
        body.extend_from_slice(b"\r\n\r\n");
        let out = run(body.chunks(100)).unwrap();
        assert_eq!(out.trailers.unwrap()["x-big"].len(), MAX_TRAILER_BYTES - 11);
        assert!(out.ended);
    }

    #[test]
    fn size_line_at_limit_is_accepted() {
        let mut body = b"3;".to_vec();
        body.resize(MAX_SIZE_LINE, b'e');
        body.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        let out = run(body.chunks(1)).unwrap();
        assert_eq!(out.data, b"abc");
        assert!(out.ended);
    }

    #[test]
    fn max_u64_size_streams() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nabc"[..]);
        let Decoded::Data(d) = dec.decode(&mut buf).unwrap() else {
            panic!("expected data");
        };
        assert_eq!(&d[..], b"abc");
        assert!(matches!(dec.decode(&mut buf).unwrap(), Decoded::NeedMore));
    }

    #[test]
    fn errors() {
        // Non-hex size, also caught before any line end arrives.
        expect_err(b"g\r\n", Reason::InvalidSizeLine);
        expect_err(b"x", Reason::InvalidSizeLine);
        expect_err(b"-1\r\n", Reason::InvalidSizeLine);
        expect_err(b"0x5\r\n", Reason::InvalidSizeLine);
        expect_err(b"5 5\r\n", Reason::InvalidSizeLine);
        expect_err(b" 5\r\n", Reason::InvalidSizeLine);
        // Empty size line.
        expect_err(b"\r\n", Reason::InvalidSizeLine);
        expect_err(b";ext\r\n", Reason::InvalidSizeLine);
        // Overflowing u64 (17 significant digits); leading zeros are fine.
        expect_err(b"10000000000000000\r\n", Reason::SizeTooLarge);
        expect_err(b"000ffffffffffffffff0", Reason::SizeTooLarge);
        // Missing CRLF after data.
        expect_err(b"3\r\nabcX", Reason::MissingDataCrlf);
        expect_err(b"3\r\nabc\rX", Reason::MissingDataCrlf);
        expect_err(b"3\r\nabc\n0\r\n\r\n", Reason::MissingDataCrlf);
        // Lone LF and lone CR in the size line.
        expect_err(b"5\nhello\r\n", Reason::BareLf);
        expect_err(b"5;a=b\nhello\r\n", Reason::BareLf);
        expect_err(b"\n", Reason::BareLf);
        expect_err(b"5\rhello\r\n", Reason::InvalidSizeLine);
        // Control bytes smuggled in extensions.
        expect_err(b"5;a\rb\r\nhello\r\n", Reason::InvalidSizeLine);
        expect_err(b"5;a\0b\r\nhello\r\n", Reason::InvalidExtension);
        // Lone LF in trailers.
        expect_err(b"0\r\n\n", Reason::BareLf);
        expect_err(b"0\r\nx-a: 1\n\r\n", Reason::BareLf);
        // Invalid trailer lines.
        expect_err(b"0\r\nno colon\r\n\r\n", Reason::InvalidTrailer);
        expect_err(b"0\r\nbad name: v\r\n\r\n", Reason::InvalidTrailer);
        expect_err(b"0\r\n: v\r\n\r\n", Reason::InvalidTrailer);
        expect_err(b"0\r\nx-a: 1\r\n folded\r\n\r\n", Reason::InvalidTrailer);
        expect_err(b"0\r\nx-a: a\x01b\r\n\r\n", Reason::InvalidTrailer);
    }

    #[test]
    fn error_messages() {
        let e = run_whole(b"zz").unwrap_err();
        assert_eq!(e.to_string(), "invalid chunk size line");
        let e = run_whole(b"3\r\nabcX").unwrap_err();
        assert_eq!(e.to_string(), "missing CRLF after chunk data");
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert_eq!(boxed.to_string(), "missing CRLF after chunk data");
    }

    #[test]
    fn oversized_size_line_fails_without_line_end() {
        let mut long_ext = b"5;".to_vec();
        long_ext.resize(MAX_SIZE_LINE + 1, b'e');
        expect_err(&long_ext, Reason::ExtensionsTooLong);
        // Same when it trickles in; it fails once the limit is passed.
        let err = run(long_ext.chunks(1)).unwrap_err();
        assert_eq!(err, ChunkedError(Reason::ExtensionsTooLong));
        assert!(run(long_ext[..MAX_SIZE_LINE].chunks(7)).is_ok());

        let mut zeros = vec![b'0'; MAX_SIZE_LINE + 1];
        expect_err(&zeros, Reason::SizeLineTooLong);
        zeros[1..].fill(b' ');
        expect_err(&zeros, Reason::SizeLineTooLong);
    }

    #[test]
    fn oversized_trailers_fail() {
        // "0\r\n" is the last-chunk line, not part of the trailer section.
        let mut body = b"0\r\nx-big: ".to_vec();
        body.resize(3 + MAX_TRAILER_BYTES, b'v');
        expect_err(&body, Reason::TrailersTooLarge);
        // A complete section just over the limit fails too.
        body.extend_from_slice(b"\r\n\r\n");
        expect_err(&body, Reason::TrailersTooLarge);
        assert_eq!(
            run(body.chunks(1000)).unwrap_err(),
            ChunkedError(Reason::TrailersTooLarge)
        );

        let mut many = b"0\r\n".to_vec();
        for i in 0..=MAX_TRAILER_FIELDS {
            many.extend_from_slice(format!("x-f{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        expect_err(&many, Reason::TooManyTrailers);
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"3\r\nabcX"[..]);
        assert!(matches!(dec.decode(&mut buf), Ok(Decoded::Data(_))));
        assert!(dec.decode(&mut buf).is_err());
        buf.clear();
        buf.extend_from_slice(b"0\r\n\r\n");
        assert!(dec.decode(&mut buf).is_err());
        assert!(!dec.is_done());
        assert_eq!(&buf[..], b"0\r\n\r\n");
    }

    #[test]
    fn need_more_keeps_partial_lines() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"1a;ext"[..]);
        assert!(matches!(dec.decode(&mut buf).unwrap(), Decoded::NeedMore));
        assert_eq!(&buf[..], b"1a;ext");

        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"0\r\nx-a: 1\r\nx-b"[..]);
        assert!(matches!(dec.decode(&mut buf).unwrap(), Decoded::NeedMore));
        assert_eq!(&buf[..], b"x-a: 1\r\nx-b");
        buf.extend_from_slice(b": 2\r\n\r\n");
        let Decoded::Trailers(map) = dec.decode(&mut buf).unwrap() else {
            panic!("expected trailers");
        };
        assert_eq!(map["x-b"], "2");
        assert!(buf.is_empty());
    }

    #[test]
    fn large_chunk_streams_in_pieces() {
        const SIZE: usize = 100_000;
        const PIECE: usize = 8 * 1024;
        let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let mut body = format!("{SIZE:x}\r\n").into_bytes();
        body.extend_from_slice(&payload);
        body.extend_from_slice(b"\r\n0\r\n\r\n");

        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut data_items = 0;
        for piece in body.chunks(PIECE) {
            buf.extend_from_slice(piece);
            let before = got.len();
            loop {
                match dec.decode(&mut buf).unwrap() {
                    Decoded::Data(d) => {
                        assert!(d.len() <= PIECE);
                        got.extend_from_slice(&d);
                        data_items += 1;
                    }
                    Decoded::NeedMore => break,
                    Decoded::End => break,
                    Decoded::Trailers(_) => panic!("unexpected trailers"),
                }
            }
            // Every piece that carries chunk data is handed out immediately.
            if got.len() < SIZE {
                assert!(got.len() > before, "piece held back");
                assert!(buf.is_empty());
            }
        }
        assert!(dec.is_done());
        assert_eq!(got, payload);
        assert!(data_items >= SIZE / PIECE);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // Cheap deterministic fuzzing over a framing-heavy alphabet.
        const ALPHABET: &[u8] = b"0123456789aAfFgG;=: \t\r\n\"x\x00\x7f\xff";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5_000 {
            let mut dec = ChunkedDecoder::new();
            let mut buf = BytesMut::new();
            'feed: for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.extend_from_slice(&[ALPHABET[(seed % ALPHABET.len() as u64) as usize]]);
                loop {
                    match dec.decode(&mut buf) {
                        Ok(Decoded::Data(d)) => assert!(!d.is_empty()),
                        Ok(Decoded::Trailers(t)) => assert!(!t.is_empty()),
                        Ok(Decoded::NeedMore) => break,
                        Ok(Decoded::End) | Err(_) => break 'feed,
                    }
                }
            }
        }
    }
}
