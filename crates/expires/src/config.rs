//! `[expires]`: the configuration and the builder.

use std::fmt;
use std::str::FromStr;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::layer::ExpiresLayer;
use crate::rule::{ExpiresRule, RuleError};

/// `[expires]`: Apache's `ExpiresActive`, `ExpiresDefault` and `ExpiresByType`.
///
/// ```toml
/// [expires]
/// default = "access plus 2 hours"                # ExpiresDefault
/// by_type = { "image/png" = "access plus 1 month", "text/*" = "A600" }   # ExpiresByType
/// ```
///
/// Every value is checked while it is read, so a bad rule or media type is reported at
/// its own line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiresConfig {
    /// `ExpiresActive`: `false` turns the layer off while keeping the rules written down.
    #[serde(default = "yes")]
    pub active: bool,
    /// `ExpiresDefault`: the rule for responses no `by_type` entry matches.
    #[serde(default)]
    pub default: Option<ExpiresRule>,
    /// `ExpiresByType`: rules by media type (`image/png`) or major type (`image/*`),
    /// case-insensitive, in file order. An exact type wins over a wildcard.
    #[serde(default, deserialize_with = "by_type")]
    pub by_type: Vec<(MediaRange, ExpiresRule)>,
}

fn yes() -> bool {
    true
}

/// A media type (`image/png`) or a major-type wildcard (`image/*`), without parameters;
/// stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaRange {
    text: Box<str>,
}

impl MediaRange {
    /// The range as written, lower-cased (`image/png`, `text/*`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The major type when this is a wildcard (`text` for `text/*`).
    pub fn wildcard_major(&self) -> Option<&str> {
        self.text.strip_suffix("/*")
    }
}

impl FromStr for MediaRange {
    type Err = ExpiresError;

    fn from_str(s: &str) -> Result<Self, ExpiresError> {
        let bad = || ExpiresError::MediaType {
            input: s.to_owned(),
        };
        let (major, minor) = s.split_once('/').ok_or_else(bad)?;
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !token(major) || !(minor == "*" || token(minor)) {
            return Err(bad());
        }
        Ok(Self {
            text: s.to_ascii_lowercase().into_boxed_str(),
        })
    }
}

impl fmt::Display for MediaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A configuration mistake, naming the value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiresError {
    /// An expiry rule that does not parse.
    #[error("expires: {0}")]
    Rule(#[from] RuleError),
    /// A `by_type` key that is not a media type.
    #[error(
        "expires.by_type: `{input}` is not a media type; write it as type/subtype without parameters, e.g. \"image/png\", or type/* for a whole major type"
    )]
    MediaType {
        /// The key as written.
        input: String,
    },
    /// The same media type twice (compared case-insensitively).
    #[error("expires.by_type: `{input}` is given twice; keep one rule per media type")]
    Duplicate {
        /// The second occurrence as written.
        input: String,
    },
}

/// Reads `by_type` as an ordered list, checking keys and refusing duplicates.
fn by_type<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(MediaRange, ExpiresRule)>, D::Error> {
    struct ByType;
    impl<'de> Visitor<'de> for ByType {
        type Value = Vec<(MediaRange, ExpiresRule)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a table of media type = rule, e.g. { \"image/png\" = \"access plus 1 month\" }",
            )
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(MediaRange, ExpiresRule)> = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let range: MediaRange = key.parse().map_err(serde::de::Error::custom)?;
                let rule: ExpiresRule = map.next_value()?;
                if out.iter().any(|(r, _)| *r == range) {
                    return Err(serde::de::Error::custom(ExpiresError::Duplicate {
                        input: key,
                    }));
                }
                out.push((range, rule));
            }
            Ok(out)
        }
    }
    d.deserialize_map(ByType)
}

/// Builds an [`ExpiresLayer`] in code, from rules in Apache's syntax.
///
/// The first mistake is kept and returned by [`build`](Self::build):
///
/// ```
/// use towergate_expires::ExpiresLayer;
///
/// let layer = ExpiresLayer::builder()
///     .default("access plus 2 hours")
///     .by_type("image/png", "access plus 1 month")
///     .build()
///     .unwrap();
/// # let _ = layer;
/// let err = ExpiresLayer::builder().by_type("png", "A60").build().unwrap_err();
/// assert!(err.to_string().contains("not a media type"));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ExpiresBuilder {
    config: ExpiresConfig,
    error: Option<ExpiresError>,
}

