//! [`EvasiveConfig`]: the `[evasive]` section, named after mod_evasive's directives.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::layer::{EvasiveBuilder, EvasiveLayer};
use crate::sweeper::Sweeper;
use crate::whitelist::parse_entry;

/// The `[evasive]` section. Every key is optional; the defaults are mod_evasive's.
///
/// ```toml
/// [evasive]
/// page_count = 2              # DOSPageCount
/// page_interval = "1s"        # DOSPageInterval
/// site_count = 30             # DOSSiteCount
/// site_interval = "1s"        # DOSSiteInterval
/// blocking_period = "30s"     # DOSBlockingPeriod
/// max_tracked = 314739        # DOSHashTableSize's role: most clients tracked at once
/// whitelist = ["10.10.10.2", "10.0.0.0/8", "2001:db8::/32", "192.168.*.*"]   # DOSWhitelist
/// log_dir = "/var/log/towergate/evasive"   # DOSLogDir: one dos-<address> file per block
/// command = "logger -t towergate blocked %s"   # DOSSystemCommand, %s = the address
/// ipv6_prefix = 64            # IPv6 clients are counted per /64
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvasiveConfig {
    /// `DOSPageCount`: requests for one URI allowed within `page_interval` (default 2).
    #[serde(default = "defaults::page_count")]
    pub page_count: u32,
    /// `DOSPageInterval` (default `"1s"`).
    #[serde(default = "defaults::second", deserialize_with = "duration")]
    pub page_interval: Duration,
    /// `DOSSiteCount`: requests for any URIs allowed within `site_interval` (default 50).
    #[serde(default = "defaults::site_count")]
    pub site_count: u32,
    /// `DOSSiteInterval` (default `"1s"`).
    #[serde(default = "defaults::second", deserialize_with = "duration")]
    pub site_interval: Duration,
    /// `DOSBlockingPeriod`: how long a blocked client is refused after its last request
    /// (default `"10s"`).
    #[serde(default = "defaults::blocking_period", deserialize_with = "duration")]
    pub blocking_period: Duration,
    /// The most clients tracked at once (the role of `DOSHashTableSize`; default 100000).
    #[serde(default = "defaults::max_tracked")]
    pub max_tracked: usize,
    /// `DOSWhitelist`: addresses, CIDR networks or `a.b.*.*` wildcards never counted.
    #[serde(default)]
    pub whitelist: Vec<String>,
    /// `DOSLogDir`: a directory where each block writes `dos-<address>`.
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// `DOSSystemCommand`: run with `sh -c` when a block starts, `%s` replaced by the
    /// blocked address (or IPv6 network).
    #[serde(default)]
    pub command: Option<String>,
    /// IPv6 clients are counted and blocked per network of this prefix length (default
    /// 64; 128 counts each address on its own).
    #[serde(default = "defaults::ipv6_prefix")]
    pub ipv6_prefix: u8,
}

impl Default for EvasiveConfig {
    fn default() -> Self {
        Self {
            page_count: defaults::page_count(),
            page_interval: defaults::second(),
            site_count: defaults::site_count(),
            site_interval: defaults::second(),
            blocking_period: defaults::blocking_period(),
            max_tracked: defaults::max_tracked(),
            whitelist: Vec::new(),
            log_dir: None,
            command: None,
            ipv6_prefix: defaults::ipv6_prefix(),
        }
    }
}

impl EvasiveConfig {
    /// Checks the values and builds the layer and its [`Sweeper`].
    pub fn build(&self) -> Result<(EvasiveLayer, Sweeper), EvasiveError> {
        self.builder()?.build()
    }

