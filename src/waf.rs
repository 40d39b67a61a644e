//! `[waf]`: ModSecurity rules through `towergate-waf`, when the gateway is built with the
//! `waf` feature; without it, the section is refused with a message saying how to get it.

#[cfg(feature = "waf")]
pub use towergate_waf::WafConfig as WafSection;

/// `[waf]` in a build without the `waf` feature: read only to be refused.
#[cfg(not(feature = "waf"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WafSection;

#[cfg(not(feature = "waf"))]
impl<'de> serde::Deserialize<'de> for WafSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Self)
    }
}

/// Why a build without the feature refuses `[waf]`.
#[cfg(not(feature = "waf"))]
pub const NOT_BUILT: &str = "[waf]: this towergate was built without the waf feature; install libmodsecurity-dev (and modsecurity-crs for the OWASP rules) and build with `cargo build --release --features waf`";
