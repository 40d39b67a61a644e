//! `[charfilter]`: the rules as written in the config file.

use std::fmt;

use http::StatusCode;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::layer::CharFilterLayer;
use crate::pattern::Pattern;
use crate::rule::{Action, Rule, RuleKind, Scope};

/// The `[charfilter]` section: rules tried in order.
///
/// ```toml
/// # RewriteRule [^a-zA-Z0-9|\.|/|_|-] - [F]
/// [[charfilter.rule]]
/// deny = '[^a-zA-Z0-9|\.|/|_|-]'
///
/// # RewriteRule !^/[a-z0-9_/.-]*$ - [G]   (the same idea, as an allow pattern)
/// [[charfilter.rule]]
/// allow = '^/[a-z0-9_/.-]*$'
/// action = "G"         # 403 (default), "F", "G" (410), any 4xx/5xx status, or "log"
/// scope = "path"       # "path" (default), "query" or "both"
/// ```
///
/// Write patterns in single quotes (TOML literal strings), so backslashes stay as
/// written. Each pattern is compiled while the file is read, so one that does not compile
/// is reported at its line and column; [`build`](Self::build) cannot fail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharFilterConfig {
    /// The rules, in order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

impl CharFilterConfig {
    /// The layer for this configuration.
    pub fn build(&self) -> CharFilterLayer {
        CharFilterLayer::new(self.rules.iter().cloned())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    deny: Option<PatternSpec>,
    allow: Option<PatternSpec>,
    #[serde(default)]
    action: ActionSpec,
    #[serde(default)]
    scope: ScopeSpec,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRule::deserialize(d)?;
        let rule = match (raw.deny, raw.allow) {
            (Some(PatternSpec(p)), None) => Rule::new(RuleKind::Deny, p),
            (None, Some(PatternSpec(p))) => Rule::new(RuleKind::Allow, p),
            _ => {
                return Err(de::Error::custom(
                    "charfilter.rule: each rule has exactly one of `deny = '<pattern>'` (refuse what matches) or `allow = '<pattern>'` (refuse what does not match)",
                ));
            }
        };
        Ok(rule.action(raw.action.0).scope(raw.scope.0))
    }
}

struct PatternSpec(Pattern);

impl<'de> Deserialize<'de> for PatternSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s)
            .map(PatternSpec)
            .map_err(|e| de::Error::custom(format!("charfilter.rule: {e}")))
    }
}

#[derive(Default)]
struct ActionSpec(Action);

impl<'de> Deserialize<'de> for ActionSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const VALID: &str = "write 403 (the default), \"F\" (403), \"G\" (410), another status from 400 to 599, or \"log\" (count and pass)";
        impl Visitor<'_> for V {
            type Value = ActionSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code, \"F\", \"G\" or \"log\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ActionSpec, E> {
                u16::try_from(v)
                    .ok()
                    .filter(|v| (400..=599).contains(v))
                    .and_then(|v| StatusCode::from_u16(v).ok())
                    .map(|s| ActionSpec(Action::Refuse(s)))
                    .ok_or_else(|| {
                        E::custom(format!(
                            "charfilter.rule.action: {v} is not an error status; {VALID}"
                        ))
                    })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ActionSpec, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ActionSpec, E> {
                let action = match v.to_ascii_lowercase().as_str() {
                    "f" | "forbidden" => Action::Refuse(StatusCode::FORBIDDEN),
                    "g" | "gone" => Action::Refuse(StatusCode::GONE),
                    "log" => Action::Log,
                    _ => {
                        return Err(E::custom(format!(
                            "charfilter.rule.action: `{v}` is not an action; {VALID}"
                        )));
                    }
                };
                Ok(ActionSpec(action))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Default)]
struct ScopeSpec(Scope);

impl<'de> Deserialize<'de> for ScopeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "path" => Ok(ScopeSpec(Scope::Path)),
            "query" => Ok(ScopeSpec(Scope::Query)),
            "both" => Ok(ScopeSpec(Scope::Both)),
            _ => Err(de::Error::custom(format!(
                "charfilter.rule.scope: `{s}` is not a scope; write \"path\" (the default), \"query\" or \"both\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        charfilter: CharFilterConfig,
    }

    fn parse(text: &str) -> Result<CharFilterConfig, toml::de::Error> {
        toml::from_str::<File>(text).map(|f| f.charfilter)
    }

    fn line_col(text: &str, at: usize) -> (usize, usize) {
        let before = &text[..at];
        (
            before.matches('\n').count() + 1,
            at - before.rfind('\n').map_or(0, |i| i + 1) + 1,
        )
    }

    #[test]
    fn the_articles_rule_as_written() {
        let c = parse("[[charfilter.rule]]\ndeny = '[^a-zA-Z0-9|\\.|/|_|-]'\n").unwrap();
        assert_eq!(c.rules.len(), 1);
        let r = &c.rules[0];
        assert_eq!(r.pattern().as_str(), r"[^a-zA-Z0-9|\.|/|_|-]");
        assert_eq!(
            (r.kind(), r.get_action(), r.get_scope()),
            (RuleKind::Deny, Action::default(), Scope::Path)
        );
    }

    #[test]
    fn actions_and_scopes() {
        let c = parse(
            "[[charfilter.rule]]\nallow = '^/'\naction = \"G\"\nscope = \"both\"\n\
             [[charfilter.rule]]\ndeny = 'x'\naction = 404\n[[charfilter.rule]]\ndeny = 'y'\naction = \"log\"\n",
        )
        .unwrap();
        assert_eq!(c.rules[0].get_action(), Action::Refuse(StatusCode::GONE));
        assert_eq!(c.rules[0].get_scope(), Scope::Both);
        assert_eq!(
            c.rules[1].get_action(),
            Action::Refuse(StatusCode::NOT_FOUND)
        );
        assert_eq!(c.rules[2].get_action(), Action::Log);
        assert_eq!(
            parse("[charfilter]\n").unwrap(),
            CharFilterConfig::default()
        );
    }

    #[test]
    fn a_bad_pattern_is_located() {
        let text = "[[charfilter.rule]]\ndeny = 'a'\n\n[[charfilter.rule]]\ndeny = '[^a-z'\n";
        let err = parse(text).unwrap_err();
        assert_eq!(line_col(text, err.span().unwrap().start), (5, 8), "{err}");
        assert_eq!(
            err.message(),
            "charfilter.rule: pattern `[^a-z` does not compile: unclosed character class"
        );
    }

    #[test]
    fn other_errors_name_the_fix() {
        let err = parse("[[charfilter.rule]]\ndeny = 'a'\naction = 200\n").unwrap_err();
        assert!(
            err.message().contains("200 is not an error status"),
            "{err}"
        );
        assert!(err.span().is_some());
        let err = parse("[[charfilter.rule]]\ndeny = 'a'\naction = \"R\"\n").unwrap_err();
        assert!(err.message().contains("\"F\" (403)"), "{err}");
        let err = parse("[[charfilter.rule]]\ndeny = 'a'\nscope = \"uri\"\n").unwrap_err();
        assert!(err.message().contains("\"query\""), "{err}");
        let err = parse("[[charfilter.rule]]\naction = 403\n").unwrap_err();
        assert!(err.message().contains("exactly one of"), "{err}");
        let err = parse("[[charfilter.rule]]\ndeny = 'a'\nallow = 'b'\n").unwrap_err();
        assert!(err.message().contains("exactly one of"), "{err}");
        let err = parse("[[charfilter.rule]]\ndeny = 'a'\nflags = \"NC\"\n").unwrap_err();
        assert!(err.message().contains("unknown field `flags`"), "{err}");
    }
}
