//! `LogFormat` strings, parsed once into a [`LogFormat`] and written per request.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::entry::Entry;
use crate::escape::escape_into;
use crate::time;

/// Apache's `common` format (Common Log Format).
pub const COMMON: &str = "%h %l %u %t \"%r\" %>s %b";
/// Apache's `combined` format: `common` plus the referer and the user agent.
pub const COMBINED: &str = "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"";
/// Apache's `combinedio` format: `combined` plus bytes received and sent (mod_logio).
pub const COMBINEDIO: &str = "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\" %I %O";

/// The directives a format may use, for error messages.
const SUPPORTED: &str = "%a %{c}a %A %b %B %D %h %{c}h %H %{Name}i %I %l %m %{Name}o %O %p \
     %{local}p %{remote}p %P %q %r %s %>s %S %t %{sec}t %{msec}t %{usec}t %{msec_frac}t \
     %{usec_frac}t %T %{ms}T %{us}T %u %U %v %V %%";

/// A compiled access log format: Apache `LogFormat` syntax, parsed once.
///
/// Cheap to clone (the compiled items are shared).
#[derive(Clone)]
pub struct LogFormat {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: Box<str>,
    items: Box<[Item]>,
    request_headers: Box<[HeaderName]>,
    response_headers: Box<[HeaderName]>,
    needs: Needs,
}

/// What capturing a request must collect for a format.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Needs {
    /// `%I`/`%S`: the request head's size and a body counter.
    pub request_bytes: bool,
    /// `%O`/`%S`: the response head's size.
    pub response_head_bytes: bool,
    /// `%V`, `%v`, `%p`: the `Host` header.
    pub host: bool,
}

#[derive(Debug)]
enum Item {
    Literal(Box<[u8]>),
    Field {
        field: Field,
        only: Option<Condition>,
    },
}

/// `%400,501{User-Agent}i` logs the field only for those statuses, `%!200,304{Referer}i`
/// only for others.
#[derive(Debug)]
struct Condition {
    negate: bool,
    statuses: Box<[u16]>,
}

impl Condition {
    fn holds(&self, status: u16) -> bool {
        self.statuses.contains(&status) != self.negate
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ClientIp,
    PeerIp,
    LocalIp,
    Dash,
    BodyBytesClf,
    BodyBytes,
    Micros,
    Protocol,
    RequestHeader(usize),
    ResponseHeader(usize),
    BytesIn,
    BytesOut,
    BytesInOut,
    Method,
    Port(PortKind),
    Pid,
    Query,
    RequestLine,
    Status,
    Time(TimeFormat),
    Duration(Unit),
    Path,
    ServerName,
    CanonicalName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortKind {
    Canonical,
    Local,
    Remote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeFormat {
    Clf,
    Sec,
    Msec,
    Usec,
    MsecFrac,
    UsecFrac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    S,
    Ms,
    Us,
}

/// Why a format string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogFormatError {
    /// A directive letter Apache does not define either.
    #[error("unknown LogFormat directive `{directive}` at byte {at}; supported: {SUPPORTED}")]
    Unknown {
        /// The directive as written, e.g. `%Z`.
        directive: String,
        /// Its byte offset in the format.
        at: usize,
    },
    /// An Apache directive that has no meaning here.
    #[error("LogFormat directive `{directive}` at byte {at} is not supported: {why}")]
    Unsupported {
        /// The directive as written.
        directive: String,
        /// Its byte offset in the format.
        at: usize,
        /// Why, and what to use instead.
        why: &'static str,
    },
    /// A directive with a `{...}` argument it does not take, or a bad one.
    #[error("LogFormat directive `{directive}` at byte {at}: {problem}")]
    BadArgument {
        /// The directive as written.
        directive: String,
        /// Its byte offset in the format.
        at: usize,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The format ends inside a directive.
    #[error(
        "LogFormat ends inside the directive starting at byte {at}; write `%%` for a literal percent sign"
    )]
    Incomplete {
        /// Where the unfinished directive starts.
        at: usize,
    },
    /// A name that is not a built-in format, and no `%` directive either.
    #[error(
        "unknown LogFormat name `{0}`: use common, combined, combinedio, or a format string with % directives, e.g. \"%h %t \\\"%r\\\" %>s %b\""
    )]
    UnknownName(String),
}

