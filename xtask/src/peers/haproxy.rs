//! HAProxy as a competent operator runs it in front of the article's cluster: two threads,
//! server connection reuse, `backup` servers (with health checks, which backups need), an
//! HTTP log.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::{NEWS_PREFIXES, POOLS, Topology, Tuning, secs};

/// The HAProxy config for a front on `127.0.0.1:port`.
pub fn config(port: u16, topo: &Topology, t: &Tuning) -> String {
    let ci = t.check_interval.as_millis().max(100);
    let mut c = String::new();
    let _ = write!(
        c,
        "# The article's cluster in HAProxy.
global
    nbthread 2
    maxconn {maxconn}
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option forwardfor
    option redispatch
    retries 3
    http-reuse always
    timeout connect 5s
    timeout client 180s
    timeout server {to}s
    timeout http-request {hto}s
    timeout http-keep-alive 65s
    default-server inter {ci}ms fall 2 rise 2

frontend web_proxy
    bind 127.0.0.1:{port}
    acl news path_beg {rss} {blog}
    acl paid path /paid_user
    acl paid path_beg /paid_user/
    acl free path /free_user
    acl free path_beg /free_user/
    use_backend news_server if news
    use_backend paid_servers if paid
    use_backend free_servers if free
    default_backend web_servers

backend news_server
    server news_server {news}
",
        maxconn = maxconn(),
        to = secs(t.timeout),
        hto = secs(t.header_timeout),
        rss = NEWS_PREFIXES[0],
        blog = NEWS_PREFIXES[1],
        news = topo.addr("news_server"),
    );
    for pool in &POOLS {
        let _ = write!(
            c,
            "\nbackend {}\n    balance roundrobin\n    option httpchk GET /\n",
            pool.name
        );
        for (m, standby) in pool.members {
            let backup = if *standby { " backup" } else { "" };
            let _ = writeln!(c, "    server {m} {} check{backup}", topo.addr(m));
        }
    }
    c
}

/// A `maxconn` HAProxy can have under this process's open-file limit (it needs two
/// descriptors per connection and refuses to start otherwise).
fn maxconn() -> u64 {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(4096);
    (hard.saturating_sub(200) / 2).clamp(256, 50_000)
}

/// The command that runs HAProxy in the foreground in master-worker mode (SIGUSR2 to the
/// master reloads).
pub fn command(bin: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["-W", "-db", "-f"]).arg(conf);
    cmd
}
