//! Signing in through an upstream identity provider ([`crate::idp`]): the login page's
//! "Sign in with <provider>" sends the browser to the provider (authorization code flow
//! with PKCE, `state` and `nonce`), and the provider sends it back to the callback, where
//! the code is exchanged, the ID token verified, the user found or created, and the sign-in
//! handed to the access pipeline as a first factor ([`super::signin::sign_in`]) like a
//! password — so the sign-in policy decides, and asks for stepgate's own factors when the
//! upstream's do not count.
//!
//! The flow's secrets (state, nonce, PKCE verifier, return target) ride in a signed,
//! short-lived, `HttpOnly` cookie: the callback is accepted only in the browser that
//! started it, and each nonce only once (the hot store remembers it).

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum_extra::extract::cookie::Cookie;
use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stepgate_config::identity::IdentityProviderConfig;
use subtle::ConstantTimeEq;

use super::audit;
use super::error::PortalError;
use super::extract::{step_context, Here, Visit};
use super::links::Links;
use super::signin::{sign_in, FirstFactor};
use crate::access::request::client_ip;
use crate::access::signals::PeerCertificates;
use crate::access::{Connection, Rechecked, UpstreamRecheck};
use crate::app::responses::{see_other, Peer};
use crate::app::signer::random_id;
use crate::app::state::Shared;
use crate::idp::id_token::{self, Expected};
use crate::idp::{accounts, claims, UpstreamError};
use crate::session::cookies::CookieJar;
use crate::session::Session;
use stepgate_authn::session::UpstreamSignIn;
use stepgate_policy::StepUpRequirement;
use stepgate_store::{UserRecord, UPSTREAM_LINK_KIND};

/// The cookie holding a sign-in's flow between the redirect and the callback.
pub const FLOW_COOKIE: &str = "stepgate_upstream";
/// How long a browser has at the provider.
const FLOW_SECS: i64 = 600;
/// How long a used nonce is remembered (longer than any ID token stepgate accepts lives
/// unnoticed: the token's `exp` bounds replay anyway).
const NONCE_MEMORY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const FLOW_PURPOSE: &str = "upstream-flow";

/// What the flow cookie holds.
#[derive(Serialize, Deserialize)]
struct Flow {
    /// The provider's id.
    p: String,
    /// `state`.
    s: String,
    /// `nonce`.
    n: String,
    /// The PKCE verifier.
    v: String,
    /// The signed return target (the login page's `t`).
    t: String,
    /// A delegated step-up: the step-up page's signed link.
    #[serde(default)]
    st: Option<String>,
    /// When the flow started (a step-up's `auth_time` must not be older).
    #[serde(default)]
    at: i64,
}

/// `?t=` on the start link.
#[derive(Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    t: String,
    /// A delegated step-up: the step-up page's signed link.
    #[serde(default)]
    step: Option<String>,
    /// The address typed on the sign-in page (home-realm discovery), passed on.
    #[serde(default)]
    login_hint: Option<String>,
}

/// The configured provider `id`.
fn configured<'a>(rt: &'a Here, id: &str) -> Option<&'a IdentityProviderConfig> {
    rt.config
        .identity_providers
        .iter()
        .find(|p| p.id.as_str() == id)
}

/// The button's label for a provider.
pub fn display_name(p: &IdentityProviderConfig) -> String {
    p.name.clone().unwrap_or_else(|| p.id.to_string())
}

/// Where the provider sends the browser back.
fn redirect_uri(rt: &Here, id: &str) -> String {
    rt.portal_url(&format!("/login/upstream/{id}/callback"))
}

/// Where "Sign in with <provider `id`>" starts, going back to `token`'s target after, with
/// `login_hint` for the provider when given.
pub fn start_url(rt: &Here, id: &str, token: &str, login_hint: Option<&str>) -> Option<String> {
    configured(rt, id)?;
    let mut url = url::Url::parse(&rt.portal_url(&format!("/login/upstream/{id}"))).ok()?;
    {
        let mut q = url.query_pairs_mut();
        if !token.is_empty() {
            q.append_pair("t", token);
        }
        if let Some(h) = login_hint {
            q.append_pair("login_hint", h);
        }
    }
    Some(url.into())
}

/// Whether any provider claims e-mail domains (the sign-in page then takes the address
/// first).
pub fn discovers_home_realm(rt: &Here) -> bool {
    rt.config
        .identity_providers
        .iter()
        .any(|p| !p.domains.is_empty())
}

