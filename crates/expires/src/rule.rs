//! Expiry rules in Apache's syntax: `access plus 1 month 15 days 2 hours`,
//! `modification plus 30 minutes`, and the short forms `A7200` / `M7200`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// What an expiry time counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpiresBase {
    /// The time the response is sent (`access`, `now`, or the `A` code).
    Access,
    /// The response's `Last-Modified` time (`modification`, or the `M` code).
    Modification,
}

/// One expiry rule: a base time plus a whole number of seconds.
///
/// Parsed from Apache's syntax with [`str::parse`] or from a config string:
///
/// ```
/// use std::time::Duration;
/// use towergate_expires::{ExpiresBase, ExpiresRule};
///
/// let rule: ExpiresRule = "access plus 1 month 15 days 2 hours".parse().unwrap();
/// assert_eq!(rule.base(), ExpiresBase::Access);
/// assert_eq!(rule.seconds(), (30 + 15) * 86_400 + 2 * 3_600);
///
/// let short: ExpiresRule = "M7200".parse().unwrap();
/// assert_eq!(short, ExpiresRule::modification(Duration::from_secs(7200)).unwrap());
///
/// let err = "access plus 2 hourz".parse::<ExpiresRule>().unwrap_err();
/// assert!(err.to_string().contains("unknown unit `hourz`"));
/// ```
///
/// Units are those of Apache: `years` (365 days), `months` (30 days), `weeks`, `days`,
/// `hours`, `minutes`, `seconds`, singular or plural, in any case. Apache also takes any
/// prefix of a unit (`m` for months); towergate does not, so `5 m` is an error rather
/// than five months.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExpiresRule {
    base: ExpiresBase,
    seconds: u32,
}

/// Why a string is not an [`ExpiresRule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an expiry rule: {reason}")]
pub struct RuleError {
    input: String,
    reason: String,
}

impl RuleError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        Self {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

const EXAMPLE: &str =
    "write e.g. \"access plus 2 hours\", \"modification plus 1 day\" or \"A7200\"";

const UNITS: &[(&str, &str, u64)] = &[
    ("year", "years", 365 * 86_400),
    ("month", "months", 30 * 86_400),
    ("week", "weeks", 7 * 86_400),
    ("day", "days", 86_400),
    ("hour", "hours", 3_600),
    ("minute", "minutes", 60),
    ("second", "seconds", 1),
];

impl ExpiresRule {
    /// The longest rule accepted: 2^31 - 1 seconds (about 68 years), the largest
    /// `max-age` caches are required to handle (RFC 9111, section 1.2.2).
    pub const MAX_SECONDS: u32 = i32::MAX as u32;

    /// `access plus <duration>`; sub-second parts are dropped.
    pub fn access(duration: Duration) -> Result<Self, RuleError> {
        Self::new(ExpiresBase::Access, duration)
    }

    /// `modification plus <duration>`; sub-second parts are dropped.
    pub fn modification(duration: Duration) -> Result<Self, RuleError> {
        Self::new(ExpiresBase::Modification, duration)
    }

    fn new(base: ExpiresBase, duration: Duration) -> Result<Self, RuleError> {
        let seconds = duration.as_secs();
        match u32::try_from(seconds) {
            Ok(seconds) if seconds <= Self::MAX_SECONDS => Ok(Self { base, seconds }),
            _ => Err(RuleError::new(&format!("{seconds} seconds"), too_long())),
        }
    }

    /// What the expiry time counts from.
    pub fn base(&self) -> ExpiresBase {
        self.base
    }

    /// Seconds added to the base time.
    pub fn seconds(&self) -> u32 {
        self.seconds
    }

    /// The same as a [`Duration`].
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds.into())
    }
}

fn too_long() -> String {
    format!(
        "longer than {} seconds (about 68 years), the largest max-age caches must honour",
        ExpiresRule::MAX_SECONDS
    )
}

impl FromStr for ExpiresRule {
    type Err = RuleError;

    fn from_str(input: &str) -> Result<Self, RuleError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(RuleError::new(input, format!("it is empty; {EXAMPLE}")));
        }
        if let Some(rule) = parse_code(input, text)? {
            return Ok(rule);
        }
        let mut words = text.split_whitespace();
        let first = words.next().unwrap_or_default();
        let base = if first.eq_ignore_ascii_case("access") || first.eq_ignore_ascii_case("now") {
            ExpiresBase::Access
        } else if first.eq_ignore_ascii_case("modification") {
            ExpiresBase::Modification
        } else {
            return Err(RuleError::new(
                input,
                format!(
                    "it must start with `access`, `now` or `modification`, or be a code like A7200; {EXAMPLE}"
                ),
            ));
        };
        let mut words = words.peekable();
        if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("plus")) {
            words.next();
        }
        let mut total: u64 = 0;
        let mut amounts = 0;
        while let Some(number) = words.next() {
            let n: u64 = number.parse().map_err(|_| {
                RuleError::new(
                    input,
                    format!("`{number}` is not a whole number of units; {EXAMPLE}"),
                )
            })?;
            let Some(unit) = words.next() else {
                return Err(RuleError::new(
                    input,
                    format!(
                        "`{number}` has no unit; add one of years, months, weeks, days, hours, minutes, seconds"
                    ),
                ));
            };
            let Some(&(_, _, factor)) = UNITS.iter().find(|(one, many, _)| {
                unit.eq_ignore_ascii_case(one) || unit.eq_ignore_ascii_case(many)
            }) else {
                return Err(RuleError::new(
                    input,
                    format!(
                        "unknown unit `{unit}`; use years, months, weeks, days, hours, minutes or seconds"
                    ),
                ));
            };
            total = n
                .checked_mul(factor)
                .and_then(|s| s.checked_add(total))
                .ok_or_else(|| RuleError::new(input, too_long()))?;
            amounts += 1;
        }
        if amounts == 0 {
            return Err(RuleError::new(
                input,
                format!("it names no amount of time; {EXAMPLE}"),
            ));
        }
        match u32::try_from(total) {
            Ok(seconds) if seconds <= Self::MAX_SECONDS => Ok(Self { base, seconds }),
            _ => Err(RuleError::new(input, too_long())),
        }
    }
}

