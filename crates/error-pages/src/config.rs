//! `[error_pages]`: statuses, documents, validation and the builder.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderValue;
use http::uri::{PathAndQuery, Uri};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::layer::ErrorPagesLayer;

/// The statuses a document answers: one code, or a whole class (`4xx`, `5xx`).
///
/// An exact code always wins over a class, whatever the order in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusMatch {
    /// One status, 400 to 599.
    Exact(StatusCode),
    /// Every status of a class: `4` for `4xx`, `5` for `5xx`.
    Class(u8),
}

impl StatusMatch {
    /// True when `status` is one this pattern names.
    pub fn matches(&self, status: StatusCode) -> bool {
        match self {
            Self::Exact(s) => *s == status,
            Self::Class(c) => status.as_u16() / 100 == u16::from(*c),
        }
    }
}

impl FromStr for StatusMatch {
    type Err = ErrorPagesError;

    fn from_str(s: &str) -> Result<Self, ErrorPagesError> {
        let bad = || ErrorPagesError::Status {
            input: s.to_owned(),
        };
        let b = s.as_bytes();
        if b.len() == 3 && b[1..].eq_ignore_ascii_case(b"xx") {
            return match b[0] {
                b'4' => Ok(Self::Class(4)),
                b'5' => Ok(Self::Class(5)),
                _ => Err(bad()),
            };
        }
        let code: u16 = s.parse().map_err(|_| bad())?;
        Self::try_from(code).map_err(|_| bad())
    }
}

impl TryFrom<u16> for StatusMatch {
    type Error = ErrorPagesError;

    fn try_from(code: u16) -> Result<Self, ErrorPagesError> {
        match StatusCode::from_u16(code) {
            Ok(s) if (400..600).contains(&code) => Ok(Self::Exact(s)),
            _ => Err(ErrorPagesError::Status {
                input: code.to_string(),
            }),
        }
    }
}

impl TryFrom<&str> for StatusMatch {
    type Error = ErrorPagesError;

    fn try_from(s: &str) -> Result<Self, ErrorPagesError> {
        s.parse()
    }
}

impl From<StatusCode> for StatusMatch {
    /// Any status; one outside 400-599 simply never matches an error answer.
    fn from(s: StatusCode) -> Self {
        Self::Exact(s)
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(s) => write!(f, "{}", s.as_u16()),
            Self::Class(c) => write!(f, "{c}xx"),
        }
    }
}

impl<'de> Deserialize<'de> for StatusMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code from 400 to 599, or a class such as \"5xx\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusMatch, E> {
                let code = u16::try_from(v).map_err(|_| {
                    E::custom(ErrorPagesError::Status {
                        input: v.to_string(),
                    })
                })?;
                StatusMatch::try_from(code).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusMatch, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusMatch, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// What is sent instead of an error answer (the three flavours of `ErrorDocument`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorDocument {
    /// `ErrorDocument 403 "text"`: the text as the body, the status kept.
    Text {
        /// The body.
        text: String,
        /// `Content-Type`; `text/plain; charset=utf-8` when `None`.
        content_type: Option<String>,
    },
    /// `ErrorDocument 404 /missing.html`: the local path is requested through the same
    /// stack (an internal redirect) and its body sent with the original status.
    Local {
        /// Path and optional query, starting with `/`.
        path: String,
    },
    /// `ErrorDocument 402 http://example.com/info.html`: a `302 Found` to the URL.
    Redirect {
        /// An absolute `http` or `https` URL.
        url: String,
    },
}

