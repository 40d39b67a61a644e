//! What reading the header adds to a connection: over one loopback connection, the
//! balancer's side writes a header and one byte, the gateway's side reads the header with
//! `read_header` (a `peek` and a `read`, then parsing) and the byte; `baseline` writes and
//! reads the byte alone. The difference is the per-connection cost (requests on the
//! connection afterwards cost nothing more).
//!
//! `cargo bench -p towergate-proxy-protocol --bench header -- --measurement-time 3`

#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use towergate_proxy_protocol::read_header;

fn v2() -> Vec<u8> {
    let client: SocketAddr = "203.0.113.7:50000".parse().unwrap();
    let server: SocketAddr = "10.0.0.1:443".parse().unwrap();
    let mut h = ppp::v2::Builder::with_addresses(0x21, ppp::v2::Protocol::Stream, (client, server))
        .build()
        .unwrap();
    h.push(b'x');
    h
}

fn pair(rt: &Runtime) -> (TcpStream, TcpStream) {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.set_nodelay(true).unwrap();
        (client, server)
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("per_connection");
    for (name, bytes) in [
        ("baseline", b"x".to_vec()),
        (
            "v1",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 50000 443\r\nx".to_vec(),
        ),
        ("v2", v2()),
    ] {
        let (mut client, mut server) = pair(&rt);
        let with_header = name != "baseline";
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        client.write_all(&bytes).await.unwrap();
                        if with_header {
                            read_header(&mut server).await.unwrap();
                        }
                        let mut byte = [0u8];
                        server.read_exact(&mut byte).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
