//! The admin API (`/_stepgate/admin/api/v1`) over real HTTP and a real SQLite store: every
//! endpoint with and without its scope, tokens that are expired, revoked or forged, an
//! administrator's session (reads with the group, changes only with a fresh AAL3), paging,
//! problem documents for bad input, a revoked session refused at the gateway, an unlock
//! that lets a locked-out user sign in, the audit trail of it all, and the OpenAPI
//! document listing every route.
//!
//! One file a theme: `credentials`, `sessions`, `reads`, `changes`; what they share is
//! in `common`.

#[path = "../support/mod.rs"]
mod support;

mod changes;
mod common;
mod credentials;
mod reads;
mod sessions;
