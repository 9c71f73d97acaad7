//! The portal: the pages people see, each journey a file.
//!
//! - [`signin`]: the login page and password; a first factor decided through the access
//!   pipeline (complete, more to pass, or blocked).
//! - [`first_factor`]: a first factor just passed and the request it came in, built the same
//!   way by every way of signing in.
//! - [`stepup`]: the step-up page and its factor forms (also the second half of a sign-in).
//! - [`blocked`]: which checks failed and how to fix them; "Re-check my device".
//! - [`account`]: security settings — the user's factors, added and removed behind a fresh
//!   factor.
//! - [`sessions`]: the user's sessions; signing out here or everywhere.
//! - [`devices`]: the user's devices on the sessions page; registering this browser
//!   (behind a fresh factor) and removing a browser registration.
//! - [`enrolment`]: invitation and password-reset links (set a password, then a first
//!   passkey or authenticator app, then sign in).
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
pub mod enrolment;
pub mod error;
pub mod extract;
pub mod first_factor;
pub mod handoff;
pub mod links;
pub mod pages;
pub mod sessions;
pub mod signin;
pub mod stepup;
pub mod upstream;
pub mod webauthn;

use std::net::IpAddr;

pub use crate::i18n::factor_title;
use crate::i18n::{t, t_with};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use stepgate_authn::service::AuthError;

use crate::app::state::Shared;
use extract::Visit;

/// Appends an audit event through the outbox ([`crate::app::audit`]): never fatal, since
/// what it records already happened; kept while the durable store is out of reach.
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
    st.audit.append(e).await;
}

/// How many failure events (`signin.failure`, `stepup.failure`) one account and one client
/// address each write per `regulation.find_time`: past that a password spray, a guessed
/// code or a stuck script fills the logs' counters, not the audit log (the lockout's own
/// events are written regardless).
pub const FAILURE_AUDITS_PER_WINDOW: u64 = 20;

/// A refused factor to audit: where (a sign-in, whose second step is the step-up page too,
/// or a step-up of a complete session) and which factor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failure {
    at_sign_in: bool,
    factor: &'static str,
}

impl Failure {
    /// A wrong password on the login page.
    pub(crate) const SIGN_IN_PASSWORD: Failure = Failure {
        at_sign_in: true,
        factor: "password",
    };

    /// `factor` (a [`stepgate_authn::FactorKind`]'s name) refused at a sign-in or a step-up.
    pub(crate) fn of(at_sign_in: bool, factor: &'static str) -> Failure {
        Failure { at_sign_in, factor }
    }

    fn kind(self) -> &'static str {
        match self.at_sign_in {
            true => "signin.failure",
            false => "stepup.failure",
        }
    }
}

/// Why a refusal is the person's failed attempt, as the audit row says it: a wrong
/// password, code or passkey, or a code used twice. `None` for the rest (a pause, a store
/// down), which is not audited as a failure.
pub(crate) fn failure_reason(e: &AuthError) -> Option<&'static str> {
    match e {
        AuthError::InvalidCredentials => Some("invalid_credentials"),
        AuthError::Replayed => Some("replayed"),
        _ => None,
    }
}

/// A factor refused (`e`, when [`failure_reason`] counts it), audited as `signin.failure`
/// or `stepup.failure` with the factor, the user (a known one's name and id; an unknown
/// name is not written down: people type passwords there) and the client address, at most
/// [`FAILURE_AUDITS_PER_WINDOW`] per account and per address in the window, all factors
/// together. A hot store that cannot count skips the event (the log line remains).
pub(crate) async fn audit_failure(
    st: &Shared,
    rt: &crate::app::state::Runtime,
    user: Option<&stepgate_store::UserRecord>,
    ip: Option<IpAddr>,
    failure: Failure,
    e: &AuthError,
) {
    let Some(reason) = failure_reason(e) else {
        return;
    };
    let Some(n) = failures_in_window(st, rt, user, ip).await else {
        return;
    };
    if n > FAILURE_AUDITS_PER_WINDOW {
        return;
    }
    let mut e = stepgate_store::NewAuditEvent::now(failure.kind());
    e.actor = user.map(|u| u.username.clone());
    e.subject = user.map(|u| u.id.clone());
    e.ip = ip.map(|i| i.to_string());
    e.detail = serde_json::json!({
        "reason": reason, "factor": failure.factor, "known_user": user.is_some(),
        "last_audited_in_window": n == FAILURE_AUDITS_PER_WINDOW,
    });
    st.audit.append(e).await;
}