impl ErrorDocument {
    /// A plain-text body.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            content_type: None,
        }
    }

    /// A local path served through the same stack.
    pub fn local(path: impl Into<String>) -> Self {
        Self::Local { path: path.into() }
    }

    /// An external redirect.
    pub fn redirect(url: impl Into<String>) -> Self {
        Self::Redirect { url: url.into() }
    }

    pub(crate) fn prepare(&self, status: &StatusMatch) -> Result<Prepared, ErrorPagesError> {
        let bad = |reason: String| ErrorPagesError::Document {
            status: *status,
            reason,
        };
        match self {
            Self::Text { text, content_type } => {
                let content_type = match content_type {
                    None => HeaderValue::from_static("text/plain; charset=utf-8"),
                    Some(ct) => HeaderValue::from_str(ct)
                        .ok()
                        .filter(|_| ct.contains('/'))
                        .ok_or_else(|| bad(format!("content_type `{ct}` is not a media type such as \"text/html; charset=utf-8\"")))?,
                };
                let body = Bytes::from(text.clone());
                Ok(Prepared::Text {
                    content_length: HeaderValue::from(body.len()),
                    body,
                    content_type,
                })
            }
            Self::Local { path } => {
                if !path.starts_with('/') {
                    return Err(bad(format!(
                        "path `{path}` must start with '/'; for another site use url = \"http://...\""
                    )));
                }
                let path = PathAndQuery::from_str(path)
                    .map_err(|e| bad(format!("path `{path}` is not a valid request path ({e})")))?;
                Ok(Prepared::Local { path })
            }
            Self::Redirect { url } => {
                if *status == StatusMatch::Exact(StatusCode::UNAUTHORIZED) {
                    return Err(bad(
                        "401 cannot redirect to a URL: the client would never see the authentication challenge; use text or a local path"
                            .into(),
                    ));
                }
                let uri: Uri = url
                    .parse()
                    .map_err(|e| bad(format!("url `{url}` is not a URL ({e})")))?;
                let absolute =
                    matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some();
                if !absolute {
                    return Err(bad(format!(
                        "url `{url}` must be absolute, e.g. \"https://www.example.com/info.html\"; for a page of this site use path = \"/...\""
                    )));
                }
                let location =
                    HeaderValue::from_str(url).map_err(|e| bad(format!("url `{url}`: {e}")))?;
                Ok(Prepared::Redirect { location })
            }
        }
    }
}

/// A document checked and ready to send.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    Text {
        body: Bytes,
        content_type: HeaderValue,
        content_length: HeaderValue,
    },
    Local {
        path: PathAndQuery,
    },
    Redirect {
        location: HeaderValue,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

impl RawDocument {
    fn into_document(self) -> Result<ErrorDocument, String> {
        match (self.text, self.path, self.url) {
            (Some(text), None, None) => Ok(ErrorDocument::Text {
                text,
                content_type: self.content_type,
            }),
            (None, Some(path), None) if self.content_type.is_none() => {
                Ok(ErrorDocument::Local { path })
            }
            (None, None, Some(url)) if self.content_type.is_none() => {
                Ok(ErrorDocument::Redirect { url })
            }
            (None, None, None) => Err(ONE_OF.into()),
            (t, _, _) if t.is_none() && self.content_type.is_some() => {
                Err("content_type goes with text only (a local path keeps its own type)".into())
            }
            _ => Err(ONE_OF.into()),
        }
    }
}

const ONE_OF: &str = "an error document takes exactly one of text = \"...\", path = \"/...\" or url = \"https://...\"";

impl<'de> Deserialize<'de> for ErrorDocument {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawDocument::deserialize(d)?
            .into_document()
            .map_err(de::Error::custom)
    }
}

