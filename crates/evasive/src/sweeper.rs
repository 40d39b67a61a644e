//! [`Sweeper`]: the layer's background work (table sweeps, block reports).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::layer::{Address, Shared, TARGET, now};
use crate::store::{Reason, Store};

/// Commands (`DOSSystemCommand`) running at once; a block that finds them all busy is
/// logged and counted as a dropped report instead.
const MAX_COMMANDS: usize = 4;
/// How long a command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A block to report outside the request path.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) client: IpNet,
    pub(crate) reason: Reason,
    pub(crate) since: SystemTime,
    pub(crate) until: SystemTime,
}

/// The layer's background work: sweeps idle clients out of the table (and trims what
/// expired) every `max(page_interval, site_interval)` (at least 1 s, at most 60 s), and
/// delivers block reports: the `dos-<address>` file in `log_dir` and the `command`.
///
/// Returned by [`EvasiveBuilder::build`](crate::EvasiveBuilder::build) for the caller to
/// spawn (`tokio::spawn(sweeper.run())`); [`run`](Self::run) ends once every clone of the
/// layer and its services is gone. Without it the table still never exceeds
/// `max_tracked` (full shards forget their least recently seen clients), but idle clients
/// stay until then and block reports are dropped (counted in
/// [`EvasiveStats::reports_dropped`](crate::EvasiveStats::reports_dropped)).
pub struct Sweeper {
    shared: Weak<Shared>,
    store: Arc<dyn Store>,
    every: Duration,
    reports: mpsc::Receiver<Report>,
    log_dir: Option<PathBuf>,
    command: Option<String>,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("every", &self.every)
            .field("log_dir", &self.log_dir)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

impl Sweeper {
    pub(crate) fn new(
        shared: Weak<Shared>,
        store: Arc<dyn Store>,
        every: Duration,
        reports: mpsc::Receiver<Report>,
        log_dir: Option<PathBuf>,
        command: Option<String>,
    ) -> Self {
        Self {
            shared,
            store,
            every,
            reports,
            log_dir,
            command,
        }
    }

    /// How often the table is swept.
    pub fn period(&self) -> Duration {
        self.every
    }

    /// Sweeps the table once now; returns how many clients were forgotten.
    pub fn sweep_now(&self) -> usize {
        self.store.sweep(now())
    }

    /// Runs until the layer is dropped.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut commands = JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.shared.strong_count() == 0 {
                        break;
                    }
                    let forgotten = self.sweep_now();
                    tracing::trace!(target: TARGET, forgotten, tracked = self.store.tracked(), "table swept");
                }
                report = self.reports.recv() => match report {
                    Some(report) => self.deliver(report, &mut commands).await,
                    // Every sender, held by the layer, is gone.
                    None => break,
                },
                Some(_) = commands.join_next(), if !commands.is_empty() => {}
            }
        }
        tracing::debug!(target: TARGET, "layer dropped: sweeper stops");
    }

    async fn deliver(&self, report: Report, commands: &mut JoinSet<()>) {
        let address = Address(report.client).to_string();
        if let Some(dir) = &self.log_dir {
            write_log(dir, &address, &report).await;
        }
        if let Some(command) = &self.command {
            if commands.len() >= MAX_COMMANDS {
                tracing::warn!(target: TARGET, client = %address, "block command not run: {MAX_COMMANDS} still running");
                if let Some(shared) = self.shared.upgrade() {
                    shared.reports_dropped.fetch_add(1, Relaxed);
                }
                return;
            }
            let line = command.replace("%s", &address);
            commands.spawn(run_command(line));
        }
    }
}

/// `dos-<address>` (an IPv6 network's `/` written `_`), as mod_evasive names it.
pub(crate) fn log_file_name(address: &str) -> String {
    format!("dos-{}", address.replace('/', "_"))
}

async fn write_log(dir: &Path, address: &str, report: &Report) {
    let path = dir.join(log_file_name(address));
    let text = format!(
        "{address} blocked: over the {} limit since {}, until {} or later while it keeps sending\n",
        report.reason,
        humantime::format_rfc3339_seconds(report.since),
        humantime::format_rfc3339_seconds(report.until),
    );
    if let Err(e) = tokio::fs::write(&path, text).await {
        tracing::warn!(target: TARGET, path = %path.display(), error = %e, "cannot write the block log file");
    }
}

async fn run_command(line: String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(target: TARGET, command = %line, error = %e, "cannot start the block command");
            return;
        }
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::debug!(target: TARGET, command = %line, "block command ran");
        }
        Ok(Ok(status)) => {
            tracing::warn!(target: TARGET, command = %line, %status, "block command failed");
        }
        Ok(Err(e)) => {
            tracing::warn!(target: TARGET, command = %line, error = %e, "block command failed");
        }
        Err(_) => {
            let _ = child.kill().await;
            tracing::warn!(target: TARGET, command = %line, "block command killed after 30s");
        }
    }
}
