//! A timer for deadlines that move later again and again, as a connection's do: one per
//! request, each a little after the last.
//!
//! A new `tokio::time::Sleep` per request costs a timer-wheel insertion when it is first
//! polled and a removal when it is dropped (hyper's header-read timeout and the forwarder's
//! response timeout were 5% of a proxied request's instructions). A [`LazySleep`] stays
//! armed instead: moving its deadline later only notes the new one. When the armed time
//! comes and the deadline has moved, it arms again for the deadline, so the wheel sees one
//! insertion per timeout period rather than one per request (nginx updates its timers
//! lazily in the same way). It never expires late: a deadline moved earlier is armed at once.
//!
//! An armed timer nobody waits on any more wakes the task that polled it last once, when
//! its time comes: a spurious wake-up, harmless to a future written for them.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::time::{Instant, Sleep};

/// A deadline that can be moved without touching the runtime's timer wheel. See the
/// [module docs](self).
#[derive(Debug)]
pub struct LazySleep {
    armed: Pin<Box<Sleep>>,
    deadline: Instant,
}

impl LazySleep {
    /// A timer expiring at `deadline`. Needs a Tokio runtime with timers enabled, like
    /// `tokio::time::sleep_until`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            armed: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
        }
    }

    /// Moves the deadline: later costs a store, earlier re-arms on the next poll.
    pub fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Ready once the deadline has passed; registers the task to be woken then.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.armed.deadline() > self.deadline {
                self.armed.as_mut().reset(self.deadline);
            }
            ready!(self.armed.as_mut().poll(cx));
            if self.armed.deadline() >= self.deadline {
                return Poll::Ready(());
            }
            // Armed before the deadline moved later: arm again for it.
            self.armed.as_mut().reset(self.deadline);
        }
    }
}

impl std::future::Future for LazySleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_expired(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls once, as a task would that is woken for something else.
    async fn poll_once(sleep: &mut LazySleep) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(sleep.poll_expired(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn expires_at_its_deadline() {
        let start = Instant::now();
        LazySleep::until(start + Duration::from_secs(3)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_later_is_kept_not_the_first_one() {
        let start = Instant::now();
        let mut sleep = LazySleep::until(start + Duration::from_secs(3));
        // Registered at 3 s, then moved to 10 s without polling again.
        assert!(poll_once(&mut sleep).await.is_pending());
        sleep.set(start + Duration::from_secs(10));
        (&mut sleep).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_earlier_is_not_missed() {
        let start = Instant::now();
        let mut sleep = LazySleep::until(start + Duration::from_secs(30));
        assert!(poll_once(&mut sleep).await.is_pending());
        sleep.set(start + Duration::from_secs(2));
        (&mut sleep).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_and_moved_later_it_waits_again() {
        let start = Instant::now();
        let mut sleep = LazySleep::until(start + Duration::from_secs(1));
        (&mut sleep).await;
        sleep.set(start + Duration::from_secs(5));
        assert!(poll_once(&mut sleep).await.is_pending());
        (&mut sleep).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
