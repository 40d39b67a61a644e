//! Patterns, compiled to a DFA that is fed percent-decoded bytes one at a time.
//!
//! A fully built DFA needs no scratch space and no lock: matching is a table walk over
//! the input, once per byte, so it runs in linear time and allocates nothing, and it can
//! decode `%XX` escapes on the fly instead of writing the decoded path into a buffer.

use std::fmt;
use std::sync::Arc;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind};

/// The largest automaton one pattern may compile to.
pub const SIZE_LIMIT: usize = 2 << 20;

/// A compiled pattern (regular expression syntax of the `regex` crate, matched on bytes).
///
/// Matching is unanchored, as `RewriteRule` is: the pattern matches if it matches
/// anywhere; write `^...$` to match the whole input. Character classes and `.` match
/// single bytes (as PCRE does in Apache without its UTF-8 flag): `[^a-z]` matches each
/// byte of a multi-byte character, and a percent-decoded byte that is not valid UTF-8
/// (`%FF`) is still a byte the class can refuse. `(?i)` is Apache's `[NC]` (ASCII case
/// folding); `(?u:\p{L})` matches UTF-8-encoded Unicode classes.
#[derive(Clone)]
pub struct Pattern {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: String,
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
    /// Set when the pattern means "any one byte of this set" (the article's rule, and
    /// every single character class): a table lookup per byte instead of a DFA step.
    byte_set: Option<Box<[bool; 256]>>,
}

/// Why a pattern does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern `{pattern}` does not compile: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: String,
}

impl PatternError {
    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl Pattern {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let err = |reason: String| PatternError {
            pattern: source.to_owned(),
            reason,
        };
        let dfa = dense::Builder::new()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .thompson(thompson::Config::new().utf8(false))
            .configure(
                dense::Config::new()
                    .start_kind(StartKind::Unanchored)
                    .match_kind(MatchKind::All)
                    .minimize(false)
                    .dfa_size_limit(Some(SIZE_LIMIT))
                    .determinize_size_limit(Some(SIZE_LIMIT)),
            )
            .build(source)
            .map_err(|e| err(describe(&e)))?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::No))
            .map_err(|e| err(e.to_string()))?;
        let byte_set = byte_set(&dfa, start);
        Ok(Self {
            inner: Arc::new(Compiled {
                source: source.to_owned(),
                dfa,
                start,
                byte_set,
            }),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.inner.source
    }

    /// Bytes the compiled automaton occupies.
    pub fn memory_usage(&self) -> usize {
        self.inner.dfa.memory_usage()
    }

    /// True when the pattern matches somewhere in `bytes`, taken as they are.
    pub fn is_match(&self, bytes: &[u8]) -> bool {
        if let Some(set) = &self.inner.byte_set {
            return bytes.iter().any(|&b| set[usize::from(b)]);
        }
        // The library's own search loop (unrolled, with state acceleration) is faster
        // than stepping byte by byte; it needs no scratch space either. It can only fail
        // on quit bytes, which these DFAs do not have.
        let input = Input::new(bytes).anchored(Anchored::No).earliest(true);
        match self.inner.dfa.try_search_fwd(&input) {
            Ok(found) => found.is_some(),
            Err(_) => self.run(bytes.iter().copied()),
        }
    }

    /// True when the pattern matches somewhere in the percent-decoding of `encoded`.
    /// Every `%XX` escape is decoded (`+` stays `+`); a `%` not followed by two hex digits
    /// stands for itself. Nothing is allocated.
    pub fn is_match_decoded(&self, encoded: &[u8]) -> bool {
        if !encoded.contains(&b'%') {
            return self.is_match(encoded);
        }
        let decoded = PercentDecode { rest: encoded };
        match &self.inner.byte_set {
            Some(set) => {
                let mut decoded = decoded;
                decoded.any(|b| set[usize::from(b)])
            }
            None => self.run(decoded),
        }
    }

    fn run(&self, bytes: impl Iterator<Item = u8>) -> bool {
        let Compiled { dfa, start, .. } = &*self.inner;
        let mut sid = *start;
        for b in bytes {
            sid = dfa.next_state(sid, b);
            if dfa.is_special_state(sid) {
                if dfa.is_match_state(sid) {
                    return true;
                }
                if dfa.is_dead_state(sid) {
                    return false;
                }
            }
        }
        dfa.is_match_state(dfa.next_eoi_state(sid))
    }
}

/// The bytes that make `dfa` match, when it matches exactly the inputs containing one of
/// them: every other byte leads from the start state back to it, each of these leads to
/// one state from which every continuation, and the end, report a match.
fn byte_set(dfa: &dense::DFA<Vec<u32>>, start: StateID) -> Option<Box<[bool; 256]>> {
    if dfa.is_match_state(dfa.next_eoi_state(start)) {
        return None;
    }
    let mut set = Box::new([false; 256]);
    let mut hit = None;
    for b in 0..=255u8 {
        let next = dfa.next_state(start, b);
        if next == start {
            continue;
        }
        match hit {
            None => hit = Some(next),
            Some(h) if h == next => {}
            Some(_) => return None,
        }
        set[usize::from(b)] = true;
    }
    let hit = hit?;
    let always = dfa.is_match_state(hit)
        || (dfa.is_match_state(dfa.next_eoi_state(hit))
            && (0..=255u8).all(|b| dfa.is_match_state(dfa.next_state(hit, b))));
    always.then_some(set)
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.as_str()).finish()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

