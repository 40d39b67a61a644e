//! Addresses and networks that are never counted (`DOSWhitelist`).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A set of addresses and networks, IPv4 and IPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Whitelist {
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

impl Whitelist {
    /// An empty whitelist.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a network (host bits are ignored: `10.1.2.3/8` is `10.0.0.0/8`).
    pub fn insert(&mut self, net: IpNet) {
        match net.trunc() {
            IpNet::V4(n) => {
                self.v4.push(n);
                self.v4 = Ipv4Net::aggregate(&self.v4);
            }
            IpNet::V6(n) => {
                self.v6.push(n);
                self.v6 = Ipv6Net::aggregate(&self.v6);
            }
        }
    }

    /// Whether `ip` is whitelisted. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are
    /// looked up as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => self.v4.iter().any(|n| n.contains(&a)),
            IpAddr::V6(a) => self.v6.iter().any(|n| n.contains(&a)),
        }
    }

    /// Whether nothing is whitelisted.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The networks, IPv4 first.
    pub fn networks(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4
            .iter()
            .map(|&n| IpNet::V4(n))
            .chain(self.v6.iter().map(|&n| IpNet::V6(n)))
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address; others unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Parses a whitelist entry: an address (`10.10.10.2`, `2001:db8::1`), a CIDR network
/// (`10.0.0.0/8`, `2001:db8::/32`), or mod_evasive's wildcard form with trailing `*`
/// octets (`10.10.*.*`).
pub fn parse_entry(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(canonical(ip)));
    }
    if s.contains('*') {
        let parts: Vec<&str> = s.split('.').collect();
        let fixed = parts.iter().take_while(|p| **p != "*").count();
        if parts.len() == 4 && fixed > 0 && parts[fixed..].iter().all(|p| *p == "*") {
            let mut octets = [0u8; 4];
            for (o, p) in octets.iter_mut().zip(&parts[..fixed]) {
                *o = p.parse().map_err(|_| bad(s))?;
            }
            let net = Ipv4Net::new(Ipv4Addr::from(octets), 8 * fixed as u8).map_err(|_| bad(s))?;
            return Ok(IpNet::V4(net));
        }
    }
    Err(bad(s))
}

fn bad(s: &str) -> String {
    format!(
        "`{s}` is not an address, a CIDR network or a wildcard; write e.g. \"10.10.10.2\", \"10.0.0.0/8\", \"2001:db8::/32\" or \"10.10.*.*\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Whitelist {
        let mut w = Whitelist::new();
        for e in entries {
            w.insert(parse_entry(e).unwrap());
        }
        w
    }

    #[test]
    fn addresses_and_networks() {
        let w = list(&["10.10.10.2", "192.168.0.0/16", "2001:db8::/32", "::1"]);
        for yes in [
            "10.10.10.2",
            "192.168.7.9",
            "2001:db8:1::5",
            "::1",
            "::ffff:10.10.10.2",
        ] {
            assert!(w.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in [
            "10.10.10.3",
            "192.169.0.1",
            "2001:db9::1",
            "::2",
            "127.0.0.1",
        ] {
            assert!(!w.contains(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn mod_evasive_wildcards() {
        assert_eq!(
            parse_entry("10.10.*.*").unwrap(),
            "10.10.0.0/16".parse().unwrap()
        );
        assert_eq!(
            parse_entry("10.*.*.*").unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        assert_eq!(
            parse_entry("10.1.2.*").unwrap(),
            "10.1.2.0/24".parse().unwrap()
        );
        assert_eq!(
            parse_entry(" 10.1.2.3/8 ").unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        assert_eq!(
            parse_entry("::ffff:10.1.2.3").unwrap(),
            "10.1.2.3/32".parse().unwrap()
        );
        for bad in [
            "10.*.1.*",
            "*.*.*.*",
            "10.10.*",
            "300.1.*.*",
            "host.lan",
            "",
            "10.0.0.0/33",
        ] {
            let err = parse_entry(bad).unwrap_err();
            assert!(err.contains("is not an address"), "{bad}: {err}");
        }
    }
}