/// The provider whose `domains` hold the domain of the address `name`, if any.
pub fn provider_for_email<'a>(rt: &'a Here, name: &str) -> Option<&'a str> {
    let (_, domain) = name.rsplit_once('@')?;
    let domain = domain.trim().to_ascii_lowercase();
    rt.config
        .identity_providers
        .iter()
        .find(|p| p.domains.contains(&domain))
        .map(|p| p.id.as_str())
}

/// The providers as the login page lists them: `(label, start URL)`.
pub fn buttons(rt: &Here, token: &str) -> Vec<(String, String)> {
    rt.config
        .identity_providers
        .iter()
        .map(|p| {
            let mut url = format!("{}/login/upstream/{}", rt.portal(), p.id.as_str());
            if !token.is_empty() {
                url.push_str("?t=");
                url.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
            }
            (display_name(p), url)
        })
        .collect()
}

/// `GET {portal}/login/upstream/{id}`: off to the provider.
pub async fn start(
    Visit { st, here: rt, jar }: Visit,
    Path(id): Path<String>,
    Query(q): Query<StartQuery>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let Some(cfg) = configured(&rt, &id) else {
        return PortalError::BadRequest.into_response();
    };
    // A delegated step-up belongs to this browser's session and its step-up link.
    if let Some(step) = &q.step {
        if cfg.step_up_acr.is_none() {
            return PortalError::BadRequest.into_response();
        }
        if let Err(e) = step_context(&st, &rt, &jar, step).await {
            return e.into_response();
        }
    }
    let provider = match st.idps.provider(cfg).await {
        Ok(p) => p,
        Err(e) => {
            let ip = client_ip(&rt, peer.0, &headers);
            return refused(&st, &rt, cfg, &e, ip, None).await;
        }
    };
    let flow = Flow {
        p: id.clone(),
        s: random_id(),
        n: random_id(),
        v: format!("{}{}", random_id(), random_id()),
        t: q.t,
        st: q.step,
        at: Utc::now().timestamp(),
    };
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(flow.v.as_bytes()));
    let mut scopes: Vec<&str> = vec!["openid"];
    scopes.extend(
        cfg.scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "openid"),
    );
    let mut url = match url::Url::parse(&provider.metadata.authorization_endpoint) {
        Ok(u) => u,
        Err(e) => {
            let e = UpstreamError::Unavailable {
                provider: id.clone(),
                detail: format!("authorization_endpoint: {e}"),
            };
            return refused(&st, &rt, cfg, &e, None, None).await;
        }
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &cfg.client_id)
        .append_pair("redirect_uri", &redirect_uri(&rt, &id))
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &flow.s)
        .append_pair("nonce", &flow.n)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    if let Some(hint) = q
        .login_hint
        .as_deref()
        .filter(|h| !h.is_empty() && h.len() <= 256 && !h.chars().any(char::is_control))
    {
        url.query_pairs_mut().append_pair("login_hint", hint);
    }
    if let (Some(_), Some(acr)) = (&flow.st, &cfg.step_up_acr) {
        // Authenticate again, now, at this level.
        url.query_pairs_mut()
            .append_pair("acr_values", acr)
            .append_pair("max_age", "0")
            .append_pair("prompt", "login");
    }
    let payload = serde_json::to_string(&flow).unwrap_or_default();
    let value = st
        .signer
        .sign(FLOW_PURPOSE, &payload, Utc::now().timestamp() + FLOW_SECS);
    let mut c = Cookie::new(FLOW_COOKIE, value);
    c.set_http_only(true);
    c.set_secure(rt.config.sessions.cookie.secure);
    // Lax: the provider's redirect back is a top-level GET, which Lax cookies follow.
    c.set_same_site(cookie::SameSite::Lax);
    c.set_path(format!("{}/login/upstream/", rt.portal()));
    c.set_max_age(cookie::time::Duration::seconds(FLOW_SECS));
    (jar.set(c), see_other(url.as_str())).into_response()
}

