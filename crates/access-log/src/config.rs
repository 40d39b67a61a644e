//! `[access_log]`: where the lines go and in which format.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::format::{LogFormat, LogFormatError};
use crate::layer::AccessLogLayer;
use crate::writer::{DEFAULT_BUFFER, DEFAULT_FLUSH_INTERVAL, LogWriter, MAX_BUFFER, MIN_BUFFER};

/// `[access_log]`, Apache's `CustomLog` and `LogFormat`.
///
/// ```toml
/// [access_log]
/// path = "/var/log/towergate/access_log"   # CustomLog logs/access_log combined
/// format = "combined"                      # or a LogFormat string
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// The file lines are appended to (created if missing, its directory must exist),
    /// relative to the working directory. `"-"`, or no `path` at all, writes to stdout.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `common`, `combined` (the default), `combinedio`, or a format string in Apache
    /// `LogFormat` syntax, e.g. `'%h %t "%r" %>s %b %D'`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Bytes of finished lines that may wait for the writer (default 1 MiB, 64 KiB to
    /// 1 GiB). When a slow disk lets it fill up, further lines are dropped and counted
    /// rather than held in memory or waited for.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// How often buffered lines are written, e.g. `"1s"` (the default), `"100ms"`.
    #[serde(default = "default_flush_interval", deserialize_with = "duration")]
    pub flush_interval: Duration,
}

fn default_format() -> String {
    "combined".into()
}

fn default_buffer() -> usize {
    DEFAULT_BUFFER
}

fn default_flush_interval() -> Duration {
    DEFAULT_FLUSH_INTERVAL
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration ({e}); write e.g. \"1s\" or \"250ms\""
        ))
    })
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            path: None,
            format: default_format(),
            buffer: DEFAULT_BUFFER,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        }
    }
}

/// A bad `[access_log]`.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// `format` does not parse.
    #[error("access_log.format: {0}")]
    Format(#[from] LogFormatError),
    /// `path` cannot be opened for appending.
    #[error("access_log.path: cannot open `{}` for appending{}", path.display(), open_hint(source))]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `buffer` out of range.
    #[error("access_log.buffer = {0}: use {MIN_BUFFER} (64 KiB) to {MAX_BUFFER} (1 GiB) bytes")]
    Buffer(usize),
    /// `flush_interval` out of range.
    #[error("access_log.flush_interval = {0:?}: use 1ms to 60s")]
    FlushInterval(Duration),
    /// The writer thread could not be started.
    #[error("access_log: cannot start the writer thread: {0}")]
    Thread(io::Error),
}

fn open_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => {
            " (create its directory, or set access_log.path = \"-\" for stdout)"
        }
        io::ErrorKind::PermissionDenied => {
            " (give the gateway's user write access, or choose another path)"
        }
        _ => "",
    }
}

impl AccessLogConfig {
    /// The file, or `None` for stdout.
    pub fn file(&self) -> Option<&Path> {
        self.path.as_deref().filter(|p| *p != Path::new("-"))
    }

    /// Checks every value without opening anything; the compiled format.
    pub fn validate(&self) -> Result<LogFormat, AccessLogError> {
        if !(MIN_BUFFER..=MAX_BUFFER).contains(&self.buffer) {
            return Err(AccessLogError::Buffer(self.buffer));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&self.flush_interval) {
            return Err(AccessLogError::FlushInterval(self.flush_interval));
        }
        Ok(LogFormat::from_name_or_format(&self.format)?)
    }

    /// Opens the file (or stdout) and starts its writer thread.
    pub fn open_writer(&self) -> Result<LogWriter, AccessLogError> {
        self.validate()?;
        let builder = LogWriter::builder()
            .buffer(self.buffer)
            .flush_interval(self.flush_interval);
        match self.file() {
            Some(path) => builder.file(path).map_err(|source| AccessLogError::Open {
                path: path.to_owned(),
                source,
            }),
            None => builder.stdout().map_err(AccessLogError::Thread),
        }
    }

    /// The layer: validates, opens, starts the writer.
    pub fn build(&self) -> Result<AccessLogLayer, AccessLogError> {
        let format = self.validate()?;
        Ok(AccessLogLayer::new(format, self.open_writer()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<AccessLogConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn defaults_and_names() {
        let c = parse("").unwrap();
        assert_eq!(c, AccessLogConfig::default());
        assert_eq!(c.file(), None);
        assert_eq!(c.validate().unwrap(), LogFormat::combined());
        let c = parse("path = \"-\"\nformat = \"common\"\nflush_interval = \"250ms\"").unwrap();
        assert_eq!(c.file(), None);
        assert_eq!(c.flush_interval, Duration::from_millis(250));
        assert_eq!(c.validate().unwrap(), LogFormat::common());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("fromat = \"combined\"").unwrap_err();
        assert!(e.to_string().contains("fromat"), "{e}");
        let e = parse("flush_interval = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
        let c = parse("format = '%h %Q'").unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("access_log.format: unknown LogFormat directive `%Q`"),
            "{e}"
        );
        let c = parse("buffer = 10").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("access_log.buffer")
        );
    }

    #[test]
    fn a_missing_directory_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let c = AccessLogConfig {
            path: Some(dir.path().join("logs/access_log")),
            ..AccessLogConfig::default()
        };
        let e = c.build().unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("access_log.path: cannot open"), "{msg}");
        assert!(msg.contains("create its directory"), "{msg}");
    }
}
