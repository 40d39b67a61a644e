//! State that outlives a config generation.
//!
//! A reload builds a whole new stack, but some parts must survive it: a pool whose members
//! did not change keeps its health state and counters, the flood blocker keeps its block
//! list. Builders ask [`Carryover::reuse`] for such a part by key and fingerprint (the
//! part's config, e.g. its `Debug` text): the same fingerprint hands back the live part,
//! a new one builds it afresh. Background work belonging to a part (health checks, sweeps)
//! runs once per part, not once per generation, and stops when a reload drops the part.
//!
//! A build is staged: [`begin`](Carryover::begin), then `reuse` calls, then
//! [`commit`](Carryover::commit) when the new stack is in place, or
//! [`rollback`](Carryover::rollback) when the build failed and the old generation serves on.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

use crate::stack::Background;

type Key = (TypeId, String);

struct Entry {
    fingerprint: String,
    value: Arc<dyn Any + Send + Sync>,
    task: Option<AbortHandle>,
}

struct Staged {
    fingerprint: String,
    value: Arc<dyn Any + Send + Sync>,
    background: Option<Background>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<Key, Entry>,
    /// Keys the build in progress uses, with what it made new.
    staged: HashMap<Key, Option<Staged>>,
}

/// Parts of the stack kept across reloads. See the [module docs](self).
#[derive(Default)]
pub struct Carryover {
    inner: Mutex<Inner>,
}

impl Carryover {
    /// An empty carryover, for the first build.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only builds take this lock, never the request path; a panic in one leaves
        // nothing half-written that a later build could trip over.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts staging a build.
    pub fn begin(&self) {
        self.lock().staged.clear();
    }

    /// The live part under `key` if its fingerprint matches, else a new one from `make`,
    /// which may return background work to run beside it once the build commits.
    pub fn reuse<T, F>(&self, key: &str, fingerprint: &str, make: F) -> anyhow::Result<Arc<T>>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> anyhow::Result<(Arc<T>, Option<Background>)>,
    {
        let k = (TypeId::of::<T>(), key.to_owned());
        let mut inner = self.lock();
        if let Some(Some(staged)) = inner.staged.get(&k) {
            if staged.fingerprint == fingerprint {
                return Ok(staged.value.clone().downcast().expect("keyed by type"));
            }
        }
        if let Some(entry) = inner.live.get(&k) {
            if entry.fingerprint == fingerprint {
                let value = entry.value.clone().downcast().expect("keyed by type");
                inner.staged.insert(k, None);
                return Ok(value);
            }
        }
        drop(inner);
        let (value, background) = make()?;
        let staged = Staged {
            fingerprint: fingerprint.to_owned(),
            value: value.clone(),
            background,
        };
        self.lock().staged.insert(k, Some(staged));
        Ok(value)
    }

    /// The new stack serves: keep what it used, start what it made, drop the rest.
    pub fn commit(&self) {
        let mut inner = self.lock();
        let staged = std::mem::take(&mut inner.staged);
        inner.live.retain(|k, entry| {
            let keep = matches!(staged.get(k), Some(None));
            if !keep {
                if let Some(task) = &entry.task {
                    task.abort();
                }
            }
            keep
        });
        for (k, made) in staged {
            if let Some(made) = made {
                let task = made
                    .background
                    .map(|work| tokio::spawn(work).abort_handle());
                inner.live.insert(
                    k,
                    Entry {
                        fingerprint: made.fingerprint,
                        value: made.value,
                        task,
                    },
                );
            }
        }
    }

    /// The build failed: forget what it made; the live parts stay as they were.
    pub fn rollback(&self) {
        self.lock().staged.clear();
    }

    /// Stops all background work (shutdown).
    pub fn stop_all(&self) {
        for entry in self.lock().live.values() {
            if let Some(task) = &entry.task {
                task.abort();
            }
        }
    }
}

impl Drop for Carryover {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn same_fingerprint_reuses_and_new_fingerprint_replaces() {
        let carry = Carryover::new();
        let made = Arc::new(AtomicUsize::new(0));
        let build = |fp: &str| {
            let made = made.clone();
            carry.reuse::<String, _>("pool", fp, move || {
                made.fetch_add(1, Ordering::SeqCst);
                Ok((Arc::new(String::from("pool")), None))
            })
        };
        carry.begin();
        let a = build("v1").unwrap();
        carry.commit();
        carry.begin();
        let b = build("v1").unwrap();
        carry.commit();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(made.load(Ordering::SeqCst), 1);
        carry.begin();
        let c = build("v2").unwrap();
        carry.rollback();
        carry.begin();
        let d = build("v1").unwrap();
        carry.commit();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(
            Arc::ptr_eq(&a, &d),
            "a rolled-back build leaves the live part in place"
        );
    }

    #[tokio::test]
    async fn background_work_stops_when_a_reload_drops_its_part() {
        let carry = Carryover::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        carry.begin();
        carry
            .reuse::<u8, _>("sweeper", "x", move || {
                let work: Background = Box::pin(async move {
                    let _tx = tx;
                    std::future::pending::<()>().await
                });
                Ok((Arc::new(1), Some(work)))
            })
            .unwrap();
        carry.commit();
        tokio::task::yield_now().await;
        carry.begin();
        carry.commit();
        // The task was aborted, so its sender is dropped and the channel closes.
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .is_none()
        );
    }
}
