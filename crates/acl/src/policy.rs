//! Policies: who may pass, in Apache's `Order` form or as a first-match rule list.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use towergate_client_addr::NetSpec;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The request passes.
    Allow,
    /// The request is answered 403.
    Deny,
}

/// Whom a directive names: everyone, or an address or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `all`: every client, including one whose address is unknown.
    All,
    /// An address or CIDR network (a bare address is a /32 or /128 network).
    Net(IpNet),
}

impl Source {
    /// True when `client` is named by this source.
    pub fn contains(&self, client: Option<IpAddr>) -> bool {
        match (self, client) {
            (Source::All, _) => true,
            (Source::Net(net), Some(ip)) => net.contains(&ip),
            (Source::Net(_), None) => false,
        }
    }
}

impl From<IpNet> for Source {
    fn from(net: IpNet) -> Self {
        Source::Net(net.trunc())
    }
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        Source::Net(IpNet::from(ip.to_canonical()))
    }
}

impl FromStr for Source {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(Source::All);
        }
        s.parse::<NetSpec>()
            .map(|n| Source::Net(n.0))
            .map_err(|_| SourceError(s.to_owned()))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::All => f.write_str("all"),
            Source::Net(n) => n.fmt(f),
        }
    }
}

/// Why a [`Source`] could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not \"all\", an IP address or a CIDR network; write e.g. \"all\", \"192.0.2.7\", \"10.0.0.0/8\", \"2001:db8::/32\" (host names are not supported)"
)]
pub struct SourceError(String);

/// Apache's `Order` directive: how `Allow` and `Deny` combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `Order Deny,Allow`: allowed unless a deny names the client and no allow does.
    DenyAllow,
    /// `Order Allow,Deny`: denied unless an allow names the client and no deny does.
    AllowDeny,
    /// `Order Mutual-failure`: allowed only when an allow names the client and no deny
    /// does (the same outcome as `Allow,Deny`).
    MutualFailure,
}

impl FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let squashed: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        match squashed.as_str() {
            "deny,allow" => Ok(Order::DenyAllow),
            "allow,deny" => Ok(Order::AllowDeny),
            "mutual-failure" => Ok(Order::MutualFailure),
            _ => Err(format!(
                "order `{s}` is not an Apache Order; write \"deny,allow\" (allowed unless denied and not allowed) or \"allow,deny\" (denied unless allowed and not denied)"
            )),
        }
    }
}

/// Who may pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Apache's `Order` with its `Allow from` and `Deny from` lists.
    Order {
        /// How the lists combine.
        order: Order,
        /// `Allow from ...`.
        allow: Vec<Source>,
        /// `Deny from ...`.
        deny: Vec<Source>,
    },
    /// A rule list: the first rule naming the client decides; `default` when none does.
    FirstMatch {
        /// The rules, in order.
        rules: Vec<(Access, Source)>,
        /// The answer when no rule names the client.
        default: Access,
    },
}

