//! `towergate demo`: the article's seven backends on loopback ports and the gateway in
//! front of them, running `examples/seed-cluster.toml`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
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
        whitelist_localhost(&mut config);
        Ok(config)
    }

    /// The config file at `path` pointed at these backends and listening on `listen`
    /// (its `[tls]` listeners as written; file names relative to the file, as always).
    pub fn config_file(&self, path: &Path, listen: SocketAddr) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut config = Config::from_toml(&self.substitute(&text), path)?;
        config.server.listen = vec![listen];
        whitelist_localhost(&mut config);
        Ok(config)
    }
}

/// The flood blocker never counts 127.0.0.1 in the demo, so the printed curl commands keep
/// working; other loopback addresses (`curl --interface 127.0.0.2`) meet its limits.
fn whitelist_localhost(config: &mut Config) {
    if let Some(evasive) = &mut config.evasive {
        evasive.whitelist.push("127.0.0.1".to_owned());
    }
}

/// The demo's control endpoint: stop and start backends to watch failover and fall-back.
///
/// - `GET /` lists the backends and whether they run;
/// - `POST /stop/NAME` stops one (its listener and connections close, as in a crash);
/// - `POST /start/NAME` starts it again on the same port.
pub async fn serve_control(listener: TcpListener, backends: Arc<Mutex<DemoBackends>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let backends = backends.clone();
                async move { Ok::<_, Infallible>(control(req, &backends).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn control(req: Request<Incoming>, backends: &Mutex<DemoBackends>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    };
    let parts: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut backends = backends.lock().await;
    match (req.method(), parts.as_slice()) {
        (&Method::GET, []) => text(StatusCode::OK, backends.listing()),
        (&Method::POST, [verb @ ("stop" | "start"), name]) => {
            let Some(backend) = backends.get_mut(name) else {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("no backend `{name}`; backends: {}\n", BACKENDS.join(", ")),
                );
            };
            if *verb == "stop" {
                backend.stop();
                tracing::info!(backend = %name, "demo: backend stopped");
                text(StatusCode::OK, format!("{name} stopped\n"))
            } else if backend.is_running() {
                text(StatusCode::OK, format!("{name} is running\n"))
            } else {
                match backend.restart().await {
                    Ok(()) => {
                        tracing::info!(backend = %name, "demo: backend started");
                        text(StatusCode::OK, format!("{name} started\n"))
                    }
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("{name} could not listen again: {e}\n"),
                    ),
                }
            }
        }
        (_, ["stop" | "start", _]) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST, e.g. curl -X POST .../stop/paid_one\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "GET / lists the backends; POST /stop/NAME and POST /start/NAME stop and start one\n"
                .into(),
        ),
    }
}

impl DemoBackends {
    /// One line per backend: name, address, running or stopped.
    pub fn listing(&self) -> String {
        self.backends
            .iter()
            .map(|b| {
                format!(
                    "{:<14} {:<24} {}\n",
                    b.name(),
                    b.url(),
                    if b.is_running() { "running" } else { "stopped" }
                )
            })
            .collect()
    }
}

/// How to try TLS, printed under the banner; with the TLS listeners when there are some.
pub fn tls_hint(tls: &[SocketAddr]) -> String {
    match tls.first() {
        Some(addr) => format!(
            "TLS on {addr} (HTTP/2 by ALPN):\n  curl -si --cacert examples/tls/localhost.pem https://localhost:{port}/news_rss/today\n",
            port = addr.port()
        ),
        None => "TLS with a self-signed certificate (HTTP/2 by ALPN; plain HTTP/2 works already:\n`curl --http2-prior-knowledge`):\n  towergate gen-cert --cert examples/tls/localhost.pem --key examples/tls/localhost-key.pem localhost\n  towergate demo --config examples/tls.toml\n".to_owned(),
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
    out.push_str(&format!(
        "\nflood blocking (mod_evasive, the article's limits; 127.0.0.1 is whitelisted here):\n\
         \x20 for i in 1 2 3; do curl -s -o /dev/null -w '%{{http_code}}\\n' --interface 127.0.0.2 http://{front}/; done\n\
         \x20   # 200 200 403: the third request for one page within a second; 127.0.0.2 then\n\
         \x20   # stays blocked until it has been quiet for 30 s\n"
    ));
    out.push_str("\nCtrl-C stops everything.\n");
    out
}

/// How to use the control endpoint, printed after the banner.
pub fn control_help(control: SocketAddr) -> String {
    format!(
        "stop and start backends to watch failover and fall-back:\n\
         \x20 curl -s http://{control}/                         # backends, running or stopped\n\
         \x20 curl -s -X POST http://{control}/stop/paid_one    # paid_two takes over, no client error\n\
         \x20 curl -s -X POST http://{control}/start/paid_one   # traffic back on paid_one within 5 s\n\
         \x20 curl -s -X POST http://{control}/stop/webserver_two  # all of / goes to webserver_one\n\
         the pools' state: the admin page, when [admin] is on; state changes are logged.\n"
    )
}
