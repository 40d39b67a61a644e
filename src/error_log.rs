//! `[error_log]`: where the gateway's own messages go, and how many (Apache `ErrorLog`
//! and `LogLevel`).
//!
//! Messages are `tracing` events, written by a thread of their own
//! (`tracing-appender`'s non-blocking writer): a slow disk or a blocked stderr never
//! holds up a request. That writer keeps up to 128,000 messages waiting and drops further
//! ones rather than grow. `RUST_LOG`, when set, overrides `level` with its own filter
//! (e.g. `RUST_LOG=towergate_evasive=debug,info`). The file is reopened by path on
//! `SIGUSR1`, after log rotation moved it. `[error_log]` is read at start; a reload keeps
//! the error log as it was.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use serde::{Deserialize, Deserializer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// `[error_log]`.
///
/// ```toml
/// [error_log]
/// path = "/var/log/towergate/error_log"   # ErrorLog logs/error_log
/// level = "notice"                        # LogLevel notice
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorLogConfig {
    /// The file messages are appended to (created if missing; its directory must exist).
    /// `"-"`, or no `path`, writes to stderr.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Apache's `LogLevel` words: `emerg`, `alert`, `crit`, `error`, `warn`, `notice` (the
    /// default), `info`, `debug`, `trace1` ... `trace8`.
    #[serde(default)]
    pub level: LogLevel,
}

impl ErrorLogConfig {
    /// The file, or `None` for stderr.
    pub fn file(&self) -> Option<&Path> {
        self.path.as_deref().filter(|p| *p != Path::new("-"))
    }
}

/// An Apache `LogLevel`, mapped onto tracing's five levels: `emerg`, `alert`, `crit` and
/// `error` are errors; `notice` and `info` are both info (tracing has no level between
/// warn and info); `trace1` to `trace8` are trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogLevel {
    /// `emerg`
    Emerg,
    /// `alert`
    Alert,
    /// `crit`
    Crit,
    /// `error`
    Error,
    /// `warn`
    Warn,
    /// `notice`: the default. (Apache's is `warn`; `notice` keeps the start-up messages,
    /// such as the addresses listened on.)
    #[default]
    Notice,
    /// `info`
    Info,
    /// `debug`
    Debug,
    /// `trace1` ... `trace8`
    Trace(u8),
}

impl LogLevel {
    /// The tracing level this shows.
    pub fn filter(self) -> LevelFilter {
        match self {
            Self::Emerg | Self::Alert | Self::Crit | Self::Error => LevelFilter::ERROR,
            Self::Warn => LevelFilter::WARN,
            Self::Notice | Self::Info => LevelFilter::INFO,
            Self::Debug => LevelFilter::DEBUG,
            Self::Trace(_) => LevelFilter::TRACE,
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "emerg" => Self::Emerg,
            "alert" => Self::Alert,
            "crit" => Self::Crit,
            "error" => Self::Error,
            "warn" => Self::Warn,
            "notice" => Self::Notice,
            "info" => Self::Info,
            "debug" => Self::Debug,
            t => match t.strip_prefix("trace").and_then(|n| n.parse::<u8>().ok()) {
                Some(n @ 1..=8) => Self::Trace(n),
                _ => {
                    return Err(format!(
                        "error_log.level `{s}` is not a LogLevel: use emerg, alert, crit, error, warn, notice, info, debug or trace1 to trace8"
                    ));
                }
            },
        })
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Keeps the error log's writer thread running; dropping it writes what is queued.
pub struct ErrorLog {
    _guard: tracing_appender::non_blocking::WorkerGuard,
}

static REOPEN: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the process's tracing subscriber for `config`: `RUST_LOG` if set, else the
/// configured level; to the file or stderr, through a non-blocking writer.
pub fn init(config: &ErrorLogConfig) -> anyhow::Result<ErrorLog> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::default().add_directive(config.level.filter().into()));
    let (writer, guard, ansi) = match config.file() {
        Some(path) => {
            let file = ReopenableFile::open(path).with_context(|| {
                format!(
                    "error_log.path: cannot open `{}` for appending (create its directory, or set error_log.path = \"-\" for stderr)",
                    path.display()
                )
            })?;
            let _ = REOPEN.set(file.reopen.clone());
            let (w, g) = tracing_appender::non_blocking(file);
            (w, g, false)
        }
        None => {
            let (w, g) = tracing_appender::non_blocking(io::stderr());
            (w, g, io::IsTerminal::is_terminal(&io::stderr()))
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi)
        .with_writer(writer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the error log: {e}"))?;
    Ok(ErrorLog { _guard: guard })
}

/// Asks the error log to reopen its file by path before its next message (`SIGUSR1`).
/// Nothing happens when it writes to stderr.
pub fn reopen() {
    if let Some(flag) = REOPEN.get() {
        flag.store(true, Ordering::Relaxed);
    }
}

/// A file reopened by its path when asked, from the writer thread itself.
struct ReopenableFile {
    path: PathBuf,
    file: File,
    reopen: Arc<AtomicBool>,
}

impl ReopenableFile {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: append(path)?,
            reopen: Arc::new(AtomicBool::new(false)),
        })
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for ReopenableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.reopen.swap(false, Ordering::Relaxed) {
            match append(&self.path) {
                Ok(f) => self.file = f,
                Err(e) => {
                    // The error log is where this would go; keep writing to the old file.
                    let note = format!(
                        "towergate: cannot reopen the error log {}: {e}; still writing to the file open before\n",
                        self.path.display()
                    );
                    let _ = self.file.write_all(note.as_bytes());
                }
            }
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_levels() {
        let cases = [
            ("emerg", LevelFilter::ERROR),
            ("crit", LevelFilter::ERROR),
            ("error", LevelFilter::ERROR),
            ("warn", LevelFilter::WARN),
            ("notice", LevelFilter::INFO),
            ("info", LevelFilter::INFO),
            ("debug", LevelFilter::DEBUG),
            ("trace8", LevelFilter::TRACE),
            ("Notice", LevelFilter::INFO),
        ];
        for (word, filter) in cases {
            assert_eq!(word.parse::<LogLevel>().unwrap().filter(), filter, "{word}");
        }
        let e = "verbose".parse::<LogLevel>().unwrap_err();
        assert!(
            e.contains("error_log.level `verbose`") && e.contains("notice"),
            "{e}"
        );
        assert!("trace9".parse::<LogLevel>().is_err());
        assert_eq!(LogLevel::default(), LogLevel::Notice);
    }

    #[test]
    fn the_file_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error_log");
        let mut f = ReopenableFile::open(&path).unwrap();
        f.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("error_log.1")).unwrap();
        f.write_all(b"two\n").unwrap();
        f.reopen.store(true, Ordering::Relaxed);
        f.write_all(b"three\n").unwrap();
        let old = std::fs::read_to_string(dir.path().join("error_log.1")).unwrap();
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
