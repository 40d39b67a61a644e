//! `towergate demo`: the article's seven backends on loopback ports and the gateway in
//! front of them, running `examples/seed-cluster.toml`.

use std::net::SocketAddr;
use std::path::Path;

use towergate_testkit::Backend;

use crate::config::Config;

/// The article's config, as shipped.
pub const SEED_CLUSTER: &str = include_str!("../examples/seed-cluster.toml");

/// The article's backend machines, in its order.
pub const BACKENDS: [&str; 7] = [
    "news_server",
    "paid_one",
    "paid_two",
    "free_one",
    "free_two",
    "webserver_one",
    "webserver_two",
];

/// The demo's backends, running.
pub struct DemoBackends {
    /// One per name in [`BACKENDS`], same order.
    pub backends: Vec<Backend>,
}

impl DemoBackends {
    /// Starts the seven echo backends on ephemeral loopback ports.
    pub async fn start() -> std::io::Result<Self> {
        let mut backends = Vec::with_capacity(BACKENDS.len());
        for name in BACKENDS {
            backends.push(Backend::echo(name).await?);
        }
        Ok(Self { backends })
    }

    /// The backend named `name`.
    pub fn get(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name() == name)
    }

    /// The backend named `name`, mutable (to stop or restart it).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Backend> {
        self.backends.iter_mut().find(|b| b.name() == name)
    }

    /// `config_text` with every `http://NAME.domain.lan` replaced by the backend's address.
    pub fn substitute(&self, config_text: &str) -> String {
        let mut text = config_text.to_owned();
        for b in &self.backends {
            text = text.replace(&format!("http://{}.domain.lan", b.name()), &b.url());
        }
        text
    }

    /// The seed-cluster config pointed at these backends and listening on `listen`, with
    /// the access log on stdout and the error log on stderr.
    pub fn config(&self, listen: SocketAddr) -> anyhow::Result<Config> {
        let mut config = Config::from_toml(
            &self.substitute(SEED_CLUSTER),
            Path::new("examples/seed-cluster.toml (demo)"),
        )?;
        config.server.listen = vec![listen];
        // The demo creates no files (the article's logs/ directory): the access log goes
        // to stdout, the error log to stderr.
        if let Some(log) = &mut config.access_log {
            log.0.path = None;
        }
        config.error_log.path = None;
        Ok(config)
    }
}

/// The table printed when the demo starts.
pub fn banner(front: SocketAddr, backends: &DemoBackends) -> String {
    let mut out =
        format!("towergate demo: the article's cluster behind http://{front}\n\nbackends:\n");
    for b in &backends.backends {
        out.push_str(&format!("  {:<14} {}\n", b.name(), b.url()));
    }
    out.push_str("\ntry:\n");
    for (path, what) in [
        ("/", "webserver pair (web_servers)"),
        ("/news_rss/today", "news_server, path kept"),
        ("/news_blog/post/1", "news_server, path kept"),
        (
            "/paid_user/file.bin",
            "paid_servers (paid_one, hot spare paid_two)",
        ),
        (
            "/free_user/file.bin",
            "free_servers (free_one, hot spare free_two)",
        ),
    ] {
        out.push_str(&format!("  curl -si http://{front}{path:<22} # {what}\n"));
    }
    out.push_str("\nCtrl-C stops everything.\n");
    out
}
