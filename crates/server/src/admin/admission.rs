//! An administrator's session on stepgate's own admin surface — a console page, or an
//! admin API call made with the portal session — decided by the access pipeline as a
//! request to the admin app (`admin.app`, default `stepgate-admin`): the request's method
//! and path, the session's cookies, client address and request id, so it is in the
//! decision log like any other decision and policies can target it.
//!
//! The floor stays on top, whatever the policies say: membership of `admin.group` for any
//! access ([`in_group`]), and for a change AAL3 within `admin.write_max_age`
//! ([`write_requirement`], checked by the console and the API after an `Allow`). A
//! permissive policy cannot lower it; a stricter one (a step-up for reads from outside the
//! office) raises it. When no policy decides, the admin app's request is allowed: the
//! floor stands in for `default_outcome`.
//!
//! API tokens are not sessions: their calls are checked by scope and are not decided here
//! (`caller.rs`).

use std::net::SocketAddr;

use axum::http::{HeaderMap, Method};
use chrono::{DateTime, Utc};
use stepgate_policy::{MaxAge, RequestKind, StepUpRequirement};
use stepgate_store::UserRecord;

use crate::access::signals::PeerCertificates;
use crate::access::{AccessRequest, Connection, Credentials, RequestId, Verdict};
use crate::app::state::{Runtime, Shared};
use crate::session::cookies::CookieJar;

/// One request to the admin surface, as the pipeline needs it.
pub struct Asked<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its path, as the client sent it (`/_stepgate/admin/users`; read into normal form
    /// before it is decided).
    pub path: &'a str,
    /// Its headers (the user agent; a trusted proxy's client address).
    pub headers: &'a HeaderMap,
    /// Its cookies: the session cookie alone identifies the administrator.
    pub jar: &'a CookieJar,
    /// The connection's peer.
    pub peer: SocketAddr,
    /// The client address, read once by the caller ([`crate::access::request::client_ip`]:
    /// the peer, or what a trusted proxy says).
    pub ip: Option<std::net::IpAddr>,
    /// Whether the request makes a change: a step-up the policies ask is then raised to
    /// the floor of a change ([`with_floor`]), so that one step-up meets both.
    pub change: bool,
    /// The client certificate chain the TLS connection presented.
    pub tls: Option<&'a PeerCertificates>,
    /// When.
    pub now: DateTime<Utc>,
}

/// The pipeline's verdict on `asked`, a request to the admin app under `rt` (for a
/// change, a step-up raised to the floor); refused when its path cannot be read.
///
/// The path is decided in the normal form the gateway gives an app's
/// ([`stepgate_request::read_target`]), so a policy's path selector sees one spelling of
/// it: the routes' extractors percent-decode a name in the path, and `users/j%6Fhn` must
/// not slip past a policy on `users/john`.
pub async fn decide(
    st: &Shared,
    rt: &Runtime,
    asked: &Asked<'_>,
) -> Result<Verdict, stepgate_request::TargetRefusal> {
    let target = stepgate_request::read_target(asked.path, Default::default())?;
    let request = AccessRequest {
        id: RequestId::current(),
        kind: RequestKind::Access,
        app: Some(rt.config.admin.app.as_str()),
        method: asked.method,
        path: &target.path,
        headers: asked.headers,
        ip: asked.ip,
        credentials: Credentials::Cookies(asked.jar),
        connection: Connection {
            peer: Some(asked.peer.ip()),
            tls: asked.tls,
        },
        now: asked.now,
    };
    let mut verdict = st.access.decide(rt, &request).await.verdict;
    if let (true, Verdict::StepUp(s)) = (asked.change, &mut verdict) {
        s.requirement = with_floor(std::mem::take(&mut s.requirement), &write_requirement(rt));
    }
    Ok(verdict)
}

/// Whether `user` is in `admin.group`: the floor for any access to the admin surface.
pub fn in_group(rt: &Runtime, user: &UserRecord) -> bool {
    let group = &rt.config.admin.group;
    user.groups.iter().any(|g| g == group)
}

/// The floor for a change through the console or the API: AAL3 within
/// `admin.write_max_age`.
pub fn write_requirement(rt: &Runtime) -> StepUpRequirement {
    StepUpRequirement {
        min_aal: Some(3),
        max_age: Some(MaxAge::Within(rt.config.admin.write_max_age)),
        message: Some("Changes through the admin API need a security key, used just now.".into()),
        ..StepUpRequirement::default()
    }
}

/// A step-up the policies ask for a change, raised to the floor (`floor`: the level and
/// the freshness of [`write_requirement`]) so that one step-up meets both. A requirement
/// naming its factors is left as it is (the floor's level may not be reachable with them):
/// the floor is then asked after it.
pub fn with_floor(mut asked: StepUpRequirement, floor: &StepUpRequirement) -> StepUpRequirement {
    if !asked.factors.is_empty() {
        return asked;
    }
    asked.min_aal = asked.min_aal.max(floor.min_aal);
    asked.max_age = match (asked.max_age, floor.max_age) {
        (Some(MaxAge::EveryTime), _) | (_, Some(MaxAge::EveryTime)) => Some(MaxAge::EveryTime),
        (Some(MaxAge::Within(a)), Some(MaxAge::Within(b))) => Some(MaxAge::Within(a.min(b))),
        (a, b) => a.or(b),
    };
    asked
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepgate_policy::HumanDuration;

    fn within(secs: u64) -> Option<MaxAge> {
        Some(MaxAge::Within(HumanDuration::from_secs(secs)))
    }

    #[test]
    fn a_change_asks_the_stricter_of_the_policy_and_the_floor() {
        let floor = StepUpRequirement {
            min_aal: Some(3),
            max_age: within(300),
            ..StepUpRequirement::default()
        };
        let asked = |min_aal, max_age| StepUpRequirement {
            min_aal,
            max_age,
            message: Some("why".into()),
            ..StepUpRequirement::default()
        };
        let r = with_floor(asked(Some(2), within(3600)), &floor);
        assert_eq!((r.min_aal, r.max_age), (Some(3), within(300)));
        assert_eq!(r.message.as_deref(), Some("why"), "the policy's words stay");
        let r = with_floor(asked(None, Some(MaxAge::EveryTime)), &floor);
        assert_eq!((r.min_aal, r.max_age), (Some(3), Some(MaxAge::EveryTime)));
        let r = with_floor(asked(Some(2), within(60)), &floor);
        assert_eq!(r.max_age, within(60));
        let r = with_floor(asked(Some(2), None), &floor);
        assert_eq!(r.max_age, within(300));
        // Named factors: left as asked, the floor comes after.
        let mut totp = asked(Some(2), None);
        totp.factors = vec!["totp".into()];
        assert_eq!(with_floor(totp.clone(), &floor), totp);
    }
}