/// The provider's answer.
#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET {portal}/login/upstream/{id}/callback`: the provider's answer, verified, and the
/// sign-in decided through the access pipeline.
pub async fn callback(
    Visit { st, here: rt, jar }: Visit,
    Path(id): Path<String>,
    Query(q): Query<CallbackQuery>,
    peer: Peer,
    tls: Option<Extension<PeerCertificates>>,
    headers: HeaderMap,
) -> Response {
    let Some(cfg) = configured(&rt, &id) else {
        return PortalError::BadRequest.into_response();
    };
    let ip = client_ip(&rt, peer.0, &headers);
    let now = Utc::now();
    // The flow this browser started, for this provider, with this state.
    let flow = jar
        .get(FLOW_COOKIE)
        .and_then(|c| st.signer.verify(FLOW_PURPOSE, c, now.timestamp()))
        .and_then(|p| serde_json::from_str::<Flow>(&p).ok())
        .filter(|f| f.p == id)
        .filter(|f| {
            let s = q.state.as_deref().unwrap_or("");
            !s.is_empty() && bool::from(s.as_bytes().ct_eq(f.s.as_bytes()))
        });
    let Some(flow) = flow else {
        let e = UpstreamError::BadToken {
            provider: id.clone(),
            detail: "the answer does not match a sign-in this browser started (state)".into(),
        };
        return refused(&st, &rt, cfg, &e, ip, None).await;
    };
    let jar = jar.set(expired_flow_cookie(&rt));
    if let Some(err) = q.error {
        let e = UpstreamError::Refused {
            provider: id.clone(),
            detail: format!(
                "{err}{}",
                q.error_description
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        };
        return (jar, refused(&st, &rt, cfg, &e, ip, None).await).into_response();
    }
    let (who, signed_in) =
        match identify(&st, &rt, cfg, &flow, q.code.as_deref().unwrap_or("")).await {
            Ok(w) => w,
            Err(e) => return (jar, refused(&st, &rt, cfg, &e, ip, None).await).into_response(),
        };
    if let Some(token) = &flow.st {
        return stepped_up(&st, &rt, jar, cfg, &flow, token, &who, ip).await;
    }
    let label = display_name(cfg);
    let source = accounts::Source {
        id: &id,
        label: &label,
        link_by_verified_email: cfg.link_by_verified_email,
    };
    let user = match accounts::account(st.stores.durable.as_ref(), &source, &who).await {
        Ok(u) => u,
        Err(e) => {
            return (
                jar,
                refused(&st, &rt, cfg, &e, ip, Some(&who.username)).await,
            )
                .into_response()
        }
    };
    if cfg.back_channel_logout {
        if let Some(sid) = &signed_in.sid {
            // A logout token may name the provider's session alone: which user it was.
            remember_sid(&st, &id, sid, &user.id).await;
        }
    }
    let mut factors = claims::factors(&who, &cfg.trust, now);
    let first = factors.remove(0);
    let attempt = FirstFactor {
        user,
        factor: first,
        also: factors,
        target: Links::new(&st.signer, &rt).verify_return(&flow.t, now),
        remember: false,
        ip,
        headers: &headers,
        connection: Connection {
            peer: Some(peer.0.ip()),
            tls: tls.as_ref().map(|t| &t.0),
        },
        upstream: Some(signed_in),
    };
    audit(
        &st,
        "signin.upstream",
        &attempt.user.username,
        ip,
        serde_json::json!({
            "provider": id, "sub": who.sub, "amr": who.amr, "acr": who.acr,
            "auth_time": who.auth_time.map(|t| t.timestamp()),
            "counted": std::iter::once(&attempt.factor).chain(&attempt.also).map(|f| &f.amr).collect::<Vec<_>>(),
        }),
    )
    .await;
    sign_in(&st, &rt, &jar, attempt)
        .await
        .respond(&rt, jar, false)
}

/// A delegated step-up's answer: the provider must have authenticated the session's own
/// user (the subject linked to them), again (`auth_time` not before the flow started), at
/// the level asked (`acr`); then what it proved counts as the trust mapping says, and the
/// step-up goes on as for any factor passed here.
#[allow(clippy::too_many_arguments)]
async fn stepped_up(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    cfg: &IdentityProviderConfig,
    flow: &Flow,
    token: &str,
    who: &claims::UpstreamIdentity,
    ip: Option<std::net::IpAddr>,
) -> Response {
    let (session, user, step) = match step_context(st, rt, &jar, token).await {
        Ok(c) => c,
        Err(e) => return (jar, e).into_response(),
    };
    let id = cfg.id.as_str();
    let link = match st
        .stores
        .durable
        .find_factor(UPSTREAM_LINK_KIND, &accounts::link_key(id, &who.sub))
        .await
    {
        Ok(l) => l,
        Err(e) => return (jar, PortalError::from(e)).into_response(),
    };
    let fresh = who
        .auth_time
        .is_some_and(|t| t.timestamp() >= flow.at - id_token::LEEWAY_SECS as i64);
    let problem = if link.is_none_or(|l| l.user_id != user.id) {
        Some(UpstreamError::Unusable {
            provider: id.to_string(),
            detail: "you confirmed as another account at the provider".into(),
        })
    } else if who.acr.is_none() || who.acr != cfg.step_up_acr {
        Some(UpstreamError::Refused {
            provider: id.to_string(),
            detail: format!(
                "it answered acr {:?}, not the {:?} asked for",
                who.acr, cfg.step_up_acr
            ),
        })
    } else if !fresh {
        Some(UpstreamError::Refused {
            provider: id.to_string(),
            detail: "it did not authenticate you again (auth_time is older than the request)"
                .into(),
        })
    } else {
        None
    };
    if let Some(e) = problem {
        let page = refused(st, rt, cfg, &e, ip, Some(&user.username)).await;
        return (jar, page).into_response();
    }
    let factors = claims::factors(who, &cfg.trust, Utc::now());
    audit(
        st,
        "stepup.upstream",
        &user.username,
        ip,
        serde_json::json!({ "provider": id, "acr": who.acr, "counted": factors.iter().map(|f| &f.amr).collect::<Vec<_>>() }),
    )
    .await;
    let on = super::stepup::page(&session, &user, token, &step);
    super::stepup::passed_all(st, rt, jar, on, factors, false).await
}

/// The providers the step-up page offers for `req`: those with delegated step-up that the
/// user is linked to, whose step-up answer (`trust.acr` of `step_up_acr`, passed now) would
/// meet it; `(label, start URL)`.
pub async fn step_up_offers(
    st: &Shared,
    rt: &Here,
    session: &Session,
    user: &UserRecord,
    req: &StepUpRequirement,
    token: &str,
) -> Vec<(String, String)> {
    let with_step_up: Vec<&IdentityProviderConfig> = rt
        .config
        .identity_providers
        .iter()
        .filter(|p| p.step_up_acr.is_some())
        .collect();
    if with_step_up.is_empty() {
        return Vec::new();
    }
    let links = st
        .stores
        .durable
        .list_factors(&user.id)
        .await
        .unwrap_or_default();
    let now = Utc::now();
    let mut out = Vec::new();
    for p in with_step_up {
        let linked = links.iter().any(|l| {
            l.kind == UPSTREAM_LINK_KIND
                && l.data.get("provider").and_then(|v| v.as_str()) == Some(p.id.as_str())
        });
        let answer = claims::UpstreamIdentity {
            sub: String::new(),
            username: String::new(),
            name: None,
            email: None,
            email_verified: false,
            groups: Vec::new(),
            attributes: Default::default(),
            amr: Vec::new(),
            acr: p.step_up_acr.clone(),
            auth_time: Some(now),
        };
        let mut factors = session.data.factors.clone();
        factors.extend(claims::factors(&answer, &p.trust, now));
        if linked && stepgate_authn::meets(&factors, req, &rt.config.assurance, now) {
            let url = format!(
                "{}/login/upstream/{}?step={}",
                rt.portal(),
                p.id.as_str(),
                url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
            );
            out.push((display_name(p), url));
        }
    }
    out
}

/// The code exchanged, the ID token verified (its nonce used once), the claims mapped; and
/// what the session keeps of the sign-in.
async fn identify(
    st: &Shared,
    rt: &Here,
    cfg: &IdentityProviderConfig,
    flow: &Flow,
    code: &str,
) -> Result<(claims::UpstreamIdentity, UpstreamSignIn), UpstreamError> {
    let id = cfg.id.as_str();
    let bad = |detail: &str| UpstreamError::BadToken {
        provider: id.to_string(),
        detail: detail.to_string(),
    };
    if code.is_empty() {
        return Err(bad("the answer carries no authorization code"));
    }
    let provider = st.idps.provider(cfg).await?;
    let client = st.idps.client_auth(cfg, &provider)?;
    let http = st.idps.http();
    let answer = provider
        .exchange(http, &client, code, &redirect_uri(rt, id), &flow.v)
        .await?;
    let token = answer
        .id_token
        .ok_or_else(|| bad("the token endpoint returned no ID token"))?;
    let expected = Expected {
        issuer: &cfg.issuer,
        client_id: &cfg.client_id,
        nonce: &flow.n,
    };
    let mut claims = id_token::verify(&provider, http, &token, &expected).await?;
    // Each nonce signs in once, on any node: a replayed ID token is refused.
    let fresh = st
        .stores
        .hot
        .remember_once(&format!("upstream-nonce:{id}:{}", flow.n), NONCE_MEMORY)
        .await
        .map_err(|e| UpstreamError::Unavailable {
            provider: id.to_string(),
            detail: format!("the hot store failed: {e}"),
        })?;
    if !fresh {
        return Err(bad("its nonce was already used (a replayed sign-in)"));
    }
    if cfg.userinfo {
        if let Some(at) = answer.access_token.as_deref() {
            let info = provider.userinfo(http, at).await?;
            // Core §5.3.2: the user-info `sub` must be the ID token's.
            if info.get("sub") != claims.get("sub") {
                return Err(bad("the userinfo answer is about another subject"));
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
    }
    let sid = claims
        .get("sid")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .map(str::to_string);
    let who = claims::identity(&claims, &cfg.claims).map_err(|detail| UpstreamError::Unusable {
        provider: id.to_string(),
        detail,
    })?;
    let refresh = match (&cfg.refresh_interval, answer.refresh_token.as_deref()) {
        (Some(_), Some(r)) => st.idps.seal_refresh(id, &who.sub, r),
        _ => None,
    };
    let signed_in = UpstreamSignIn {
        provider: id.to_string(),
        sub: who.sub.clone(),
        sid,
        id_token: cfg.sign_out_upstream.then_some(token),
        refresh,
        checked_at: Utc::now().timestamp(),
    };
    Ok((who, signed_in))
}

/// How long the users behind a provider's session id are remembered (longer than any
/// session lives).
const SID_MEMORY: std::time::Duration = std::time::Duration::from_secs(31 * 24 * 3600);

fn sid_key(provider: &str, sid: &str) -> String {
    format!("upstream-sid:{provider}:{sid}")
}

/// Remembers that `user_id` signed in with the provider's session `sid`.
async fn remember_sid(st: &Shared, provider: &str, sid: &str, user_id: &str) {
    let r = st
        .stores
        .hot
        .push_recent(
            &sid_key(provider, sid),
            &serde_json::json!(user_id),
            8,
            SID_MEMORY,
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(provider, error = %e, "remembering the provider's session id failed; a logout token naming only it will end nothing");
    }
}

/// Where the browser goes to sign out at the provider too (RP-Initiated Logout 1.0), for a
/// session that signed in through a provider with `sign_out_upstream`: its
/// `end_session_endpoint` with the ID token as `id_token_hint`, the client id, and
/// `{portal}/login/upstream/{id}/signed-out` to come back to. `None` when the provider
/// does not take part (off, no endpoint, unreachable: the stepgate session is ended anyway).
pub async fn end_session_url(st: &Shared, rt: &Here, up: &UpstreamSignIn) -> Option<String> {
    let cfg = configured(rt, &up.provider).filter(|c| c.sign_out_upstream)?;
    let hint = up.id_token.as_deref()?;
    let provider = match st.idps.provider(cfg).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(provider = cfg.id.as_str(), error = %e, "signing out at the provider skipped");
            return None;
        }
    };
    let endpoint = provider.metadata.end_session_endpoint.as_deref()?;
    let mut url = url::Url::parse(endpoint).ok()?;
    url.query_pairs_mut()
        .append_pair("id_token_hint", hint)
        .append_pair("client_id", &cfg.client_id)
        .append_pair(
            "post_logout_redirect_uri",
            &rt.portal_url(&format!("/login/upstream/{}/signed-out", cfg.id.as_str())),
        );
    Some(url.into())
}

/// `GET {portal}/login/upstream/{id}/signed-out`: back from signing out at the provider.
pub async fn signed_out(Visit { here: rt, jar, .. }: Visit, Path(id): Path<String>) -> Response {
    if configured(&rt, &id).is_none() {
        return PortalError::BadRequest.into_response();
    }
    super::sessions::signed_out_page(&rt, jar, false)
}

/// The form a provider posts a logout token in.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    logout_token: String,
}

