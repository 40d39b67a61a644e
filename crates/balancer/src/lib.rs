//! Load balancing for towergate: what Apache's `mod_proxy_balancer` does with
//! `balancer://` pools and `BalancerMember`s, as one tower layer.
//!
//! A [`Pool`] holds members (a URL, a weight, optionally a route, a redirect, hot standby
//! or disabled). The [`BalancerLayer`] picks a member for each request, records it as the
//! request's [`Target`](towergate_proxy::Target), and lets the inner forwarder
//! ([`towergate_proxy::Forward`]) send it. It watches the outcome:
//!
//! - **Selection.** `byrequests` is Apache's weighted algorithm (smooth weighted round
//!   robin: 3:1 weights give `a a b a`, equal weights alternate exactly). `bybusyness`
//!   picks the member with the fewest requests in flight, ties by `byrequests`; a request
//!   counts until its response body is sent, an upgraded connection (WebSocket) for as
//!   long as it is open, so a drained member's count also says when it is idle. Picking
//!   reads a published plan and takes one atomic increment: no lock on the hot path.
//! - **Hot standby** (`status=+H`): standbys take traffic only while no primary is usable,
//!   and give it back as soon as one is.
//! - **Passive health.** A connect error, a timeout, a response body the member cuts
//!   short (its connection reset or closed before the body's `Content-Length` or last
//!   chunk), or a status listed in `failonstatus` puts the member in error for its retry
//!   time (default 60 s, Apache `retry`). Then one request tries it again; if that
//!   succeeds the member is back. A body cut short reaches the client as one: its
//!   connection is closed before the body's framing is complete.
//! - **Active health checks** (optional, mod_proxy_hcheck): a background task
//!   ([`Pool::health_checks`]) checks every member each interval; `fall` failures take a
//!   member out, `rise` passes bring it back at once, retry time or not. `https://`
//!   members are checked over TLS, verified as forwarding verifies them
//!   ([`Pool::health_checks_with_tls`]).
//! - **Transparent failover.** A request whose connection to a member could not be made
//!   goes to the next usable member; the client never sees the failure. A request that
//!   reached a member and failed there (timeout, broken connection, `failonstatus`) is sent
//!   on only when its method is listed in `retry_methods` (default GET, HEAD, OPTIONS) and
//!   its body is empty; each member is tried at most once per request.
//! - **Sticky routes** (`stickysession`, `route`, `redirect`): a cookie or path/query
//!   parameter whose value ends in `.a` sends the request to the member with `route = "a"`,
//!   and while that member is down, to the member named by its `redirect`.
//! - **Observability.** [`Pool::snapshot`] reports each member's intent, health,
//!   requests in flight, counters and last error; every state change (member down, member
//!   back, standby engaged, standby released) is a `tracing` event with target
//!   `towergate_balancer`.
//!
//! What an operator wants of a member ([`Intent`]: active, drained, disabled) is kept apart
//! from what the balancer observes of it, so a recovery never undoes a drain.
//!
//! # Differences from Apache
//!
//! - Apache counts weights and busyness per child process; here one pool is shared by
//!   every connection of the process, so the split is exact.
//! - After its retry time, an Apache worker takes all requests again at once; here one
//!   request tries it while the others keep going elsewhere, so a member that is still
//!   down costs one failed connect per retry time, which the client does not see.
//! - As in Apache (whose `maxattempts` defaults to one less than the members), a failed
//!   connection goes on to the next member within the same request. Apache never resends
//!   a request that reached a member; here idempotent requests with empty bodies are
//!   (configurable).
//! - A `failonstatus` answer is passed to the client in Apache; here the request goes to
//!   another member when it may be resent, and the answer is passed on only when not.
//! - Sticky sessions: the sticky value's route is what follows its first `.`, as in
//!   Apache; path parameters and query parameters are read before the cookie, as in
//!   Apache. `BALANCER_ROUTE_CHANGED` and the other environment variables are not set.
//! - Members are `http://` or `https://` URLs; a pool holds at most 64 members, weights
//!   run from 1 to 100. `lbset`, `bytraffic`, `heartbeat` and the balancer-manager page
//!   are not provided (the snapshot feeds towergate's own status page).
//!
//! # Example
//!
//! The balancer on its own in a plain axum app, in front of
//! [`towergate_proxy::Forward`], with two backends:
//!
//! ```
//! use axum::{Router, body::Body, error_handling::HandleErrorLayer, routing::get};
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use towergate_balancer::{BalancerLayer, MemberConfig, Pool, PoolConfig, ReplayBody};
//! use towergate_proxy::{Forward, ForwardConfig, ForwardError, ProxyBody, UpstreamBody};
//! # use http_body_util::BodyExt;
//!
//! # async fn backend(name: &'static str) -> String {
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #     let addr = listener.local_addr().unwrap();
//! #     tokio::spawn(async move {
//! #         axum::serve(listener, Router::new().route("/", get(move || async move { name }))).await
//! #     });
//! #     format!("http://{addr}")
//! # }
//! # async fn demo() {
//! // Two backends: any HTTP servers (here two tiny axum apps on loopback ports).
//! let (one, two) = (backend("one").await, backend("two").await);
//!
//! let pool = Pool::from_config(
//!     "web_servers",
//!     &PoolConfig::new([MemberConfig::new(one), MemberConfig::new(two)]),
//! )
//! .unwrap();
//!
//! let balanced = ServiceBuilder::new()
//!     // Forwarding errors become 502/504 answers in one place.
//!     .layer(HandleErrorLayer::new(|e: ForwardError| async move { e.to_response::<ProxyBody>() }))
//!     .layer(BalancerLayer::new(pool.clone()))
//!     .map_response(|res: Response<UpstreamBody>| res.map(ProxyBody::upstream))
//!     .service(Forward::<ReplayBody<Body>>::new(ForwardConfig::default()));
//! let app = Router::new().fallback_service(balanced);
//!
//! // Equal weights alternate exactly.
//! let mut answers = Vec::new();
//! for _ in 0..4 {
//!     let res = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
//!     assert_eq!(res.status(), StatusCode::OK);
//!     answers.push(res.into_body().collect().await.unwrap().to_bytes());
//! }
//! assert_eq!(answers, ["one", "two", "one", "two"]);
//! assert_eq!(pool.snapshot().members[0].requests, 2);
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```
//!
//! A pool with a hot standby, sticky routes, a short retry time and health checks, as the
//! gateway builds it from `[pool.NAME]` in its config file:
//!
//! ```
//! use std::time::Duration;
//! use towergate_balancer::{HealthCheckConfig, MemberConfig, Pool, PoolConfig};
//!
//! let config: PoolConfig = toml::from_str(r#"
//!     members = [
//!       { url = "http://paid_one.domain.lan/paid_user", route = "a", redirect = "b" },
//!       { url = "http://paid_two.domain.lan/paid_user", route = "b", standby = true },
//!     ]
//!     stickysession = "ROUTEID"
//!     retry = "10s"
//!     failonstatus = [503]
//!     health_check = { interval = "5s", path = "/health", expect = "200-399", rise = 2, fall = 2 }
//! "#).unwrap();
//! let pool = Pool::from_config("paid_servers", &config).unwrap();
//!
//! // The same in code.
//! let same = PoolConfig::new([
//!     MemberConfig::new("http://paid_one.domain.lan/paid_user").route("a").redirect("b"),
//!     MemberConfig::new("http://paid_two.domain.lan/paid_user").route("b").standby(),
//! ])
//! .stickysession("ROUTEID")
//! .retry(Duration::from_secs(10))
//! .failonstatus([503])
//! .health_check(HealthCheckConfig::every(Duration::from_secs(5)).path("/health").rise_fall(2, 2));
//! assert!(Pool::from_config("paid_servers", &same).is_ok());
//!
//! // Sticky route b goes to the standby that has it; plain requests to the primary.
//! assert_eq!(pool.pick_route("b").unwrap().url(), "http://paid_two.domain.lan/paid_user");
//! assert_eq!(pool.pick().unwrap().url(), "http://paid_one.domain.lan/paid_user");
//!
//! // Health checks run in a task of the caller's: spawn it (it ends with the pool).
//! let checks = pool.health_checks().expect("configured");
//! # drop(checks);
//!
//! // A bad value is an error naming the key.
//! let bad = PoolConfig::new([MemberConfig::new("http://a.lan").weight(0)]);
//! assert_eq!(
//!     Pool::from_config("web", &bad).unwrap_err().to_string(),
//!     "pool.web.members[0].weight: 0 is out of range; a weight (lbfactor) runs from 1 to 100",
//! );
//! ```

mod body;
mod config;
mod future;
mod health_check;
mod layer;
mod pool;
mod selection;
mod snapshot;
mod sticky;

pub use body::ReplayBody;
pub use config::{
    HealthCheckConfig, LbMethod, MAX_MEMBERS, MAX_WEIGHT, MemberConfig, PoolConfig, PoolConfigError,
};
pub use future::ResponseFuture;
pub use health_check::HealthChecks;
pub use layer::{Balancer, BalancerLayer};
pub use pool::{Intent, Member, Pool};
pub use snapshot::{MemberHealth, MemberSnapshot, PoolSnapshot, Tier};
