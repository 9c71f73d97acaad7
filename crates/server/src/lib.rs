//! stepgate's HTTP server: the login portal (sign-in, step-up, blocked page with
//! re-check, self-service factors, sessions), the gateway that decides each app request
//! and proxies it with identity headers, and the built-in demo.
//!
//! Handlers are thin: they gather the request context, ask the policy engine
//! ([`stepgate_policy`]) and the authenticator ([`stepgate_authn::service`]), and render.
//! All state is server-side in the stores ([`stepgate_store`]); the browser holds only an
//! opaque session id in an `HttpOnly; SameSite=Lax` cookie (`__Host-` prefixed when
//! possible).

// Handlers and their helpers take the request's pieces (state, jar, session, user, token…)
// explicitly rather than through a grab-bag struct.
#![allow(clippy::too_many_arguments)]

pub mod assertion;
pub mod bearer;
pub mod cache;
pub mod caep;
pub mod context;
pub mod demo;
pub mod devices_api;
pub mod forward_auth;
pub mod gateway;
mod idle;
pub mod original;
pub mod pages;
pub mod portal;
pub mod proxy;
pub mod security;
pub mod server;
pub mod session;
pub mod signals;
pub mod state;
pub mod tls;
pub mod web;

pub use server::{build_state, reload, router, serve, serve_on};
pub use state::{AppState, Runtime, ServeOptions, Shared};
