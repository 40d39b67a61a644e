//! Apache 2.4 with the event MPM as a competent operator runs it in front of the article's
//! cluster: mod_proxy_balancer with `status=+H` hot spares, pooled backend connections,
//! unlimited keep-alive requests, a combined access log.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::{NEWS_PREFIXES, POOLS, Topology, Tuning, p, secs};

/// Where Debian keeps Apache's modules.
const MODULES: &str = "/usr/lib/apache2/modules";

/// The Apache config for a front on `127.0.0.1:port`, with its files under `dir`.
pub fn config(dir: &Path, port: u16, topo: &Topology, t: &Tuning, as_root: bool) -> String {
    let mut c = String::new();
    let user = if as_root {
        "User www-data\nGroup www-data\n"
    } else {
        ""
    };
    let _ = writeln!(c, "# The article's cluster in Apache 2.4 (event MPM).");
    for m in [
        "mpm_event",
        "authz_core",
        "slotmem_shm",
        "proxy",
        "proxy_http",
        "proxy_balancer",
        "lbmethod_byrequests",
    ] {
        let _ = writeln!(c, "LoadModule {m}_module {MODULES}/mod_{m}.so");
    }
    let _ = write!(
        c,
        "{user}ServerName your_hostname.com
Listen 127.0.0.1:{port}
PidFile {pid}
DefaultRuntimeDir {dir}
ErrorLog {err}
LogLevel warn
LogFormat \"%h %l %u %t \\\"%r\\\" %>s %b \\\"%{{Referer}}i\\\" \\\"%{{User-Agent}}i\\\"\" combined
CustomLog {access} combined
Timeout {to}
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 65
ServerTokens Prod

# Threads for every connection of the largest load, all ready from the start
# (no spawning during a run): 8 x 64 threads.
StartServers 8
ServerLimit 8
ThreadLimit 64
ThreadsPerChild 64
MaxRequestWorkers 512
MinSpareThreads 64
MaxSpareThreads 512
MaxConnectionsPerChild 0

ProxyRequests Off
ProxyPreserveHost On
",
        pid = p(&dir.join("apache.pid")),
        dir = p(dir),
        err = p(&dir.join("apache_error.log")),
        access = p(&dir.join("apache_access.log")),
        to = secs(t.timeout),
    );
    let news = topo.addr("news_server");
    for prefix in NEWS_PREFIXES {
        let _ = writeln!(
            c,
            "ProxyPass {prefix} http://{news}{prefix} timeout={} retry={}",
            secs(t.timeout),
            secs(t.retry)
        );
        let _ = writeln!(c, "ProxyPassReverse {prefix} http://{news}{prefix}");
    }
    for pool in &POOLS {
        let _ = writeln!(c, "<Proxy balancer://{}>", pool.name);
        for (i, (m, standby)) in pool.members.iter().enumerate() {
            let status = if *standby { " status=+H" } else { "" };
            let route = if pool.members.iter().any(|(_, s)| *s) {
                let (me, other) = if i == 0 {
                    ("a", " redirect=b")
                } else {
                    ("b", "")
                };
                format!(" route={me}{}", if *standby { "" } else { other })
            } else {
                String::new()
            };
            let _ = writeln!(
                c,
                "    BalancerMember http://{}{}{route}{status} retry={}",
                topo.addr(m),
                pool.path,
                secs(t.retry)
            );
        }
        let _ = writeln!(c, "</Proxy>");
    }
    // Longest prefix first: Apache takes the first ProxyPass that matches.
    for pool in &POOLS {
        let target = if pool.prefix == "/" { "/" } else { "" };
        let _ = writeln!(
            c,
            "ProxyPass {} balancer://{}{target}\nProxyPassReverse {} balancer://{}{target}",
            pool.prefix, pool.name, pool.prefix, pool.name
        );
    }
    c
}

/// The command that runs Apache in the foreground with `conf`.
pub fn command(bin: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("-f").arg(conf).arg("-DFOREGROUND");
    cmd
}
