//! `[client_addr]`: which proxies are trusted to report the client, and in which header.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::layer::{ClientAddrLayer, ForwardedHeader};

/// The `[client_addr]` section (Apache `mod_remoteip`).
///
/// ```toml
/// [client_addr]
/// trusted_proxies = ["10.0.0.0/8", "2001:db8::1"]   # RemoteIPTrustedProxy
/// header = "X-Forwarded-For"                         # RemoteIPHeader (or "Forwarded")
/// ```
///
/// Every value is checked while it is read, so a bad one is reported at its own line and
/// column; [`build`](Self::build) cannot fail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAddrConfig {
    /// Peers trusted to report the client (addresses or CIDR networks). Empty: the socket
    /// peer is always the client.
    #[serde(default)]
    pub trusted_proxies: Vec<NetSpec>,
    /// The header the trusted proxies write: `"X-Forwarded-For"` (default) or `"Forwarded"`.
    #[serde(default)]
    pub header: ForwardedHeader,
}

impl ClientAddrConfig {
    /// The layer for this configuration.
    pub fn build(&self) -> ClientAddrLayer {
        ClientAddrLayer::builder()
            .trusted_proxies(self.trusted_proxies.iter().map(|n| n.0))
            .header(self.header)
            .build()
    }
}

impl<'de> Deserialize<'de> for ForwardedHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.eq_ignore_ascii_case("x-forwarded-for") {
            Ok(ForwardedHeader::XForwardedFor)
        } else if s.eq_ignore_ascii_case("forwarded") {
            Ok(ForwardedHeader::Forwarded)
        } else {
            Err(serde::de::Error::custom(format!(
                "header `{s}` is not supported; write \"X-Forwarded-For\" or \"Forwarded\""
            )))
        }
    }
}

/// An address or a CIDR network as written in a config: `10.0.0.0/8`, `192.0.2.7`,
/// `2001:db8::/32`, `::1`. A bare address is a /32 (IPv4) or /128 (IPv6) network; host
/// bits after the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetSpec(pub IpNet);

/// Why a [`NetSpec`] could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an IP address or CIDR network; write e.g. \"192.0.2.7\", \"10.0.0.0/8\", \"2001:db8::/32\""
)]
pub struct NetSpecError(String);

impl FromStr for NetSpec {
    type Err = NetSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(net) = IpNet::from_str(t) {
            return Ok(NetSpec(net.trunc()));
        }
        match IpAddr::from_str(t) {
            Ok(ip) => Ok(NetSpec(IpNet::from(ip.to_canonical()))),
            Err(_) => Err(NetSpecError(s.to_owned())),
        }
    }
}

impl fmt::Display for NetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for NetSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_specs() {
        assert_eq!(
            "10.1.2.3/8".parse::<NetSpec>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.7".parse::<NetSpec>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!("::1".parse::<NetSpec>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "::ffff:10.0.0.1".parse::<NetSpec>().unwrap().to_string(),
            "10.0.0.1/32"
        );
        let err = "10.0.0".parse::<NetSpec>().unwrap_err().to_string();
        assert!(err.contains("`10.0.0` is not an IP address"), "{err}");
    }

    #[test]
    fn config_errors_are_located() {
        let c: ClientAddrConfig =
            toml::from_str("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nheader = \"forwarded\"\n")
                .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.header, ForwardedHeader::Forwarded);
        let err = toml::from_str::<ClientAddrConfig>(
            "trusted_proxies = [\"10.0.0.0/8\", \"proxy.lan\"]\n",
        )
        .unwrap_err();
        // toml locates an element's error at its array.
        assert_eq!(err.span(), Some(18..45), "{err}");
        assert!(
            err.message().contains("`proxy.lan` is not an IP address"),
            "{err}"
        );
        let err = toml::from_str::<ClientAddrConfig>("header = \"X-Real-IP\"\n").unwrap_err();
        assert!(
            err.message()
                .contains("\"X-Forwarded-For\" or \"Forwarded\""),
            "{err}"
        );
        assert!(toml::from_str::<ClientAddrConfig>("trusted = []\n").is_err());
    }
}