impl Default for Policy {
    /// Everyone passes (`Order Deny,Allow` with no directives).
    fn default() -> Self {
        Policy::Order {
            order: Order::DenyAllow,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

impl Policy {
    /// An `Order` policy with empty lists, to fill with [`allow`](Self::allow) and
    /// [`deny`](Self::deny).
    pub fn order(order: Order) -> Self {
        Policy::Order {
            order,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }

    /// An empty first-match list answering `default` to clients no rule names; fill it
    /// with [`allow`](Self::allow) and [`deny`](Self::deny), in order.
    pub fn first_match(default: Access) -> Self {
        Policy::FirstMatch {
            rules: Vec::new(),
            default,
        }
    }

    /// Adds an allow (`Allow from source`, or an allow rule at the end of the list).
    pub fn allow(self, source: impl Into<Source>) -> Self {
        self.with(Access::Allow, source.into())
    }

    /// Adds a deny (`Deny from source`, or a deny rule at the end of the list).
    pub fn deny(self, source: impl Into<Source>) -> Self {
        self.with(Access::Deny, source.into())
    }

    fn with(mut self, access: Access, source: Source) -> Self {
        match &mut self {
            Policy::Order { allow, deny, .. } => match access {
                Access::Allow => allow.push(source),
                Access::Deny => deny.push(source),
            },
            Policy::FirstMatch { rules, .. } => rules.push((access, source)),
        }
        self
    }

    /// The decision for `client` (`None`: the address is unknown, and only `all` names it).
    pub fn decide(&self, client: Option<IpAddr>) -> Access {
        let client = client.map(|ip| ip.to_canonical());
        let named = |list: &[Source]| list.iter().any(|s| s.contains(client));
        match self {
            Policy::Order { order, allow, deny } => {
                let allowed = named(allow);
                let denied = named(deny);
                match order {
                    Order::DenyAllow if denied && !allowed => Access::Deny,
                    Order::DenyAllow => Access::Allow,
                    Order::AllowDeny | Order::MutualFailure if allowed && !denied => Access::Allow,
                    Order::AllowDeny | Order::MutualFailure => Access::Deny,
                }
            }
            Policy::FirstMatch { rules, default } => rules
                .iter()
                .find(|(_, s)| s.contains(client))
                .map_or(*default, |(a, _)| *a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn src(s: &str) -> Source {
        s.parse().unwrap()
    }

    #[test]
    fn deny_allow() {
        // Order deny,allow / Deny from all / Allow from 10.0.0.0/8: only the network.
        let p = Policy::order(Order::DenyAllow)
            .deny(src("all"))
            .allow(src("10.0.0.0/8"));
        assert_eq!(p.decide(ip("10.1.2.3")), Access::Allow);
        assert_eq!(p.decide(ip("192.0.2.1")), Access::Deny);
        assert_eq!(p.decide(None), Access::Deny);
        // Order deny,allow / Allow from all (the article): everyone.
        let p = Policy::order(Order::DenyAllow).allow(src("all"));
        assert_eq!(p.decide(ip("192.0.2.1")), Access::Allow);
        // Nothing named: allowed by default.
        let p = Policy::order(Order::DenyAllow).deny(src("192.0.2.0/24"));
        assert_eq!(p.decide(ip("198.51.100.1")), Access::Allow);
        assert_eq!(p.decide(ip("192.0.2.9")), Access::Deny);
    }

    #[test]
    fn allow_deny() {
        // Order allow,deny / Allow from all / Deny from 192.0.2.0/24: all but the network.
        let p = Policy::order(Order::AllowDeny)
            .allow(src("all"))
            .deny(src("192.0.2.0/24"));
        assert_eq!(p.decide(ip("192.0.2.9")), Access::Deny);
        assert_eq!(p.decide(ip("198.51.100.1")), Access::Allow);
        // Named by both: deny wins under allow,deny; allow wins under deny,allow.
        let both = |o| {
            Policy::order(o)
                .allow(src("10.0.0.0/8"))
                .deny(src("10.0.0.7"))
        };
        assert_eq!(both(Order::AllowDeny).decide(ip("10.0.0.7")), Access::Deny);
        assert_eq!(
            both(Order::MutualFailure).decide(ip("10.0.0.7")),
            Access::Deny
        );
        assert_eq!(both(Order::DenyAllow).decide(ip("10.0.0.7")), Access::Allow);
        // Nothing named: denied by default.
        assert_eq!(both(Order::AllowDeny).decide(ip("192.0.2.1")), Access::Deny);
    }

    #[test]
    fn first_match_and_ipv6() {
        let p = Policy::first_match(Access::Allow)
            .deny(src("2001:db8::1"))
            .allow(src("2001:db8::/32"))
            .deny(src("::/0"));
        assert_eq!(p.decide(ip("2001:db8::1")), Access::Deny);
        assert_eq!(p.decide(ip("2001:db8::2")), Access::Allow);
        assert_eq!(p.decide(ip("2001:db9::2")), Access::Deny);
        assert_eq!(p.decide(ip("192.0.2.1")), Access::Allow);
        // IPv4-mapped addresses are their IPv4 address.
        let p = Policy::first_match(Access::Deny).allow(src("10.0.0.0/8"));
        assert_eq!(p.decide(ip("::ffff:10.0.0.1")), Access::Allow);
    }

    #[test]
    fn parsing() {
        assert_eq!(src("ALL"), Source::All);
        assert_eq!("Deny, Allow".parse::<Order>(), Ok(Order::DenyAllow));
        assert_eq!("allow,deny".parse::<Order>(), Ok(Order::AllowDeny));
        assert!(
            "allow"
                .parse::<Order>()
                .unwrap_err()
                .contains("\"deny,allow\"")
        );
        let err = "example.com".parse::<Source>().unwrap_err().to_string();
        assert!(err.contains("host names are not supported"), "{err}");
    }
}
