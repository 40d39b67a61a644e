//! The response future: the layer's own refusal, or the inner service's answer.

/// Response future of [`Evasive`](crate::Evasive): towergate's shared guard future.
pub type ResponseFuture<F, B> = towergate_guard::GuardFuture<F, B>;