impl ExpiresBuilder {
    pub(crate) fn new() -> Self {
        Self {
            config: ExpiresConfig {
                active: true,
                ..ExpiresConfig::default()
            },
            error: None,
        }
    }

    /// `ExpiresDefault`.
    pub fn default(mut self, rule: &str) -> Self {
        match rule.parse() {
            Ok(rule) => self.config.default = Some(rule),
            Err(e) => self.fail(ExpiresError::Rule(e)),
        }
        self
    }

    /// `ExpiresDefault`, already parsed.
    pub fn default_rule(mut self, rule: ExpiresRule) -> Self {
        self.config.default = Some(rule);
        self
    }

    /// `ExpiresByType media_type rule`; `media_type` may be a `major/*` wildcard.
    pub fn by_type(mut self, media_type: &str, rule: &str) -> Self {
        match (
            media_type.parse::<MediaRange>(),
            rule.parse::<ExpiresRule>(),
        ) {
            (Ok(range), Ok(rule)) => {
                if self.config.by_type.iter().any(|(r, _)| *r == range) {
                    self.fail(ExpiresError::Duplicate {
                        input: media_type.to_owned(),
                    });
                } else {
                    self.config.by_type.push((range, rule));
                }
            }
            (Err(e), _) => self.fail(e),
            (_, Err(e)) => self.fail(ExpiresError::Rule(e)),
        }
        self
    }

    /// `ExpiresActive`.
    pub fn active(mut self, active: bool) -> Self {
        self.config.active = active;
        self
    }

    fn fail(&mut self, e: ExpiresError) {
        self.error.get_or_insert(e);
    }

    /// The layer, or the first mistake made while building.
    pub fn build(self) -> Result<ExpiresLayer, ExpiresError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(ExpiresLayer::from_config(&self.config)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Root {
        expires: ExpiresConfig,
    }

    fn parse(text: &str) -> Result<ExpiresConfig, toml::de::Error> {
        toml::from_str::<Root>(text).map(|r| r.expires)
    }

    fn located(text: &str) -> (usize, String) {
        let e = parse(text).unwrap_err();
        let at = e.span().expect("error has a position").start;
        (text[..at].matches('\n').count() + 1, e.message().to_owned())
    }

    #[test]
    fn reads_the_article_and_by_type() {
        let c = parse(
            "[expires]\ndefault = \"access plus 2 hours\"\nby_type = { \"image/PNG\" = \"access plus 1 month\", \"text/*\" = \"A600\" }\n",
        )
        .unwrap();
        assert!(c.active);
        assert_eq!(c.default.unwrap().seconds(), 7200);
        assert_eq!(c.by_type.len(), 2);
        assert_eq!(c.by_type[0].0.as_str(), "image/png");
        assert_eq!(c.by_type[1].0.wildcard_major(), Some("text"));
        assert!(!parse("[expires]\nactive = false\n").unwrap().active);
    }

    #[test]
    fn errors_are_located_and_name_the_fix() {
        let (line, msg) = located("[expires]\n\ndefault = \"access plus 2 hourz\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("unknown unit `hourz`"), "{msg}");

        let (line, msg) =
            located("[expires]\ndefault = \"A60\"\n[expires.by_type]\n\"image/png\" = \"soon\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("must start with `access`"), "{msg}");

        let msg = parse("[expires]\nby_type = { \"png\" = \"A60\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("expires.by_type: `png` is not a media type"),
            "{msg}"
        );

        let msg =
            parse("[expires]\nby_type = { \"image/png\" = \"A60\", \"Image/PNG\" = \"A5\" }\n")
                .unwrap_err()
                .to_string();
        assert!(msg.contains("`Image/PNG` is given twice"), "{msg}");

        let msg = parse("[expires]\ndefualt = \"A60\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown field `defualt`"), "{msg}");
    }

    #[test]
    fn media_ranges() {
        assert!("text/html".parse::<MediaRange>().is_ok());
        assert!("application/vnd.api+json".parse::<MediaRange>().is_ok());
        for bad in [
            "",
            "text",
            "text/",
            "/html",
            "*/*",
            "text/html; charset=utf-8",
            "te xt/html",
        ] {
            assert!(bad.parse::<MediaRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn builder_keeps_the_first_mistake() {
        let err = ExpiresLayer::builder()
            .default("later")
            .by_type("png", "A1")
            .build()
            .unwrap_err();
        assert!(matches!(err, ExpiresError::Rule(_)), "{err}");
        let err = ExpiresLayer::builder()
            .by_type("image/png", "A1")
            .by_type("IMAGE/png", "A2")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("given twice"));
    }
}
