//! The article's cluster as each front end spells it: towergate's TOML, nginx, HAProxy and
//! Apache configs, generated for loopback backends, and how each front end is started.

pub mod apache;
pub mod haproxy;
pub mod nginx;
pub mod towergate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The article's seven machines, in the order of its diagram.
pub const NAMES: [&str; 7] = [
    "news_server",
    "paid_one",
    "paid_two",
    "free_one",
    "free_two",
    "webserver_one",
    "webserver_two",
];

/// Where each of the article's machines listens on loopback.
#[derive(Debug, Clone)]
pub struct Topology {
    addrs: Vec<(String, SocketAddr)>,
}

impl Topology {
    /// A topology from `(name, addr)` pairs; every name in [`NAMES`] must be present.
    pub fn new(addrs: Vec<(String, SocketAddr)>) -> Self {
        for n in NAMES {
            assert!(addrs.iter().any(|(a, _)| a == n), "no address for {n}");
        }
        Self { addrs }
    }

    /// The address of machine `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no machine {name}"))
    }
}

/// One pool of the article: members in order, the hot standby flagged.
pub struct PoolSpec {
    /// Pool name (Apache's balancer name).
    pub name: &'static str,
    /// Front prefix.
    pub prefix: &'static str,
    /// Path on the members (the member URL's path).
    pub path: &'static str,
    /// `(machine, standby)`.
    pub members: &'static [(&'static str, bool)],
}

/// The article's three balancer pools.
pub const POOLS: [PoolSpec; 3] = [
    PoolSpec {
        name: "paid_servers",
        prefix: "/paid_user",
        path: "/paid_user",
        members: &[("paid_one", false), ("paid_two", true)],
    },
    PoolSpec {
        name: "free_servers",
        prefix: "/free_user",
        path: "/free_user",
        members: &[("free_one", false), ("free_two", true)],
    },
    PoolSpec {
        name: "web_servers",
        prefix: "/",
        path: "",
        members: &[("webserver_one", false), ("webserver_two", false)],
    },
];

/// The article's two single-origin routes, both on news_server.
pub const NEWS_PREFIXES: [&str; 2] = ["/news_rss/", "/news_blog/"];

/// Settings that differ between the bench (the article's values) and the drills (short
/// timeouts so faults show within seconds). Every front end gets the same values.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Time for an upstream's response headers (Apache `Timeout`).
    pub timeout: Duration,
    /// How long a failed member is left alone before it is tried again.
    pub retry: Duration,
    /// Active health-check interval, where a front end needs checks to fail over.
    pub check_interval: Duration,
    /// Time a client has to send its request head.
    pub header_timeout: Duration,
}

impl Tuning {
    /// The article's values (and the front ends' usual ones where the article has none).
    pub fn article() -> Self {
        Self {
            timeout: Duration::from_secs(180),
            retry: Duration::from_secs(10),
            check_interval: Duration::from_secs(2),
            header_timeout: Duration::from_secs(30),
        }
    }

    /// Short timeouts for fault drills.
    pub fn drill() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            retry: Duration::from_secs(2),
            check_interval: Duration::from_secs(1),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Whole seconds, at least one.
pub fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// A path as a string for a config file.
pub fn p(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    //! The generated configs are checked by the programs themselves (`nginx -t`,
    //! `haproxy -c`, `apache2 -t`) where they are installed.

    use std::process::Command;

    use super::*;

    fn topo() -> Topology {
        Topology::new(
            NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), ([127, 0, 0, 1], 20_001 + i as u16).into()))
                .collect(),
        )
    }

    fn accepted(tool: crate::tools::Tool, cmd: &mut Command) {
        if crate::tools::find(tool.program).is_none() {
            eprintln!("{} is not installed; config not checked", tool.program);
            return;
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{} rejects the config:\n{}{}",
            tool.program,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn nginx_config_has_the_article_and_passes_nginx_t() {
        let dir = tempfile::tempdir().unwrap();
        let text = nginx::config(dir.path(), 8080, &topo(), &Tuning::article(), false);
        assert!(text.contains("server 127.0.0.1:20003 max_fails=1 fail_timeout=10s backup;"));
        assert!(text.contains("location /paid_user { proxy_pass http://paid_servers; }"));
        assert!(text.contains("keepalive 64;"));
        assert!(text.contains("combined;"));
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, &text).unwrap();
        if let Ok(bin) = crate::tools::path(crate::tools::NGINX) {
            let mut cmd = nginx::command(&bin, dir.path(), &conf).unwrap();
            accepted(crate::tools::NGINX, cmd.arg("-t"));
        }
    }

    #[test]
    fn haproxy_config_has_the_article_and_passes_haproxy_c() {
        let dir = tempfile::tempdir().unwrap();
        let text = haproxy::config(8080, &topo(), &Tuning::drill());
        assert!(text.contains("server paid_two 127.0.0.1:20003 check backup"));
        assert!(text.contains("timeout server 2s"));
        assert!(text.contains("http-reuse always"));
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(&conf, &text).unwrap();
        if let Ok(bin) = crate::tools::path(crate::tools::HAPROXY) {
            accepted(
                crate::tools::HAPROXY,
                Command::new(bin).arg("-c").arg("-f").arg(&conf),
            );
        }
    }

    #[test]
    fn apache_config_has_the_article_and_passes_apache2_t() {
        let dir = tempfile::tempdir().unwrap();
        let text = apache::config(dir.path(), 8080, &topo(), &Tuning::article(), false);
        assert!(
            text.contains("BalancerMember http://127.0.0.1:20002/paid_user route=a redirect=b")
        );
        assert!(text.contains("BalancerMember http://127.0.0.1:20003/paid_user route=b status=+H"));
        // `/` must come last: Apache takes the first ProxyPass that matches.
        let root = text.find("ProxyPass / balancer://web_servers/").unwrap();
        assert!(text.find("ProxyPass /paid_user").unwrap() < root);
        let conf = dir.path().join("httpd.conf");
        std::fs::write(&conf, &text).unwrap();
        if let Ok(bin) = crate::tools::path(crate::tools::APACHE) {
            accepted(
                crate::tools::APACHE,
                Command::new(bin).arg("-t").arg("-f").arg(&conf),
            );
        }
    }
}
