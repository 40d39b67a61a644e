//! The layer in front of a plain axum app served on a loopback port: requests written byte for
//! byte over a socket, as clients send them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::{Router, body::Bytes, routing::post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use towergate_request_limits::RequestLimitsLayer;

async fn serve(layer: RequestLimitsLayer) -> (SocketAddr, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let app = Router::new()
        .route(
            "/upload",
            post(move |body: Bytes| {
                count.fetch_add(1, Ordering::SeqCst);
                async move { format!("stored {}\n", body.len()) }
            }),
        )
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, handled)
}

/// Writes `request` and reads the answer until the server closes or goes quiet.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn chunked(sizes: &[usize]) -> Vec<u8> {
    let mut out = b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for &n in sizes {
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test]
async fn chunked_uploads_are_counted_over_a_real_connection() {
    let layer = RequestLimitsLayer::new().body(10_000);
    let (addr, handled) = serve(layer.clone()).await;

    let answer = exchange(addr, &chunked(&[4000, 4000, 2000])).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(answer.ends_with("stored 10000\n"), "{answer}");

    let answer = exchange(addr, &chunked(&[4000, 4000, 2001])).await;
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(answer.ends_with("413 Content Too Large\n"), "{answer}");
    assert_eq!(layer.stats().body_streamed, 1);
    // The second upload never reached the handler: extracting its body failed.
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn declared_lengths_lines_and_fields_over_a_real_connection() {
    let layer = RequestLimitsLayer::new()
        .body(10_000)
        .fields(5)
        .field_size(100)
        .line(100);
    let (addr, handled) = serve(layer.clone()).await;

    let answer = exchange(
        addr,
        b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 10001\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 413, "{answer}");

    let target = format!("/upload?{}", "q".repeat(100));
    let answer = exchange(
        addr,
        format!(
            "POST {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), 414, "{answer}");

    let answer = exchange(addr, b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(status(&answer), 431, "{answer}");

    let answer = exchange(addr, format!("POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX: {}\r\nContent-Length: 0\r\n\r\n", "v".repeat(98)).as_bytes()).await;
    assert_eq!(status(&answer), 431, "{answer}");

    assert_eq!(handled.load(Ordering::SeqCst), 0);
    let stats = layer.stats();
    assert_eq!(
        (
            stats.body_declared,
            stats.line,
            stats.fields,
            stats.field_size
        ),
        (1, 1, 1, 1)
    );
}
