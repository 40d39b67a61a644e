//! `[acl]`: the policy as written in the config file.

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::layer::AclLayer;
use crate::policy::{Access, Order, Policy, Source};

/// The `[acl]` section: a global policy and per-location policies.
///
/// Apache's form (`Order`, `Allow from`, `Deny from`):
///
/// ```toml
/// [acl]
/// order = "deny,allow"        # Order deny,allow
/// allow = ["all"]             # Allow from all
/// deny = ["192.0.2.0/24"]     # Deny from 192.0.2.0/24
/// ```
///
/// or a first-match list, with the answer for clients that no rule names:
///
/// ```toml
/// [acl]
/// default = "deny"
/// [[acl.rule]]
/// allow = ["10.0.0.0/8", "2001:db8::/32"]
/// [[acl.rule]]
/// deny = "all"
/// ```
///
/// and, like Apache's `<Location>`, a policy for a path prefix that replaces the global
/// one there (the longest matching prefix wins):
///
/// ```toml
/// [[acl.location]]
/// prefix = "/paid_user"
/// order = "allow,deny"
/// allow = ["10.0.0.0/8"]
/// ```
///
/// Values are checked while they are read, so an error names its line and column;
/// [`build`](Self::build) cannot fail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAcl")]
pub struct AclConfig {
    /// The policy outside every location.
    pub policy: Policy,
    /// Per-prefix policies.
    pub locations: Vec<Location>,
}

/// A policy for a path prefix (`<Location /prefix>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawLocation")]
pub struct Location {
    /// The path prefix, matched on segment boundaries: `/paid_user` covers
    /// `/paid_user` and `/paid_user/x`, not `/paid_users`.
    pub prefix: String,
    /// The policy under it, replacing the global one.
    pub policy: Policy,
}

impl AclConfig {
    /// The layer for this configuration.
    pub fn build(&self) -> AclLayer {
        let mut b = AclLayer::builder().global(self.policy.clone());
        for loc in &self.locations {
            b = b.location(&loc.prefix, loc.policy.clone());
        }
        b.build()
    }
}

// No `#[serde(flatten)]` here: it buffers values and loses their positions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    order: Option<OrderSpec>,
    allow: Option<Sources>,
    deny: Option<Sources>,
    default: Option<AccessSpec>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    location: Vec<Location>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    prefix: String,
    order: Option<OrderSpec>,
    allow: Option<Sources>,
    deny: Option<Sources>,
    default: Option<AccessSpec>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

struct RawPolicy {
    order: Option<OrderSpec>,
    allow: Option<Sources>,
    deny: Option<Sources>,
    default: Option<AccessSpec>,
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    allow: Option<Sources>,
    deny: Option<Sources>,
}

impl TryFrom<RawAcl> for AclConfig {
    type Error = String;

    fn try_from(raw: RawAcl) -> Result<Self, String> {
        let policy = RawPolicy {
            order: raw.order,
            allow: raw.allow,
            deny: raw.deny,
            default: raw.default,
            rule: raw.rule,
        };
        Ok(AclConfig {
            policy: policy.into_policy("acl")?,
            locations: raw.location,
        })
    }
}

impl TryFrom<RawLocation> for Location {
    type Error = String;

    fn try_from(raw: RawLocation) -> Result<Self, String> {
        if !raw.prefix.starts_with('/') {
            return Err(format!(
                "acl.location.prefix `{}` must start with '/'",
                raw.prefix
            ));
        }
        let policy = RawPolicy {
            order: raw.order,
            allow: raw.allow,
            deny: raw.deny,
            default: raw.default,
            rule: raw.rule,
        };
        Ok(Location {
            policy: policy.into_policy("acl.location")?,
            prefix: raw.prefix,
        })
    }
}

impl RawPolicy {
    fn into_policy(self, at: &str) -> Result<Policy, String> {
        let apache = self.order.is_some() || self.allow.is_some() || self.deny.is_some();
        if !self.rule.is_empty() {
            if apache {
                return Err(format!(
                    "{at}: use either `order` with `allow`/`deny` (Apache's form) or `[[{at}.rule]]` entries with `default`, not both"
                ));
            }
            let Some(AccessSpec(default)) = self.default else {
                return Err(format!(
                    "{at}.default: say what happens to a client that no rule names: default = \"deny\" or default = \"allow\""
                ));
            };
            let mut policy = Policy::first_match(default);
            for rule in self.rule {
                let (access, sources) = match (rule.allow, rule.deny) {
                    (Some(a), None) => (Access::Allow, a),
                    (None, Some(d)) => (Access::Deny, d),
                    _ => {
                        return Err(format!(
                            "{at}.rule: each rule has exactly one of `allow = [...]` or `deny = [...]`"
                        ));
                    }
                };
                for s in sources.0 {
                    policy = match access {
                        Access::Allow => policy.allow(s),
                        Access::Deny => policy.deny(s),
                    };
                }
            }
            return Ok(policy);
        }
        if self.default.is_some() {
            return Err(format!(
                "{at}.default applies to `[[{at}.rule]]` lists; with `order`, the order decides (deny,allow allows, allow,deny denies)"
            ));
        }
        let Some(OrderSpec(order)) = self.order else {
            if apache {
                return Err(format!(
                    "{at}.order: say how `allow` and `deny` combine: order = \"deny,allow\" (allowed unless denied and not allowed) or order = \"allow,deny\" (denied unless allowed and not denied)"
                ));
            }
            return Ok(Policy::default());
        };
        Ok(Policy::Order {
            order,
            allow: self.allow.map(|s| s.0).unwrap_or_default(),
            deny: self.deny.map(|s| s.0).unwrap_or_default(),
        })
    }
}

