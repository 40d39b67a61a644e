//! `[limits]`: the four limits, their checks, and the ceilings they give the server's own
//! parser.

use serde::Deserialize;

use crate::RequestLimitsLayer;

/// Apache's default `LimitRequestBody` since 2.4.54: 1 GiB.
pub const DEFAULT_BODY: u64 = 1 << 30;
/// Apache's default `LimitRequestFields`.
pub const DEFAULT_FIELDS: usize = 100;
/// Apache's default `LimitRequestFieldSize`.
pub const DEFAULT_FIELD_SIZE: usize = 8190;
/// Apache's default `LimitRequestLine`.
pub const DEFAULT_LINE: usize = 8190;

/// The most a request head may take in the server's buffer, whatever the limits say: 16 MiB.
pub const MAX_HEAD_BUFFER: usize = 16 << 20;

/// The shortest request line there is, `GET / HTTP/1.1`.
const SHORTEST_LINE: usize = 14;
/// hyper's HTTP/1 read buffer when nothing smaller is asked for (its default, ~400 KiB); used
/// for a part of the head that has no limit of its own.
const UNLIMITED_HEAD_PART: usize = 8192 + 4096 * 100;
/// hyper refuses request targets of this length or more with 414 by itself.
const PARSER_MAX_TARGET: usize = u16::MAX as usize - 1;
/// Header fields the server's HTTP/1 parser takes when `fields = 0`: it reserves a table of
/// this many entries per request, so it cannot be unbounded.
const UNLIMITED_FIELDS_PARSER: usize = 1000;
/// The HTTP/1 parser's table stays on the stack up to this many fields.
const PARSER_STACK_FIELDS: usize = 100;
/// Bytes a field may carry beyond `name: value`: CRLF and a few bytes of extra whitespace.
const FIELD_SLACK: usize = 8;
/// HTTP/2 counts 32 bytes of overhead per field (RFC 9113, SETTINGS_MAX_HEADER_LIST_SIZE).
const H2_FIELD_OVERHEAD: usize = 32;
/// Slack on top of a computed head size, so the layer, not the parser, decides at the limits.
const HEAD_SLACK: usize = 4096;

/// `[limits]`: Apache's `LimitRequestBody`, `LimitRequestFields`, `LimitRequestFieldSize`
/// and `LimitRequestLine`. Every value is in bytes (or fields); `0` means no limit.
///
/// Missing keys take Apache's defaults: `body = 1073741824` (1 GiB, Apache 2.4.54 and later),
/// `fields = 100`, `field_size = 8190`, `line = 8190`.
///
/// ```toml
/// [limits]
/// body = 102400      # LimitRequestBody 102400
/// fields = 40        # LimitRequestFields 40
/// field_size = 1000  # LimitRequestFieldsize 1000
/// line = 1000        # LimitRequestLine 1000
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimitsConfig {
    /// Largest request body in bytes (`LimitRequestBody`); 413 above it.
    pub body: u64,
    /// Most header fields in a request (`LimitRequestFields`); 431 above it.
    pub fields: usize,
    /// Largest header field, counted as `name: value`, in bytes (`LimitRequestFieldSize`);
    /// 431 above it.
    pub field_size: usize,
    /// Longest request line, `METHOD target HTTP/1.1`, in bytes (`LimitRequestLine`); 414
    /// above it.
    pub line: usize,
}

impl Default for RequestLimitsConfig {
    fn default() -> Self {
        Self {
            body: DEFAULT_BODY,
            fields: DEFAULT_FIELDS,
            field_size: DEFAULT_FIELD_SIZE,
            line: DEFAULT_LINE,
        }
    }
}

