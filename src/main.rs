//! The `towergate` command: run, check, demo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use towergate::demo::{DemoBackends, banner, control_help, serve_control, tls_hint};
use towergate::error_log::{self, ErrorLogConfig};
use towergate::{Config, RunningGateway};

/// A web-cluster front end: reverse proxy, balancer and guards as tower layers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a config file.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "towergate.toml")]
        config: PathBuf,
    },
    /// Check a config file and exit (like `apachectl -t`).
    Check {
        /// The config file.
        #[arg(short, long, default_value = "towergate.toml")]
        config: PathBuf,
    },
    /// Reload a running gateway: SIGHUP to the process in the config's `server.pid_file`
    /// (like `apachectl -k graceful`).
    Reload {
        /// The config file.
        #[arg(short, long, default_value = "towergate.toml")]
        config: PathBuf,
    },
    /// List the compiled-in layers in request order (like `apachectl -M`); with a config,
    /// which of them it turns on.
    Layers {
        /// A config file to show the stack of.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Translate an Apache httpd.conf into towergate TOML; lists what it could not translate.
    ImportApache {
        /// The httpd.conf to read.
        httpd_conf: PathBuf,
        /// Write the TOML here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run the article's cluster: seven demo backends and the gateway in front.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the control endpoint listens (stop and start demo backends).
        #[arg(long, default_value = "127.0.0.1:8081")]
        control: SocketAddr,
        /// Run this config instead of the article's (its `*.domain.lan` backends are the
        /// demo's), e.g. examples/tls.toml.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Write a self-signed certificate and its key (PEM), to try TLS out.
    GenCert {
        /// Host names the certificate is valid for.
        #[arg(default_value = "localhost")]
        names: Vec<String>,
        /// Where the certificate goes.
        #[arg(long, default_value = "localhost.pem")]
        cert: PathBuf,
        /// Where the private key goes.
        #[arg(long, default_value = "localhost-key.pem")]
        key: PathBuf,
    },
}

/// Exit code for a configuration error (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    towergate::malloc::tune();
    let cli = Cli::parse();
    // `run` logs where its config's [error_log] says, once the config is read; the
    // other commands log to stderr.
    let _error_log = match &cli.command {
        Command::Run { .. } => None,
        _ => error_log::init(&ErrorLogConfig::default()).ok(),
    };
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Reload { config } => exit(reload(&config)),
        Command::Layers { config } => match config.as_deref().map(Config::load).transpose() {
            Ok(config) => {
                print!("{}", towergate::layers::describe(config.as_ref()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::ImportApache { httpd_conf, output } => {
            exit(import_apache(&httpd_conf, output.as_deref()))
        }
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let _error_log = match error_log::init(&config.error_log) {
                Ok(log) => log,
                Err(e) => {
                    eprintln!("towergate: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let _pid_file = match config
                .server
                .pid_file
                .as_deref()
                .map(PidFile::create)
                .transpose()
            {
                Ok(p) => p,
                Err(e) => return exit(Err(e)),
            };
            exit(runtime().block_on(async {
                let gateway = RunningGateway::start(config).await?.with_config_path(path);
                gateway.run_until_signal().await
            }))
        }
        Command::Demo {
            listen,
            control,
            config,
        } => exit(runtime().block_on(async {
            let backends = DemoBackends::start().await?;
            let config = match config {
                Some(path) => backends.config_file(&path, listen)?,
                None => backends.config(listen)?,
            };
            let gateway = RunningGateway::start(config).await?;
            let control_listener = tokio::net::TcpListener::bind(control)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {control} (--control): {e}"))?;
            let control = control_listener.local_addr()?;
            println!("{}", banner(gateway.addr(), &backends));
            println!("{}", control_help(control));
            println!("{}", tls_hint(gateway.tls_addrs()));
            let backends = std::sync::Arc::new(tokio::sync::Mutex::new(backends));
            tokio::spawn(serve_control(control_listener, backends));
            gateway.run_until_signal().await
        })),
        Command::GenCert { names, cert, key } => exit(gen_cert(&names, &cert, &key)),
    }
}

/// The process id, written at start and removed at exit.
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &Path) -> anyhow::Result<Self> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
        Ok(Self(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn reload(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let pid_file = config.server.pid_file.context(
        "server.pid_file is not set in the config, so the running gateway cannot be found",
    )?;
    let pid = std::fs::read_to_string(&pid_file).with_context(|| {
        format!(
            "cannot read {}: is the gateway running?",
            pid_file.display()
        )
    })?;
    let pid: u32 = pid
        .trim()
        .parse()
        .with_context(|| format!("{} holds no process id", pid_file.display()))?;
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "could not signal process {pid}");
    println!("sent SIGHUP to towergate (pid {pid}): it reloads, or logs why not and keeps serving");
    Ok(())
}

fn import_apache(httpd_conf: &Path, output: Option<&Path>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(httpd_conf)
        .with_context(|| format!("cannot read {}", httpd_conf.display()))?;
    let imported = towergate::import_apache::import(&text);
    match output {
        Some(path) => std::fs::write(path, &imported.toml)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{}", imported.toml),
    }
    if !imported.untranslated.is_empty() {
        eprintln!("{} directives not translated:", imported.untranslated.len());
        for (line, what, why) in &imported.untranslated {
            eprintln!("  {}:{line}: {what}  ({why})", httpd_conf.display());
        }
    }
    Ok(())
}

fn gen_cert(names: &[String], cert: &Path, key: &Path) -> anyhow::Result<()> {
    for path in [cert, key] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists; remove it or name another file",
            path.display()
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let (cert_pem, key_pem) = towergate::tls::self_signed(names)?;
    std::fs::write(cert, cert_pem).with_context(|| format!("cannot write {}", cert.display()))?;
    write_private(key, &key_pem).with_context(|| format!("cannot write {}", key.display()))?;
    println!(
        "wrote {} and {} (self-signed, for {}); clients must be told to trust it, e.g. curl --cacert {}",
        cert.display(),
        key.display(),
        names.join(", "),
        cert.display()
    );
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(text.as_bytes())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("towergate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
