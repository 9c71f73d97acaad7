//! The portal over real HTTP: sessions, sign-in with MFA, step-up, CSRF, return targets,
//! timeouts and one-time-code limits.
//!
//! One file a theme: `sessions`, `forms`, `code_limits`; what they share is in
//! `common`.

#[path = "../support/mod.rs"]
mod support;

mod code_limits;
mod common;
mod forms;
mod sessions;