    /// A builder holding these values, for further changes in code.
    pub fn builder(&self) -> Result<EvasiveBuilder, EvasiveError> {
        let mut b = EvasiveLayer::builder()
            .page_count(self.page_count)
            .page_interval(self.page_interval)
            .site_count(self.site_count)
            .site_interval(self.site_interval)
            .blocking_period(self.blocking_period)
            .max_tracked(self.max_tracked)
            .ipv6_prefix(self.ipv6_prefix);
        for (i, entry) in self.whitelist.iter().enumerate() {
            let net = parse_entry(entry)
                .map_err(|message| EvasiveError::new(format!("whitelist[{i}]"), message))?;
            b = b.whitelist(net);
        }
        if let Some(dir) = &self.log_dir {
            b = b.log_dir(dir.clone());
        }
        if let Some(command) = &self.command {
            b = b.command(command.clone());
        }
        Ok(b)
    }
}

/// A value the layer cannot work with; names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("evasive.{key}: {message}")]
pub struct EvasiveError {
    key: String,
    message: String,
}

impl EvasiveError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key at fault, e.g. `page_count` or `whitelist[2]`.
    pub fn key(&self) -> &str {
        &self.key
    }
}

mod defaults {
    use std::time::Duration;

    pub fn page_count() -> u32 {
        2
    }
    pub fn site_count() -> u32 {
        50
    }
    pub fn second() -> Duration {
        Duration::from_secs(1)
    }
    pub fn blocking_period() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_tracked() -> usize {
        100_000
    }
    pub fn ipv6_prefix() -> u8 {
        64
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration ({e}); write e.g. \"1s\", \"30s\", \"500ms\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EvasiveConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_articles_values() {
        let c = parse(
            r#"
            page_count = 2
            page_interval = "1s"
            site_count = 30
            site_interval = "1s"
            blocking_period = "30s"
            max_tracked = 314739
            whitelist = ["10.10.10.2"]
            log_dir = "/tmp"
            "#,
        )
        .unwrap();
        assert_eq!(c.site_count, 30);
        assert_eq!(c.blocking_period, Duration::from_secs(30));
        assert_eq!(c.ipv6_prefix, 64);
        let (layer, _sweeper) = c.build().unwrap();
        assert_eq!(layer.limits().site_count, 30);
    }

    #[test]
    fn defaults_are_mod_evasives() {
        let c = parse("").unwrap();
        assert_eq!(c, EvasiveConfig::default());
        assert_eq!((c.page_count, c.site_count), (2, 50));
        assert_eq!(c.blocking_period, Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        let err = parse("DOSPageCount = 2").unwrap_err();
        assert!(err.contains("unknown field `DOSPageCount`"), "{err}");
        let err = parse("page_interval = 1").unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = parse("blocking_period = \"soon\"").unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let build = |text: &str| {
            parse(text)
                .unwrap()
                .build()
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let err = build("page_count = 0");
        assert!(err.starts_with("evasive.page_count: "), "{err}");
        let err = build("site_count = 0");
        assert!(err.starts_with("evasive.site_count: "), "{err}");
        let err = build("page_count = 65");
        assert!(
            err.starts_with("evasive.page_count: ") && err.contains("64"),
            "{err}"
        );
        let err = build("page_interval = \"0s\"");
        assert!(err.starts_with("evasive.page_interval: "), "{err}");
        let err = build("blocking_period = \"30days\"");
        assert!(err.starts_with("evasive.blocking_period: "), "{err}");
        let err = build("max_tracked = 0");
        assert!(err.starts_with("evasive.max_tracked: "), "{err}");
        let err = build("ipv6_prefix = 129");
        assert!(err.starts_with("evasive.ipv6_prefix: "), "{err}");
        let err = build("whitelist = [\"10.0.0.1\", \"nope\"]");
        assert!(
            err.starts_with("evasive.whitelist[1]: `nope` is not"),
            "{err}"
        );
        let err = build("log_dir = \"/nonexistent/evasive\"");
        assert!(err.starts_with("evasive.log_dir: "), "{err}");
        let err = build("command = \"\"");
        assert!(err.starts_with("evasive.command: "), "{err}");
        let err = build("site_count = 100000\npage_count = 64\nmax_tracked = 100000000");
        assert!(
            err.starts_with("evasive.max_tracked: ") && err.contains("GiB"),
            "{err}"
        );
    }
}
