//! What the bench and drills read from `/proc`: CPU time, peak memory, open descriptors and
//! TCP connections of a front end's processes, found by process group.

use std::fs;
use std::sync::OnceLock;

/// The fields of `/proc/PID/stat` the bench uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Process id.
    pub pid: u32,
    /// Command name (without the parentheses).
    pub comm: String,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// User-mode CPU time, in clock ticks.
    pub utime: u64,
    /// Kernel-mode CPU time, in clock ticks.
    pub stime: u64,
    /// User time of waited-for children, in clock ticks.
    pub cutime: u64,
    /// Kernel time of waited-for children, in clock ticks.
    pub cstime: u64,
}

impl Stat {
    /// CPU ticks of the process and its reaped children.
    pub fn ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }
}

/// Parses one `/proc/PID/stat` line. The command name may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let comm = line.get(open + 1..close)?.to_owned();
    // Fields after the name, numbered as in proc(5): 3 state, 4 ppid, 5 pgrp, ...
    let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(Stat {
        pid,
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        pgrp: u32::try_from(field(5)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// A `kB` value from `/proc/PID/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The stat of one process, if it still exists.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every live process in process group `pgid`.
pub fn group(pgid: u32) -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|s| s.pgrp == pgid)
        .collect()
}

/// CPU seconds used so far by the processes of group `pgid` (and their reaped children).
pub fn group_cpu_seconds(pgid: u32) -> f64 {
    let ticks: u64 = group(pgid).iter().map(Stat::ticks).sum();
    ticks as f64 / clk_tck() as f64
}

/// Sum of a `/proc/PID/status` value over the group, in KiB.
pub fn group_status_kib(pgid: u32, key: &str) -> u64 {
    group(pgid)
        .iter()
        .filter_map(|s| fs::read_to_string(format!("/proc/{}/status", s.pid)).ok())
        .filter_map(|st| parse_status_kib(&st, key))
        .sum()
}

/// Peak resident memory (`VmHWM`) summed over the group, in KiB.
pub fn group_peak_rss_kib(pgid: u32) -> u64 {
    group_status_kib(pgid, "VmHWM")
}

/// Open file descriptors summed over the group.
pub fn group_fds(pgid: u32) -> usize {
    group(pgid)
        .iter()
        .filter_map(|s| fs::read_dir(format!("/proc/{}/fd", s.pid)).ok())
        .map(|d| d.count())
        .sum()
}

/// TCP states in `/proc/net/tcp`.
const ESTABLISHED: u8 = 0x01;

/// Counts sockets in `/proc/net/tcp`-format text whose local port is `port` and whose state
/// is ESTABLISHED: the server side of connections accepted on that port.
pub fn count_established(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut cols = l.split_whitespace();
            let local = cols.nth(1);
            let state = cols.nth(1);
            let local_port = local
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let state = state.and_then(|s| u8::from_str_radix(s, 16).ok());
            local_port == Some(port) && state == Some(ESTABLISHED)
        })
        .count()
}

/// Established connections accepted on `port` (IPv4 and IPv6 tables).
pub fn established_on(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|t| count_established(&t, port))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        let line = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 1052 0 0 0 \
                    1234 567 89 10 20 0 1 0 123456 12345678 300 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "nginx: worker (x)");
        assert_eq!(s.ppid, 4241);
        assert_eq!(s.pgrp, 4241);
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (1234, 567, 89, 10));
        assert_eq!(s.ticks(), 1900);
    }

    #[test]
    fn stat_rejects_truncated_lines() {
        assert_eq!(parse_stat("12 (x) S 1 12"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let me = stat(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(group(me.pgrp).iter().any(|s| s.pid == me.pid));
        assert!(clk_tck() > 0);
    }

    #[test]
    fn status_values() {
        let status =
            "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    8148 kB\nVmRSS:\t    7000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(8148));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(7000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn established_sockets_by_local_port() {
        // Port 0x1F90 = 8080. Rows: listener (0A), two established accepted sockets, one
        // client-side socket whose remote port is 8080, one in TIME_WAIT (06).
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
   2: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n\
   3: 0100007F:C352 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n\
   4: 0100007F:1F90 0100007F:C353 06 00000000:00000000 00:00000000 00000000     0        0 5 1\n";
        assert_eq!(count_established(table, 8080), 2);
        assert_eq!(count_established(table, 50002), 1);
        assert_eq!(count_established(table, 80), 0);
    }
}
