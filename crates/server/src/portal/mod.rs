//! The portal: the pages people see, each journey a file.
//!
//! - [`signin`]: the login page and password; a first factor decided through the access
//!   pipeline (complete, more to pass, or blocked).
//! - [`stepup`]: the step-up page and its factor forms (also the second half of a sign-in).
//! - [`blocked`]: which checks failed and how to fix them; "Re-check my device".
//! - [`account`]: security settings — the user's factors, added and removed behind a fresh
//!   factor.
//! - [`sessions`]: the user's sessions; signing out here or everywhere.
//! - [`devices`]: the user's devices on the sessions page; registering this browser
//!   (behind a fresh factor) and removing a browser registration.
//! - [`directory`]: the login form's password checked against the LDAP directory.
//! - [`upstream`]: signing in through an upstream identity provider (the redirect and
//!   its callback).
//! - [`webauthn`]: passkey and security-key ceremonies (sign-in, step-up, registration).
//! - [`extract`], [`error`], [`links`], [`pages`]: what every page shares — the checked
//!   request (host, session, CSRF, step-up link), errors that render themselves, the signed
//!   links into the portal, and the templates.
//!
//! Every form carries a CSRF token bound to the session (or, before sign-in, to a
//! pre-session cookie); every page is `no-store` with a strict CSP and no inline script.
//! What does not belong here: deciding access (that is [`crate::access`]).

pub mod account;
pub mod blocked;
pub mod devices;
pub mod directory;
pub mod error;
pub mod extract;
pub mod links;
pub mod pages;
pub mod sessions;
pub mod signin;
pub mod stepup;
pub mod upstream;
pub mod webauthn;

use std::net::IpAddr;

use axum::routing::{get, post};
use axum::Router;
use stepgate_authn::service::AuthError;
pub use stepgate_policy::outcome::factor_title;

use crate::app::state::Shared;

/// Appends an audit event (logged, never fatal: what it records already happened).
pub(crate) async fn audit(
    st: &Shared,
    kind: &str,
    actor: &str,
    ip: Option<IpAddr>,
    detail: serde_json::Value,
) {
    let mut e = stepgate_store::NewAuditEvent::now(kind);
    e.actor = Some(actor.to_string());
    e.ip = ip.map(|ip| ip.to_string());
    e.detail = detail;
    if let Err(err) = st.stores.durable.append_audit(&e).await {
        tracing::error!(error = %err, kind, "audit append failed");
    }
}

/// What to tell a person about an authentication failure.
pub fn auth_message(e: &AuthError) -> String {
    match e {
        AuthError::InvalidCredentials => "That did not match. Check and try again.".into(),
        AuthError::Locked { until } => format!(
            "Too many failed attempts. Try again after {} UTC.",
            until.format("%H:%M")
        ),
        AuthError::Replayed => "That code was already used. Wait for the next one.".into(),
        AuthError::Expired => "That code has expired. Ask for a new one.".into(),
        AuthError::TooManyGuesses => {
            "Too many wrong guesses for that code. Ask for a new one.".into()
        }
        AuthError::NotEnrolled(k) => format!(
            "You have no {} set up.",
            factor_title(k.as_str()).to_lowercase()
        ),
        AuthError::Disabled => "This account is disabled. Contact your administrator.".into(),
        AuthError::RateLimited(_) => "Too many codes requested. Wait a few minutes.".into(),
        AuthError::Rejected(why) => why.clone(),
        other => capitalise(&other.public_message()),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => {
            f.to_uppercase().chain(c).collect::<String>() + if s.ends_with('.') { "" } else { "." }
        }
        None => String::new(),
    }
}

/// The portal's pages and passkey ceremonies, under the portal path.
pub fn routes(portal_path: &str) -> Router<Shared> {
    let p = |s: &str| format!("{portal_path}{s}");
    Router::new()
        .route(
            &p("/login"),
            get(signin::login_page).post(signin::login_submit),
        )
        .route(&p("/login/upstream/{id}"), get(upstream::start))
        .route(&p("/login/upstream/{id}/callback"), get(upstream::callback))
        .route(&p("/step-up"), get(stepup::step_up_page))
        .route(&p("/step-up/{factor}"), post(stepup::step_up_factor))
        .route(&p("/blocked"), get(blocked::blocked_page))
        .route(&p("/recheck"), post(blocked::recheck))
        .route(&p("/account"), get(account::account_page))
        .route(&p("/account/{*change}"), post(account::change))
        .route(&p("/demo/device"), post(account::demo_device))
        .route(&p("/sessions"), get(sessions::sessions_page))
        .route(&p("/sessions/end"), post(sessions::end_session))
        .route(&p("/devices/register"), post(devices::register_browser))
        .route(&p("/devices/remove"), post(devices::remove_browser))
        .route(&p("/logout"), post(sessions::logout))
        .route(&p("/logout-all"), post(sessions::logout_all))
        .route(
            &p("/webauthn/login/start"),
            post(webauthn::webauthn_login_start),
        )
        .route(
            &p("/webauthn/login/finish"),
            post(webauthn::webauthn_login_finish),
        )
        .route(
            &p("/webauthn/step-up/start"),
            post(webauthn::webauthn_step_start),
        )
        .route(
            &p("/webauthn/step-up/finish"),
            post(webauthn::webauthn_step_finish),
        )
        .route(
            &p("/webauthn/register/start"),
            post(webauthn::webauthn_register_start),
        )
        .route(
            &p("/webauthn/register/finish"),
            post(webauthn::webauthn_register_finish),
        )
}
