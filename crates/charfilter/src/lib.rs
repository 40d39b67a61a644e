//! Allowed-character rules for the URL path.
