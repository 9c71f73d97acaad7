//! The authorization endpoint: one more entry point of the access pipeline. The request is
//! checked (client, exact redirect URI — before anything is sent there — response type,
//! scopes, PKCE), read into an [`AccessRequest`] for the client's app, and decided by
//! [`crate::access::Access::decide`]; the [`Verdict`] is rendered here, in one place:
//!
//! | verdict | answer |
//! |---|---|
//! | `Allow` | a code, once what the request itself asks is met too (below) |
//! | `SignIn` | the portal's sign-in page, returning to this request (`prompt=none`: `login_required`) |
//! | `StepUp` | the portal's step-up page for the policy's requirement, raised by the request's (`prompt=none`: `interaction_required`) |
//! | `Deny` | the portal's blocked page, with the failing checks (`prompt=none`: `access_denied`) |
//! | `Unavailable` | `temporarily_unavailable` |
//!
//! What the request asks can raise what the app's policies require, never lower it:
//! `acr_values` (voluntary: a level the user cannot reach is not asked for), an essential
//! `acr` in `claims` (unreachable: `unmet_authentication_requirements`), `max_age` and
//! `prompt=login` (a fresh sign-in: the return carries a signed mark of when it was asked
//! for, and the sign-in must be newer).

use axum::extract::{Query, RawForm};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Extension;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_authn::service::Authenticator;
use stepgate_config::{ClientType, OidcClient};
use stepgate_policy::{RequestKind, StepUpRequirement};

use super::error::{not_redirected, Back};
use super::grant::{self, Authorization, Code};
use super::issuer;
use crate::access::request::client_ip;
use crate::access::signals::PeerCertificates;
use crate::access::{AccessRequest, Connection, Credentials, Verdict};
use crate::app::responses::{see_other, Peer};
use crate::app::state::Shared;
use crate::gateway::render::{portal_link, Return};
use crate::portal::extract::{Here, Visit};
use crate::portal::links::{Links, StepToken};

/// The parameters of an authorization request (query or form).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuthorizeParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_challenge_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acr_values: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claims: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    login_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ui_locales: Option<String>,
    /// stepgate's own: the signed time a fresh sign-in was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sg_reauth: Option<String>,
    /// stepgate's own: the user gave up (the blocked page's "Cancel"): `access_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sg_cancel: Option<String>,
}

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

/// `GET {portal}/oidc/authorize`.
pub async fn authorize_get(
    visit: Visit,
    peer: Peer,
    tls: Option<Extension<PeerCertificates>>,
    headers: HeaderMap,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    authorize(visit, peer, tls, headers, p).await
}

/// `POST {portal}/oidc/authorize` (form-encoded, OIDC Core §3.1.2.1).
pub async fn authorize_post(
    visit: Visit,
    peer: Peer,
    tls: Option<Extension<PeerCertificates>>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let p: AuthorizeParams = match serde_urlencoded_params(&body) {
        Some(p) => p,
        None => return not_redirected(visit.here.portal(), "The request could not be read."),
    };
    authorize(visit, peer, tls, headers, p).await
}

fn serde_urlencoded_params(body: &[u8]) -> Option<AuthorizeParams> {
    let mut m = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if m.insert(k.into_owned(), serde_json::Value::String(v.into_owned()))
            .is_some()
        {
            // A parameter sent twice is an invalid request (RFC 6749 §3.1).
            return None;
        }
    }
    serde_json::from_value(serde_json::Value::Object(m)).ok()
}

/// What the request asks on top of the app's policies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// The lowest level among recognised `acr_values` / essential `acr` values.
    pub level: Option<u8>,
    /// Whether the level is essential (the `claims` parameter).
    pub essential: bool,
    /// `max_age`, in seconds.
    pub max_age: Option<i64>,
    /// `prompt=login`.
    pub login: bool,
    /// `prompt=none`.
    pub none: bool,
}

