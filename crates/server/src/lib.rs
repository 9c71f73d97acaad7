//! stepgate's HTTP server, one folder per journey (docs/architecture.md has the map):
//!
//! - [`access`]: THE decision. Every entry point builds an [`access::AccessRequest`] and
//!   calls [`access::Access::decide`]: credentials → session → signals → context → policy
//!   → verdict.
//! - [`gateway`]: in front of apps — the reverse proxy, the forward-auth endpoints, the
//!   identity headers and signed assertion, the upstream pool.
//! - [`portal`]: the pages people see — sign-in, step-up, blocked, account, sessions,
//!   passkeys.
//! - [`session`]: the session service, its cookies and the node's read cache.
//! - [`devices`]: the device registry, the posture API and the CAEP receiver.
//! - [`oidc`]: stepgate as an OpenID Provider; its authorize endpoint is one more entry
//!   point of the access pipeline.
//! - [`idp`]: upstream identity providers users sign in through (metadata, keys, ID
//!   token checks, claim and trust mapping, just-in-time users).
//! - [`app`]: start-up, state, routing, listeners, reload, and what every room shares.
//! - [`siem`]: the audit log to a SIEM — OCSF, syslog over TLS, HTTPS webhooks.
//! - [`demo`]: the built-in demo (profiles, the Licence Console, its users).
//!
//! What does not belong here: anything that needs no HTTP server — the policy engine, the
//! factors, the signals, the stores and request parsing each have their crate (see
//! docs/architecture.md), and this crate calls them.
//!
//! All state is server-side in the stores ([`stepgate_store`]); the browser holds only an
//! opaque session id in an `HttpOnly; SameSite=Lax` cookie (`__Host-` prefixed when
//! possible).

pub mod access;
pub mod admin;
pub mod app;
pub mod demo;
pub mod demo_rp;
pub mod devices;
pub mod gateway;
pub mod i18n;
pub mod idp;
pub mod metrics;
pub mod oidc;
pub mod portal;
pub mod session;
pub mod siem;
pub mod telemetry;

pub use app::listen::{serve, serve_on, serve_on_until};
pub use app::reload::reload;
pub use app::routes::router;
pub use app::state::{AppState, Runtime, ServeOptions, Shared};
pub use app::{build_state, build_state_with};
