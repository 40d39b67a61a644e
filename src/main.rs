//! The `towergate` command: run, check, demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use towergate::demo::{DemoBackends, banner};
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
    /// Run the article's cluster: seven demo backends and the gateway in front.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

/// Exit code for a configuration error (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            exit(runtime().block_on(async {
                let gateway = RunningGateway::start(config).await?;
                gateway.run_until_signal().await
            }))
        }
        Command::Demo { listen } => exit(runtime().block_on(async {
            let backends = DemoBackends::start().await?;
            let gateway = RunningGateway::start(backends.config(listen)?).await?;
            println!("{}", banner(gateway.addr(), &backends));
            gateway.run_until_signal().await
        })),
    }
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .init();
}
