//! Signing in through an upstream identity provider ([`crate::idp`]): the login page's
//! "Sign in with <provider>" sends the browser to the provider (authorization code flow
//! with PKCE, `state` and `nonce`), and the provider sends it back to the callback, where
//! the code is exchanged, the ID token verified, the user found or created, and the sign-in
//! handed to the access pipeline as a first factor ([`super::signin::sign_in`]) like a
//! password — so the sign-in policy decides, and asks for stepgate's own factors when the
//! upstream's do not count.
//!
//! Delegated step-up is [`step_up`], signing out with the provider [`logout`], and the
//! user re-checked at the provider [`recheck`].
//!
//! The flow's secrets (state, nonce, PKCE verifier, return target) ride in a signed,
//! short-lived, `HttpOnly` cookie: the callback is accepted only in the browser that
//! started it, and each nonce only once (the hot store remembers it).

use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
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
use super::signin::{sign_in, Arrival, FirstFactor, Incoming};
use crate::access::request::client_ip;
use crate::app::responses::{see_other, Peer};
use crate::app::signer::random_id;
use crate::app::state::Shared;
use crate::idp::id_token::{self, Expected};
use crate::idp::provider::Provider;
use crate::idp::{accounts, claims, UpstreamError};
use crate::session::cookies::CookieJar;

/// An ID token's claims.
type Claims = serde_json::Map<String, serde_json::Value>;
use stepgate_authn::session::UpstreamSignIn;

mod logout;
mod recheck;
mod refusal;
mod step_up;

use logout::remember_sid;
pub use logout::{backchannel_logout, end_session_url, signed_out, LogoutForm};
pub use recheck::{at_step_up, recheck, recheck_hook};
use refusal::refused;
pub use refusal::{suppressed_audit_key, ANONYMOUS_AUDIT_PER_MINUTE};
pub use step_up::step_up_offers;
use step_up::stepped_up;

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
    let url = match authorization_url(&rt, cfg, &provider, &flow, q.login_hint.as_deref()) {
        Ok(u) => u,
        Err(e) => return refused(&st, &rt, cfg, &e, None, None).await,
    };
    let cookie = flow_cookie(&st, &rt, &flow);
    (jar.set(cookie), see_other(url.as_str())).into_response()
}

/// The provider's authorization endpoint with the flow's request: code flow, PKCE (S256),
/// `state` and `nonce`; the login hint when it is a sane one; for a delegated step-up, the
/// level asked and a fresh authentication.
fn authorization_url(
    rt: &Here,
    cfg: &IdentityProviderConfig,
    provider: &Provider,
    flow: &Flow,
    login_hint: Option<&str>,
) -> Result<url::Url, UpstreamError> {
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(flow.v.as_bytes()));
    let mut scopes: Vec<&str> = vec!["openid"];
    scopes.extend(
        cfg.scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "openid"),
    );
    let mut url = url::Url::parse(&provider.metadata.authorization_endpoint).map_err(|e| {
        UpstreamError::Unavailable {
            provider: flow.p.clone(),
            detail: format!("authorization_endpoint: {e}"),
        }
    })?;
    let mut q = url.query_pairs_mut();
    q.append_pair("response_type", "code")
        .append_pair("client_id", &cfg.client_id)
        .append_pair("redirect_uri", &redirect_uri(rt, &flow.p))
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &flow.s)
        .append_pair("nonce", &flow.n)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    if let Some(hint) =
        login_hint.filter(|h| !h.is_empty() && h.len() <= 256 && !h.chars().any(char::is_control))
    {
        q.append_pair("login_hint", hint);
    }
    if let (Some(_), Some(acr)) = (&flow.st, &cfg.step_up_acr) {
        // Authenticate again, now, at this level.
        q.append_pair("acr_values", acr)
            .append_pair("max_age", "0")
            .append_pair("prompt", "login");
    }
    drop(q);
    Ok(url)
}

/// The signed, short-lived cookie that carries `flow` to the callback.
fn flow_cookie(st: &Shared, rt: &Here, flow: &Flow) -> Cookie<'static> {
    let payload = serde_json::to_string(flow).unwrap_or_default();
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
    c
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
    incoming: Incoming,
) -> Response {
    let Some(cfg) = configured(&rt, &id) else {
        return PortalError::BadRequest.into_response();
    };
    let from = Arrival::of(&rt, &incoming);
    let ip = from.ip;
    let now = Utc::now();
    let Some(flow) = started_flow(&st, &jar, &id, q.state.as_deref(), now) else {
        let e = UpstreamError::BadToken {
            provider: id.clone(),
            detail: "the answer does not match a sign-in this browser started (state)".into(),
        };
        return refused(&st, &rt, cfg, &e, ip, None).await;
    };
    let jar = jar.set(expired_flow_cookie(&rt));
    let answered = match q.error {
        Some(err) => Err(provider_error(&id, &err, q.error_description.as_deref())),
        None => identify(&st, &rt, cfg, &flow, q.code.as_deref().unwrap_or("")).await,
    };
    let (who, signed_in) = match answered {
        Ok(w) => w,
        Err(e) => return (jar, refused(&st, &rt, cfg, &e, ip, None).await).into_response(),
    };
    if let Some(token) = &flow.st {
        return stepped_up(&st, &rt, jar, cfg, &flow, token, &who, ip).await;
    }
    let user = match linked_user(&st, cfg, &who, &signed_in).await {
        Ok(u) => u,
        Err(e) => {
            let refused = refused(&st, &rt, cfg, &e, ip, Some(&who.username)).await;
            return (jar, refused).into_response();
        }
    };
    let mut factors = claims::factors(&who, &cfg.trust, now);
    let first = factors.remove(0);
    let attempt = FirstFactor {
        also: factors,
        target: Links::new(&st.signer, &rt).verify_return(&flow.t, now),
        upstream: Some(signed_in),
        ..FirstFactor::new(user, first, from)
    };
    audit_signed_in(&st, &id, &who, &attempt).await;
    sign_in(&st, &rt, &jar, attempt)
        .await
        .respond(&rt, jar, false)
}

