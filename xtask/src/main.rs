//! `cargo xtask`: project chores for towergate.
//!
//! - `cargo xtask bench`: towergate against nginx, HAProxy and Apache on loopback, same load,
//!   interleaved rounds; a table of throughput, latency, errors, CPU and memory.
//! - `cargo xtask drill`: fault drills under load (a dead primary, a hanging member, a
//!   member that resets, slowloris, reloads), against towergate, nginx and HAProxy.

mod backend;
mod bench;
mod client;
mod cluster;
mod drill;
mod guard;
mod http1;
mod loadgen;
mod peers;
mod procfs;
mod report;
mod tools;

use clap::{Parser, Subcommand};

/// Project chores for towergate.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark towergate against nginx, HAProxy and Apache on loopback.
    Bench(bench::Args),
    /// Fault drills under load against towergate, nginx and HAProxy.
    Drill(drill::Args),
    /// Loopback backends (used by bench and drill; runs until killed).
    #[command(hide = true)]
    Backend {
        /// What the backends do.
        #[arg(long, value_enum, default_value = "ok")]
        mode: backend::Mode,
        /// Runtime worker threads (1: a current-thread runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// NAME=ADDR, once per backend.
        #[arg(long, value_parser = backend::parse_listen, required = true)]
        listen: Vec<(String, std::net::SocketAddr)>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Bench(args) => {
            guard::install_cleanup_on_signal();
            bench::run(args)
        }
        Cmd::Drill(args) => {
            guard::install_cleanup_on_signal();
            drill::run(args)
        }
        Cmd::Backend {
            mode,
            threads,
            listen,
        } => backend::serve(mode, threads, listen),
    }
}