/// A `[limits]` section that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsConfigError {
    /// `line` is below the shortest possible request line.
    #[error(
        "limits.line = {line} refuses every request (even `GET / HTTP/1.1` is {SHORTEST_LINE} bytes); \
         use at least {SHORTEST_LINE}, e.g. 8190 (Apache's default), or 0 for no limit"
    )]
    LineTooShort {
        /// The configured value.
        line: usize,
    },
    /// The limits together allow request heads larger than the server will buffer.
    #[error(
        "limits.fields = {fields} with limits.field_size = {field_size} and limits.line = {line} allow request \
         heads of about {head} bytes, more than the {MAX_HEAD_BUFFER} bytes the server buffers per connection; \
         lower limits.fields or limits.field_size"
    )]
    HeadTooLarge {
        /// `fields`.
        fields: usize,
        /// `field_size`.
        field_size: usize,
        /// `line`.
        line: usize,
        /// The head size they allow.
        head: usize,
    },
}

/// The server's own parser ceilings that go with a [`RequestLimitsConfig`].
///
/// The layer decides at the configured limits and answers with its own statuses; the
/// server's parser is the backstop that keeps an oversize head from being buffered. The
/// ceilings sit a little above the limits, so a head just over a limit still reaches the
/// layer (and is counted, logged and answered like any other refusal), while a head far over
/// it is refused by the parser itself: with 431 for more fields than the parser takes, for a
/// head still unfinished when the buffer reaches its ceiling (HTTP/1; hyper checks between
/// reads, so a head that arrives whole in one read may reach the layer, which refuses it with
/// the same 431) and for an HTTP/2 header list over its size; with 414 for a request target of
/// 65534 bytes or more. Those parser answers are hyper's, made before any layer runs: they
/// carry no `Server` header and no body.
///
/// With hyper-util's `auto::Builder`:
///
/// ```
/// # use hyper_util::{rt::TokioExecutor, server::conn::auto};
/// use towergate_request_limits::RequestLimitsConfig;
///
/// let limits = RequestLimitsConfig { body: 102400, fields: 40, field_size: 1000, line: 1000 };
/// let server = limits.server_limits();
/// let mut builder = auto::Builder::new(TokioExecutor::new());
/// builder.http1().max_headers(server.h1_max_headers).max_buf_size(server.h1_max_buf_size);
/// builder.http2().max_header_list_size(server.h2_max_header_list_size);
/// assert_eq!(server.h1_max_headers, 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// HTTP/1 header fields the parser takes (hyper `http1().max_headers`): `fields + 1`, at
    /// least 100 (the parser's stack-allocated table), 1000 when `fields = 0`.
    pub h1_max_headers: usize,
    /// HTTP/1 read buffer for a request head (hyper `http1().max_buf_size`, at least 8192):
    /// `line + 2 + fields × (field_size + 8) + 2`, plus 4096 bytes of slack. A limit of 0
    /// counts as hyper's default buffer (~400 KiB) for its part of the head.
    pub h1_max_buf_size: usize,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` (hyper `http2().max_header_list_size`): the
    /// same head counted the HTTP/2 way, 32 bytes of overhead per field and four pseudo-header
    /// fields for the request line.
    pub h2_max_header_list_size: u32,
}

impl RequestLimitsConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), LimitsConfigError> {
        if self.line != 0 && self.line < SHORTEST_LINE {
            return Err(LimitsConfigError::LineTooShort { line: self.line });
        }
        let head = self.head_budget(FIELD_SLACK, 0);
        if head > MAX_HEAD_BUFFER {
            return Err(LimitsConfigError::HeadTooLarge {
                fields: self.fields,
                field_size: self.field_size,
                line: self.line,
                head,
            });
        }
        Ok(())
    }

    /// Checks the values and builds the layer.
    pub fn build(&self) -> Result<RequestLimitsLayer, LimitsConfigError> {
        self.validate()?;
        Ok(RequestLimitsLayer::from_config(*self))
    }

    /// The server parser's ceilings for these limits. Meant for a validated config; the
    /// values are clamped to [`MAX_HEAD_BUFFER`] either way.
    pub fn server_limits(&self) -> ServerLimits {
        let h1_max_headers = match self.fields {
            0 => UNLIMITED_FIELDS_PARSER,
            n => n.saturating_add(1).max(PARSER_STACK_FIELDS),
        };
        let h1 = self.head_budget(FIELD_SLACK, 0).saturating_add(HEAD_SLACK);
        let h2 = self
            .head_budget(H2_FIELD_OVERHEAD, 4 * H2_FIELD_OVERHEAD)
            .saturating_add(HEAD_SLACK);
        ServerLimits {
            h1_max_headers,
            h1_max_buf_size: h1.clamp(8192, MAX_HEAD_BUFFER),
            h2_max_header_list_size: h2.min(MAX_HEAD_BUFFER) as u32,
        }
    }

    /// The largest head these limits let through: request line, fields (each with
    /// `per_field` bytes beyond `name: value`) and the blank line.
    fn head_budget(&self, per_field: usize, line_overhead: usize) -> usize {
        let line = match self.line {
            0 => PARSER_MAX_TARGET + 32,
            n => n,
        };
        let fields = if self.fields == 0 || self.field_size == 0 {
            UNLIMITED_HEAD_PART
        } else {
            self.fields
                .saturating_mul(self.field_size.saturating_add(per_field))
        };
        line.saturating_add(2 + line_overhead)
            .saturating_add(fields)
            .saturating_add(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RequestLimitsConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_apaches() {
        let c = parse("").unwrap();
        assert_eq!(c, RequestLimitsConfig::default());
        assert_eq!(
            (c.body, c.fields, c.field_size, c.line),
            (1 << 30, 100, 8190, 8190)
        );
        c.validate().unwrap();
    }

    #[test]
    fn article_values() {
        let c = parse("body = 102400\nfields = 40\nfield_size = 1000\nline = 1000\n").unwrap();
        assert_eq!(
            (c.body, c.fields, c.field_size, c.line),
            (102400, 40, 1000, 1000)
        );
        let s = c.build().unwrap().config().server_limits();
        assert_eq!(s.h1_max_headers, 100);
        // 1000 + 2 + 40 × 1008 + 2 + 4096
        assert_eq!(s.h1_max_buf_size, 45_420);
        // 1000 + 2 + 128 + 40 × 1032 + 2 + 4096
        assert_eq!(s.h2_max_header_list_size, 46_508);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let err = parse("bodysize = 1\n").unwrap_err();
        assert!(err.contains("unknown field `bodysize`"), "{err}");
        let err = parse("fields = -1\n").unwrap_err();
        assert!(err.contains("fields"), "{err}");
        let err = parse("line = 10\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("limits.line = 10 refuses every request"),
            "{err}"
        );
        let err = parse("fields = 100000\nfield_size = 100000\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.fields = 100000") && err.contains("lower limits.fields"),
            "{err}"
        );
    }

    #[test]
    fn zero_is_unlimited_but_the_parser_stays_bounded() {
        let c = RequestLimitsConfig {
            body: 0,
            fields: 0,
            field_size: 0,
            line: 0,
        };
        c.validate().unwrap();
        let s = c.server_limits();
        assert_eq!(s.h1_max_headers, 1000);
        assert!(s.h1_max_buf_size > UNLIMITED_HEAD_PART && s.h1_max_buf_size <= MAX_HEAD_BUFFER);
        assert!(s.h2_max_header_list_size as usize > UNLIMITED_HEAD_PART);
    }

    #[test]
    fn small_limits_keep_hypers_minimum_buffer() {
        let c = RequestLimitsConfig {
            body: 10,
            fields: 2,
            field_size: 20,
            line: 20,
        };
        let s = c.server_limits();
        assert_eq!(s.h1_max_buf_size, 8192);
        assert_eq!(s.h1_max_headers, 100);
        let many = RequestLimitsConfig { fields: 250, ..c }.server_limits();
        assert_eq!(many.h1_max_headers, 251);
    }
}
