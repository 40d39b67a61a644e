//! towergate: a web-cluster front end built from composable tower layers.
//!
//! This crate is the gateway: it reads one TOML file ([`config`]), stacks the layer crates
//! in request order ([`stack`]), routes and forwards ([`dispatch`]) and serves
//! ([`server`], [`gateway`]). `towergate demo` ([`demo`]) runs the article's cluster on
//! loopback.

pub mod admin;
pub mod carry;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod error_log;
pub mod gateway;
pub mod import_apache;
pub mod layers;
pub mod malloc;
pub mod metrics;
pub mod server;
pub mod stack;
pub mod status;
pub mod tls;
pub mod waf;
pub mod workers;

pub use config::{Config, ConfigError};
pub use gateway::RunningGateway;