/// The OAuth error code and description for a request that cannot be served.
type Refused = (&'static str, String);

/// Reads what the request asks, or why it cannot be served.
pub fn asked(
    p: &AuthorizeParams,
    acr: &stepgate_config::oidc::AcrConfig,
) -> Result<Asked, Refused> {
    let mut a = Asked::default();
    if let Some(prompt) = &p.prompt {
        for v in prompt.split(' ').filter(|v| !v.is_empty()) {
            match v {
                "none" => a.none = true,
                "login" => a.login = true,
                "consent" | "select_account" => {}
                other => {
                    return Err((
                        "invalid_request",
                        format!("unsupported prompt value `{other}`"),
                    ))
                }
            }
        }
        if a.none && prompt.split(' ').filter(|v| !v.is_empty()).count() > 1 {
            return Err((
                "invalid_request",
                "prompt=none cannot be combined with other values".into(),
            ));
        }
    }
    if let Some(m) = &p.max_age {
        match m.trim().parse::<i64>() {
            Ok(n) if n >= 0 => a.max_age = Some(n),
            _ => {
                return Err((
                    "invalid_request",
                    "max_age must be a whole number of seconds".into(),
                ))
            }
        }
    }
    if let Some(values) = &p.acr_values {
        a.level = values.split(' ').filter_map(|v| acr.level(v)).min();
    }
    if let Some(claims) = &p.claims {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(claims) else {
            return Err(("invalid_request", "claims is not a JSON object".into()));
        };
        for part in ["id_token", "userinfo"] {
            let Some(c) = v.get(part).and_then(|x| x.get("acr")) else {
                continue;
            };
            let mut wanted: Vec<&str> = Vec::new();
            if let Some(s) = c.get("value").and_then(|x| x.as_str()) {
                wanted.push(s);
            }
            if let Some(list) = c.get("values").and_then(|x| x.as_array()) {
                wanted.extend(list.iter().filter_map(|x| x.as_str()));
            }
            let essential = c.get("essential").and_then(|x| x.as_bool()) == Some(true);
            let level = wanted.iter().filter_map(|w| acr.level(w)).min();
            if essential {
                match level {
                    Some(l) => {
                        a.essential = true;
                        a.level = Some(a.level.map_or(l, |x| x.max(l)));
                    }
                    None if !wanted.is_empty() => {
                        return Err((
                            "unmet_authentication_requirements",
                            "none of the essential acr values is offered here".into(),
                        ))
                    }
                    None => {}
                }
            } else if let Some(l) = level {
                a.level = Some(a.level.map_or(l, |x| x.min(l)));
            }
        }
    }
    Ok(a)
}

/// Checks the PKCE parameters: S256 only; required of public clients.
fn pkce(p: &AuthorizeParams, client: &OidcClient) -> Result<Option<String>, Refused> {
    match (&p.code_challenge, p.code_challenge_method.as_deref()) {
        (None, None) if client.client_type == ClientType::Public => Err((
            "invalid_request",
            "PKCE (code_challenge with S256) is required of this client".into(),
        )),
        (None, None) => Ok(None),
        (None, Some(_)) => Err((
            "invalid_request",
            "code_challenge_method without code_challenge".into(),
        )),
        (Some(c), Some("S256")) => {
            let ok = c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if ok {
                Ok(Some(c.clone()))
            } else {
                Err((
                    "invalid_request",
                    "code_challenge is not a base64url SHA-256".into(),
                ))
            }
        }
        (Some(_), _) => Err((
            "invalid_request",
            "only code_challenge_method=S256 is accepted (plain is refused)".into(),
        )),
    }
}

const REAUTH: &str = "oidc-reauth";

/// What the pushed-request endpoint can check before a browser ever comes: the redirect
/// URI, response type, scopes, PKCE and what the request asks.
pub fn precheck(
    p: &AuthorizeParams,
    client: &OidcClient,
    cfg: &stepgate_config::OidcConfig,
) -> Result<(), Refused> {
    if !p
        .redirect_uri
        .as_deref()
        .is_some_and(|u| client.redirect_ok(u))
    {
        return Err((
            "invalid_request",
            "redirect_uri is not one the client registered".into(),
        ));
    }
    checked(p, client)?;
    scopes(p, client)?;
    pkce(p, client)?;
    asked(p, &cfg.acr)?;
    Ok(())
}

/// The parameters a pushed request's `request_uri` stands for (the query's own marks
/// kept), with the pushed request's id; `None` when it is not one this deployment sealed
/// for this client, or it expired.
fn unpushed(
    st: &Shared,
    p: &AuthorizeParams,
    now: DateTime<Utc>,
) -> Option<(AuthorizeParams, String)> {
    let uri = p.request_uri.as_deref()?;
    let pushed = st.oidc.open_pushed(uri)?;
    if Some(pushed.cid.as_str()) != p.client_id.as_deref() || now.timestamp() > pushed.exp {
        return None;
    }
    let mut params = pushed.params;
    params.sg_reauth = p.sg_reauth.clone();
    params.sg_cancel = p.sg_cancel.clone();
    Some((params, pushed.jti))
}

async fn authorize(
    Visit { st, here: rt, jar }: Visit,
    peer: Peer,
    tls: Option<Extension<PeerCertificates>>,
    headers: HeaderMap,
    p: AuthorizeParams,
) -> Response {
    let now = Utc::now();
    let cfg = &rt.config.oidc;
    // A pushed request (RFC 9126): its sealed parameters replace the query's.
    let (p, pushed) = match &p.request_uri {
        Some(uri) if uri.starts_with(super::par::URN) => match unpushed(&st, &p, now) {
            Some((params, jti)) => (params, Some((uri.clone(), jti))),
            None => {
                return not_redirected(
                    rt.portal(),
                    "This sign-in request has expired or is not valid. Start again from the application.",
                )
            }
        },
        _ => (p, None),
    };
    // Until the client and its redirect URI are known good, nothing is sent anywhere.
    let Some(client) = p.client_id.as_deref().and_then(|id| cfg.client(id)) else {
        return not_redirected(
            rt.portal(),
            "The application that sent you here is not registered with stepgate.",
        );
    };
    let Some(redirect_uri) = p.redirect_uri.as_deref().filter(|u| client.redirect_ok(u)) else {
        return not_redirected(rt.portal(), "The application asked to return to an address it has not registered, so stepgate will not send you there.");
    };
    let iss = issuer(&rt);
    let back = Back {
        redirect_uri,
        state: p.state.as_deref(),
        issuer: &iss,
    };
    if p.sg_cancel.is_some() {
        return back.error("access_denied", "the user did not complete the sign-in");
    }
    match checked(&p, client) {
        Ok(()) => {}
        Err((e, d)) => return back.error(e, &d),
    }
    let scope = match scopes(&p, client) {
        Ok(s) => s,
        Err((e, d)) => return back.error(e, &d),
    };
    let challenge = match pkce(&p, client) {
        Ok(c) => c,
        Err((e, d)) => return back.error(e, &d),
    };
    let asked = match asked(&p, &cfg.acr) {
        Ok(a) => a,
        Err((e, d)) => return back.error(e, &d),
    };
    // When a fresh sign-in was asked for and done: the time it was asked for.
    let reauth_since = p.sg_reauth.as_deref().and_then(|m| {
        let v = st.signer.verify(REAUTH, m, now.timestamp())?;
        let (cid, t) = v.split_once('|')?;
        (cid == client.id.as_str()).then(|| t.parse::<i64>().ok())?
    });

    let ip = client_ip(&rt, peer.0, &headers);
    let request = AccessRequest {
        id: crate::access::RequestId::current(),
        kind: RequestKind::Access,
        app: Some(client.app.as_str()),
        method: &Method::GET,
        path: "/",
        headers: &headers,
        ip,
        credentials: Credentials::Cookies(&jar),
        connection: Connection {
            peer: Some(peer.0.ip()),
            tls: tls.as_ref().map(|t| &t.0),
        },
        now,
    };
    let judged = st.access.decide(&rt, &request).await;
    let flow = Flow {
        st: &st,
        rt: &rt,
        p: &p,
        pushed: pushed.as_ref().map(|(uri, _)| uri.as_str()),
        back: &back,
        now,
    };
    match judged.verdict {
        Verdict::Unavailable(e) => {
            tracing::error!(error = %e, "oidc authorize: a store or signal source failed");
            back.error("temporarily_unavailable", "try again shortly")
        }
        Verdict::SignIn(_) if asked.none => back.error("login_required", "no sign-in session"),
        Verdict::SignIn(_) => {
            // A sign-in now is a fresh one: it meets `prompt=login` and `max_age` too.
            let mark = (asked.login || asked.max_age.is_some()).then_some(now.timestamp());
            flow.to_login(mark)
        }
        Verdict::Deny(_) if asked.none => back.error("access_denied", "access is not allowed"),
        v @ Verdict::Deny(_) => flow.to_portal(&v, reauth_since),
        Verdict::StepUp(_) if asked.none => back.error(
            "interaction_required",
            "the sign-in needs more from the user",
        ),
        Verdict::StepUp(mut s) => {
            if let Some(l) = asked.level {
                s.requirement.min_aal = Some(s.requirement.min_aal.map_or(l, |m| m.max(l)));
            }
            flow.to_portal(&Verdict::StepUp(s), reauth_since)
        }
        Verdict::Allow(g) => {
            let auth_time = g.assurance.auth_time.unwrap_or(g.session.data.created_at);
            // `prompt=login`, `max_age`: a sign-in newer than the request's mark, or (max_age)
            // recent enough.
            let fresh_enough = match (asked.login, asked.max_age) {
                (false, None) => true,
                (login, max_age) => {
                    let by_mark = reauth_since.is_some_and(|t| auth_time.timestamp() >= t);
                    let by_age =
                        !login && max_age.is_some_and(|m| (now - auth_time).num_seconds() <= m);
                    by_mark || by_age
                }
            };
            if !fresh_enough {
                if asked.none {
                    return back.error("login_required", "a fresh sign-in is needed");
                }
                return flow.to_login(Some(now.timestamp()));
            }
            if let Some(level) = asked.level.filter(|l| g.assurance.aal < *l) {
                let req = StepUpRequirement {
                    min_aal: Some(level),
                    ..StepUpRequirement::default()
                };
                match reachable(&st, &rt, &g.user, &g.session, &req, now).await {
                    Err(e) => {
                        tracing::error!(error = %e, "oidc authorize: reading the user's factors failed");
                        return back.error("temporarily_unavailable", "try again shortly");
                    }
                    Ok(false) if asked.essential => {
                        return back.error(
                            "unmet_authentication_requirements",
                            "the requested authentication level cannot be reached",
                        )
                    }
                    // Voluntary: what the user can do is what they get.
                    Ok(false) => {}
                    Ok(true) if asked.none => {
                        return back.error("interaction_required", "a step-up is needed")
                    }
                    Ok(true) => {
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
                            rt: flow.return_url(reauth_since),
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
                        let t = Links::new(&st.signer, &rt).sign_step(&step, now);
                        return see_other(&rt.portal_url(&format!("/step-up?t={t}")));
                    }
                }
            }
            let sct = grant::session_mark(g.session.data.created_at);
            let code = Code {
                auth: Authorization {
                    cid: client.id.to_string(),
                    uid: g.user.id.clone(),
                    sct,
                    aal: g.assurance.aal,
                    amr: g.assurance.amr.clone(),
                    auth_time: auth_time.timestamp(),
                    scope,
                    gid: grant::new_id(),
                    nonce: p.nonce.clone(),
                },
                ruri: redirect_uri.to_string(),
                chal: challenge,
                exp: now.timestamp() + cfg.code_lifetime.as_secs() as i64,
            };
            if let Some((_, jti)) = &pushed {
                // One code per pushed request.
                match st
                    .stores
                    .hot
                    .remember_once(
                        &format!("oidc:par:{jti}"),
                        std::time::Duration::from_secs(300),
                    )
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        return back.error("invalid_request", "this request_uri was already used")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "oidc authorize: the hot store failed");
                        return back.error("temporarily_unavailable", "try again shortly");
                    }
                }
            }
            super::backchannel::signed_in(&st, &g.user.id, sct, client.id.as_str()).await;
            match st.oidc.seal_code(&code) {
                Some(c) => {
                    tracing::info!(client = %client.id.as_str(), user = %g.user.username, aal = g.assurance.aal, "oidc: code issued");
                    see_other(&back.url(&[("code", &c)]))
                }
                None => back.error("server_error", "the code could not be issued"),
            }
        }
    }
}

