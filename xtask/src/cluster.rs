//! Starting the pieces of a run: the towergate release build, loopback backends, and each
//! front end with its generated config, every one under a [`Proc`] guard.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::backend::Mode;
use crate::guard::Proc;
use crate::peers::{self, Topology, Tuning};
use crate::tools;

/// Which program a front end is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// towergate.
    Towergate,
    /// nginx.
    Nginx,
    /// HAProxy.
    Haproxy,
    /// Apache httpd.
    Apache,
    /// No front end: the load goes straight to one backend.
    Direct,
}

/// A running front end.
pub struct Front {
    /// Label in tables.
    pub label: String,
    /// Which program.
    pub kind: Kind,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process group (for Direct: the backends').
    pub pgid: u32,
    /// The process; `None` for Direct.
    pub proc: Option<Proc>,
}

impl Front {
    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// The release binaries a run needs.
pub struct Binaries {
    /// The gateway (default features plus `redis`, which links no C library).
    pub towergate: PathBuf,
    /// The gateway built with `waf` too, when libmodsecurity and the CRS are installed. A
    /// binary of its own: linking libmodsecurity (and libstdc++, libxml2, curl, Lua, ...)
    /// adds about 10 MiB of resident memory to every process, WAF on or not.
    pub towergate_waf: Option<PathBuf>,
    /// This xtask, optimised, for the backends (`cargo xtask` itself runs a debug build).
    pub xtask: PathBuf,
}

/// True when libmodsecurity 3 (Debian `libmodsecurity-dev`) and the OWASP CRS (Debian
/// `modsecurity-crs`) are installed: the bench then builds the `waf` feature too and adds
/// a row with the CRS on.
pub fn waf_available() -> bool {
    Command::new("pkg-config")
        .args(["--exists", "modsecurity"])
        .status()
        .is_ok_and(|s| s.success())
        && std::path::Path::new("/usr/share/modsecurity-crs/rules").is_dir()
        && std::path::Path::new("/etc/modsecurity/crs/crs-setup.conf").is_file()
}

/// Builds towergate and the xtask in release and returns the binaries' paths.
pub fn build() -> anyhow::Result<Binaries> {
    let release = target_dir()?.join("release");
    // The WAF build first, kept under its own name; then the one every other row runs.
    let towergate_waf = if waf_available() {
        cargo_build_release("towergate/redis,towergate/waf")?;
        let waf = release.join("towergate-waf");
        std::fs::copy(release.join("towergate"), &waf)
            .with_context(|| format!("cannot copy the WAF build to {}", waf.display()))?;
        Some(waf)
    } else {
        None
    };
    // With `redis`: the bench's Redis row needs it; without `[cluster]` the feature
    // changes nothing on the request path.
    cargo_build_release("towergate/redis")?;
    let bins = Binaries {
        towergate: release.join("towergate"),
        towergate_waf,
        xtask: release.join("xtask"),
    };
    for b in [&bins.towergate, &bins.xtask] {
        if !b.exists() {
            bail!("{} is missing after the build", b.display());
        }
    }
    Ok(bins)
}

fn cargo_build_release(features: &str) -> anyhow::Result<()> {
    eprintln!("building (cargo build --release --features {features} -p towergate -p xtask) ...");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "--features",
            features,
            "-p",
            "towergate",
            "-p",
            "xtask",
        ])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release --features {features} -p towergate -p xtask failed");
    }
    Ok(())
}

/// `count` free loopback ports.
pub fn ports(count: usize) -> anyhow::Result<Vec<u16>> {
    // Hold them all while choosing so none is chosen twice.
    let held: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Starts one backend process serving every `(name, port)` in `mode`.
pub fn start_backends(
    exe: &Path,
    dir: &Path,
    label: &str,
    mode: Mode,
    threads: usize,
    listen: &[(String, u16)],
) -> anyhow::Result<(Proc, Vec<(String, SocketAddr)>)> {
    let mut cmd = Command::new(exe);
    let mode_arg = match mode {
        Mode::Ok => "ok",
        Mode::Hang => "hang",
        Mode::Reset => "reset",
    };
    cmd.args([
        "backend",
        "--mode",
        mode_arg,
        "--threads",
        &threads.to_string(),
    ]);
    let mut addrs = Vec::new();
    for (name, port) in listen {
        let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
        cmd.arg("--listen").arg(format!("{name}={addr}"));
        addrs.push((name.clone(), addr));
    }
    let mut proc = Proc::spawn(label, &mut cmd, &dir.join(format!("{label}.log")))?;
    for (_, addr) in &addrs {
        proc.wait_listening(*addr, Duration::from_secs(10))?;
    }
    Ok((proc, addrs))
}

/// Starts a front end of `kind` with `conf_text` (towergate) or a generated config (peers).
pub fn start_front(
    kind: Kind,
    label: &str,
    dir: &Path,
    port: u16,
    topo: &Topology,
    tuning: &Tuning,
    towergate: Option<(&Path, &str)>,
) -> anyhow::Result<Front> {
    let as_root = tools::is_root();
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let log = dir.join(format!("{slug}.log"));
    let (mut cmd, _conf) = match kind {
        Kind::Towergate => {
            let (bin, text) = towergate.context("towergate needs its binary and config")?;
            let conf = dir.join(format!("{slug}.toml"));
            std::fs::write(&conf, text)?;
            (peers::towergate::command(bin, &conf), conf)
        }
        Kind::Nginx => {
            let conf = dir.join(format!("{slug}.conf"));
            std::fs::write(
                &conf,
                peers::nginx::config(dir, port, topo, tuning, as_root),
            )?;
            (
                peers::nginx::command(&tools::path(tools::NGINX)?, dir, &conf)?,
                conf,
            )
        }
        Kind::Haproxy => {
            let conf = dir.join(format!("{slug}.cfg"));
            std::fs::write(&conf, peers::haproxy::config(port, topo, tuning))?;
            (
                peers::haproxy::command(&tools::path(tools::HAPROXY)?, &conf),
                conf,
            )
        }
        Kind::Apache => {
            let conf = dir.join(format!("{slug}.conf"));
            std::fs::write(
                &conf,
                peers::apache::config(dir, port, topo, tuning, as_root),
            )?;
            (
                peers::apache::command(&tools::path(tools::APACHE)?, &conf),
                conf,
            )
        }
        Kind::Direct => bail!("a direct front has no process"),
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut proc = Proc::spawn(label, &mut cmd, &log)?;
    proc.wait_listening(addr, Duration::from_secs(15))?;
    Ok(Front {
        label: label.to_owned(),
        kind,
        addr,
        pgid: proc.pid(),
        proc: Some(proc),
    })
}

/// A scratch directory for configs and logs, readable by the unprivileged workers of
/// nginx and Apache.
pub fn scratch_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    Ok(dir)
}
