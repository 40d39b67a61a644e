//! A running gateway: listeners bound, stack built, background work spawned.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::server::{ServerOptions, serve};
use crate::stack;

/// A gateway serving its config; dropping it stops it without waiting.
pub struct RunningGateway {
    addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    servers: JoinSet<()>,
    background: JoinSet<()>,
}

impl RunningGateway {
    /// Binds every listener, builds the stack and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let stack::Stack {
            service,
            background: background_work,
        } = stack::build(&config)?;
        let mut listeners = Vec::new();
        for addr in &config.server.listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            listeners.push(listener);
        }
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let (stop, stopped) = watch::channel(false);
        let opts = ServerOptions {
            header_read_timeout: config.server.header_read_timeout,
            grace_period: config.server.grace_period,
        };
        let mut servers = JoinSet::new();
        for listener in listeners {
            servers.spawn(serve(
                listener,
                service.clone(),
                opts.clone(),
                stopped.clone(),
            ));
        }
        let mut background = JoinSet::new();
        for work in background_work {
            background.spawn(work);
        }
        for addr in &addrs {
            tracing::info!(%addr, "listening");
        }
        Ok(Self {
            addrs,
            stop,
            servers,
            background,
        })
    }

    /// The bound listen addresses, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Stops accepting, lets requests in flight finish (within the grace period), and
    /// stops the background work.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.servers.join_next().await.is_some() {}
        self.background.abort_all();
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await?;
        tracing::info!("shutting down");
        self.shutdown().await;
        Ok(())
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.servers.abort_all();
        self.background.abort_all();
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
