//! Allow/deny by client address.
