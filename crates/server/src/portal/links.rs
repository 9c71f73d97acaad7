//! Signed links into the portal: the return target a sign-in goes back to, the step-up
//! page's token (what is required and why) and the blocked page's (what failed and how to
//! fix it). Each is signed with the server's key and expires after
//! `server.return_target_ttl`; every URL in one is checked against the configured hosts, so
//! the portal never redirects anywhere else (no open redirect).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_policy::{RemediationItem, StepUpRequirement};

use crate::app::signer::Signer;
use crate::app::state::Runtime;

/// What a step-up page needs, signed into the page's forms.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepToken {
    /// Where to go when done (absolute URL, checked against the configured apps).
    pub rt: String,
    /// For a step-up triggered by a non-GET request: the page to send the user back to, to
    /// resubmit.
    #[serde(default)]
    pub back: Option<String>,
    /// What is required.
    pub req: StepUpRequirement,
    /// Why, in plain words.
    pub why: String,
    /// Completing the sign-in rather than stepping up an established session.
    #[serde(default)]
    pub sign_in: bool,
    /// The session the token was issued to (stolen tokens are useless elsewhere).
    #[serde(default)]
    pub user_id: String,
    /// The id of the request that asked for the step-up (shown on the page; empty when
    /// none did).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rid: String,
}

/// What the blocked page shows, signed into its URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockedToken {
    /// Where the user was going.
    pub rt: String,
    /// The reason.
    pub message: String,
    /// The failing checks.
    pub items: Vec<RemediationItem>,
    /// The deciding policy.
    pub policy: String,
    /// The id of the request that was blocked (shown on the page).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rid: String,
}

const STEP: &str = "step";
const BLOCKED: &str = "blocked";
const RETURN: &str = "rt";

/// Signs and verifies the portal's links under one configuration.
pub struct Links<'a> {
    signer: &'a Signer,
    rt: &'a Runtime,
}

impl<'a> Links<'a> {
    /// Links signed by `signer`, checked against `rt`'s hosts.
    pub fn new(signer: &'a Signer, rt: &'a Runtime) -> Self {
        Links { signer, rt }
    }

    fn expires(&self, now: DateTime<Utc>) -> i64 {
        now.timestamp() + self.rt.config.server.return_target_ttl.as_secs() as i64
    }

    /// `t` signed for `purpose`, living `server.return_target_ttl`.
    fn sign_json(&self, purpose: &str, t: &impl serde::Serialize, now: DateTime<Utc>) -> String {
        let payload = serde_json::to_string(t).unwrap_or_default();
        self.signer.sign(purpose, &payload, self.expires(now))
    }

    /// What `token` carries, if signed for `purpose` and unexpired.
    fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        purpose: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Option<T> {
        let payload = self.signer.verify(purpose, token, now.timestamp())?;
        serde_json::from_str(&payload).ok()
    }

    /// A step token.
    pub fn sign_step(&self, t: &StepToken, now: DateTime<Utc>) -> String {
        self.sign_json(STEP, t, now)
    }

    /// A step token, if genuine, unexpired and pointing only at configured hosts.
    pub fn verify_step(&self, token: &str, now: DateTime<Utc>) -> Option<StepToken> {
        let t: StepToken = self.open_json(STEP, token, now)?;
        let ok = allowed_target(self.rt, &t.rt)
            && t.back.as_deref().is_none_or(|b| allowed_target(self.rt, b));
        ok.then_some(t)
    }

    /// A blocked-page token.
    pub fn sign_blocked(&self, t: &BlockedToken, now: DateTime<Utc>) -> String {
        self.sign_json(BLOCKED, t, now)
    }

    /// A blocked-page token, if genuine, unexpired and pointing at a configured host.
    pub fn verify_blocked(&self, token: &str, now: DateTime<Utc>) -> Option<BlockedToken> {
        let t: BlockedToken = self.open_json(BLOCKED, token, now)?;
        allowed_target(self.rt, &t.rt).then_some(t)
    }

    /// A signed return target, when `target` is one stepgate may redirect to.
    pub fn sign_return(&self, target: &str, now: DateTime<Utc>) -> Option<String> {
        allowed_target(self.rt, target).then(|| self.signer.sign(RETURN, target, self.expires(now)))
    }

    /// The return target a token carries: genuine, unexpired, still on a configured host.
    pub fn verify_return(&self, token: &str, now: DateTime<Utc>) -> Option<String> {
        let target = self.signer.verify(RETURN, token, now.timestamp())?;
        allowed_target(self.rt, &target).then_some(target)
    }
}

/// Whether `target` is an absolute http(s) URL on a configured app host or the portal's
/// own host: the only places stepgate redirects to (no open redirect).
pub fn allowed_target(rt: &Runtime, target: &str) -> bool {
    let Ok(u) = url::Url::parse(target) else {
        return false;
    };
    if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() || u.password().is_some()
    {
        return false;
    }
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    if rt.hosts.contains_key(&host) {
        return true;
    }
    url::Url::parse(&rt.public_url)
        .ok()
        .and_then(|p| {
            p.host_str().map(|h| {
                h.eq_ignore_ascii_case(&host)
                    && p.port_or_known_default() == u.port_or_known_default()
            })
        })
        .unwrap_or(false)
}