/// One or several statuses.
struct Statuses(Vec<StatusMatch>);

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Not an untagged enum: that would lose the inner message.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Statuses;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status (404, \"5xx\") or a list of them")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Statuses, E> {
                StatusMatch::deserialize(de::value::I64Deserializer::<E>::new(v))
                    .map(|s| Statuses(vec![s]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Statuses, E> {
                StatusMatch::deserialize(de::value::U64Deserializer::<E>::new(v))
                    .map(|s| Statuses(vec![s]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Statuses, E> {
                v.parse().map(|s| Statuses(vec![s])).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Statuses, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<StatusMatch>()? {
                    out.push(s);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "status: name at least one status, e.g. [502, 503, 504]",
                    ));
                }
                Ok(Statuses(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentEntry {
    status: Statuses,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// `[error_pages]`: Apache's `ErrorDocument` lines and `ProxyErrorOverride`.
///
/// Statuses are keys (`403`, or a class `"5xx"`), each with one document; several
/// statuses can share one document in a `[[error_pages.document]]` list:
///
/// ```toml
/// [error_pages]
/// override_backend = false                                 # ProxyErrorOverride Off
/// 404 = { path = "/missing.html" }                         # ErrorDocument 404 /missing.html
/// 402 = { url = "http://www.example.com/subscription_info.html" }
/// "5xx" = { text = "The server has made a mistake." }
///
/// [[error_pages.document]]
/// status = [400, 403, 413, 414]
/// text = "your_custom_error_message_here"
/// ```
///
/// Every value is checked where it is read, so mistakes come with a line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPagesConfig {
    /// Replace backends' error answers too, on every route (`ProxyErrorOverride On`).
    /// Off by default: a backend's own error page passes through.
    pub override_backend: bool,
    /// Documents by status, in file order.
    pub documents: Vec<(StatusMatch, ErrorDocument)>,
}

impl ErrorPagesConfig {
    fn push(
        &mut self,
        status: StatusMatch,
        document: ErrorDocument,
    ) -> Result<(), ErrorPagesError> {
        document.prepare(&status)?;
        if self.documents.iter().any(|(s, _)| *s == status) {
            return Err(ErrorPagesError::Duplicate { status });
        }
        self.documents.push((status, document));
        Ok(())
    }
}

impl<'de> Deserialize<'de> for ErrorPagesConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ErrorPagesConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the [error_pages] table")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ErrorPagesConfig, A::Error> {
                let mut config = ErrorPagesConfig::default();
                let mut seen_override = false;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "override_backend" => {
                            if seen_override {
                                return Err(de::Error::duplicate_field("override_backend"));
                            }
                            seen_override = true;
                            config.override_backend = map.next_value()?;
                        }
                        "document" => map.next_value_seed(DocumentList(&mut config))?,
                        other => match other.parse::<StatusMatch>() {
                            Ok(status) => map.next_value_seed(KeyedDocument {
                                status,
                                config: &mut config,
                            })?,
                            Err(_) => map.next_value_seed(Refuse(format!(
                                "unknown key `{other}` in [error_pages]: use a status from 400 to 599 (403 = {{ text = \"...\" }}), a class such as \"5xx\", `override_backend` or `document`"
                            )))?,
                        },
                    }
                }
                Ok(config)
            }
        }
        d.deserialize_map(V)
    }
}

// Errors are raised while each value is being read, so the format's deserializer can
// attach that value's position (toml: line and column).

/// Reads `403 = { ... }`: checks the document and adds it.
struct KeyedDocument<'a> {
    status: StatusMatch,
    config: &'a mut ErrorPagesConfig,
}

impl<'de> DeserializeSeed<'de> for KeyedDocument<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeyedDocument<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a document such as {} = {{ text = \"...\" }}",
            self.status
        )
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let document = RawDocument::deserialize(de::value::MapAccessDeserializer::new(map))?
            .into_document()
            .map_err(de::Error::custom)?;
        self.config
            .push(self.status, document)
            .map_err(de::Error::custom)
    }
}

/// Reads `[[error_pages.document]]` entries.
struct DocumentList<'a>(&'a mut ErrorPagesConfig);

impl<'de> DeserializeSeed<'de> for DocumentList<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for DocumentList<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a list of [[error_pages.document]] tables with `status` and one of text, path, url",
        )
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(DocumentEntrySeed(&mut *self.0))?
            .is_some()
        {}
        Ok(())
    }
}

struct DocumentEntrySeed<'a>(&'a mut ErrorPagesConfig);