/// The error the provider answered instead of a code (`error`, `error_description`).
fn provider_error(id: &str, error: &str, description: Option<&str>) -> UpstreamError {
    let description = description.map(|d| format!(": {d}")).unwrap_or_default();
    UpstreamError::Refused {
        provider: id.to_string(),
        detail: format!("{error}{description}"),
    }
}

/// The flow this browser started (its signed cookie), for provider `id`, with this `state`.
fn started_flow(
    st: &Shared,
    jar: &CookieJar,
    id: &str,
    state: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> Option<Flow> {
    let s = state.unwrap_or("");
    jar.get(FLOW_COOKIE)
        .and_then(|c| st.signer.verify(FLOW_PURPOSE, c, now.timestamp()))
        .and_then(|p| serde_json::from_str::<Flow>(&p).ok())
        .filter(|f| f.p == id)
        .filter(|f| !s.is_empty() && bool::from(s.as_bytes().ct_eq(f.s.as_bytes())))
}

/// The stepgate user the provider's `who` is (linked or created just in time); the
/// provider's session remembered for its back-channel logout.
async fn linked_user(
    st: &Shared,
    cfg: &IdentityProviderConfig,
    who: &claims::UpstreamIdentity,
    signed_in: &UpstreamSignIn,
) -> Result<stepgate_store::UserRecord, UpstreamError> {
    let label = display_name(cfg);
    let source = accounts::Source {
        id: cfg.id.as_str(),
        label: &label,
        link_by_verified_email: cfg.link_by_verified_email,
    };
    let user = accounts::account(st.stores.durable.as_ref(), &source, who).await?;
    if cfg.back_channel_logout {
        if let Some(sid) = &signed_in.sid {
            // A logout token may name the provider's session alone: which user it was.
            remember_sid(st, cfg.id.as_str(), sid, &user.id).await;
        }
    }
    Ok(user)
}

/// `signin.upstream`: who the provider said signed in, and the factors stepgate counts.
async fn audit_signed_in(
    st: &Shared,
    id: &str,
    who: &claims::UpstreamIdentity,
    attempt: &FirstFactor<'_>,
) {
    let counted: Vec<_> = std::iter::once(&attempt.factor)
        .chain(&attempt.also)
        .map(|f| &f.amr)
        .collect();
    audit(
        st,
        "signin.upstream",
        &attempt.user.username,
        attempt.ip,
        serde_json::json!({
            "provider": id, "sub": who.sub, "amr": who.amr, "acr": who.acr,
            "auth_time": who.auth_time.map(|t| t.timestamp()),
            "counted": counted,
        }),
    )
    .await;
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
    if code.is_empty() {
        return Err(bad_token(id, "the answer carries no authorization code"));
    }
    let provider = st.idps.provider(cfg).await?;
    let client = st.idps.client_auth(cfg, &provider)?;
    let http = st.idps.http();
    let answer = provider
        .exchange(http, &client, code, &redirect_uri(rt, id), &flow.v)
        .await?;
    let token = answer
        .id_token
        .ok_or_else(|| bad_token(id, "the token endpoint returned no ID token"))?;
    let mut claims = verified_once(st, cfg, &provider, &token, flow).await?;
    if let (true, Some(at)) = (cfg.userinfo, answer.access_token.as_deref()) {
        add_userinfo(&provider, http, at, &mut claims, id).await?;
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

/// `UpstreamError::BadToken` from provider `id`.
fn bad_token(id: &str, detail: &str) -> UpstreamError {
    UpstreamError::BadToken {
        provider: id.to_string(),
        detail: detail.to_string(),
    }
}

/// The ID token's claims, verified against the flow's nonce — which signs in once, on any
/// node: a replayed ID token is refused.
async fn verified_once(
    st: &Shared,
    cfg: &IdentityProviderConfig,
    provider: &Provider,
    token: &str,
    flow: &Flow,
) -> Result<Claims, UpstreamError> {
    let id = cfg.id.as_str();
    let expected = Expected {
        issuer: &cfg.issuer,
        client_id: &cfg.client_id,
        nonce: &flow.n,
    };
    let claims = id_token::verify(provider, st.idps.http(), token, &expected).await?;
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
        return Err(bad_token(
            id,
            "its nonce was already used (a replayed sign-in)",
        ));
    }
    Ok(claims)
}

/// The provider's user-info answer added to `claims` (the ID token's claims win).
async fn add_userinfo(
    provider: &Provider,
    http: &reqwest::Client,
    access_token: &str,
    claims: &mut Claims,
    id: &str,
) -> Result<(), UpstreamError> {
    let info = provider.userinfo(http, access_token).await?;
    // Core §5.3.2: the user-info `sub` must be the ID token's.
    if info.get("sub") != claims.get("sub") {
        return Err(bad_token(
            id,
            "the userinfo answer is about another subject",
        ));
    }
    for (k, v) in info {
        claims.entry(k).or_insert(v);
    }
    Ok(())
}

fn expired_flow_cookie(rt: &Here) -> Cookie<'static> {
    let mut c = Cookie::new(FLOW_COOKIE, "");
    c.set_path(format!("{}/login/upstream/", rt.portal()));
    c.set_max_age(cookie::time::Duration::ZERO);
    c.set_http_only(true);
    c
}