// === impl LogFormat ===

impl LogFormat {
    /// Apache's `common` format.
    pub fn common() -> Self {
        Self::parse(COMMON).expect("built-in format")
    }

    /// Apache's `combined` format.
    pub fn combined() -> Self {
        Self::parse(COMBINED).expect("built-in format")
    }

    /// Apache's `combinedio` format.
    pub fn combinedio() -> Self {
        Self::parse(COMBINEDIO).expect("built-in format")
    }

    /// A built-in format by name: `common`, `combined` or `combinedio`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "common" => Some(Self::common()),
            "combined" => Some(Self::combined()),
            "combinedio" => Some(Self::combinedio()),
            _ => None,
        }
    }

    /// A built-in name, or else a format string (as `CustomLog` takes either).
    pub fn from_name_or_format(s: &str) -> Result<Self, LogFormatError> {
        if let Some(f) = Self::named(s) {
            return Ok(f);
        }
        if !s.contains('%') {
            return Err(LogFormatError::UnknownName(s.to_owned()));
        }
        Self::parse(s)
    }

    /// Parses a format string in Apache `LogFormat` syntax.
    ///
    /// Besides `%` directives, `\n`, `\t`, `\"` and `\\` stand for a newline, a tab, a
    /// quote and a backslash, as in httpd.conf. Every line ends with a newline of its own.
    pub fn parse(source: &str) -> Result<Self, LogFormatError> {
        Parser::new(source).run()
    }

    /// The format string this was parsed from.
    pub fn as_str(&self) -> &str {
        &self.inner.source
    }

    pub(crate) fn needs(&self) -> Needs {
        self.inner.needs
    }

    pub(crate) fn request_headers(&self) -> &[HeaderName] {
        &self.inner.request_headers
    }

    pub(crate) fn response_headers(&self) -> &[HeaderName] {
        &self.inner.response_headers
    }

    /// Appends the line for `entry` to `out`, newline included.
    pub(crate) fn write(&self, e: &Entry, out: &mut Vec<u8>) {
        let status = e.status_code();
        for item in self.inner.items.iter() {
            match item {
                Item::Literal(bytes) => out.extend_from_slice(bytes),
                Item::Field { field, only } => match only {
                    Some(c) if !c.holds(status) => out.push(b'-'),
                    _ => self.write_field(*field, e, status, out),
                },
            }
        }
        out.push(b'\n');
    }

    fn write_field(&self, field: Field, e: &Entry, status: u16, out: &mut Vec<u8>) {
        match field {
            Field::ClientIp => write_ip(out, e.client),
            Field::PeerIp => write_ip(out, e.peer.map(|p| p.ip())),
            Field::LocalIp => write_ip(out, e.local.map(|l| l.ip())),
            Field::Dash => out.push(b'-'),
            Field::BodyBytesClf => match e.body_out {
                0 => out.push(b'-'),
                n => write_u64(out, n),
            },
            Field::BodyBytes => write_u64(out, e.body_out),
            Field::Micros => write_u64(out, e.elapsed().as_micros() as u64),
            Field::Protocol => out.extend_from_slice(version_str(e.version).as_bytes()),
            Field::RequestHeader(i) => write_header(out, e.request_headers.get(i)),
            Field::ResponseHeader(i) => {
                let value = e.response_headers.get(i);
                if self.inner.response_headers[i] == http::header::CONTENT_TYPE {
                    // Apache logs the media type without its parameters.
                    let v = value.map(|v| {
                        let b = v.as_bytes();
                        let end = b.iter().position(|&c| c == b';').unwrap_or(b.len());
                        b[..end].trim_ascii()
                    });
                    match v {
                        Some(b) if !b.is_empty() => escape_into(out, b),
                        _ => out.push(b'-'),
                    }
                } else {
                    write_header(out, value);
                }
            }
            Field::BytesIn => write_u64(out, e.bytes_in()),
            Field::BytesOut => write_u64(out, e.bytes_out()),
            Field::BytesInOut => write_u64(out, e.bytes_in() + e.bytes_out()),
            Field::Method => escape_into(out, e.method.as_str().as_bytes()),
            Field::Port(kind) => {
                let port = match kind {
                    PortKind::Canonical => e.host_port().or(e.local.map(|l| l.port())),
                    PortKind::Local => e.local.map(|l| l.port()),
                    PortKind::Remote => e.peer.map(|p| p.port()),
                };
                match port {
                    Some(p) => write_u64(out, p.into()),
                    None => out.push(b'-'),
                }
            }
            Field::Pid => write_u64(out, std::process::id().into()),
            Field::Query => {
                if let Some(q) = e.uri.query() {
                    out.push(b'?');
                    escape_into(out, q.as_bytes());
                }
            }
            Field::RequestLine => {
                escape_into(out, e.method.as_str().as_bytes());
                out.push(b' ');
                write_target(out, e);
                out.push(b' ');
                out.extend_from_slice(version_str(e.version).as_bytes());
            }
            Field::Status => write_u64(out, status.into()),
            Field::Time(fmt) => {
                let since = e.start_unix();
                match fmt {
                    TimeFormat::Clf => time::write_clf(out, since.as_secs()),
                    TimeFormat::Sec => write_u64(out, since.as_secs()),
                    TimeFormat::Msec => write_u64(out, since.as_millis() as u64),
                    TimeFormat::Usec => write_u64(out, since.as_micros() as u64),
                    TimeFormat::MsecFrac => write_padded(out, u64::from(since.subsec_millis()), 3),
                    TimeFormat::UsecFrac => write_padded(out, u64::from(since.subsec_micros()), 6),
                }
            }
            Field::Duration(unit) => {
                let d = e.elapsed();
                let n = match unit {
                    Unit::S => d.as_secs(),
                    Unit::Ms => d.as_millis() as u64,
                    Unit::Us => d.as_micros() as u64,
                };
                write_u64(out, n);
            }
            Field::Path => escape_into(out, e.uri.path().as_bytes()),
            Field::ServerName => match (&e.server_name, e.host_name()) {
                (Some(name), _) => escape_into(out, name.as_bytes()),
                (None, Some(host)) => escape_into(out, host),
                (None, None) => out.push(b'-'),
            },
            Field::CanonicalName => match (e.host_name(), &e.server_name) {
                (Some(host), _) => escape_into(out, host),
                (None, Some(name)) => escape_into(out, name.as_bytes()),
                (None, None) => out.push(b'-'),
            },
        }
    }
}