impl<'de> DeserializeSeed<'de> for DocumentEntrySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocumentEntrySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table with `status` and one of text, path, url")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let entry = DocumentEntry::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let document = RawDocument {
            text: entry.text,
            content_type: entry.content_type,
            path: entry.path,
            url: entry.url,
        }
        .into_document()
        .map_err(de::Error::custom)?;
        for status in entry.status.0 {
            self.0
                .push(status, document.clone())
                .map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// Fails with `message` at the value's position, whatever the value is.
struct Refuse(String);

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Refuse {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(self.0))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(self.0))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(self.0))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(self.0))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(self.0))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }
}

/// A configuration mistake, naming the status and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorPagesError {
    /// Not a status from 400 to 599 or a class.
    #[error(
        "error_pages: `{input}` is not an error status; write a code from 400 to 599 such as 404, or a class \"4xx\" / \"5xx\""
    )]
    Status {
        /// As written.
        input: String,
    },
    /// Two documents for the same status or class.
    #[error(
        "error_pages: {status} has two documents; keep one (an exact status already wins over its class)"
    )]
    Duplicate {
        /// The status given twice.
        status: StatusMatch,
    },
    /// A document that cannot be used.
    #[error("error_pages.{status}: {reason}")]
    Document {
        /// Its status.
        status: StatusMatch,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// Builds an [`ErrorPagesLayer`] in code. Statuses are codes (`403`) or classes
/// (`"5xx"`); the first mistake is returned by [`build`](Self::build).
///
/// ```
/// use towergate_error_pages::ErrorPagesLayer;
///
/// let layer = ErrorPagesLayer::builder()
///     .text(403, "your_custom_error_message_here")
///     .text("5xx", "The server has made a mistake.")
///     .path(404, "/missing.html")
///     .url(402, "http://www.example.com/subscription_info.html")
///     .build()
///     .unwrap();
/// # let _ = layer;
/// let err = ErrorPagesLayer::builder().text(200, "fine").build().unwrap_err();
/// assert!(err.to_string().contains("not an error status"));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ErrorPagesBuilder {
    config: ErrorPagesConfig,
    error: Option<ErrorPagesError>,
}

impl ErrorPagesBuilder {
    pub(crate) fn new() -> Self {
        Self {
            config: ErrorPagesConfig::default(),
            error: None,
        }
    }

    /// `ErrorDocument <status> "text"`, sent as `text/plain; charset=utf-8`.
    pub fn text<M>(self, status: M, text: impl Into<String>) -> Self
    where
        M: TryInto<StatusMatch, Error = ErrorPagesError>,
    {
        self.document(status, ErrorDocument::text(text))
    }

    /// `ErrorDocument <status> /local/path`.
    pub fn path<M>(self, status: M, path: impl Into<String>) -> Self
    where
        M: TryInto<StatusMatch, Error = ErrorPagesError>,
    {
        self.document(status, ErrorDocument::local(path))
    }

    /// `ErrorDocument <status> http://elsewhere/`.
    pub fn url<M>(self, status: M, url: impl Into<String>) -> Self
    where
        M: TryInto<StatusMatch, Error = ErrorPagesError>,
    {
        self.document(status, ErrorDocument::redirect(url))
    }