/// One line saying what is wrong: the innermost cause, without the multi-line caret
/// drawing the syntax error comes with.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    if let Some(line) = text.lines().find_map(|l| l.trim().strip_prefix("error: ")) {
        return line.to_owned();
    }
    if text.contains("size limit") {
        return format!(
            "its automaton would exceed {} MiB; simplify it (large counted repetitions like `.{{1000}}` multiply its size)",
            SIZE_LIMIT >> 20
        );
    }
    text
}

/// Percent-decoding as an iterator over bytes.
struct PercentDecode<'a> {
    rest: &'a [u8],
}

impl Iterator for PercentDecode<'_> {
    type Item = u8;

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        if b == b'%' {
            if let [h, l, tail @ ..] = rest {
                if let (Some(h), Some(l)) = (hex(*h), hex(*l)) {
                    self.rest = tail;
                    return Some(h << 4 | l);
                }
            }
        }
        self.rest = rest;
        Some(b)
    }
}

#[inline]
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTICLE: &str = r"[^a-zA-Z0-9|\.|/|_|-]";

    #[test]
    fn the_articles_rule() {
        let p = Pattern::new(ARTICLE).unwrap();
        for ok in ["/", "/news_rss/today.html", "/paid_user/file-1.tar", "/a|b"] {
            assert!(!p.is_match_decoded(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "/a b",
            "/a%20b",
            "/~user",
            "/%7euser",
            "/a;b",
            "/a:b",
            "/a@b",
            "/caf%C3%A9",
            "/café",
            "/%FF",
            "/a%0Ab",
            "/a%00",
        ] {
            assert!(p.is_match_decoded(bad.as_bytes()), "{bad}");
        }
        // A stray `%` is itself a refused character.
        assert!(p.is_match_decoded(b"/100%"));
        assert!(p.is_match_decoded(b"/%zz"));
    }

    #[test]
    fn byte_sets_agree_with_the_automaton() {
        for (src, is_set) in [
            (ARTICLE, true),
            ("[;:@]", true),
            ("(?i)[a-c]", true),
            ("x", true),
            ("ab", false),
            ("^/", false),
            ("a$", false),
            (r"\.php$", false),
            ("[^a-z]|zz", false),
        ] {
            let p = Pattern::new(src).unwrap();
            assert_eq!(p.inner.byte_set.is_some(), is_set, "{src}");
            let inputs = [
                "",
                "/",
                "/abc",
                "/a;b",
                "zz",
                "/x.php",
                "/ab",
                "A",
                "/caf%C3%A9",
                "/%7e",
                "a/b.c-d_e",
            ];
            for input in inputs {
                let general = p.run(PercentDecode {
                    rest: input.as_bytes(),
                });
                assert_eq!(
                    p.is_match_decoded(input.as_bytes()),
                    general,
                    "{src} on {input}"
                );
                let general = p.run(input.bytes());
                assert_eq!(p.is_match(input.as_bytes()), general, "{src} on {input}");
            }
        }
    }

    #[test]
    fn decoding() {
        let d = |s: &str| PercentDecode { rest: s.as_bytes() }.collect::<Vec<u8>>();
        assert_eq!(d("/a%20b%2Fc%2f"), b"/a b/c/");
        assert_eq!(d("%"), b"%");
        assert_eq!(d("%4"), b"%4");
        assert_eq!(d("%4g"), b"%4g");
        assert_eq!(d("%%41"), b"%A");
        assert_eq!(d("a+b"), b"a+b");
    }

    #[test]
    fn anchors_and_flags() {
        let p = Pattern::new(r"^/[a-z/]*$").unwrap();
        assert!(p.is_match(b"/abc/def"));
        assert!(!p.is_match(b"/abc/Def"));
        let p = Pattern::new(r"(?i)\.php$").unwrap();
        assert!(p.is_match(b"/x.PHP"));
        assert!(!p.is_match(b"/x.php/y"));
        let p = Pattern::new(r"(?u:\p{Cyrillic})").unwrap();
        assert!(p.is_match_decoded(b"/%D0%96"));
        assert!(!p.is_match_decoded(b"/%C3%A9"));
        let p = Pattern::new(r"\.\./|/\.\.$").unwrap();
        assert!(p.is_match_decoded(b"/a/%2e%2e/b"));
    }

    #[test]
    fn errors_say_why_in_one_line() {
        let e = Pattern::new("[a-").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pattern `[a-` does not compile: unclosed character class"
        );
        let e = Pattern::new("(a").unwrap_err();
        assert!(e.reason().contains("unclosed group"), "{e}");
        let e = Pattern::new(r"[a-z]{1000}x.{1000}").unwrap_err();
        assert!(e.reason().contains("exceed 2 MiB"), "{e}");
        let e = Pattern::new(r"(?u:\b)x").unwrap_err();
        assert!(!e.reason().contains('\n'), "{e}");
    }
}