struct OrderSpec(Order);

impl<'de> Deserialize<'de> for OrderSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(OrderSpec).map_err(de::Error::custom)
    }
}

struct AccessSpec(Access);

impl<'de> Deserialize<'de> for AccessSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "allow" => Ok(AccessSpec(Access::Allow)),
            "deny" => Ok(AccessSpec(Access::Deny)),
            _ => Err(de::Error::custom(format!(
                "`{s}` is neither \"allow\" nor \"deny\""
            ))),
        }
    }
}

struct SourceSpec(Source);

impl<'de> Deserialize<'de> for SourceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(SourceSpec).map_err(de::Error::custom)
    }
}

/// One source (`"all"`) or a list of them.
struct Sources(Vec<Source>);

impl<'de> Deserialize<'de> for Sources {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sources;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"all\", an address, a CIDR network, or a list of them")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Sources, E> {
                s.parse().map(|s| Sources(vec![s])).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sources, A::Error> {
                let mut out = Vec::new();
                while let Some(SourceSpec(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(Sources(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        acl: AclConfig,
    }

    fn parse(text: &str) -> Result<AclConfig, toml::de::Error> {
        toml::from_str::<File>(text).map(|f| f.acl)
    }

    fn line_col(text: &str, at: usize) -> (usize, usize) {
        let before = &text[..at];
        (
            before.matches('\n').count() + 1,
            at - before.rfind('\n').map_or(0, |i| i + 1) + 1,
        )
    }

    #[test]
    fn apache_form() {
        let c = parse("[acl]\norder = \"deny,allow\"\nallow = \"all\"\n").unwrap();
        assert_eq!(c.policy, Policy::order(Order::DenyAllow).allow(Source::All));
        let c = parse("[acl]\norder = \"Allow,Deny\"\nallow = [\"10.0.0.0/8\", \"::1\"]\ndeny = [\"10.0.0.7\"]\n").unwrap();
        let Policy::Order { order, allow, deny } = c.policy else {
            panic!()
        };
        assert_eq!((order, allow.len(), deny.len()), (Order::AllowDeny, 2, 1));
    }

    #[test]
    fn first_match_form_and_locations() {
        let text = "[acl]\ndefault = \"deny\"\n[[acl.rule]]\nallow = [\"10.0.0.0/8\"]\n[[acl.rule]]\ndeny = \"all\"\n\
                    [[acl.location]]\nprefix = \"/open\"\norder = \"deny,allow\"\n";
        let c = parse(text).unwrap();
        assert_eq!(
            c.policy,
            Policy::first_match(Access::Deny)
                .allow("10.0.0.0/8".parse::<Source>().unwrap())
                .deny(Source::All)
        );
        assert_eq!(c.locations[0].prefix, "/open");
        assert_eq!(c.locations[0].policy, Policy::default());
        assert_eq!(parse("[acl]\n").unwrap(), AclConfig::default());
    }

    #[test]
    fn errors_are_located_and_name_the_fix() {
        let text = "[acl]\norder = \"deny,allow\"\nallow = [\"all\", \"10.0.0\"]\n";
        let err = parse(text).unwrap_err();
        assert!(err.message().contains("`10.0.0` is not \"all\""), "{err}");
        assert_eq!(line_col(text, err.span().unwrap().start), (3, 9), "{err}");

        let text = "[acl]\norder = \"deny-allow\"\n";
        let err = parse(text).unwrap_err();
        assert!(err.message().contains("write \"deny,allow\""), "{err}");
        assert_eq!(line_col(text, err.span().unwrap().start), (2, 9), "{err}");

        let err = parse("[acl]\nallow = \"all\"\n").unwrap_err();
        assert!(err.message().contains("acl.order: say how"), "{err}");
        assert!(err.span().is_some(), "{err}");

        let err = parse("[acl]\n[[acl.rule]]\nallow = \"all\"\n").unwrap_err();
        assert!(
            err.message().contains("acl.default: say what happens"),
            "{err}"
        );

        let err =
            parse("[acl]\ndefault = \"deny\"\n[[acl.rule]]\nallow = \"all\"\ndeny = \"all\"\n")
                .unwrap_err();
        assert!(err.message().contains("exactly one of"), "{err}");

        let err = parse(
            "[acl]\norder = \"deny,allow\"\ndefault = \"deny\"\n[[acl.rule]]\nallow = \"all\"\n",
        )
        .unwrap_err();
        assert!(err.message().contains("not both"), "{err}");

        let err = parse("[acl]\norder = \"deny,allow\"\nallwo = \"all\"\n").unwrap_err();
        assert!(err.message().contains("unknown field `allwo`"), "{err}");

        let err = parse("[acl]\n[[acl.location]]\nprefix = \"paid\"\n").unwrap_err();
        assert!(err.message().contains("must start with '/'"), "{err}");
    }
}
