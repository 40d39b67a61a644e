//! Every process the xtask starts runs in its own process group and is owned by a [`Proc`]
//! guard: dropping the guard stops the whole group (SIGTERM, then SIGKILL), and Ctrl-C or
//! SIGTERM to the xtask stops every group still registered before exiting.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Process groups started and not yet stopped.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A started process, leader of its own process group.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Proc {
    /// Starts `cmd` in a new process group with stdin closed and stdout/stderr appended to
    /// `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // Register under the lock so a Ctrl-C between spawn and push cannot miss the group.
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        live.push(child.id());
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            stopped: false,
        })
    }

    /// The leader's process id, which is also the group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file holding the process's output.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Sends `signal` (e.g. `"HUP"`) to the leader only.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        send(signal, &self.pid().to_string())
    }

    /// Whether the leader has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `addr` accepts connections, failing early (with the log's tail) if the
    /// process exits.
    pub fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if self.exited() {
                bail!(
                    "{} exited before listening on {addr}:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} is not listening on {addr} after {timeout:?}:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the leader to exit by itself, up to `timeout`, and returns its exit status;
    /// `None` if it did not exit in time (the group is killed then).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stop();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        None
    }

    /// Kills the whole group at once (SIGKILL), like a crash, and reaps the leader.
    pub fn kill(&mut self) {
        let _ = send("KILL", &format!("-{}", self.pid()));
        let _ = self.child.wait();
        self.forget();
    }

    /// Stops the group: SIGTERM, up to two seconds to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let group = format!("-{}", self.pid());
        let _ = send("TERM", &group);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if self.exited() && crate::procfs::group(self.pid()).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = send("KILL", &group);
        let _ = self.child.wait();
        self.forget();
    }

    fn forget(&mut self) {
        self.stopped = true;
        let pid = self.pid();
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a signal with kill(1): `target` is a pid, or `-PGID` for a whole group.
fn send(signal: &str, target: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill(1)")?;
    if !status.success() {
        bail!("kill -s {signal} {target} failed");
    }
    Ok(())
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Stops every registered group when the xtask gets SIGINT or SIGTERM, then exits 130.
pub fn install_cleanup_on_signal() {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        let groups = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
        eprintln!(
            "\ninterrupted: stopping {} started process group(s)",
            groups.len()
        );
        for g in &groups {
            let _ = send("TERM", &format!("-{g}"));
        }
        std::thread::sleep(Duration::from_millis(300));
        for g in &groups {
            let _ = send("KILL", &format!("-{g}"));
        }
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_stops_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        // A shell that starts a child in its group and waits: both must go.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & sleep 60; wait"]);
        let p = Proc::spawn("sleepers", &mut cmd, &dir.path().join("log")).unwrap();
        let pgid = p.pid();
        std::thread::sleep(Duration::from_millis(200));
        assert!(crate::procfs::group(pgid).len() >= 2);
        drop(p);
        assert!(crate::procfs::group(pgid).is_empty());
        assert!(!LIVE.lock().unwrap().contains(&pgid));
    }

    #[test]
    fn wait_listening_reports_an_early_exit_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo cannot bind; exit 3"]);
        let mut p = Proc::spawn("failing", &mut cmd, &dir.path().join("log")).unwrap();
        let err = p
            .wait_listening("127.0.0.1:1".parse().unwrap(), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("failing exited"), "{err}");
        assert!(err.contains("cannot bind"), "{err}");
    }
}
