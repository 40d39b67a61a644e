//! Shared setup for the end-to-end tests: the real gateway, in process, on a loopback
//! port, in front of real loopback backends.
#![allow(dead_code, missing_docs)]

use std::path::Path;

pub use towergate::RunningGateway;
pub use towergate_testkit::{Backend, Client, TestResponse, client};

/// Starts the gateway on `config` (TOML text). `listen` is set to 127.0.0.1:0 when the
/// text has no `[server]` section of its own; use [`server_section`] to write one.
pub async fn start_gateway(toml: &str) -> RunningGateway {
    let text = if toml.contains("[server]") {
        toml.to_owned()
    } else {
        format!("{}\n{toml}", server_section(""))
    };
    let config = towergate::Config::from_toml(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
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
