//! Path normalisation: one canonical spelling of a request path before anything looks at it.
//!
//! Routing, the ACL and the character filter all match on the path, so they must all see
//! the same path the backend will act on. [`normalize_path`] decodes percent-encoded
//! unreserved characters (so `/%70aid_user` is `/paid_user` and `%2e%2e` is `..`), removes
//! dot segments and collapses repeated slashes. A `..` above the root stays at the root, as
//! RFC 3986 section 5.2.4 says. Encoded slashes, backslashes and NUL bytes are refused,
//! as Apache does by default (`AllowEncodedSlashes Off`), because backends disagree on
//! what they mean.

use std::borrow::Cow;

/// Why a path cannot be normalised; the request deserves a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path does not start with '/'")]
    NotAbsolute,
    /// A `%` is not followed by two hexadecimal digits.
    #[error("the path has a malformed percent-encoding")]
    BadEscape,
    /// `%2F`, `%5C` or `%00`: an encoded slash, backslash or NUL byte.
    #[error("the path has an encoded slash, backslash or NUL byte")]
    EncodedSeparator,
}

/// Returns the normalised form of `path` (no query), borrowing when it is already normal.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// True when the path needs no work; checks escapes on the way.
fn is_normal(bytes: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => (hex(h)?, hex(l)?),
                    _ => return Err(PathError::BadEscape),
                };
                let c = hi << 4 | lo;
                if matches!(c, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if is_unreserved(c)
                    || bytes[i + 1].is_ascii_lowercase()
                    || bytes[i + 2].is_ascii_lowercase()
                {
                    normal = false;
                }
                i += 3;
                continue;
            }
            b'/' => {
                let rest = &bytes[i + 1..];
                if rest.first() == Some(&b'/')
                    || rest == b"."
                    || rest == b".."
                    || rest.starts_with(b"./")
                    || rest.starts_with(b"../")
                {
                    normal = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(normal)
}

fn hex(b: u8) -> Result<u8, PathError> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(PathError::BadEscape),
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters and upper-cases the hex digits of the rest.
fn decode_unreserved(bytes: &[u8]) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // `is_normal` has checked every escape already.
            let c = hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?;
            if is_unreserved(c) {
                out.push(c);
            } else {
                out.extend_from_slice(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only ASCII was produced from escapes, the rest came from a `str`.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// RFC 3986 remove_dot_segments, also collapsing empty segments (`//`).
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize_path(p).unwrap().into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/news_rss/x.html", "/a%20b", "/a..b/.c"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/a/../b"), "/b");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("//a///b"), "/a/b");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a//"), "/a/");
    }

    #[test]
    fn encoded_dots_and_unreserved() {
        assert_eq!(norm("/news_rss/%2e%2e/paid_user"), "/paid_user");
        assert_eq!(norm("/news_rss/%2E%2e/paid_user"), "/paid_user");
        assert_eq!(norm("/news_rss/.%2e/paid_user"), "/paid_user");
        assert_eq!(norm("/%70aid_user"), "/paid_user");
        assert_eq!(norm("/a%3fb"), "/a%3Fb");
        assert_eq!(norm("/a%20b/"), "/a%20b/");
    }

    #[test]
    fn refusals() {
        assert_eq!(normalize_path("a"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
    }
}
