//! The gateway over real HTTP on loopback: the signed identity assertion and its JWKS (with
//! key rotation), bearer tokens from a test issuer (allowed, stepped up with RFC 9470,
//! refused), WebSocket pass-through, a 100 MB streamed upload, forwarding headers, upstream
//! failures, a broken store, and the TLS listener with a client certificate.
//!
//! One file a theme: `assertion`, `bearer`, `websocket`, `upstreams`, `requests`,
//! `protocols`; what they share is in `common`.

#[path = "../support/mod.rs"]
mod support;

mod assertion;
mod bearer;
mod common;
mod protocols;
mod requests;
mod upstreams;
mod websocket;