impl fmt::Debug for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LogFormat").field(&self.as_str()).finish()
    }
}

impl PartialEq for LogFormat {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::str::FromStr for LogFormat {
    type Err = LogFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name_or_format(s)
    }
}

// === the parser ===

struct Parser<'a> {
    source: &'a str,
    items: Vec<Item>,
    literal: Vec<u8>,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    needs: Needs,
}

impl<'a> Parser<'a> {
    fn new(source: &'a str) -> Self {
        Self {
            source,
            items: Vec::new(),
            literal: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            needs: Needs::default(),
        }
    }

    fn run(mut self) -> Result<LogFormat, LogFormatError> {
        let bytes = self.source.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if i + 1 < bytes.len() => {
                    let c = match bytes[i + 1] {
                        b'n' => Some(b'\n'),
                        b't' => Some(b'\t'),
                        b'\\' => Some(b'\\'),
                        b'"' => Some(b'"'),
                        _ => None,
                    };
                    match c {
                        Some(c) => {
                            self.literal.push(c);
                            i += 2;
                        }
                        None => {
                            self.literal.push(b'\\');
                            i += 1;
                        }
                    }
                }
                b'%' => i = self.directive(i)?,
                b => {
                    self.literal.push(b);
                    i += 1;
                }
            }
        }
        self.flush_literal();
        Ok(LogFormat {
            inner: Arc::new(Compiled {
                source: self.source.into(),
                items: self.items.into(),
                request_headers: self.request_headers.into(),
                response_headers: self.response_headers.into(),
                needs: self.needs,
            }),
        })
    }

    fn flush_literal(&mut self) {
        if !self.literal.is_empty() {
            let lit = std::mem::take(&mut self.literal);
            self.items.push(Item::Literal(lit.into()));
        }
    }

    /// Parses the directive starting at `start` (a `%`); returns where the next item starts.
    fn directive(&mut self, start: usize) -> Result<usize, LogFormatError> {
        let src = self.source;
        let bytes = src.as_bytes();
        let mut i = start + 1;
        if bytes.get(i) == Some(&b'%') {
            self.literal.push(b'%');
            return Ok(i + 1);
        }
        let mut negate = false;
        let mut statuses = Vec::new();
        let mut arg: Option<&str> = None;
        loop {
            match bytes.get(i) {
                None => return Err(LogFormatError::Incomplete { at: start }),
                Some(b'!') => {
                    negate = true;
                    i += 1;
                }
                // `<` and `>` choose the original or final request of an internal redirect;
                // there is one status here, so both mean the same.
                Some(b'<' | b'>' | b',') => i += 1,
                Some(b'0'..=b'9') => {
                    let end = bytes[i..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(bytes.len(), |n| i + n);
                    let code: Option<u16> = src[i..end].parse().ok();
                    match code {
                        Some(c) if (100..=999).contains(&c) => statuses.push(c),
                        _ => {
                            return Err(LogFormatError::BadArgument {
                                directive: directive_text(src, start, end),
                                at: start,
                                problem: format!(
                                    "`{}` is not a status code; a condition lists three-digit codes, e.g. `%400,501{{User-Agent}}i`",
                                    &src[i..end]
                                ),
                            });
                        }
                    }
                    i = end;
                }
                Some(b'{') => {
                    let Some(close) = src[i + 1..].find('}') else {
                        return Err(LogFormatError::Incomplete { at: start });
                    };
                    arg = Some(&src[i + 1..i + 1 + close]);
                    i += close + 2;
                }
                Some(_) => break,
            }
        }
        let letter = src[i..].chars().next().expect("checked above");
        let end = i + letter.len_utf8();
        let text = &src[start..end];
        let field = self.field(letter, arg, text, start)?;
        self.flush_literal();
        let only = (!statuses.is_empty()).then(|| Condition {
            negate,
            statuses: statuses.into(),
        });
        self.items.push(Item::Field { field, only });
        Ok(end)
    }

    fn field(
        &mut self,
        letter: char,
        arg: Option<&str>,
        text: &str,
        at: usize,
    ) -> Result<Field, LogFormatError> {
        let bad = |problem: String| LogFormatError::BadArgument {
            directive: text.to_owned(),
            at,
            problem,
        };
        let unsupported = |why: &'static str| LogFormatError::Unsupported {
            directive: text.to_owned(),
            at,
            why,
        };
        // Directives that take no argument.
        let plain = match letter {
            'A' => Some(Field::LocalIp),
            'b' => Some(Field::BodyBytesClf),
            'B' => Some(Field::BodyBytes),
            'D' => Some(Field::Micros),
            'H' => Some(Field::Protocol),
            'I' => {
                self.needs.request_bytes = true;
                Some(Field::BytesIn)
            }
            'O' => {
                self.needs.response_head_bytes = true;
                Some(Field::BytesOut)
            }
            'S' => {
                self.needs.request_bytes = true;
                self.needs.response_head_bytes = true;
                Some(Field::BytesInOut)
            }
            'l' | 'u' => Some(Field::Dash),
            'm' => Some(Field::Method),
            'q' => Some(Field::Query),
            'r' => Some(Field::RequestLine),
            's' => Some(Field::Status),
            'U' => Some(Field::Path),
            'v' => {
                self.needs.host = true;
                Some(Field::ServerName)
            }
            'V' => {
                self.needs.host = true;
                Some(Field::CanonicalName)
            }
            _ => None,
        };
        if let Some(field) = plain {
            return match arg {
                None => Ok(field),
                Some(a) => Err(bad(format!(
                    "`%{letter}` takes no {{argument}}, remove `{{{a}}}`{}",
                    if letter == 'I' || letter == 'O' {
                        "; request and response headers are `%{Name}i` and `%{Name}o`"
                    } else {
                        ""
                    }
                ))),
            };
        }
        match letter {
            'a' | 'h' => match arg {
                None => Ok(Field::ClientIp),
                Some("c") => Ok(Field::PeerIp),
                Some(a) => Err(bad(format!(
                    "`{{{a}}}` is not an option of `%{letter}`: use `%{letter}` for the client or `%{{c}}{letter}` for the connection's peer"
                ))),
            },
            'i' | 'o' => {
                let Some(name) = arg else {
                    return Err(bad(format!(
                        "`%{letter}` needs a header name, e.g. `%{{User-Agent}}{letter}`"
                    )));
                };
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| bad(format!("`{name}` is not a header name")))?;
                let list = if letter == 'i' {
                    &mut self.request_headers
                } else {
                    &mut self.response_headers
                };
                let index = match list.iter().position(|n| *n == name) {
                    Some(i) => i,
                    None => {
                        list.push(name);
                        list.len() - 1
                    }
                };
                Ok(if letter == 'i' {
                    Field::RequestHeader(index)
                } else {
                    Field::ResponseHeader(index)
                })
            }
            'p' => {
                let kind = match arg {
                    None | Some("canonical") => {
                        self.needs.host = true;
                        PortKind::Canonical
                    }
                    Some("local") => PortKind::Local,
                    Some("remote") => PortKind::Remote,
                    Some(a) => {
                        return Err(bad(format!(
                            "`{{{a}}}` is not a port: use `%p`, `%{{canonical}}p`, `%{{local}}p` or `%{{remote}}p`"
                        )));
                    }
                };
                Ok(Field::Port(kind))
            }
            'P' => match arg {
                None | Some("pid") => Ok(Field::Pid),
                Some(_) => Err(unsupported(
                    "thread ids are not logged; `%P` gives the process id",
                )),
            },
            't' => {
                let fmt = match arg.map(|a| a.strip_prefix("begin:").unwrap_or(a)) {
                    None => TimeFormat::Clf,
                    Some("sec") => TimeFormat::Sec,
                    Some("msec") => TimeFormat::Msec,
                    Some("usec") => TimeFormat::Usec,
                    Some("msec_frac") => TimeFormat::MsecFrac,
                    Some("usec_frac") => TimeFormat::UsecFrac,
                    Some(a) => {
                        return Err(bad(format!(
                            "`{{{a}}}`: strftime formats and `end:` are not supported; use `%t`, `%{{sec}}t`, `%{{msec}}t`, `%{{usec}}t`, `%{{msec_frac}}t` or `%{{usec_frac}}t`"
                        )));
                    }
                };
                Ok(Field::Time(fmt))
            }
            'T' => match arg {
                None | Some("s") => Ok(Field::Duration(Unit::S)),
                Some("ms") => Ok(Field::Duration(Unit::Ms)),
                Some("us") => Ok(Field::Duration(Unit::Us)),
                Some(a) => Err(bad(format!(
                    "`{{{a}}}` is not a unit: use `%T` (seconds), `%{{ms}}T` or `%{{us}}T`"
                ))),
            },
            'C' | 'e' | 'n' | 'x' | '^' => Err(unsupported(
                "cookies, environment variables, module notes and trailers are not logged; \
                 use `%{Cookie}i` or `%{Name}i`/`%{Name}o` for headers",
            )),
            'f' | 'R' => Err(unsupported(
                "a proxy serves no files and runs no handlers; `%U` logs the path",
            )),
            'k' | 'X' | 'L' | 'M' => Err(unsupported(
                "connection state, log ids and error-log messages are not logged",
            )),
            _ => Err(LogFormatError::Unknown {
                directive: text.to_owned(),
                at,
            }),
        }
    }
}

