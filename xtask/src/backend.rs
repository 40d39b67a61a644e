//! Loopback backends, run as a child process (`cargo xtask backend ...`) so they can be killed
//! and restarted like a real machine, and so their CPU is not counted to anyone else.
//!
//! Modes: `ok` answers every path with a small body and `/100k` with 100 KiB, header
//! `X-Backend: NAME`; `hang` accepts and reads but never answers; `reset` answers the head of
//! a 100 KiB response, sends part of the body, then resets the connection (RST).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of the large response.
pub const LARGE: usize = 100 * 1024;

/// What a backend does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Answer: small body, or 100 KiB on `/100k`.
    Ok,
    /// Accept and read, never answer.
    Hang,
    /// Send the head and part of a 100 KiB body, then reset the connection.
    Reset,
}

/// The small body a backend named `name` answers with.
pub fn small_body(name: &str) -> String {
    format!("hello from {name}\n")
}

/// Serves every `(name, addr)` in `mode` until killed, on a runtime of `threads` workers.
pub fn serve(mode: Mode, threads: usize, listen: Vec<(String, SocketAddr)>) -> anyhow::Result<()> {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for (name, addr) in listen {
            let listener = bind(addr).await?;
            tasks.push(tokio::spawn(accept_loop(mode, name, listener)));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

/// Binds with SO_REUSEADDR, retrying briefly: a restarted backend takes its old port back
/// while the previous process's sockets may still be closing.
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut tries = 0;
    loop {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(4096)) {
            Ok(l) => return Ok(l),
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
}

async fn accept_loop(mode: Mode, name: String, listener: TcpListener) {
    let name = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("backend"));
    let small = Bytes::from(small_body(name.to_str().unwrap_or("backend")));
    let large = Bytes::from(vec![b'x'; LARGE]);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (name, small, large) = (name.clone(), small.clone(), large.clone());
        tokio::spawn(async move {
            match mode {
                Mode::Ok => serve_ok(stream, name, small, large).await,
                Mode::Hang => hang(stream).await,
                Mode::Reset => reset(stream, &name).await,
            }
        });
    }
}

async fn serve_ok(stream: TcpStream, name: HeaderValue, small: Bytes, large: Bytes) {
    let svc = service_fn(move |req: Request<Incoming>| {
        let body = if req.uri().path() == "/100k" {
            large.clone()
        } else {
            small.clone()
        };
        let mut res = Response::new(Full::new(body));
        let h = res.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        h.insert("x-backend", name.clone());
        async move { Ok::<_, Infallible>(res) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// Reads and discards until the peer goes away; never answers.
async fn hang(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Reads one request head, sends the head of a 100 KiB answer and 16 KiB of it, then
/// closes with SO_LINGER 0 so the kernel sends RST.
async fn reset(mut stream: TcpStream, name: &HeaderValue) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 && head.len() < 64 * 1024 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {LARGE}\r\nX-Backend: {}\r\n\r\n",
        name.to_str().unwrap_or("backend")
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.write_all(&[b'x'; 16 * 1024]).await;
    let _ = stream.flush().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// `NAME=ADDR` as given on the command line.
pub fn parse_listen(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write NAME=127.0.0.1:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("`{addr}` is not an address: {e}"))?;
    Ok((name.to_owned(), addr))
}
