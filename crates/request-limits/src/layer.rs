//! The layer: the limits in force and the counters they share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tower_layer::Layer;

use crate::{RequestLimits, RequestLimitsConfig};

/// Applies request line, header field and body limits; see the crate docs.
///
/// Cheap to clone: the limits are four numbers and the counters are shared.
#[derive(Debug, Clone)]
pub struct RequestLimitsLayer {
    pub(crate) config: RequestLimitsConfig,
    pub(crate) stats: Arc<Stats>,
}

// === impl RequestLimitsLayer ===

impl RequestLimitsLayer {
    /// Apache's default limits (see [`RequestLimitsConfig`]); change them with the builder
    /// methods.
    pub fn new() -> Self {
        Self::from_config(RequestLimitsConfig::default())
    }

    /// The layer for `config`, as it is. [`RequestLimitsConfig::build`] checks it first.
    pub fn from_config(config: RequestLimitsConfig) -> Self {
        Self {
            config,
            stats: Arc::default(),
        }
    }

    /// Largest request body in bytes (`LimitRequestBody`); `0` for no limit.
    pub fn body(mut self, bytes: u64) -> Self {
        self.config.body = bytes;
        self
    }

    /// Most header fields (`LimitRequestFields`); `0` for no limit.
    pub fn fields(mut self, count: usize) -> Self {
        self.config.fields = count;
        self
    }

    /// Largest header field, `name: value`, in bytes (`LimitRequestFieldSize`); `0` for no
    /// limit.
    pub fn field_size(mut self, bytes: usize) -> Self {
        self.config.field_size = bytes;
        self
    }

    /// Longest request line in bytes (`LimitRequestLine`); `0` for no limit.
    pub fn line(mut self, bytes: usize) -> Self {
        self.config.line = bytes;
        self
    }

    /// The limits in force.
    pub fn config(&self) -> &RequestLimitsConfig {
        &self.config
    }

    /// How many requests each limit has refused so far (shared by every clone of the layer
    /// and the services it made).
    pub fn stats(&self) -> LimitsStats {
        self.stats.snapshot()
    }
}

impl Default for RequestLimitsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = RequestLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimits {
            inner,
            config: self.config,
            stats: self.stats.clone(),
        }
    }
}

/// Refusals counted per limit, as returned by [`RequestLimitsLayer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsStats {
    /// Request lines over `line` (414).
    pub line: u64,
    /// Requests with more than `fields` header fields (431).
    pub fields: u64,
    /// Requests with a header field over `field_size` (431).
    pub field_size: u64,
    /// Bodies whose declared length (`Content-Length`) was over `body` (413, nothing read).
    pub body_declared: u64,
    /// Bodies of unknown length cut off while streaming when they passed `body` (413).
    pub body_streamed: u64,
}

/// The live counters behind [`LimitsStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    line: AtomicU64,
    fields: AtomicU64,
    field_size: AtomicU64,
    body_declared: AtomicU64,
    body_streamed: AtomicU64,
}

/// Which limit a request passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Line,
    Fields,
    FieldSize,
    BodyDeclared,
    BodyStreamed,
}

impl Stats {
    pub(crate) fn count(&self, what: Exceeded) {
        let counter = match what {
            Exceeded::Line => &self.line,
            Exceeded::Fields => &self.fields,
            Exceeded::FieldSize => &self.field_size,
            Exceeded::BodyDeclared => &self.body_declared,
            Exceeded::BodyStreamed => &self.body_streamed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LimitsStats {
        LimitsStats {
            line: self.line.load(Ordering::Relaxed),
            fields: self.fields.load(Ordering::Relaxed),
            field_size: self.field_size.load(Ordering::Relaxed),
            body_declared: self.body_declared.load(Ordering::Relaxed),
            body_streamed: self.body_streamed.load(Ordering::Relaxed),
        }
    }
}