/// The request's shape: `response_type=code` only, no request objects, query mode.
fn checked(p: &AuthorizeParams, _client: &OidcClient) -> Result<(), Refused> {
    if p.request.is_some() {
        return Err((
            "request_not_supported",
            "request objects are not accepted".into(),
        ));
    }
    if p.request_uri.is_some() {
        return Err((
            "request_uri_not_supported",
            "request_uri is not accepted".into(),
        ));
    }
    match p.response_type.as_deref() {
        Some("code") => {}
        None => return Err(("invalid_request", "response_type is required".into())),
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is supported".into(),
            ))
        }
    }
    if p.response_mode.as_deref().is_some_and(|m| m != "query") {
        return Err((
            "invalid_request",
            "only response_mode=query is supported".into(),
        ));
    }
    Ok(())
}

/// The granted scopes: `openid` and only what the client may ask for.
fn scopes(p: &AuthorizeParams, client: &OidcClient) -> Result<String, Refused> {
    let asked: Vec<&str> = p
        .scope
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if !asked.contains(&"openid") {
        return Err(("invalid_scope", "the openid scope is required".into()));
    }
    if let Some(bad) = asked.iter().find(|s| !client.scope_ok(s)) {
        return Err((
            "invalid_scope",
            format!("the scope `{bad}` is not allowed for this client"),
        ));
    }
    let mut out: Vec<&str> = Vec::new();
    for s in asked {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out.join(" "))
}