/// `POST {portal}/login/upstream/{id}/backchannel-logout`: the provider says a session of
/// its ended (Back-Channel Logout 1.0). A verified token (its `jti` accepted once) ends the
/// stepgate sessions signed in through that provider session — by `sid`, or every one of
/// the subject's without a `sid` — and with them their grants to stepgate's own OpenID
/// clients (which are told in turn). 200 when verified (whether or not a session was
/// still open), 400 otherwise.
pub async fn backchannel_logout(
    Visit { st, here: rt, .. }: Visit,
    Path(id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    axum_extra::extract::Form(f): axum_extra::extract::Form<LogoutForm>,
) -> Response {
    let answer = |status: StatusCode, error: Option<&str>| {
        let body = match error {
            None => String::new(),
            Some(d) => serde_json::json!({ "error": "invalid_request", "error_description": d })
                .to_string(),
        };
        (
            status,
            [
                ("cache-control", "no-store"),
                ("content-type", "application/json"),
            ],
            body,
        )
            .into_response()
    };
    let Some(cfg) = configured(&rt, &id).filter(|c| c.back_channel_logout) else {
        return answer(StatusCode::NOT_FOUND, Some("no back-channel logout here"));
    };
    let ip = client_ip(&rt, peer.0, &headers);
    let refuse = |e: UpstreamError| {
        tracing::warn!(provider = cfg.id.as_str(), ip = ?ip, error = %e, "upstream logout token refused");
        answer(
            StatusCode::BAD_REQUEST,
            Some("the logout token is not valid"),
        )
    };
    if f.logout_token.is_empty() || f.logout_token.len() > 16 * 1024 {
        return refuse(UpstreamError::BadToken {
            provider: id.clone(),
            detail: "no logout token, or one too large".into(),
        });
    }
    let provider = match st.idps.provider(cfg).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(provider = cfg.id.as_str(), error = %e, "upstream logout token not checked");
            return answer(StatusCode::SERVICE_UNAVAILABLE, Some("try again later"));
        }
    };
    let token = match crate::idp::logout_token::verify(
        &provider,
        st.idps.http(),
        &f.logout_token,
        &cfg.issuer,
        &cfg.client_id,
    )
    .await
    {
        Ok(t) => t,
        Err(e) => return refuse(e),
    };
    let jti_memory = std::time::Duration::from_secs(
        2 * crate::idp::logout_token::MAX_AGE_SECS as u64 + 2 * id_token::LEEWAY_SECS,
    );
    match st
        .stores
        .hot
        .remember_once(&format!("upstream-logout:{id}:{}", token.jti), jti_memory)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return refuse(UpstreamError::BadToken {
                provider: id.clone(),
                detail: format!("logout token `{}` was already used", token.jti),
            })
        }
        Err(e) => {
            tracing::warn!(provider = cfg.id.as_str(), error = %e, "upstream logout token not checked");
            return answer(StatusCode::SERVICE_UNAVAILABLE, Some("try again later"));
        }
    }
    match end_upstream_sessions(&st, &id, &token).await {
        Ok((username, ended)) => {
            audit(
                &st,
                "signout.upstream",
                username.as_deref().unwrap_or(&format!("upstream:{id}")),
                ip,
                serde_json::json!({
                    "provider": id, "sid": token.sid, "sub": token.sub, "ended": ended,
                }),
            )
            .await;
            answer(StatusCode::OK, None)
        }
        Err(e) => {
            tracing::warn!(provider = cfg.id.as_str(), error = %e, "upstream logout: the store failed");
            answer(StatusCode::SERVICE_UNAVAILABLE, Some("try again later"))
        }
    }
}