fn directive_text(src: &str, start: usize, end: usize) -> String {
    src[start..end.min(src.len())].to_owned()
}

// === writing helpers ===

pub(crate) fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The request target as the client wrote it: origin form (`/path?query`), absolute form
/// (`http://host/path`), or `*`. HTTP/2 has no request line; its `:path` is used.
fn write_target(out: &mut Vec<u8>, e: &Entry) {
    let uri = &e.uri;
    if e.version != http::Version::HTTP_2 {
        if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) {
            escape_into(out, scheme.as_bytes());
            out.extend_from_slice(b"://");
            escape_into(out, authority.as_str().as_bytes());
            if uri.path_and_query().is_none_or(|pq| pq.as_str().is_empty()) {
                return;
            }
        }
    }
    match uri.path_and_query() {
        Some(pq) => escape_into(out, pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
}

fn write_header(out: &mut Vec<u8>, value: Option<&HeaderValue>) {
    match value {
        Some(v) if !v.is_empty() => escape_into(out, v.as_bytes()),
        _ => out.push(b'-'),
    }
}

fn write_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        Some(IpAddr::V4(v4)) => write_ipv4(out, v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => write_ipv4(out, v4),
            None => {
                use std::io::Write as _;
                let _ = write!(out, "{v6}");
            }
        },
        None => out.push(b'-'),
    }
}

