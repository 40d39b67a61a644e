//! Extensions that tell the layer where an answer came from.

use http::{StatusCode, Uri};

/// Response extension: this answer was relayed from a backend.
///
/// The one mark the layer needs to tell a backend's error page (passed through unless
/// overridden) from the server's own answers (always replaced): whatever relays
/// upstream responses inserts it, once, where they come in. Every answer *without* it
/// is the server's own, so guard layers that answer by themselves (403, 413, ...) need
/// to do nothing, and neither does an axum handler.
///
/// ```
/// use towergate_error_pages::UpstreamResponse;
///
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(UpstreamResponse);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamResponse;

/// Response extension: replace this backend answer's error body anyway, as Apache's
/// `ProxyErrorOverride On` does for one location. A router inserts it, beside
/// [`UpstreamResponse`], on the routes that ask for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverrideErrors;

/// Request extension on the internal request that fetches a local error document.
///
/// Layers that count requests per client (flood blocking) or answer by themselves can
/// recognise it; the error-pages layer itself never replaces an answer to such a
/// request, which is what makes a failing error document unable to recurse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDocumentRequest {
    /// The status of the answer being replaced (Apache's `REDIRECT_STATUS`).
    pub status: StatusCode,
    /// The URI the client asked for (Apache's `REDIRECT_URL`).
    pub original_uri: Uri,
}
