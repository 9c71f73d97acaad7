//! `stepgate what-if`: the live pipeline, with the signal sources replaced by a context
//! file. The file states who (a user), what for (app, method, path), from where and from
//! what; a sign-in history may come with it, which is scored exactly as a live request's
//! would be (the in-session filter included). GeoIP, when configured, fills the location
//! and coordinates the file leaves out, as it would for a live request. Everything a live
//! signal source can find, a context file can state: the address, its place and
//! coordinates, its IP risk, the user agent, the device, the certificate, and the history
//! (or a risk assessment outright).

use axum::http::{HeaderMap, Method};
use stepgate_policy::{RequestContext, RequestKind};
use stepgate_signals::geoip::{GeoInfo, GeoIp};
use stepgate_signals::risk::SignInEntry;
use stepgate_store::UserRecord;

use super::context::Facts;
use super::request::{AccessRequest, Connection, Credentials, Subject, Who};
use super::signals::{SignalError, SignalSource};
use super::{evaluate, Explained, Judged};
use crate::app::state::Runtime;

/// The facts a context file states (see the module documentation).
pub struct StatedFacts {
    facts: Facts,
}

impl StatedFacts {
    /// The facts `ctx` states, `history` if given, and what `geoip` knows of the address.
    pub fn new(
        ctx: &RequestContext,
        history: Option<Vec<SignInEntry>>,
        geoip: Option<&GeoIp>,
    ) -> Self {
        let n = &ctx.network;
        let looked_up = match (geoip, n.ip) {
            (Some(g), Some(ip)) => g.lookup(ip).unwrap_or_default(),
            _ => GeoInfo::default(),
        };
        // What the file states wins; GeoIP fills what it leaves out.
        let stated_place = n.country.is_some() || n.region.is_some() || n.city.is_some();
        let stated_point = n.latitude.is_some() && n.longitude.is_some();
        let pick = |stated: bool, from_file: &Option<String>, found: &Option<String>| {
            if stated {
                from_file.clone()
            } else {
                found.clone()
            }
        };
        let geo = GeoInfo {
            country: pick(stated_place, &n.country, &looked_up.country),
            region: pick(stated_place, &n.region, &looked_up.region),
            city: pick(stated_place, &n.city, &looked_up.city),
            latitude: if stated_point {
                n.latitude
            } else {
                looked_up.latitude
            },
            longitude: if stated_point {
                n.longitude
            } else {
                looked_up.longitude
            },
            ..looked_up
        };
        let facts = Facts {
            ip: n.ip,
            geo,
            ip_risk_score: n.ip_risk_score,
            user_agent: ctx.user_agent.clone(),
            certificate: ctx.certificate.clone(),
            device: ctx.device.clone(),
            history: history.map(std::sync::Arc::new),
            risk: Some(ctx.risk.clone()),
            // A context file states no earlier sign-in's MFA: `what-if` answers as for a
            // device that remembers none.
            remembered_mfa: Vec::new(),
        };
        StatedFacts { facts }
    }
}

#[async_trait::async_trait]
impl SignalSource for StatedFacts {
    async fn facts(
        &self,
        _: &Runtime,
        _: &AccessRequest<'_>,
        _: &Subject,
    ) -> Result<Facts, SignalError> {
        Ok(self.facts.clone())
    }
}

/// The user a context states: a record with its username, e-mail, name, groups and
/// attributes (anonymous when it names none).
pub fn stated_user(ctx: &RequestContext) -> UserRecord {
    let mut u = UserRecord::new(
        ctx.user
            .as_ref()
            .map_or(String::new(), |u| u.username.clone()),
    );
    if let Some(s) = &ctx.user {
        u.id = s.username.clone();
        u.email = s.email.clone();
        u.name = s.name.clone();
        u.groups = s.groups.clone();
        u.attributes = s.attributes.clone();
    }
    u
}

/// Decides the request a context file describes, through the live pipeline. The
/// explanation is always there: stated facts cannot fail to be found.
pub async fn what_if<'rt>(
    rt: &'rt Runtime,
    ctx: &RequestContext,
    source: &StatedFacts,
) -> (Judged<'rt>, Option<Explained>) {
    let user = stated_user(ctx);
    let method = Method::from_bytes(ctx.request.method.as_bytes()).unwrap_or(Method::GET);
    let headers = HeaderMap::new();
    let req = AccessRequest {
        id: super::RequestId::new(),
        kind: ctx.kind,
        app: match ctx.kind {
            RequestKind::Access => ctx.request.app.as_deref(),
            RequestKind::SignIn => None,
        },
        method: &method,
        path: &ctx.request.path,
        headers: &headers,
        ip: ctx.network.ip,
        credentials: Credentials::Assumed(&user),
        connection: Connection::default(),
        now: ctx.time,
    };
    let subject = Subject {
        user: std::sync::Arc::new(user.clone()),
        who: Who::Assumed,
    };
    let mut explained = None;
    let judged = evaluate(rt, &req, subject, source, None, Some(&mut explained), None).await;
    (judged, explained)
}