/// Ends the sessions a logout token names; the user's name (when found) and how many ended.
async fn end_upstream_sessions(
    st: &Shared,
    id: &str,
    token: &crate::idp::logout_token::LogoutToken,
) -> Result<(Option<String>, usize), stepgate_store::StoreError> {
    let mut users: Vec<String> = Vec::new();
    if let Some(sub) = &token.sub {
        if let Some(link) = st
            .stores
            .durable
            .find_factor(UPSTREAM_LINK_KIND, &accounts::link_key(id, sub))
            .await?
        {
            users.push(link.user_id);
        }
    } else if let Some(sid) = &token.sid {
        for u in st.stores.hot.recent(&sid_key(id, sid)).await? {
            if let Some(u) = u.as_str() {
                if !users.iter().any(|x| x == u) {
                    users.push(u.to_string());
                }
            }
        }
    }
    let mut ended = 0;
    let mut username = None;
    for user_id in users {
        for sid in st.sessions.of_user(&user_id).await? {
            let Some((_, d)) = st.sessions.peek(&sid).await? else {
                continue;
            };
            let matches = d.upstream.as_ref().is_some_and(|u| {
                u.provider == id
                    && token.sub.as_ref().is_none_or(|s| *s == u.sub)
                    && token.sid.as_ref().is_none_or(|s| u.sid.as_ref() == Some(s))
            });
            if matches {
                st.sessions.end(&sid).await?;
                ended += 1;
                username = Some(d.username.clone());
            }
        }
    }
    Ok((username, ended))
}