/// This failure's number in the window, the higher of the account's and the address's
/// counts; `None` when the hot store cannot count.
async fn failures_in_window(
    st: &Shared,
    rt: &crate::app::state::Runtime,
    user: Option<&stepgate_store::UserRecord>,
    ip: Option<IpAddr>,
) -> Option<u64> {
    let window = rt.config.regulation.find_time.0;
    let hot = st.stores.hot.as_ref();
    let who = user.map_or("(unknown)", |u| u.id.as_str());
    let mut n = hot
        .incr_counter(&format!("audit:signin.failure:{who}"), window)
        .await
        .ok()?;
    if let Some(ip) = ip {
        let m = hot
            .incr_counter(&format!("audit:signin.failure:ip:{ip}"), window)
            .await
            .ok()?;
        n = n.max(m);
    }
    Some(n)
}

/// What to tell a person about an authentication failure.
pub fn auth_message(e: &AuthError) -> String {
    match e {
        AuthError::InvalidCredentials => t("auth-no-match"),
        AuthError::Locked { until } => t_with(
            "auth-locked-until",
            &[
                (
                    "wait",
                    pause_wait(until).trim_end_matches('.').to_string().into(),
                ),
                ("time", until.format("%H:%M").to_string().into()),
            ],
        ),
        AuthError::Replayed => t("auth-replayed"),
        AuthError::Expired => t("auth-expired"),
        AuthError::TooManyGuesses => t("auth-too-many-guesses"),
        AuthError::NotEnrolled(k) => t_with(
            "auth-not-set-up",
            &[("kind", factor_title(k.as_str()).to_lowercase().into())],
        ),
        AuthError::Disabled => t("auth-disabled"),
        AuthError::AccountLocked => t("auth-account-locked"),
        AuthError::RateLimited(_) => t("auth-rate-limited"),
        AuthError::Rejected(why) => why.clone(),
        other => capitalise(&other.public_message()),
    }
}

/// A pause on signing in after too many failed attempts, as a page shows it: when it ends
/// (RFC 3339, which the page script shows in the reader's clock) and the same in UTC for a
/// browser without script.
#[derive(serde::Serialize)]
pub struct Paused {
    /// The sentence that replaces the error ("… Try again in 5 minutes.").
    pub message: String,
    until: String,
    utc: String,
}

impl Paused {
    /// The pause `e` reports, if it is one.
    pub fn of(e: &AuthError) -> Option<Paused> {
        match e {
            AuthError::Locked { until } => Some(Paused {
                message: pause_wait(until),
                until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                utc: until.format("%H:%M UTC").to_string(),
            }),
            _ => None,
        }
    }
}

/// After a failure the lockout counted: the pause it began, if it was the last try (shown at
/// once, not at the next attempt — which would tell no one more).
pub(crate) async fn paused_by(
    st: &Shared,
    e: &AuthError,
    user: Option<&stepgate_store::UserRecord>,
    username: &str,
) -> Option<AuthError> {
    let counted = matches!(
        e,
        AuthError::InvalidCredentials | AuthError::Replayed | AuthError::TooManyGuesses
    );
    if !counted {
        return None;
    }
    let until = st.authn.paused_until(user, username).await.ok()??;
    Some(AuthError::Locked { until })
}

/// "2 more tries before signing in is paused for 5 minutes." after a failure the lockout
/// counted, when `regulation.announce_remaining` allows it here (`after_password`: the
/// person has proved the password already). `None` when it does not, or nothing is left.
pub(crate) async fn attempts_note(
    st: &Shared,
    rt: &crate::app::state::Runtime,
    e: &AuthError,
    user: Option<&stepgate_store::UserRecord>,
    username: &str,
    after_password: bool,
) -> Option<String> {
    use stepgate_authn::config::AnnounceRemaining as A;
    let counted = matches!(
        e,
        AuthError::InvalidCredentials | AuthError::Replayed | AuthError::TooManyGuesses
    );
    let allowed = match rt.config.regulation.announce_remaining {
        A::Off => false,
        A::AfterPassword => after_password,
        A::Always => true,
    };
    if !(counted && allowed) {
        return None;
    }
    let left = st.authn.attempts_left(user, username).await.ok()??;
    let mins = rt.config.regulation.ban_time.as_secs().div_ceil(60).max(1);
    match left {
        0 => None,
        n => Some(t_with(
            "auth-tries-left",
            &[("n", n.into()), ("minutes", mins.into())],
        )),
    }
}

/// "Too many failed attempts, so signing in is paused. Try again in 5 minutes." — a
/// duration, which needs no clock or time zone (pages add the local time beside it).
pub fn pause_wait(until: &chrono::DateTime<chrono::Utc>) -> String {
    let mins = ((*until - chrono::Utc::now()).num_seconds().max(0) as u64).div_ceil(60);
    t_with("auth-paused", &[("minutes", mins.max(1).into())])
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
    let portal: std::sync::Arc<str> = portal_path.into();
    signing_in()
        .into_iter()
        .chain(signed_in())
        .fold(Router::new(), |r, (path, to)| {
            r.route(&format!("{portal_path}{path}"), to)
        })
        // Any other address under the portal path is the portal's too: its own 404 page.
        .route(
            &format!("{portal_path}/{{*rest}}"),
            axum::routing::any(not_found),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(move |r| {
            error::with_portal(portal.clone(), r)
        }))
}

