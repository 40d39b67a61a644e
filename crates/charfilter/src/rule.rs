//! Rules: a pattern that must not (or must) match, where it looks, and what happens.

use bytes::Bytes;
use http::StatusCode;

use crate::pattern::{Pattern, PatternError};

/// Whether a rule's pattern names what is refused or what is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// The rule fires when the pattern matches (`RewriteRule pattern - [F]`).
    Deny,
    /// The rule fires when the pattern does not match (`RewriteRule !pattern - [F]`).
    Allow,
}

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answer with this status (403 by default: Apache's `[F]`; `[G]` is 410).
    Refuse(StatusCode),
    /// Log and count the request, and let it pass (to try a rule before enforcing it).
    Log,
}

impl Default for Action {
    fn default() -> Self {
        Action::Refuse(StatusCode::FORBIDDEN)
    }
}

/// Which part of the request target a rule looks at, percent-decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The path (what `RewriteRule` matches in server context). The default.
    #[default]
    Path,
    /// The query string, without the `?` (what `RewriteCond %{QUERY_STRING}` reads,
    /// but decoded; `+` stays `+`). A request without a query is matched as an empty one.
    Query,
    /// The path and the query, each on its own (`^` and `$` anchor to each).
    Both,
}

/// One rule. Rules are tried in order; the first that fires with [`Action::Refuse`]
/// answers the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    kind: RuleKind,
    pattern: Pattern,
    action: Action,
    scope: Scope,
    body: Bytes,
}

impl Rule {
    /// A rule refusing requests whose path matches `pattern` somewhere.
    pub fn deny(pattern: &str) -> Result<Self, PatternError> {
        Ok(Self::new(RuleKind::Deny, Pattern::new(pattern)?))
    }

    /// A rule refusing requests whose path does not match `pattern`.
    pub fn allow(pattern: &str) -> Result<Self, PatternError> {
        Ok(Self::new(RuleKind::Allow, Pattern::new(pattern)?))
    }

    /// A rule from a compiled pattern, refusing with 403 and looking at the path.
    pub fn new(kind: RuleKind, pattern: Pattern) -> Self {
        let action = Action::default();
        Self {
            kind,
            pattern,
            action,
            scope: Scope::Path,
            body: body_for(action),
        }
    }

    /// The same rule with another action.
    pub fn action(mut self, action: Action) -> Self {
        self.action = action;
        self.body = body_for(action);
        self
    }

    /// The same rule looking at another part of the target.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Deny or allow.
    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// The pattern.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// What the rule does when it fires.
    pub fn get_action(&self) -> Action {
        self.action
    }

    /// Where the rule looks.
    pub fn get_scope(&self) -> Scope {
        self.scope
    }

    /// The short plain-text body of the rule's refusal.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }

    /// True when the rule fires for this (still percent-encoded) path and query.
    pub(crate) fn fires(&self, path: &str, query: Option<&str>) -> bool {
        let hit = |part: &str| {
            let matched = self.pattern.is_match_decoded(part.as_bytes());
            match self.kind {
                RuleKind::Deny => matched,
                RuleKind::Allow => !matched,
            }
        };
        match self.scope {
            Scope::Path => hit(path),
            Scope::Query => hit(query.unwrap_or("")),
            Scope::Both => hit(path) || hit(query.unwrap_or("")),
        }
    }
}

fn body_for(action: Action) -> Bytes {
    match action {
        Action::Refuse(status) => {
            let reason = status.canonical_reason().unwrap_or("Refused");
            Bytes::from(format!("{} {reason}\n", status.as_u16()))
        }
        Action::Log => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_scopes() {
        let deny = Rule::deny(";").unwrap();
        assert!(deny.fires("/a;b", None));
        assert!(!deny.fires("/a", Some("x;y")));
        let deny = deny.scope(Scope::Query);
        assert!(deny.fires("/a", Some("x%3By")));
        assert!(!deny.fires("/a;b", None));
        let deny = deny.scope(Scope::Both);
        assert!(deny.fires("/a;b", None) && deny.fires("/a", Some("x;y")));

        let allow = Rule::allow(r"^[a-z/]*$").unwrap();
        assert!(!allow.fires("/abc/", None));
        assert!(allow.fires("/ABC/", None));
        let allow = allow.scope(Scope::Query);
        assert!(!allow.fires("/ABC", None), "no query is an empty one");
    }

    #[test]
    fn bodies() {
        let r = Rule::deny("x").unwrap();
        assert_eq!(&r.body()[..], b"403 Forbidden\n");
        let r = r.action(Action::Refuse(StatusCode::GONE));
        assert_eq!(&r.body()[..], b"410 Gone\n");
    }
}
