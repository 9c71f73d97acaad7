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
use crate::access::Connection;
use crate::app::responses::{see_other, Peer};
use crate::app::signer::random_id;
use crate::app::state::Shared;
use crate::idp::id_token::{self, Expected};
use crate::idp::{accounts, claims, UpstreamError};
use crate::session::cookies::CookieJar;
use crate::session::Session;
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
    let who = match identify(&st, &rt, cfg, &flow, q.code.as_deref().unwrap_or("")).await {
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

/// The code exchanged, the ID token verified (its nonce used once), the claims mapped.
async fn identify(
    st: &Shared,
    rt: &Here,
    cfg: &IdentityProviderConfig,
    flow: &Flow,
    code: &str,
) -> Result<claims::UpstreamIdentity, UpstreamError> {
    let id = cfg.id.as_str();
    let bad = |detail: &str| UpstreamError::BadToken {
        provider: id.to_string(),
        detail: detail.to_string(),
    };
    if code.is_empty() {
        return Err(bad("the answer carries no authorization code"));
    }
    let provider = st.idps.provider(cfg).await?;
    let secret = st.idps.client_secret(cfg)?;
    let http = st.idps.http();
    let answer = provider
        .exchange(
            http,
            (&cfg.client_id, &secret),
            code,
            &redirect_uri(rt, id),
            &flow.v,
        )
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
    claims::identity(&claims, &cfg.claims).map_err(|detail| UpstreamError::Unusable {
        provider: id.to_string(),
        detail,
    })
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
    audit(
        st,
        "signin.upstream_refused",
        username.unwrap_or(&format!("upstream:{}", cfg.id.as_str())),
        ip,
        serde_json::json!({ "provider": cfg.id.as_str(), "reason": e.reason(), "detail": e.to_string() }),
    )
    .await;
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