/// A route of the portal: its path below the portal path, and its handlers.
type Route = (&'static str, MethodRouter<Shared>);

/// The pages of signing in: the login form, enrolment links, upstream providers, passkeys.
fn signing_in() -> Vec<Route> {
    use enrolment::{link_open, link_redeem};
    vec![
        ("/login", get(signin::login_page).post(signin::login_submit)),
        ("/invite/{token}", get(link_open).post(link_redeem)),
        ("/reset/{token}", get(link_open).post(link_redeem)),
        (
            "/forgot",
            get(enrolment::forgot_page).post(enrolment::forgot_submit),
        ),
        ("/forgot/email/send", post(enrolment::forgot_email_send)),
        ("/forgot/email", post(enrolment::forgot_email_submit)),
        ("/welcome", get(enrolment::welcome_page)),
        ("/welcome/totp/{step}", post(enrolment::welcome_totp)),
        ("/login/upstream/{id}", get(upstream::start)),
        ("/login/upstream/{id}/callback", get(upstream::callback)),
        ("/login/upstream/{id}/signed-out", get(upstream::signed_out)),
        (
            "/login/upstream/{id}/backchannel-logout",
            post(upstream::backchannel_logout),
        ),
        (
            "/webauthn/login/start",
            post(webauthn::webauthn_login_start),
        ),
        (
            "/webauthn/login/finish",
            post(webauthn::webauthn_login_finish),
        ),
    ]
}

/// The pages of a signed-in person: step-up, blocked, account, sessions and devices.
fn signed_in() -> Vec<Route> {
    vec![
        ("/step-up", get(stepup::step_up_page)),
        ("/confirmed", get(stepup::confirmed_page)),
        ("/step-up/{factor}", post(stepup::step_up_factor)),
        ("/blocked", get(blocked::blocked_page)),
        ("/recheck", post(blocked::recheck)),
        ("/account", get(account::account_page)),
        ("/account/{*change}", post(account::change)),
        ("/demo/device", post(account::demo_device)),
        ("/sessions", get(sessions::sessions_page)),
        ("/sessions/end", post(sessions::end_session)),
        ("/devices/register", post(devices::register_browser)),
        ("/devices/remove", post(devices::remove_browser)),
        ("/handoff", get(handoff::exchange)),
        ("/lang", get(crate::i18n::switch)),
        ("/logout", post(sessions::logout::<false>)),
        ("/logout-all", post(sessions::logout::<true>)),
        (
            "/webauthn/step-up/start",
            post(webauthn::webauthn_step_start),
        ),
        (
            "/webauthn/step-up/finish",
            post(webauthn::webauthn_step_finish),
        ),
        (
            "/webauthn/register/start",
            post(webauthn::webauthn_register_start),
        ),
        (
            "/webauthn/register/finish",
            post(webauthn::webauthn_register_finish),
        ),
    ]
}

/// An address under the portal path that is no page: the portal's 404, with a way on.
async fn not_found(Visit { here: rt, .. }: Visit) -> axum::response::Response {
    pages::Message {
        portal: rt.portal(),
        title: &t("gateway-not-found-title"),
        text: &t("portal-not-found-text"),
        way_on: Some(pages::WayOn::new(
            rt.portal_url("/account"),
            t("go-to-account"),
        )),
        also: None,
    }
    .render(axum::http::StatusCode::NOT_FOUND)
}

/// A portal address asked with a method it does not take (a bookmarked form address, say):
/// the portal's page, with a way on, rather than a bare 405.
async fn method_not_allowed(Visit { here: rt, .. }: Visit) -> axum::response::Response {
    pages::Message {
        portal: rt.portal(),
        title: &t("portal-method-title"),
        text: &t("portal-method-text"),
        way_on: Some(pages::WayOn::new(
            rt.portal_url("/account"),
            t("go-to-account"),
        )),
        also: None,
    }
    .render(axum::http::StatusCode::METHOD_NOT_ALLOWED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_told_as_a_wait_and_a_time() {
        let until = chrono::Utc::now() + chrono::Duration::seconds(290);
        let m = auth_message(&AuthError::Locked { until });
        assert!(
            m.contains("signing in is paused. Try again in 5 minutes (at "),
            "{m}"
        );
        assert!(m.contains("help desk can unlock"), "{m}");
        let soon = chrono::Utc::now() + chrono::Duration::seconds(20);
        assert!(auth_message(&AuthError::Locked { until: soon }).contains("in a minute"));
    }
}