    /// Any document.
    pub fn document<M>(mut self, status: M, document: ErrorDocument) -> Self
    where
        M: TryInto<StatusMatch, Error = ErrorPagesError>,
    {
        let result = status
            .try_into()
            .and_then(|s| self.config.push(s, document));
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Replace backends' error answers too (`ProxyErrorOverride On`).
    pub fn override_backend(mut self, yes: bool) -> Self {
        self.config.override_backend = yes;
        self
    }

    /// The layer, or the first mistake.
    pub fn build(self) -> Result<ErrorPagesLayer, ErrorPagesError> {
        match self.error {
            Some(e) => Err(e),
            None => ErrorPagesLayer::from_config(&self.config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Root {
        error_pages: ErrorPagesConfig,
    }

    fn parse(text: &str) -> Result<ErrorPagesConfig, toml::de::Error> {
        toml::from_str::<Root>(text).map(|r| r.error_pages)
    }

    fn err_at(text: &str) -> (usize, String) {
        let e = parse(text).unwrap_err();
        let line = e
            .span()
            .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
        (line, e.message().to_owned())
    }

    #[test]
    fn keys_lists_and_classes() {
        let c = parse(
            r#"
[error_pages]
override_backend = true
403 = { text = "no" }
"5xx" = { text = "mistake", content_type = "text/html; charset=utf-8" }
404 = { path = "/missing.html" }
402 = { url = "http://www.example.com/subscription_info.html" }
[[error_pages.document]]
status = [400, "413", 414]
text = "your_custom_error_message_here"
[[error_pages.document]]
status = 410
path = "/gone.html?x=1"
"#,
        )
        .unwrap();
        assert!(c.override_backend);
        let statuses: Vec<String> = c.documents.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(
            statuses,
            ["403", "5xx", "404", "402", "400", "413", "414", "410"]
        );
        assert_eq!(c.documents[0].1, ErrorDocument::text("no"));
        assert_eq!(c.documents[2].1, ErrorDocument::local("/missing.html"));
        assert!(ErrorPagesLayer::from_config(&c).is_ok());
    }

    #[test]
    fn mistakes_are_located_and_explained() {
        let (line, msg) = err_at("[error_pages]\n\n200 = { text = \"ok\" }\n");
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("unknown key `200`"), "{msg}");

        let (line, msg) = err_at("[error_pages]\n404 = { path = \"missing.html\" }\n");
        assert_eq!(line, 2, "{msg}");
        assert!(
            msg.contains("error_pages.404: path `missing.html` must start with '/'"),
            "{msg}"
        );

        let (_, msg) = err_at("[error_pages]\n404 = { text = \"a\", path = \"/b\" }\n");
        assert!(msg.contains("exactly one of"), "{msg}");
        let (_, msg) = err_at("[error_pages]\n404 = { }\n");
        assert!(msg.contains("exactly one of"), "{msg}");
        let (_, msg) =
            err_at("[error_pages]\n404 = { path = \"/a\", content_type = \"text/html\" }\n");
        assert!(msg.contains("content_type goes with text only"), "{msg}");
        let (_, msg) = err_at("[error_pages]\n404 = { txt = \"a\" }\n");
        assert!(msg.contains("unknown field `txt`"), "{msg}");
        let (_, msg) = err_at("[error_pages]\n401 = { url = \"http://x.example/\" }\n");
        assert!(msg.contains("401 cannot redirect"), "{msg}");
        let (_, msg) = err_at("[error_pages]\n402 = { url = \"/relative\" }\n");
        assert!(msg.contains("must be absolute"), "{msg}");
        let (_, msg) = err_at(
            "[error_pages]\n403 = { text = \"a\" }\n[[error_pages.document]]\nstatus = [403]\ntext = \"b\"\n",
        );
        assert!(msg.contains("403 has two documents"), "{msg}");
        let (line, msg) =
            err_at("[error_pages]\n[[error_pages.document]]\nstatus = [403, 700]\ntext = \"b\"\n");
        assert!(msg.contains("`700` is not an error status"), "{msg}");
        assert_eq!(line, 3, "{msg}");
        let (_, msg) =
            err_at("[error_pages]\n[[error_pages.document]]\nstatus = []\ntext = \"b\"\n");
        assert!(msg.contains("at least one status"), "{msg}");
        let (_, msg) = err_at("[error_pages]\n\"3xx\" = { text = \"b\" }\n");
        assert!(msg.contains("unknown key `3xx`"), "{msg}");
    }

    #[test]
    fn status_matches() {
        assert_eq!("5XX".parse::<StatusMatch>().unwrap(), StatusMatch::Class(5));
        assert!(StatusMatch::Class(4).matches(StatusCode::NOT_FOUND));
        assert!(!StatusMatch::Class(4).matches(StatusCode::BAD_GATEWAY));
        for bad in ["399", "600", "abc", "6xx", "4x", ""] {
            assert!(bad.parse::<StatusMatch>().is_err(), "{bad}");
        }
    }
}
