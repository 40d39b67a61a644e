//! Loopback backends and plain HTTP clients for towergate's demo and end-to-end tests.
//!
//! Everything here talks real HTTP over real sockets on `127.0.0.0/8`: an [`Backend`]
//! echoes what it received (the demo's backends are these), and the clients in
//! [`client`] send requests the way an outside client would, including raw bytes for
//! malformed input and a chosen source address for per-client behaviour.

pub mod backend;
pub mod client;

pub use backend::{Backend, BackendStats, Framing, Handler, RawHandler};
pub use client::{Client, TestResponse};
