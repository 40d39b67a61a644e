//! `%t`: the request's start time in Common Log Format, `[10/Oct/2000:13:55:36 +0000]`,
//! formatted once per second per thread.

use std::cell::Cell;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `[dd/Mon/yyyy:HH:MM:SS +0000]`.
const LEN: usize = 28;

thread_local! {
    static CACHE: Cell<(u64, [u8; LEN])> = const { Cell::new((u64::MAX, [0; LEN])) };
}

/// Appends the CLF time for `unix_secs` (UTC).
pub(crate) fn write_clf(out: &mut Vec<u8>, unix_secs: u64) {
    let cached = CACHE.try_with(|c| {
        let (secs, text) = c.get();
        if secs == unix_secs {
            text
        } else {
            let text = format_clf(unix_secs);
            c.set((unix_secs, text));
            text
        }
    });
    let text = cached.unwrap_or_else(|_| format_clf(unix_secs));
    out.extend_from_slice(&text);
}

fn format_clf(unix_secs: u64) -> [u8; LEN] {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut t = *b"[00/Jan/0000:00:00:00 +0000]";
    two(&mut t[1..3], d as u64);
    t[4..7].copy_from_slice(MONTHS[(m - 1) as usize]);
    let y = y.clamp(0, 9999) as u64;
    two(&mut t[8..10], y / 100);
    two(&mut t[10..12], y % 100);
    two(&mut t[13..15], hh);
    two(&mut t[16..18], mm);
    two(&mut t[19..21], ss);
    t
}

fn two(dst: &mut [u8], n: u64) {
    dst[0] = b'0' + (n / 10 % 10) as u8;
    dst[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clf(secs: u64) -> String {
        let mut out = Vec::new();
        write_clf(&mut out, secs);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_dates() {
        assert_eq!(clf(0), "[01/Jan/1970:00:00:00 +0000]");
        // Apache's documentation example, 10/Oct/2000:13:55:36 -0700, in UTC.
        assert_eq!(clf(971_211_336), "[10/Oct/2000:20:55:36 +0000]");
        assert_eq!(clf(951_782_400), "[29/Feb/2000:00:00:00 +0000]");
        assert_eq!(clf(1_709_251_199), "[29/Feb/2024:23:59:59 +0000]");
        // The cache gives the same answer twice, and a new one a second later.
        assert_eq!(clf(1_709_251_199), "[29/Feb/2024:23:59:59 +0000]");
        assert_eq!(clf(1_709_251_200), "[01/Mar/2024:00:00:00 +0000]");
    }

    #[test]
    fn agrees_with_a_slow_count() {
        // Every 7,919,000 s over ~30 years against a day-by-day count.
        let mut s = 0u64;
        while s < 1_000_000_000 {
            let http = httpdate_parts(s);
            let c = clf(s);
            assert_eq!(&c[1..3], &http.0, "{c}");
            assert_eq!(&c[4..7], &http.1, "{c}");
            assert_eq!(&c[8..12], &http.2, "{c}");
            s += 7919 * 1000;
        }
    }

    /// (day, month, year) by counting whole years and months.
    fn httpdate_parts(secs: u64) -> (String, String, String) {
        let mut days = secs / 86_400;
        let mut year = 1970;
        loop {
            let len = if is_leap(year) { 366 } else { 365 };
            if days < len {
                break;
            }
            days -= len;
            year += 1;
        }
        let lens = [
            31,
            if is_leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut m = 0;
        while days >= lens[m] {
            days -= lens[m];
            m += 1;
        }
        (
            format!("{:02}", days + 1),
            String::from_utf8(MONTHS[m].to_vec()).unwrap(),
            format!("{year}"),
        )
    }

    fn is_leap(y: u64) -> bool {
        (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
    }
}