fn expired_flow_cookie(rt: &Here) -> Cookie<'static> {
    let mut c = Cookie::new(FLOW_COOKIE, "");
    c.set_path(format!("{}/login/upstream/", rt.portal()));
    c.set_max_age(cookie::time::Duration::ZERO);
    c.set_http_only(true);
    c
}

/// A sign-in through `cfg` that did not happen: audited (with the operator's detail) and a
/// page saying what the person can do (fail closed: no session).
async fn refused(
    st: &Shared,
    rt: &Here,
    cfg: &IdentityProviderConfig,
    e: &UpstreamError,
    ip: Option<std::net::IpAddr>,
    username: Option<&str>,
) -> Response {
    tracing::warn!(provider = cfg.id.as_str(), error = %e, "upstream sign-in refused");
    let mut detail = serde_json::json!({ "provider": cfg.id.as_str(), "reason": e.reason(), "detail": e.to_string() });
    // Anyone can call the callback: refusals that name no user are audited at most
    // [`ANONYMOUS_AUDIT_PER_MINUTE`] a minute per provider, the rest counted, and the
    // count reported by the next row written.
    let write = match username {
        Some(_) => true,
        None => match anonymous_allowance(st, cfg.id.as_str()).await {
            Some(suppressed) => {
                if suppressed > 0 {
                    detail["suppressed_before"] = suppressed.into();
                }
                true
            }
            None => false,
        },
    };
    if write {
        audit(
            st,
            "signin.upstream_refused",
            username.unwrap_or(&format!("upstream:{}", cfg.id.as_str())),
            ip,
            detail,
        )
        .await;
    }
    let status = match e {
        UpstreamError::Unavailable { .. } | UpstreamError::Config { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        UpstreamError::Unusable { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    PortalError::Upstream {
        portal: rt.portal().to_string(),
        status,
        message: e.public_message(&display_name(cfg)),
    }
    .into_response()
}

/// How many refusals naming no user (a callback without a matching flow, a provider that
/// cannot be reached) are audited per provider and minute; the others are counted.
pub const ANONYMOUS_AUDIT_PER_MINUTE: u64 = 20;

/// The hot-store counter of anonymous refusals not audited for provider `id` (read and
/// reset by the next row written).
pub fn suppressed_audit_key(id: &str) -> String {
    format!("upstream-refused-suppressed:{id}")
}

/// Whether this anonymous refusal may be audited: `Some(how many were suppressed since the
/// last row)` when it may, `None` when over the minute's allowance (then counted). A store
/// failure lets the row through (the audit outbox keeps it).
async fn anonymous_allowance(st: &Shared, id: &str) -> Option<u64> {
    let hot = &st.stores.hot;
    let window = std::time::Duration::from_secs(60);
    let n = match hot
        .incr_counter(&format!("upstream-refused-audited:{id}"), window)
        .await
    {
        Ok(n) => n,
        Err(_) => return Some(0),
    };
    let key = suppressed_audit_key(id);
    if n > ANONYMOUS_AUDIT_PER_MINUTE {
        let _ = hot
            .incr_counter(&key, std::time::Duration::from_secs(24 * 3600))
            .await;
        return None;
    }
    let suppressed = hot.get_counter(&key).await.unwrap_or(0);
    if suppressed > 0 {
        let _ = hot.reset_counter(&key).await;
    }
    Some(suppressed)
}

/// The pipeline's hook re-checking upstream sessions ([`recheck`]).
pub fn recheck_hook(state: std::sync::Weak<crate::app::state::AppState>) -> UpstreamRecheck {
    Box::new(move |session: Session| {
        let state = state.clone();
        Box::pin(async move {
            match state.upgrade() {
                Some(st) => recheck(&st, session).await,
                None => Rechecked::Stands(session),
            }
        })
    })
}

/// Re-checks the user of a session that signed in through a provider with
/// `refresh_interval`, when that long has passed since the last check: its refresh token
/// is redeemed (one node at a time per session), and
/// - a provider that answers keeps the session, with the new refresh token it may issue;
/// - a provider that refuses (`invalid_grant`: the user disabled there, the grant revoked,
///   the session ended there) ends it, audited as `signout.upstream_refused`;
/// - a provider that cannot be reached keeps it, and is asked again at the next request a
///   minute on (an outage upstream does not sign everyone out).
pub async fn recheck(st: &Shared, session: Session) -> Rechecked {
    let Some(up) = session.data.upstream.clone() else {
        return Rechecked::Stands(session);
    };
    let Some(sealed) = up.refresh.as_deref() else {
        return Rechecked::Stands(session);
    };
    let rt = st.runtime.load_full();
    let Some(cfg) = rt
        .config
        .identity_providers
        .iter()
        .find(|p| p.id.as_str() == up.provider)
    else {
        return Rechecked::Stands(session);
    };
    let Some(interval) = cfg.refresh_interval.as_ref() else {
        return Rechecked::Stands(session);
    };
    let now = Utc::now();
    let due = now.timestamp() - up.checked_at >= interval.0.as_secs() as i64;
    if !due {
        return Rechecked::Stands(session);
    }
    // One re-check at a time per session and state, on any node: a provider that rotates
    // refresh tokens would take a second use of the same one as theft.
    let key = format!("upstream-refresh:{}:{}", session.id, up.checked_at);
    match st
        .stores
        .hot
        .remember_once(&key, std::time::Duration::from_secs(60))
        .await
    {
        Ok(true) => {}
        _ => return Rechecked::Stands(session),
    }
    let id = cfg.id.as_str();
    let Some(token) = st.idps.open_refresh(id, &up.sub, sealed) else {
        return refused_at_recheck(
            st,
            &session,
            id,
            &up.sub,
            "the kept refresh token cannot be opened".into(),
        )
        .await;
    };
    let answer = async {
        let provider = st.idps.provider(cfg).await?;
        let client = st.idps.client_auth(cfg, &provider)?;
        provider.refresh(st.idps.http(), &client, &token).await
    }
    .await;
    match answer {
        Ok(a) => {
            let rotated = a
                .refresh_token
                .as_deref()
                .map(|new| st.idps.seal_refresh(id, &up.sub, new));
            // Written over the session as it stands now (another node may have marked or
            // stamped it meanwhile), never over the copy this request read.
            let recheck = |data: &mut crate::session::SessionData| {
                let u = data.upstream.get_or_insert_with(Default::default);
                u.checked_at = now.timestamp();
                if let Some(sealed) = &rotated {
                    u.refresh = sealed.clone();
                }
                true
            };
            match st.sessions.modify(&rt, &session.id, now, recheck).await {
                Ok(Some(s)) => Rechecked::Stands(s),
                Ok(None) => Rechecked::Ended,
                Err(e) => {
                    tracing::warn!(error = %e, "saving the re-checked session failed");
                    Rechecked::Stands(session)
                }
            }
        }
        Err(e @ UpstreamError::Refused { .. }) => {
            refused_at_recheck(st, &session, id, &up.sub, e.to_string()).await
        }
        Err(e) => {
            tracing::warn!(provider = id, error = %e, "upstream re-check not made; the session stands");
            Rechecked::Stands(session)
        }
    }
}

/// A re-check the provider refused: the session ended and audited.
async fn refused_at_recheck(
    st: &Shared,
    session: &Session,
    id: &str,
    sub: &str,
    why: String,
) -> Rechecked {
    tracing::info!(provider = id, user = %session.data.username, reason = %why, "upstream re-check refused: session ended");
    if let Err(e) = st.sessions.end(&session.id).await {
        tracing::warn!(error = %e, "ending the session the provider refused failed");
    }
    audit(
        st,
        "signout.upstream_refused",
        &session.data.username,
        None,
        serde_json::json!({ "provider": id, "sub": sub, "detail": why }),
    )
    .await;
    Rechecked::Ended
}
