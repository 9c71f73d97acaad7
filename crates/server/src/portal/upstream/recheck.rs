//! The user re-checked at the provider through the session's sealed refresh token: when
//! `refresh_interval` has passed ([`recheck`], the access pipeline's hook), and at every
//! step-up ([`at_step_up`]) — a user disabled upstream is signed out, and cannot step up.

use axum::http::StatusCode;
use chrono::Utc;
use stepgate_authn::session::UpstreamSignIn;
use stepgate_config::identity::IdentityProviderConfig;

use super::display_name;
use crate::access::{Rechecked, UpstreamRecheck};
use crate::app::state::{Runtime, Shared};
use crate::idp::UpstreamError;
use crate::portal::audit;
use crate::portal::error::PortalError;
use crate::portal::extract::Here;
use crate::session::Session;

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
    let rt = st.runtime.load_full();
    let Some((cfg, up, sealed)) = kept(&rt, &session) else {
        return Rechecked::Stands(session);
    };
    let Some(interval) = cfg.refresh_interval.as_ref() else {
        return Rechecked::Stands(session);
    };
    let due = Utc::now().timestamp() - up.checked_at >= interval.0.as_secs() as i64;
    if !due {
        return Rechecked::Stands(session);
    }
    match redeem(st, &rt, cfg, session, &up, &sealed, "refresh_interval").await {
        Redeemed::Vouched(s) => Rechecked::Stands(s),
        Redeemed::Ended => Rechecked::Ended,
        Redeemed::NotAsked(s, _) => Rechecked::Stands(s),
    }
}

/// Before a step-up counts (not a sign-in's own second step: the provider has just
/// vouched), the user of a session that signed in through a provider keeping a refresh
/// token is re-checked there, whenever the last check was: the session as re-checked (with
/// the refresh token the provider may have rotated), or the page to show instead —
/// signed out when the provider refuses (audited as `signout.upstream_refused`), "try
/// again" when it cannot be reached (a step-up is not granted on an unchecked user).
pub async fn at_step_up(
    st: &Shared,
    rt: &Here,
    session: &Session,
    sign_in: bool,
) -> Result<Session, PortalError> {
    let kept = kept(rt, session).filter(|_| !sign_in);
    let Some((cfg, up, sealed)) = kept else {
        return Ok(session.clone());
    };
    let name = display_name(cfg);
    let portal = rt.portal().to_string();
    match redeem(st, rt, cfg, session.clone(), &up, &sealed, "step_up").await {
        Redeemed::Vouched(s) => Ok(s),
        Redeemed::Ended => Err(PortalError::Upstream {
            portal,
            status: StatusCode::UNAUTHORIZED,
            message: format!("{name} no longer signs you in, so you were signed out and the step-up was not made."),
        }),
        Redeemed::NotAsked(_, why) => {
            tracing::warn!(provider = cfg.id.as_str(), error = %why, "step-up refused: the provider could not re-check the user");
            Err(PortalError::Upstream {
                portal,
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("{name} cannot be reached to confirm your account, so the step-up was not made. Try again in a few minutes."),
            })
        }
    }
}

/// What a session keeps to re-check its user: the provider's configuration (still
/// configured), the sign-in, and the sealed refresh token.
fn kept<'a>(
    rt: &'a Runtime,
    session: &Session,
) -> Option<(&'a IdentityProviderConfig, UpstreamSignIn, String)> {
    let up = session.data.upstream.clone()?;
    let sealed = up.refresh.clone()?;
    let cfg = rt
        .config
        .identity_providers
        .iter()
        .find(|p| p.id.as_str() == up.provider)?;
    Some((cfg, up, sealed))
}

/// What the provider said of a kept refresh token.
enum Redeemed {
    /// It still vouches: the session, re-stamped (and its refresh token rotated).
    Vouched(Session),
    /// It refused: the session is ended.
    Ended,
    /// It was not asked or did not answer (another re-check of this session under way,
    /// the provider unreachable): the session as it was, and why.
    NotAsked(Session, String),
}

/// Redeems the session's refresh token at the provider (one node at a time per session
/// and state: a provider that rotates refresh tokens would take a second use of the same
/// one as theft).
async fn redeem(
    st: &Shared,
    rt: &Runtime,
    cfg: &IdentityProviderConfig,
    session: Session,
    up: &UpstreamSignIn,
    sealed: &str,
    at: &str,
) -> Redeemed {
    let now = Utc::now();
    if let Err(why) = first_to_recheck(st, &session, up).await {
        return Redeemed::NotAsked(session, why);
    }
    let id = cfg.id.as_str();
    let Some(token) = st.idps.open_refresh(id, &up.sub, sealed) else {
        let why = "the kept refresh token cannot be opened".to_string();
        return refused_at_recheck(st, &session, id, &up.sub, why, at).await;
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
            restamped(st, rt, session, rotated, now).await
        }
        Err(e @ UpstreamError::Refused { .. }) => {
            refused_at_recheck(st, &session, id, &up.sub, e.to_string(), at).await
        }
        Err(e) => {
            tracing::warn!(provider = id, error = %e, "upstream re-check not made; the session stands");
            Redeemed::NotAsked(session, e.to_string())
        }
    }
}

/// Whether this node is the one to re-check the session's user now (one node at a time
/// per session and state, for a minute); `Err` says why not.
async fn first_to_recheck(
    st: &Shared,
    session: &Session,
    up: &UpstreamSignIn,
) -> Result<(), String> {
    let key = format!("upstream-refresh:{}:{}", session.id, up.checked_at);
    match st
        .stores
        .hot
        .remember_once(&key, std::time::Duration::from_secs(60))
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err("a re-check is under way".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The session the provider vouched for again, stamped as re-checked now (with the
/// refresh token it rotated, sealed) — written over the session as it stands now (another
/// node may have marked or stamped it meanwhile), never over the copy this request read.
async fn restamped(
    st: &Shared,
    rt: &Runtime,
    session: Session,
    rotated: Option<Option<String>>,
    now: chrono::DateTime<Utc>,
) -> Redeemed {
    let recheck = |data: &mut crate::session::SessionData| {
        let u = data.upstream.get_or_insert_with(Default::default);
        u.checked_at = now.timestamp();
        if let Some(sealed) = &rotated {
            u.refresh = sealed.clone();
        }
        true
    };
    match st.sessions.modify(rt, &session.id, now, recheck).await {
        Ok(Some(s)) => Redeemed::Vouched(s),
        Ok(None) => Redeemed::Ended,
        Err(e) => {
            tracing::warn!(error = %e, "saving the re-checked session failed");
            Redeemed::NotAsked(session, e.to_string())
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
    at: &str,
) -> Redeemed {
    tracing::info!(provider = id, user = %session.data.username, reason = %why, "upstream re-check refused: session ended");
    if let Err(e) = st.sessions.end(&session.id).await {
        tracing::warn!(error = %e, "ending the session the provider refused failed");
    }
    audit(
        st,
        "signout.upstream_refused",
        &session.data.username,
        None,
        serde_json::json!({ "provider": id, "sub": sub, "detail": why, "at": at }),
    )
    .await;
    Redeemed::Ended
}
