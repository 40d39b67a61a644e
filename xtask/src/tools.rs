//! The external programs the bench and drills drive, found on PATH (or in /usr/sbin), and
//! installed from Debian's packages when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// A program and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// Program name.
    pub program: &'static str,
    /// Debian package.
    pub package: &'static str,
}

/// wrk, the HTTP/1.1 load generator.
pub const WRK: Tool = Tool {
    program: "wrk",
    package: "wrk",
};
/// h2load, the HTTP/2 load generator.
pub const H2LOAD: Tool = Tool {
    program: "h2load",
    package: "nghttp2-client",
};
/// nginx.
pub const NGINX: Tool = Tool {
    program: "nginx",
    package: "nginx",
};
/// HAProxy.
pub const HAPROXY: Tool = Tool {
    program: "haproxy",
    package: "haproxy",
};
/// Apache httpd as Debian names it.
pub const APACHE: Tool = Tool {
    program: "apache2",
    package: "apache2",
};

/// Finds `program` on PATH or in the sbin directories (not on a normal user's PATH).
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether this process runs as root (real uid 0, from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Makes sure every tool is installed: as root, with one `apt-get update` and one
/// `apt-get install -y`; otherwise fails with the exact command to run.
pub fn ensure(tools: &[Tool]) -> anyhow::Result<()> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| find(t.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    let command = format!(
        "apt-get update && apt-get install -y {}",
        packages.join(" ")
    );
    if !is_root() {
        bail!(
            "missing programs: {}. Install them with:\n\n    sudo sh -c '{command}'\n",
            missing
                .iter()
                .map(|t| t.program)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!("installing {}: {command}", packages.join(" "));
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get (is this a Debian-like system?)")?;
        if !status.success() {
            bail!(
                "`apt-get {}` failed ({status}); run `{command}` by hand",
                args.join(" ")
            );
        }
        Ok(())
    };
    run(&["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&packages);
    run(&args)?;
    for t in &missing {
        if find(t.program).is_none() {
            bail!(
                "{} is still missing after installing {}",
                t.program,
                t.package
            );
        }
    }
    Ok(())
}

/// Path of a tool that [`ensure`] checked.
pub fn path(t: Tool) -> anyhow::Result<PathBuf> {
    find(t.program).with_context(|| format!("{} not found (package {})", t.program, t.package))
}

/// The machine: `nproc`, CPU model, kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory, MiB.
    pub mem_mib: u64,
    /// 1, 5 and 15 minute load averages when the run began (other work on the machine).
    pub load_average: String,
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Describes this machine.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| crate::procfs::parse_status_kib(&m, "MemTotal"))
        .unwrap_or(0)
        / 1024;
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel,
        mem_mib,
        load_average: load_average(),
    }
}

/// A program's version line, for the report.
pub fn version(t: Tool) -> String {
    let arg = match t.program {
        "nginx" | "apache2" => "-v",
        "haproxy" => "-v",
        "h2load" => "--version",
        _ => "--version",
    };
    let Ok(bin) = path(t) else {
        return "missing".into();
    };
    let out = Command::new(bin).arg(arg).output();
    out.map(|o| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        text.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned()
    })
    .unwrap_or_default()
}
