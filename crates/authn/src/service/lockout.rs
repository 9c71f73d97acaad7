//! Brute-force regulation against the stores: failures counted per account (or per name
//! typed) and per client IP, bans and the NIST SP 800-63B consecutive-failure cap
//! ([`crate::regulation`] decides, this applies), unlocking, and [`Authenticator::regulated`],
//! which every factor verification runs under.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use stepgate_store::{NewAuditEvent, UserRecord};

use super::{sha256_hex, Actor, AuthError, Authenticator, VerifyResult};
use crate::factor::FactorKind;
use crate::regulation::{self, AttemptCounters, BanTarget, Refusal};

/// A consecutive-failure counter never expires in practice (NIST: the cap holds "however
/// slowly the guesses arrive"); the hot store needs a window, so ten years.
pub(super) const CONSECUTIVE_WINDOW: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Authenticator {
    /// The key failures are counted under: the user id, or a hash of the name typed when no
    /// such user exists (so unknown names are banned exactly like real ones).
    pub(super) fn subject_key(user: Option<&UserRecord>, username: &str) -> String {
        match user {
            Some(u) => format!("u:{}", u.id),
            None => format!("n:{}", sha256_hex(&[username.as_bytes()])),
        }
    }

    /// How many more failures `user` (or, with no such user, the name typed) may have
    /// within `find_time` before sign-in is paused for `ban_time`; `None` when
    /// `max_retries` is off. Read after a failure, it counts that failure.
    pub async fn attempts_left(
        &self,
        user: Option<&UserRecord>,
        username: &str,
    ) -> Result<Option<u32>, AuthError> {
        let max = self.inner.settings.regulation.max_retries;
        if max == 0 {
            return Ok(None);
        }
        let subject = Self::subject_key(user, username);
        let failed = self
            .hot()
            .get_counter(&format!("authn:fail:{subject}"))
            .await?;
        Ok(Some(
            max.saturating_sub(u32::try_from(failed).unwrap_or(u32::MAX)),
        ))
    }

    /// Until when signing in as `user` (or the name typed) is paused, if it is: read after
    /// a failure, it says whether that failure began the pause. Counted and paused alike
    /// for every name, so it reveals no account.
    pub async fn paused_until(
        &self,
        user: Option<&UserRecord>,
        username: &str,
    ) -> Result<Option<DateTime<Utc>>, AuthError> {
        let subject = Self::subject_key(user, username);
        let until = self
            .hot()
            .ban_until(&format!("authn:ban:{subject}"))
            .await?;
        Ok(until.filter(|u| *u > Utc::now()))
    }

    pub(super) async fn check_regulation(
        &self,
        subject: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let hot = self.hot();
        let c = AttemptCounters {
            user_failures_in_window: 0,
            ip_failures_in_window: 0,
            consecutive_user_failures: u32::try_from(
                hot.get_counter(&format!("authn:consec:{subject}")).await?,
            )
            .unwrap_or(u32::MAX),
            user_banned_until: hot.ban_until(&format!("authn:ban:{subject}")).await?,
            ip_banned_until: match ip {
                Some(ip) => hot.ban_until(&format!("authn:ban:ip:{ip}")).await?,
                None => None,
            },
        };
        match regulation::check_attempt(&self.inner.settings.regulation, &c, Utc::now()) {
            Ok(()) => Ok(()),
            Err(Refusal::UserBanned { until } | Refusal::IpBanned { until }) => {
                Err(AuthError::Locked { until })
            }
            Err(Refusal::AccountLocked { .. }) => Err(AuthError::AccountLocked),
        }
    }

    /// Counts a failure and imposes (and audits) the bans it triggers.
    pub(super) async fn record_failure(
        &self,
        subject: &str,
        user: Option<&UserRecord>,
        username: &str,
        ip: Option<IpAddr>,
        factor: FactorKind,
    ) -> Result<(), AuthError> {
        let cfg = &self.inner.settings.regulation;
        let hot = self.hot();
        let find = cfg.find_time.0;
        let user_win = hot
            .incr_counter(&format!("authn:fail:{subject}"), find)
            .await?;
        let ip_win = match ip {
            Some(ip) => {
                hot.incr_counter(&format!("authn:fail:ip:{ip}"), find)
                    .await?
            }
            None => 0,
        };
        let consecutive = hot
            .incr_counter(&format!("authn:consec:{subject}"), CONSECUTIVE_WINDOW)
            .await?;
        let c = AttemptCounters {
            user_failures_in_window: u32::try_from(user_win).unwrap_or(u32::MAX),
            ip_failures_in_window: u32::try_from(ip_win).unwrap_or(u32::MAX),
            consecutive_user_failures: u32::try_from(consecutive).unwrap_or(u32::MAX),
            ..AttemptCounters::default()
        };
        let ip_s = ip.map(|i| i.to_string()).unwrap_or_default();
        let now = Utc::now();
        tracing::info!(factor = %factor, consecutive, user = username, client = %ip_s, "authentication failure");
        for ban in regulation::after_failure(cfg, username, &ip_s, &c, now) {
            let (kind, subject_id) = match (&ban.target, ban.until) {
                (BanTarget::User(_), Some(until)) => {
                    hot.set_ban(&format!("authn:ban:{subject}"), until).await?;
                    ("authn.lockout", user.map(|u| u.id.clone()))
                }
                // The consecutive-failure lock is the counter itself; it lasts until reset.
                (BanTarget::User(_), None) => ("authn.lockout", user.map(|u| u.id.clone())),
                (BanTarget::Ip(_), Some(until)) => {
                    if ip.is_none() {
                        continue;
                    }
                    hot.set_ban(&format!("authn:ban:ip:{ip_s}"), until).await?;
                    ("authn.ip_ban", None)
                }
                (BanTarget::Ip(_), None) => continue,
            };
            tracing::warn!(
                kind,
                reason = ban.reason,
                user = username,
                client = %ip_s,
                "sign-in regulation imposed a ban"
            );
            if let Some(o) = self.inner.observer.get() {
                o.lockout(if kind == "authn.lockout" {
                    "user"
                } else {
                    "ip"
                });
            }
            let mut ev = NewAuditEvent::now(kind);
            ev.actor = Some("system".into());
            ev.subject = subject_id;
            ev.ip = ip.map(|i| i.to_string());
            ev.detail = serde_json::json!({
                "reason": ban.reason,
                "until": ban.until,
                "username": username,
                "factor": factor,
                "consecutive_failures": consecutive,
            });
            self.durable().append_audit(&ev).await?;
        }
        Ok(())
    }

    pub(super) async fn record_success(&self, subject: &str) -> Result<(), AuthError> {
        let hot = self.hot();
        hot.reset_counter(&format!("authn:consec:{subject}"))
            .await?;
        hot.reset_counter(&format!("authn:fail:{subject}")).await?;
        Ok(())
    }

    /// A password checked elsewhere (an LDAP directory), under stepgate's own regulation:
    /// refused while the account (`user`, or the name typed when there is none) or the IP is
    /// banned or locked, without asking `check`; otherwise `check` decides — `Some` passed,
    /// `None` counts like a wrong password here, `Err` (the directory is down) counts as
    /// nothing and is returned as it is.
    pub async fn verify_external<T, E>(
        &self,
        username: &str,
        user: Option<&UserRecord>,
        ip: Option<IpAddr>,
        check: impl std::future::Future<Output = Result<Option<T>, E>>,
    ) -> Result<Result<T, AuthError>, E> {
        let subject = Self::subject_key(user, username);
        if let Err(e) = self.check_regulation(&subject, ip).await {
            let r: Result<T, AuthError> = Err(e);
            self.observed(FactorKind::Password, &r);
            return Ok(r);
        }
        let checked = match check.await {
            Ok(c) => c,
            Err(e) => {
                if let Some(o) = self.inner.observer.get() {
                    o.verification(FactorKind::Password, VerifyResult::Error);
                }
                return Err(e);
            }
        };
        let r = match checked {
            Some(v) => self.record_success(&subject).await.map(|()| v),
            None => self
                .record_failure(&subject, user, username, ip, FactorKind::Password)
                .await
                .and(Err(AuthError::InvalidCredentials)),
        };
        self.observed(FactorKind::Password, &r);
        Ok(r)
    }

    /// Lifts every ban and lock on the account and resets its failure counters (the only way
    /// out of the NIST consecutive-failure lock). Audited as `authn.unlock`.
    pub async fn unlock(&self, user: &UserRecord, admin: &str) -> Result<(), AuthError> {
        let subject = Self::subject_key(Some(user), &user.username);
        self.record_success(&subject).await?;
        self.hot()
            .clear_ban(&format!("authn:ban:{subject}"))
            .await?;
        self.audit(
            "authn.unlock",
            Actor::Admin(admin),
            user,
            None,
            serde_json::json!({}),
        )
        .await
    }

    /// Whether the account is locked or banned now (for admin tools).
    pub async fn lock_state(&self, user: &UserRecord) -> Result<Option<AuthError>, AuthError> {
        let subject = Self::subject_key(Some(user), &user.username);
        Ok(self.check_regulation(&subject, None).await.err())
    }

    /// Runs a verification under regulation: refuses when banned or locked, counts a
    /// failure on `InvalidCredentials` / `Replayed` / `TooManyGuesses`, resets on success.
    pub(super) async fn regulated<T>(
        &self,
        user: &UserRecord,
        ip: Option<IpAddr>,
        kind: FactorKind,
        attempt: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        let r = self.regulated_unobserved(user, ip, kind, attempt).await;
        self.observed(kind, &r);
        r
    }

    pub(super) async fn regulated_unobserved<T>(
        &self,
        user: &UserRecord,
        ip: Option<IpAddr>,
        kind: FactorKind,
        attempt: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        let subject = Self::subject_key(Some(user), &user.username);
        self.check_regulation(&subject, ip).await?;
        match attempt.await {
            Ok(v) => {
                self.record_success(&subject).await?;
                Ok(v)
            }
            Err(
                e @ (AuthError::InvalidCredentials
                | AuthError::Replayed
                | AuthError::TooManyGuesses),
            ) => {
                self.record_failure(&subject, Some(user), &user.username, ip, kind)
                    .await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}
