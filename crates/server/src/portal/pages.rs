//! Server-rendered pages (minijinja templates compiled into the binary) and the static
//! assets: one stylesheet and the WebAuthn glue script.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

use crate::app::responses::security_headers as portal_headers;

/// The stylesheet.
pub const STYLE_CSS: &str = include_str!("../../assets/style.css");
/// The WebAuthn glue.
pub const WEBAUTHN_JS: &str = include_str!("../../assets/webauthn.js");
/// The page script: local times, a paused form opened again.
pub const PORTAL_JS: &str = include_str!("../../assets/portal.js");

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("step_up.html", include_str!("../../templates/step_up.html")),
    (
        "step_offer.html",
        include_str!("../../templates/step_offer.html"),
    ),
    ("blocked.html", include_str!("../../templates/blocked.html")),
    ("paused.html", include_str!("../../templates/paused.html")),
    ("message.html", include_str!("../../templates/message.html")),
    (
        "sessions.html",
        include_str!("../../templates/sessions.html"),
    ),
    ("account.html", include_str!("../../templates/account.html")),
    (
        "enrol_totp.html",
        include_str!("../../templates/enrol_totp.html"),
    ),
    (
        "set_password.html",
        include_str!("../../templates/set_password.html"),
    ),
    ("welcome.html", include_str!("../../templates/welcome.html")),
    ("forgot.html", include_str!("../../templates/forgot.html")),
    ("help.html", include_str!("../../templates/help.html")),
    ("level.html", include_str!("../../templates/level.html")),
    (
        "recovery_codes.html",
        include_str!("../../templates/recovery_codes.html"),
    ),
    (
        "admin_users.html",
        include_str!("../../templates/admin_users.html"),
    ),
    (
        "admin_decision.html",
        include_str!("../../templates/admin_decision.html"),
    ),
    (
        "admin_nav.html",
        include_str!("../../templates/admin_nav.html"),
    ),
    (
        "admin_trace.html",
        include_str!("../../templates/admin_trace.html"),
    ),
    (
        "admin_dashboard.html",
        include_str!("../../templates/admin_dashboard.html"),
    ),
    (
        "admin_devices.html",
        include_str!("../../templates/admin_devices.html"),
    ),
    (
        "admin_sessions.html",
        include_str!("../../templates/admin_sessions.html"),
    ),
    (
        "admin_decisions.html",
        include_str!("../../templates/admin_decisions.html"),
    ),
    (
        "admin_what_if.html",
        include_str!("../../templates/admin_what_if.html"),
    ),
    (
        "admin_policies.html",
        include_str!("../../templates/admin_policies.html"),
    ),
    (
        "admin_audit.html",
        include_str!("../../templates/admin_audit.html"),
    ),
    (
        "admin_policy_versions.html",
        include_str!("../../templates/admin_policy_versions.html"),
    ),
    (
        "admin_replay.html",
        include_str!("../../templates/admin_replay.html"),
    ),
];

/// A way on from a message page: where the link goes and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WayOn {
    /// The link's target (absolute, or relative to the page's address).
    pub href: String,
    /// The link's words.
    pub text: String,
}

impl WayOn {
    /// A link to `href` reading `text`.
    pub fn new(href: impl Into<String>, text: impl Into<String>) -> Self {
        WayOn {
            href: href.into(),
            text: text.into(),
        }
    }
}

/// A page that tells a person why stepgate stopped (a missing page, an expired link, an
/// application that does not answer) in the portal's layout: a heading, a sentence, a
/// way on, and the request's id for the help desk.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The portal path (the stylesheet is under it).
    pub portal: &'a str,
    /// The heading (and the page title).
    pub title: &'a str,
    /// What happened and what to do, in plain words.
    pub text: &'a str,
    /// The main way on (a button).
    pub way_on: Option<WayOn>,
    /// A second way on (a plain link), e.g. to the account page.
    pub also: Option<WayOn>,
}

impl Message<'_> {
    /// Renders the page with `status` (see [`Pages::render`]).
    pub fn render(&self, status: StatusCode) -> Response {
        Pages::global().render(
            status,
            "message.html",
            minijinja::context! {
                portal => self.portal, title => self.title, message => self.text,
                link => self.way_on.as_ref().map(|w| &w.href),
                link_text => self.way_on.as_ref().map(|w| &w.text),
                also => self.also,
            },
        )
    }
}

/// The template environment.
pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

impl Pages {
    /// The built-in templates, loaded once per process: any answer can render a page,
    /// errors included, without reaching into the server's state.
    pub fn global() -> &'static Pages {
        static PAGES: std::sync::LazyLock<Pages> = std::sync::LazyLock::new(Pages::new);
        &PAGES
    }

    /// Loads the built-in templates (autoescaping HTML).
    pub fn new() -> Self {
        let mut env = Environment::new();
        crate::i18n::add_to(&mut env);
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .expect("built-in templates parse");
        }
        Pages { env }
    }

    /// Renders `name` with `ctx` into a response with the portal's security headers. The
    /// page is given the id of the request being served as `request_id` (unless `ctx` names
    /// one: a blocked page opened from its link shows the refused request's), so every
    /// message page can show the help desk which request it was. It is given the reader's
    /// language too (`lang`, see [`crate::i18n`]) and the switcher's links to the others.
    pub fn render<S: Serialize>(&self, status: StatusCode, name: &str, ctx: S) -> Response {
        self.render_in(crate::i18n::lang(), status, name, ctx)
    }

    /// [`Pages::render`] in `lang`.
    pub fn render_in<S: Serialize>(
        &self,
        lang: crate::i18n::Lang,
        status: StatusCode,
        name: &str,
        ctx: S,
    ) -> Response {
        let id = crate::access::RequestId::current();
        let switch: Vec<_> = crate::i18n::switcher(lang)
            .into_iter()
            .map(|(code, name, query)| minijinja::context! { code, name, query })
            .collect();
        let ctx = minijinja::context! {
            ..minijinja::Value::from_serialize(&ctx),
            ..minijinja::context! { request_id => id.as_str(), lang => lang.code(), switch_lang => switch }
        };
        let body = match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(template = name, error = %e, "template failed");
                return portal_headers(
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
                );
            }
        };
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        portal_headers(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_escaped() {
        let p = Pages::new();
        let r = p.render(
            StatusCode::OK,
            "message.html",
            minijinja::context! { portal => "/_stepgate", csrf => "x", title => "<t>", message => "<script>alert(1)</script>" },
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
    }
}
