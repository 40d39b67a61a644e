//! Load for the drills: paced keep-alive clients that record, per request, when it started
//! and ended, and who answered (or how it failed); and a slowloris attacker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{MissedTickBehavior, timeout};

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with a whole body; the `X-Backend` that answered.
    Ok(String),
    /// A status outside 2xx (the whole answer was read).
    Status(u16),
    /// No whole answer: `connect`, `send` (connection failed before an answer head),
    /// `truncated` (head came, body broke off), `timeout`.
    Failed(&'static str),
}

/// One request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Start, ms since the load began.
    pub start_ms: f64,
    /// End, ms since the load began.
    pub end_ms: f64,
    /// What happened.
    pub outcome: Outcome,
}

/// Paced load: `workers` clients, each on its own keep-alive connection (reopened after a
/// failure), one request every `interval`, for `duration`.
#[derive(Debug, Clone)]
pub struct Load {
    /// Front end.
    pub addr: SocketAddr,
    /// Request path.
    pub path: String,
    /// Concurrent clients.
    pub workers: usize,
    /// Time between a client's requests.
    pub interval: Duration,
    /// How long to run.
    pub duration: Duration,
    /// Longest a request may take.
    pub timeout: Duration,
}

impl Load {
    /// Runs the load; `t0` is the common time origin of the samples.
    pub async fn run(self, t0: Instant) -> Vec<Sample> {
        let mut tasks = Vec::new();
        for _ in 0..self.workers {
            let me = self.clone();
            tasks.push(tokio::spawn(async move { me.worker(t0).await }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        all
    }

    async fn worker(self, t0: Instant) -> Vec<Sample> {
        let end = Instant::now() + self.duration;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut conn: Option<SendRequest<Empty<Bytes>>> = None;
        let mut samples = Vec::new();
        while Instant::now() < end {
            tick.tick().await;
            let start = Instant::now();
            let outcome = match timeout(self.timeout, self.one(&mut conn)).await {
                Ok(o) => o,
                Err(_) => {
                    conn = None;
                    Outcome::Failed("timeout")
                }
            };
            if !matches!(outcome, Outcome::Ok(_) | Outcome::Status(_)) {
                conn = None;
            }
            samples.push(Sample {
                start_ms: (start - t0).as_secs_f64() * 1000.0,
                end_ms: t0.elapsed().as_secs_f64() * 1000.0,
                outcome,
            });
        }
        samples
    }

    async fn one(&self, conn: &mut Option<SendRequest<Empty<Bytes>>>) -> Outcome {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = None;
            let Ok(stream) = TcpStream::connect(self.addr).await else {
                return Outcome::Failed("connect");
            };
            let _ = stream.set_nodelay(true);
            let Ok((send, driver)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return Outcome::Failed("connect");
            };
            tokio::spawn(driver);
            *conn = Some(send);
        }
        let Some(send) = conn.as_mut() else {
            return Outcome::Failed("connect");
        };
        if send.ready().await.is_err() {
            return Outcome::Failed("send");
        }
        let req = http::Request::get(self.path.as_str())
            .header(http::header::HOST, "your_hostname.com")
            .header(http::header::USER_AGENT, "xtask-drill")
            .body(Empty::new())
            .expect("valid request");
        let res = match send.send_request(req).await {
            Ok(r) => r,
            Err(_) => return Outcome::Failed("send"),
        };
        let status = res.status();
        let backend = res
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        match res.into_body().collect().await {
            Ok(_) if status.is_success() => Outcome::Ok(backend),
            Ok(_) => Outcome::Status(status.as_u16()),
            Err(_) => Outcome::Failed("truncated"),
        }
    }
}

/// Counts over samples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Requests made.
    pub total: usize,
    /// Whole 2xx answers.
    pub ok: usize,
    /// Answers by backend.
    pub by_backend: BTreeMap<String, usize>,
    /// Non-2xx answers by status.
    pub by_status: BTreeMap<u16, usize>,
    /// Failures by kind.
    pub failed: BTreeMap<&'static str, usize>,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Longest, ms.
    pub max_ms: f64,
}

impl Counts {
    /// Requests the client saw fail: non-2xx or no whole answer.
    pub fn errors(&self) -> usize {
        self.total - self.ok
    }

