//! One authorization request on its way through the portal: the verdict rendered as the
//! client's error, the sign-in page, the step-up page or the blocked page, each returning
//! to this request's URL (with a signed mark of when a fresh sign-in was asked for), and
//! the links the portal pages build from such a URL.

use axum::http::Method;
use axum::response::Response;
use chrono::{DateTime, Utc};
use stepgate_config::OidcClient;
use stepgate_policy::StepUpRequirement;

use super::code::{self, Issue};
use super::request::{Asked, AuthorizeParams};
use crate::access::{Grant, Verdict};
use crate::app::responses::see_other;
use crate::app::state::Shared;
use crate::gateway::render::{portal_link, Return};
use crate::oidc::error::Back;
use crate::portal::extract::Here;
use crate::portal::links::{Links, StepToken};

/// The signer's purpose for the fresh-sign-in mark a return URL carries.
const REAUTH: &str = "oidc-reauth";

/// For a blocked page whose target is an authorization request: the link that gives up,
/// sending the client `access_denied` (nothing but that request's own error).
pub fn cancel_link(rt: &crate::app::state::Runtime, target: &str) -> Option<String> {
    let own = crate::app::state::Runtime::portal_url(rt, "/oidc/authorize?");
    target
        .starts_with(&own)
        .then(|| format!("{target}&sg_cancel=1"))
}

