//! How an upstream's response body ended, told to whoever chose that upstream.
//!
//! Response headers arriving say little about an upstream's health: a member that resets
//! its connections mid-response answers every request with a good status and then cuts
//! the body short. A [`BodyWatch`] rides along with the body ([`WatchBody::watch`]) and
//! tells its [`BodyObserver`] when the body failed and when it is over, so a balancer can
//! count the failure against the member and count the request as in flight until its
//! body is sent.

use std::sync::Arc;

/// Told how upstream response bodies end. `token` is the value given to
/// [`BodyWatch::new`] (a balancer's member index).
pub trait BodyObserver: Send + Sync + 'static {
    /// The upstream cut the body short: its connection broke or closed before the body's
    /// framing (`Content-Length`, the last chunk) said it was complete. Called at most
    /// once per watch, before [`body_over`](Self::body_over).
    fn body_failed(&self, token: usize, error: &crate::BodyError);

    /// The body is over: complete, failed, or dropped (the client went away, or nothing
    /// read it). Called exactly once per watch.
    fn body_over(&self, token: usize);
}

/// Watches one upstream response body for its observer; see the module docs.
///
/// Dropping it tells the observer the body is over.
pub struct BodyWatch {
    observer: Arc<dyn BodyObserver>,
    token: usize,
}

impl BodyWatch {
    /// A watch reporting to `observer` with `token`.
    pub fn new(observer: Arc<dyn BodyObserver>, token: usize) -> Self {
        Self { observer, token }
    }

    /// The body failed with `error`; the watch ends here.
    pub(crate) fn failed(self, error: &crate::BodyError) {
        self.observer.body_failed(self.token, error);
    }
}

impl Drop for BodyWatch {
    fn drop(&mut self) {
        self.observer.body_over(self.token);
    }
}

impl std::fmt::Debug for BodyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyWatch")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// A response body that can carry a [`BodyWatch`].
pub trait WatchBody {
    /// Attaches `watch`: an upstream body reports its end to it; a body made locally
    /// (nothing to watch) drops it at once.
    fn watch(&mut self, watch: BodyWatch);
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what it was told.
    #[derive(Default)]
    pub(crate) struct Recorder(pub(crate) Mutex<Vec<String>>);

    impl BodyObserver for Recorder {
        fn body_failed(&self, token: usize, _error: &crate::BodyError) {
            self.0.lock().unwrap().push(format!("failed {token}"));
        }

        fn body_over(&self, token: usize) {
            self.0.lock().unwrap().push(format!("over {token}"));
        }
    }

    #[test]
    fn dropping_the_watch_ends_it() {
        let recorder = Arc::new(Recorder::default());
        drop(BodyWatch::new(recorder.clone(), 3));
        assert_eq!(*recorder.0.lock().unwrap(), ["over 3"]);
    }
}
