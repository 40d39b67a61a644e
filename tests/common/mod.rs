//! Shared setup for the end-to-end tests: the real gateway, in process, on a loopback
//! port, in front of real loopback backends.
#![allow(dead_code, missing_docs)]

use std::path::Path;

pub use towergate::RunningGateway;
#[allow(unused_imports)]
pub use towergate_testkit::{Backend, Client};

/// Runs the `towergate` binary with `args` (a subcommand and its options) and waits for it.
pub fn towergate_command<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_towergate"))
        .args(args)
        .output()
        .unwrap()
}

/// `towergate SUBCOMMAND -c CONFIG`, asserting it succeeded (its stderr otherwise).
pub fn towergate_ok(subcommand: &str, config: &Path) {
    let out = towergate_command([subcommand.as_ref(), "-c".as_ref(), config.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the gateway on `config` (TOML text). `listen` is set to 127.0.0.1:0 when the
/// text has no `[server]` section of its own; use [`server_section`] to write one.
pub async fn start_gateway(toml: &str) -> RunningGateway {
    init_logs();
    let text = if toml.contains("[server]") {
        toml.to_owned()
    } else {
        format!("{}\n{toml}", server_section(""))
    };
    let config = towergate::Config::from_toml(&text, Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    RunningGateway::start(config).await.expect("gateway starts")
}

/// A `[server]` section listening on an ephemeral loopback port, with `extra` keys.
pub fn server_section(extra: &str) -> String {
    format!("[server]\nlisten = [\"127.0.0.1:0\"]\nnames = [\"front.test\"]\n{extra}\n")
}

/// A `[[route]]` to a single origin.
pub fn route(prefix: &str, upstream: &str) -> String {
    format!("[[route]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n")
}

/// The gateway with one route, `/` to `origin`, followed by the config `sections`; and
/// a keep-alive client for it.
pub async fn in_front_of(origin: &Backend, sections: &[&str]) -> (RunningGateway, Client) {
    let mut config = route("/", &origin.url());
    for section in sections {
        config.push_str(section);
        config.push('\n');
    }
    let gw = start_gateway(&config).await;
    let client = Client::new(gw.addr());
    (gw, client)
}

/// The error for a config of a `[server]` section, a route to a closed port and then
/// `sections`, read as `t.toml` (`sections` start on line 9).
pub fn config_error(sections: &str) -> String {
    let text = format!(
        "{}{}{sections}",
        server_section(""),
        route("/", "http://127.0.0.1:1/")
    );
    towergate::Config::from_toml(&text, Path::new("t.toml"))
        .map(|_| ())
        .expect_err("the config is refused")
        .to_string()
}

/// Logs to the test's output, filtered by `RUST_LOG` (nothing by default).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// The `towergate` binary running a config, as an operator would run it.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub config: tempfile::NamedTempFile,
}

impl GatewayProcess {
    /// Runs `towergate run -c FILE` on `toml`, whose `[server]` section this adds (with a
    /// free loopback port), and waits until the port accepts connections.
    pub async fn start(toml: &str, server_extra: &str) -> GatewayProcess {
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        Self::start_with_rust_log(toml, server_extra, Some(&rust_log)).await
    }

    /// [`start`](Self::start) with `RUST_LOG` set to `rust_log`, or unset (so that the
    /// config's `[error_log]` level applies) for `None`.
    pub async fn start_with_rust_log(
        toml: &str,
        server_extra: &str,
        rust_log: Option<&str>,
    ) -> GatewayProcess {
        use std::io::Write;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        write!(
            config,
            "[server]\nlisten = [\"{addr}\"]\nnames = [\"front.test\"]\n{server_extra}\n{toml}"
        )
        .unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_towergate"));
        command.arg("run").arg("-c").arg(config.path());
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command.spawn().expect("towergate starts");
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "towergate did not listen on {addr}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        GatewayProcess {
            child,
            addr,
            config,
        }
    }

    /// The process's peak resident set size in bytes (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:") * 1024
    }

    /// The process's resident set size in bytes (VmRSS).
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:") * 1024
    }

    /// Sends a signal to the process (e.g. `"TERM"`, `"HUP"`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