/// Whether the user can reach `req` with the factors they have enrolled.
async fn reachable(
    st: &Shared,
    rt: &Here,
    user: &stepgate_store::UserRecord,
    session: &crate::session::Session,
    req: &StepUpRequirement,
    now: DateTime<Utc>,
) -> Result<bool, stepgate_authn::service::AuthError> {
    let enrolled = st.authn.enrolled(user).await?;
    let for_step = Authenticator::enrolled_for_step_up(&enrolled);
    let sat = stepgate_authn::satisfies(
        &session.data.auth_state(),
        req,
        &rt.config.assurance,
        &for_step,
        now,
    );
    Ok(sat.satisfied || !sat.candidates.is_empty())
}

/// One authorization request on its way through the portal.
struct Flow<'a> {
    st: &'a Shared,
    rt: &'a Here,
    p: &'a AuthorizeParams,
    /// The `request_uri` of a pushed request: returns name it, not its parameters.
    pushed: Option<&'a str>,
    back: &'a Back<'a>,
    now: DateTime<Utc>,
}

impl Flow<'_> {
    /// This request's URL on the public URL, with the fresh-sign-in mark `mark` (the time
    /// it was asked for), signed.
    fn return_url(&self, mark: Option<i64>) -> String {
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
    fn to_login(&self, mark: Option<i64>) -> Response {
        let url = self.return_url(mark);
        match Links::new(&self.st.signer, self.rt).sign_return(&url, self.now) {
            Some(t) => see_other(&self.rt.portal_url(&format!("/login?t={t}"))),
            None => self
                .back
                .error("server_error", "the sign-in could not be started"),
        }
    }

    /// The portal page for a step-up or block verdict, returning here.
    fn to_portal(&self, v: &Verdict, mark: Option<i64>) -> Response {
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
    use stepgate_config::oidc::AcrConfig;

    fn acr() -> AcrConfig {
        let mut a = AcrConfig::default();
        a.names.insert("aal2".into(), "urn:x:mfa".into());
        a.aliases.insert("phr".into(), 3);
        a
    }

    fn with(f: impl FnOnce(&mut AuthorizeParams)) -> Result<Asked, Refused> {
        let mut p = AuthorizeParams::default();
        f(&mut p);
        asked(&p, &acr())
    }

    #[test]
    fn acr_values_are_voluntary_and_the_lowest_recognised_level_counts() {
        assert_eq!(with(|_| {}).unwrap(), Asked::default());
        let a = with(|p| p.acr_values = Some("phr urn:x:mfa gold".into())).unwrap();
        assert_eq!((a.level, a.essential), (Some(2), false));
        let a = with(|p| p.acr_values = Some("gold silver".into())).unwrap();
        assert_eq!(a.level, None, "nothing recognised: nothing asked");
        // The published name replaces the level's own, which still reads as the level.
        assert_eq!(
            with(|p| p.acr_values = Some("aal3".into())).unwrap().level,
            Some(3)
        );
    }

    #[test]
    fn an_essential_acr_is_kept_or_refused() {
        let claims = |v: &str| {
            with(|p| {
                p.claims = Some(format!(
                    r#"{{"id_token":{{"acr":{{"essential":true,"values":{v}}}}}}}"#
                ))
            })
        };
        let a = claims(r#"["phr","urn:x:mfa"]"#).unwrap();
        assert_eq!((a.level, a.essential), (Some(2), true));
        assert_eq!(
            claims(r#"["gold"]"#).unwrap_err().0,
            "unmet_authentication_requirements"
        );
        // Essential and voluntary together: the essential level is a floor.
        let a = with(|p| {
            p.acr_values = Some("aal1".into());
            p.claims = Some(r#"{"id_token":{"acr":{"essential":true,"value":"phr"}}}"#.into());
        })
        .unwrap();
        assert_eq!(a.level, Some(3));
        assert_eq!(
            with(|p| p.claims = Some("[1]x".into())).unwrap_err().0,
            "invalid_request"
        );
    }

    #[test]
    fn prompt_and_max_age_are_read_strictly() {
        let a = with(|p| p.prompt = Some("login consent".into())).unwrap();
        assert!(a.login && !a.none);
        assert!(with(|p| p.prompt = Some("none".into())).unwrap().none);
        for bad in ["none login", "sudo"] {
            assert_eq!(
                with(|p| p.prompt = Some(bad.into())).unwrap_err().0,
                "invalid_request",
                "{bad}"
            );
        }
        assert_eq!(
            with(|p| p.max_age = Some("0".into())).unwrap().max_age,
            Some(0)
        );
        for bad in ["-1", "soon", "1.5"] {
            assert!(with(|p| p.max_age = Some(bad.into())).is_err(), "{bad}");
        }
    }

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