fn write_ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    let [a, b, c, d] = ip.octets();
    write_u64(out, a.into());
    out.push(b'.');
    write_u64(out, b.into());
    out.push(b'.');
    write_u64(out, c.into());
    out.push(b'.');
    write_u64(out, d.into());
}

pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let start = out.len();
    write_u64(out, n);
    let len = out.len() - start;
    if len < width {
        out.splice(start..start, std::iter::repeat_n(b'0', width - len));
    }
}

/// The final status as logged: 500 when the inner service failed without an answer.
pub(crate) fn status_or_500(s: Option<StatusCode>) -> u16 {
    s.map_or(500, |s| s.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for name in ["common", "combined", "combinedio"] {
            let f = LogFormat::named(name).unwrap();
            assert!(f.as_str().starts_with("%h %l %u %t"));
        }
        let f = LogFormat::combined();
        assert_eq!(f.request_headers().len(), 2);
        assert!(!f.needs().request_bytes);
        assert!(LogFormat::combinedio().needs().request_bytes);
    }

    #[test]
    fn unknown_directive_is_named() {
        let e = LogFormat::parse("%h %Z %s").unwrap_err();
        assert_eq!(
            e,
            LogFormatError::Unknown {
                directive: "%Z".into(),
                at: 3
            }
        );
        assert!(e.to_string().contains("`%Z`"), "{e}");
        assert!(e.to_string().contains("%{Name}i"), "{e}");
    }

    #[test]
    fn unsupported_and_bad_arguments() {
        let e = LogFormat::parse("%f").unwrap_err();
        assert!(matches!(e, LogFormatError::Unsupported { .. }), "{e}");
        let e = LogFormat::parse("%{Referer}I").unwrap_err();
        assert!(e.to_string().contains("%{Name}i"), "{e}");
        let e = LogFormat::parse("%{%Y-%m-%d}t").unwrap_err();
        assert!(e.to_string().contains("strftime"), "{e}");
        let e = LogFormat::parse("%i").unwrap_err();
        assert!(e.to_string().contains("needs a header name"), "{e}");
        let e = LogFormat::parse("%{bad header}i").unwrap_err();
        assert!(e.to_string().contains("not a header name"), "{e}");
        assert_eq!(
            LogFormat::parse("50%").unwrap_err(),
            LogFormatError::Incomplete { at: 2 }
        );
        assert_eq!(
            LogFormat::parse("%{Referer").unwrap_err(),
            LogFormatError::Incomplete { at: 0 }
        );
        let e = LogFormat::parse("%40{Referer}i").unwrap_err();
        assert!(e.to_string().contains("three-digit"), "{e}");
    }

    #[test]
    fn names_or_formats() {
        assert_eq!(
            LogFormat::from_name_or_format("combined").unwrap(),
            LogFormat::combined()
        );
        let e = LogFormat::from_name_or_format("combind").unwrap_err();
        assert!(e.to_string().contains("combinedio"), "{e}");
        assert!(LogFormat::from_name_or_format("%h %>s").is_ok());
    }

    #[test]
    fn header_names_are_shared() {
        let f = LogFormat::parse("%{Referer}i %{referer}i %{X-Id}o").unwrap();
        assert_eq!(f.request_headers().len(), 1);
        assert_eq!(f.response_headers().len(), 1);
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        write_u64(&mut out, 0);
        out.push(b' ');
        write_u64(&mut out, u64::MAX);
        out.push(b' ');
        write_padded(&mut out, 7, 3);
        assert_eq!(out, b"0 18446744073709551615 007");
    }
}