/// For a sign-in or step-up page whose target is an authorization request of this
/// provider: the origin of the client's registered redirect URI it names. A browser
/// enforces the page's CSP `form-action` on the whole redirect chain of the form's POST
/// (page → authorize → the client's redirect URI), so that origin must be allowed there
/// too. Only a registered redirect URI counts (the authorize endpoint checked it before
/// sending the browser to the page; it is checked again here). `None` otherwise, and for
/// pushed requests (their redirect URI is not in the URL; the WebAuthn ways, which leave
/// by script, still work).
pub fn form_action_origin(rt: &crate::app::state::Runtime, target: &str) -> Option<String> {
    let own = crate::app::state::Runtime::portal_url(rt, "/oidc/authorize?");
    if !target.starts_with(&own) {
        return None;
    }
    let u = url::Url::parse(target).ok()?;
    let q = |k: &str| {
        u.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    let client = rt.config.oidc.client(&q("client_id")?)?;
    let ruri = q("redirect_uri")?;
    if !client.redirect_ok(&ruri) {
        return None;
    }
    let origin = url::Url::parse(&ruri).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// When a fresh sign-in was asked for (for this client) and done: the time it was asked
/// for, from the request's signed mark.
pub(super) fn reauth_since(
    st: &Shared,
    p: &AuthorizeParams,
    client: &OidcClient,
    now: DateTime<Utc>,
) -> Option<i64> {
    p.sg_reauth.as_deref().and_then(|m| {
        let v = st.signer.verify(REAUTH, m, now.timestamp())?;
        let (cid, t) = v.split_once('|')?;
        (cid == client.id.as_str()).then(|| t.parse::<i64>().ok())?
    })
}

/// One authorization request on its way through the portal.
pub(super) struct Flow<'a> {
    pub(super) st: &'a Shared,
    pub(super) rt: &'a Here,
    pub(super) p: &'a AuthorizeParams,
    /// The `request_uri` of a pushed request: returns name it, not its parameters.
    pub(super) pushed: Option<&'a str>,
    pub(super) back: &'a Back<'a>,
    pub(super) now: DateTime<Utc>,
    /// The client, registered, with its redirect URI checked.
    pub(super) client: &'a OidcClient,
    /// What the request asks on top of the app's policies.
    pub(super) asked: Asked,
    /// See [`reauth_since`].
    pub(super) reauth_since: Option<i64>,
}

impl Flow<'_> {
    /// The answer to the access pipeline's verdict.
    pub(super) async fn answer(&self, verdict: Verdict, issue: Issue<'_>) -> Response {
        let (asked, back, now) = (&self.asked, self.back, self.now);
        match verdict {
            Verdict::Unavailable(e) => {
                tracing::error!(error = %e, "oidc authorize: a store or signal source failed");
                back.error("temporarily_unavailable", "try again shortly")
            }
            Verdict::SignIn(_) if asked.none => back.error("login_required", "no sign-in session"),
            Verdict::SignIn(_) => {
                // A sign-in now is a fresh one: it meets `prompt=login` and `max_age` too.
                let mark = (asked.login || asked.max_age.is_some()).then_some(now.timestamp());
                self.to_login(mark)
            }
            Verdict::Deny(_) if asked.none => back.error("access_denied", "access is not allowed"),
            v @ Verdict::Deny(_) => self.to_portal(&v, self.reauth_since),
            Verdict::StepUp(_) if asked.none => back.error(
                "interaction_required",
                "the sign-in needs more from the user",
            ),
            Verdict::StepUp(mut s) => {
                if let Some(l) = asked.level {
                    s.requirement.min_aal = Some(s.requirement.min_aal.map_or(l, |m| m.max(l)));
                }
                self.to_portal(&Verdict::StepUp(s), self.reauth_since)
            }
            Verdict::Allow(g) => code::allow(self, &g, issue).await,
        }
    }

    /// The step-up page for the level the request asks (`acr_values`, `claims`), which the
    /// user can reach but the session has not.
    pub(super) fn to_step_up(&self, g: &Grant, req: StepUpRequirement) -> Response {
        let (client, rt) = (self.client, self.rt);
        let name = client.name.clone().unwrap_or_else(|| {
            rt.config
                .apps
                .iter()
                .find(|a| a.id.as_str() == client.app.as_str())
                .and_then(|a| a.name.clone())
                .unwrap_or_else(|| client.id.to_string())
        });
        let step = StepToken {
            rid: crate::access::RequestId::current().as_str().to_string(),
            rt: self.return_url(self.reauth_since),
            back: None,
            why: crate::i18n::t_with(
                "reason-app-asks",
                &[
                    ("app", name.to_string().into()),
                    ("what", crate::i18n::describe(&req).into()),
                ],
            ),
            req,
            sign_in: false,
            user_id: g.user.id.clone(),
        };
        let t = Links::new(&self.st.signer, rt).sign_step(&step, self.now);
        see_other(&rt.portal_url(&format!("/step-up?t={t}")))
    }

    /// This request's URL on the public URL, with the fresh-sign-in mark `mark` (the time
    /// it was asked for), signed.
    pub(super) fn return_url(&self, mark: Option<i64>) -> String {
        let mut p = match self.pushed {
            Some(uri) => AuthorizeParams {
                client_id: self.p.client_id.clone(),
                request_uri: Some(uri.to_string()),
                ..AuthorizeParams::default()
            },
            None => self.p.clone(),
        };
        p.sg_reauth = mark.map(|t| {
            let cid = p.client_id.clone().unwrap_or_default();
            let exp =
                self.now.timestamp() + self.rt.config.server.return_target_ttl.as_secs() as i64;
            self.st.signer.sign(REAUTH, &format!("{cid}|{t}"), exp)
        });
        let q = serde_json::to_value(&p)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in q {
            if let Some(s) = v.as_str() {
                ser.append_pair(&k, s);
            }
        }
        crate::app::state::Runtime::portal_url(
            self.rt,
            &format!("/oidc/authorize?{}", ser.finish()),
        )
    }

    /// The sign-in page, returning here with the mark `mark`.
    pub(super) fn to_login(&self, mark: Option<i64>) -> Response {
        let url = self.return_url(mark);
        match Links::new(&self.st.signer, self.rt).sign_return(&url, self.now) {
            Some(t) => see_other(&self.rt.portal_url(&format!("/login?t={t}"))),
            None => self
                .back
                .error("server_error", "the sign-in could not be started"),
        }
    }

    /// The portal page for a step-up or block verdict, returning here.
    pub(super) fn to_portal(&self, v: &Verdict, mark: Option<i64>) -> Response {
        let url = self.return_url(mark);
        let rid = crate::access::RequestId::current();
        let ret = Return {
            request_id: rid.as_str(),
            portal_origin: &self.rt.public_url,
            url,
            method: &Method::GET,
            referer: None,
            hand_off: None,
        };
        match portal_link(&self.st.signer, self.rt, v, &ret, self.now) {
            Some(to) => see_other(&to),
            None => self.back.error("server_error", "unexpected verdict"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_links_are_only_for_authorization_requests() {
        let cfg = stepgate_config::load_str(
            "t.yaml",
            "apps: []\nserver: { public_url: \"https://sso.example.com\" }\n",
            None,
        )
        .unwrap();
        let rt = crate::app::state::Runtime::new(cfg);
        let t = "https://sso.example.com/_stepgate/oidc/authorize?client_id=a";
        assert_eq!(
            cancel_link(&rt, t).as_deref(),
            Some(&*format!("{t}&sg_cancel=1"))
        );
        assert_eq!(cancel_link(&rt, "https://app.example.com/x"), None);
        assert_eq!(
            cancel_link(&rt, "https://evil.example/_stepgate/oidc/authorize?x"),
            None
        );
    }
}
