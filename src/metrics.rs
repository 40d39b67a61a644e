//! Prometheus metrics: one recorder per gateway (no process-global state, so several
//! gateways in one process count apart), handles registered when the stack is built and
//! recorded lock-free on the request path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use towergate_proxy::ForwardErrorKind;

/// Latency buckets in seconds, from a cache hit to the article's 180 s timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    180.0,
];

/// The gateway's metrics registry, kept across reloads.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    routes: Mutex<HashMap<String, Arc<RouteMetrics>>>,
}

/// Handles for one route.
#[derive(Debug)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
    upstream_errors: [Counter; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        Self {
            recorder,
            handle,
            routes: Mutex::default(),
        }
    }

    /// Drains the latency samples recorded since the last scrape into the histograms,
    /// every `every`: without it they pile up (8 bytes a request) until somebody scrapes
    /// `/metrics`, which nobody may ever do.
    pub async fn upkeep(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.handle.run_upkeep();
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        let key = Key::from_parts(name, labels);
        self.recorder.register_counter(&key, &metadata())
    }

    /// The handles for route `name`, registered once.
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(name.to_owned())
            .or_insert_with(|| {
                let route = || Label::new("route", name.to_owned());
                let by_class = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
                    self.counter(
                        "towergate_requests_total",
                        vec![route(), Label::new("status", class)],
                    )
                });
                let upstream_errors =
                    ["connect", "timeout", "upstream", "request_body"].map(|kind| {
                        self.counter(
                            "towergate_upstream_errors_total",
                            vec![route(), Label::new("kind", kind)],
                        )
                    });
                let latency = self.recorder.register_histogram(
                    &Key::from_parts("towergate_request_duration_seconds", vec![route()]),
                    &metadata(),
                );
                Arc::new(RouteMetrics {
                    by_class,
                    latency,
                    upstream_errors,
                })
            })
            .clone()
    }

    /// A counter with free-form labels, for layers' own counts (registered at build time).
    pub fn labelled_counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, String)],
    ) -> Counter {
        self.counter(
            name,
            labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect(),
        )
    }

    /// Sets a gauge now (for values read from snapshots at scrape time).
    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        let key = Key::from_parts(
            name,
            labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect::<Vec<_>>(),
        );
        self.recorder.register_gauge(&key, &metadata()).set(value);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn metadata() -> metrics::Metadata<'static> {
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, None)
}

impl RouteMetrics {
    /// Records one answer.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].increment(1);
        self.latency.record(elapsed.as_secs_f64());
    }

    /// Records a forwarding failure.
    pub fn upstream_error(&self, kind: ForwardErrorKind) {
        let i = match kind {
            ForwardErrorKind::Connect => 0,
            ForwardErrorKind::Timeout => 1,
            ForwardErrorKind::RequestBody => 3,
            _ => 2,
        };
        self.upstream_errors[i].increment(1);
    }
}