/// `A<seconds>` / `M<seconds>`; `Ok(None)` when `text` is not in that form at all.
fn parse_code(input: &str, text: &str) -> Result<Option<ExpiresRule>, RuleError> {
    let mut chars = text.chars();
    let base = match chars.next() {
        Some('A') => ExpiresBase::Access,
        Some('M') => ExpiresBase::Modification,
        _ => return Ok(None),
    };
    let digits = chars.as_str();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        // "Access plus ..." and "Modification ..." are the long form, not codes.
        if digits
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
        {
            return Ok(None);
        }
        return Err(RuleError::new(
            input,
            format!("a code is `A` or `M` followed by seconds only, e.g. \"A7200\"; {EXAMPLE}"),
        ));
    }
    match digits.parse::<u32>() {
        Ok(seconds) if seconds <= ExpiresRule::MAX_SECONDS => {
            Ok(Some(ExpiresRule { base, seconds }))
        }
        _ => Err(RuleError::new(input, too_long())),
    }
}

impl fmt::Display for ExpiresRule {
    /// The canonical long form, e.g. `access plus 7200 seconds`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = match self.base {
            ExpiresBase::Access => "access",
            ExpiresBase::Modification => "modification",
        };
        write!(f, "{base} plus {} seconds", self.seconds)
    }
}

impl<'de> Deserialize<'de> for ExpiresRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ExpiresRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expiry rule such as \"access plus 2 hours\" or \"A7200\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ExpiresRule, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> (ExpiresBase, u32) {
        let r: ExpiresRule = s.parse().unwrap_or_else(|e| panic!("{e}"));
        (r.base(), r.seconds())
    }

    fn err(s: &str) -> String {
        s.parse::<ExpiresRule>().unwrap_err().to_string()
    }

    #[test]
    fn long_form() {
        assert_eq!(secs("access plus 2 hours"), (ExpiresBase::Access, 7200));
        assert_eq!(secs("  now plus 1 day  "), (ExpiresBase::Access, 86_400));
        assert_eq!(
            secs("Access Plus 1 Hour 30 Minutes"),
            (ExpiresBase::Access, 5400)
        );
        assert_eq!(
            secs("access 10 seconds"),
            (ExpiresBase::Access, 10),
            "plus is optional, as in Apache"
        );
        assert_eq!(
            secs("access plus 1 month 15 days 2 hours"),
            (ExpiresBase::Access, 45 * 86_400 + 7200)
        );
        assert_eq!(
            secs("modification plus 1 week"),
            (ExpiresBase::Modification, 604_800)
        );
        assert_eq!(
            secs("access plus 1 year"),
            (ExpiresBase::Access, 31_536_000)
        );
        assert_eq!(secs("access plus 0 seconds"), (ExpiresBase::Access, 0));
    }

    #[test]
    fn codes() {
        assert_eq!(secs("A7200"), (ExpiresBase::Access, 7200));
        assert_eq!(secs("M0"), (ExpiresBase::Modification, 0));
        assert!(err("A").contains("followed by seconds"));
        assert!(err("A72x").contains("followed by seconds"));
        assert!(err("A-5").contains("followed by seconds"));
        assert!(err("A99999999999").contains("68 years"));
    }

    #[test]
    fn clear_errors() {
        assert!(err("").contains("empty"));
        assert!(err("later plus 2 hours").contains("must start with `access`"));
        assert!(err("access plus 2 hourz").contains("unknown unit `hourz`"));
        assert!(err("access plus 5 m").contains("unknown unit `m`"));
        assert!(err("access plus two hours").contains("`two` is not a whole number"));
        assert!(err("access plus 2").contains("`2` has no unit"));
        assert!(err("access plus").contains("no amount"));
        assert!(err("access plus 100 years").contains("68 years"));
        assert!(err("access plus 18446744073709551615 years").contains("68 years"));
        let e = "access plus 2 hourz".parse::<ExpiresRule>().unwrap_err();
        assert_eq!(e.input(), "access plus 2 hourz");
        assert!(
            e.to_string()
                .starts_with("`access plus 2 hourz` is not an expiry rule")
        );
    }

    #[test]
    fn constructors_and_display() {
        let r = ExpiresRule::access(Duration::from_millis(7_200_900)).unwrap();
        assert_eq!(r.seconds(), 7200);
        assert_eq!(r.to_string(), "access plus 7200 seconds");
        assert_eq!(r.to_string().parse::<ExpiresRule>().unwrap(), r);
        assert!(ExpiresRule::modification(Duration::from_secs(u64::from(u32::MAX))).is_err());
    }
}
