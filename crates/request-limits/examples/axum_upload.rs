//! An axum upload endpoint behind the article's request limits, served on a loopback port.
//!
//!     cargo run -p towergate-request-limits --example axum_upload
//!
//! Then, in another shell:
//!
//!     curl -i --data-binary @small.txt http://127.0.0.1:3000/upload     # 200
//!     head -c 200000 /dev/zero | curl -i --data-binary @- http://127.0.0.1:3000/upload          # 413
//!     head -c 200000 /dev/zero | curl -i -H 'Transfer-Encoding: chunked' --data-binary @- http://127.0.0.1:3000/upload  # 413
//!     curl -i "http://127.0.0.1:3000/upload?$(head -c 1200 /dev/zero | tr '\0' q)"        # 414

use axum::{Router, routing::post};
use towergate_request_limits::RequestLimitsConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // LimitRequestBody 102400, LimitRequestFields 40, LimitRequestFieldsize 1000, LimitRequestLine 1000
    let limits = RequestLimitsConfig {
        body: 102400,
        fields: 40,
        field_size: 1000,
        line: 1000,
    };
    let app = Router::new()
        .route(
            "/upload",
            post(|body: axum::body::Bytes| async move { format!("stored {} bytes\n", body.len()) }),
        )
        .layer(limits.build()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
