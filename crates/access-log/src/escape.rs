//! Apache's `ap_escape_logitem`: what a client sends cannot end a line or a quoted field.

/// True for bytes written escaped: control characters, bytes outside printable ASCII,
/// `"` and `\`.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b >= 0x7f || b == b'"' || b == b'\\'
}

const TABLE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = needs_escape(i as u8);
        i += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` to `out` escaped as Apache's `ap_escape_logitem` does: `"` and `\` get a
/// backslash, `\b` `\n` `\r` `\t` `\v` their C escapes, and every other control character
/// or non-ASCII byte `\xhh` (lowercase hex).
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    let mut rest = s;
    loop {
        match first_to_escape(rest) {
            None => {
                out.extend_from_slice(rest);
                return;
            }
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                let b = rest[i];
                let c = match b {
                    0x08 => Some(b'b'),
                    b'\n' => Some(b'n'),
                    b'\r' => Some(b'r'),
                    b'\t' => Some(b't'),
                    0x0b => Some(b'v'),
                    b'\\' | b'"' => Some(b),
                    _ => None,
                };
                match c {
                    Some(c) => out.extend_from_slice(&[b'\\', c]),
                    None => out.extend_from_slice(&[
                        b'\\',
                        b'x',
                        HEX[(b >> 4) as usize],
                        HEX[(b & 0xf) as usize],
                    ]),
                }
                rest = &rest[i + 1..];
            }
        }
    }
}

/// The index of the first byte to escape. Clean 16-byte blocks (the usual case) are
/// checked without branching per byte.
fn first_to_escape(s: &[u8]) -> Option<usize> {
    let mut blocks = s.chunks_exact(16);
    let mut at = 0;
    for block in blocks.by_ref() {
        let dirty = block.iter().fold(false, |d, &b| d | needs_escape(b));
        if dirty {
            break;
        }
        at += 16;
    }
    s[at..]
        .iter()
        .position(|&b| TABLE[b as usize])
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &[u8]) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn as_apache() {
        assert_eq!(esc(b"plain /path?a=b c"), "plain /path?a=b c");
        assert_eq!(esc(b"a\"b\\c"), r#"a\"b\\c"#);
        assert_eq!(esc(b"\x08\n\r\t\x0b"), r"\b\n\r\t\v");
        assert_eq!(esc(b"\x00\x1b\x7f\xff"), r"\x00\x1b\x7f\xff");
        assert_eq!(esc("é".as_bytes()), r"\xc3\xa9");
        assert_eq!(esc(b""), "");
        let long = format!("{}\"{}", "a".repeat(37), "b".repeat(20));
        assert_eq!(esc(long.as_bytes()), long.replace('"', "\\\""));
    }

    #[test]
    fn escaped_output_is_one_printable_line() {
        let all: Vec<u8> = (0..=255).collect();
        let out = esc(&all);
        assert!(out.bytes().all(|b| (0x20..0x7f).contains(&b)));
        // No unescaped quote: every `"` is preceded by an odd run of backslashes.
        let bytes = out.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'"' {
                let run = bytes[..i].iter().rev().take_while(|&&c| c == b'\\').count();
                assert!(run % 2 == 1, "bare quote at {i} in {out}");
            }
        }
    }
}