    /// "502: 3, truncated: 5" or "none".
    pub fn error_kinds(&self) -> String {
        let mut parts: Vec<String> = self
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        parts.extend(self.failed.iter().map(|(k, n)| format!("{k}: {n}")));
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Counts the samples that started within `[from_ms, to_ms)`.
pub fn count(samples: &[Sample], from_ms: f64, to_ms: f64) -> Counts {
    let mut c = Counts::default();
    let mut lat: Vec<f64> = Vec::new();
    for s in samples
        .iter()
        .filter(|s| s.start_ms >= from_ms && s.start_ms < to_ms)
    {
        c.total += 1;
        lat.push(s.end_ms - s.start_ms);
        match &s.outcome {
            Outcome::Ok(b) => {
                c.ok += 1;
                *c.by_backend.entry(b.clone()).or_default() += 1;
            }
            Outcome::Status(st) => *c.by_status.entry(*st).or_default() += 1,
            Outcome::Failed(k) => *c.failed.entry(k).or_default() += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    c.p50_ms = pct(0.50);
    c.p99_ms = pct(0.99);
    c.max_ms = lat.last().copied().unwrap_or(0.0);
    c
}

/// The time, ms after `from_ms`, from which every request started before `to_ms` was
/// answered whole by `backend`: the start of the first request after the last one that was
/// not. `Some(0)` when all were; `None` when the last request in the window was not.
pub fn settled_on(samples: &[Sample], backend: &str, from_ms: f64, to_ms: f64) -> Option<f64> {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start_ms >= from_ms && s.start_ms < to_ms)
        .collect();
    let good = |s: &Sample| matches!(&s.outcome, Outcome::Ok(b) if b == backend);
    match window.iter().rposition(|s| !good(s)) {
        None => Some(0.0),
        Some(i) if i + 1 == window.len() => None,
        Some(i) => Some(window[i + 1].start_ms - from_ms),
    }
}

/// What a slowloris attack saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowlorisResult {
    /// Connections the attacker opened.
    pub opened: usize,
    /// Connections the front end closed during the attack.
    pub closed_by_front: usize,
    /// Of those, closes that came with an answer (e.g. 408) before the close.
    pub answered: usize,
    /// When the first and the last close came, ms after the attack began.
    pub first_close_ms: Option<f64>,
    /// See `first_close_ms`.
    pub last_close_ms: Option<f64>,
}

/// Opens `conns` connections to `addr`, each sending an unfinished request head and then
/// one more header line every `trickle`, until `duration` has passed.
pub async fn slowloris(
    addr: SocketAddr,
    conns: usize,
    trickle: Duration,
    duration: Duration,
) -> SlowlorisResult {
    let t0 = Instant::now();
    let end = t0 + duration;
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(conns);
    for i in 0..conns {
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(Ok(mut s)) = timeout(Duration::from_secs(3), TcpStream::connect(addr)).await
            else {
                return None;
            };
            if s.write_all(b"GET / HTTP/1.1\r\nHost: your_hostname.com\r\nUser-Agent: slow\r\n")
                .await
                .is_err()
            {
                return None;
            }
            opened.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 1024];
            let mut got_answer = false;
            loop {
                let now = Instant::now();
                if now >= end {
                    return None;
                }
                let wait = trickle.min(end - now);
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return Some((t0.elapsed(), got_answer)),
                        Ok(_) => got_answer = true,
                    },
                    _ = tokio::time::sleep(wait) => {
                        let line = format!("X-Slow-{i}: {}\r\n", t0.elapsed().as_millis());
                        if s.write_all(line.as_bytes()).await.is_err() {
                            return Some((t0.elapsed(), got_answer));
                        }
                    }
                }
            }
        }));
        // Open them in bursts, as an attacker with one machine would.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut r = SlowlorisResult::default();
    for t in tasks {
        if let Ok(Some((at, answered))) = t.await {
            r.closed_by_front += 1;
            r.answered += usize::from(answered);
            let ms = at.as_secs_f64() * 1000.0;
            r.first_close_ms = Some(r.first_close_ms.map_or(ms, |f: f64| f.min(ms)));
            r.last_close_ms = Some(r.last_close_ms.map_or(ms, |l: f64| l.max(ms)));
        }
    }
    r.opened = opened.load(Ordering::Relaxed);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(start: f64, outcome: Outcome) -> Sample {
        Sample {
            start_ms: start,
            end_ms: start + 1.0,
            outcome,
        }
    }

    fn ok(b: &str) -> Outcome {
        Outcome::Ok(b.into())
    }

    #[test]
    fn settling_on_a_backend() {
        let samples = vec![
            s(0.0, ok("one")),
            s(100.0, ok("one")),
            s(110.0, Outcome::Failed("send")),
            s(120.0, ok("two")),
            s(130.0, Outcome::Status(502)),
            s(140.0, ok("two")),
            s(150.0, ok("two")),
            s(200.0, ok("two")),
            s(210.0, ok("one")),
            s(220.0, ok("one")),
        ];
        // From the kill at 105: the last non-"two" starts at 130, settled from 140.
        assert_eq!(settled_on(&samples, "two", 105.0, 200.0), Some(35.0));
        // Back on "one" after the restart at 200: first request went to "two".
        assert_eq!(settled_on(&samples, "one", 200.0, 1e9), Some(10.0));
        // All good from the start.
        assert_eq!(settled_on(&samples, "one", 0.0, 105.0), Some(0.0));
        // Never settled: the window ends on a failure.
        assert_eq!(settled_on(&samples, "two", 105.0, 135.0), None);
    }

    #[test]
    fn counting() {
        let samples = vec![
            s(0.0, ok("one")),
            s(1.0, ok("two")),
            s(2.0, Outcome::Status(504)),
            s(3.0, Outcome::Failed("truncated")),
            s(50.0, ok("one")),
        ];
        let c = count(&samples, 0.0, 10.0);
        assert_eq!((c.total, c.ok, c.errors()), (4, 2, 2));
        assert_eq!(c.by_backend["one"], 1);
        assert_eq!(c.error_kinds(), "504: 1, truncated: 1");
        assert_eq!(c.max_ms, 1.0);
        assert_eq!(count(&samples, 0.0, 100.0).total, 5);
        assert_eq!(count(&[], 0.0, 1.0).error_kinds(), "none");
    }
}
