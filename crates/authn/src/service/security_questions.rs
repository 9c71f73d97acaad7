//! Security questions: the challenge to show, verifying the answers, and enrolling them.

use std::net::IpAddr;

use stepgate_store::{now_ms, FactorRecord, UserRecord};

use super::{blocking, Actor, AuthError, Authenticator};
use crate::assurance::PassedFactor;
use crate::factor::FactorKind;
use crate::questions::{self, SecurityQuestions};

impl Authenticator {
    pub(super) async fn questions_of(
        &self,
        user: &UserRecord,
    ) -> Result<(FactorRecord, SecurityQuestions), AuthError> {
        if !self.cfg().security_questions.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::SecurityQuestions));
        }
        let f = self
            .factors_of(user, FactorKind::SecurityQuestions)
            .await?
            .into_iter()
            .next()
            .ok_or(AuthError::NotEnrolled(FactorKind::SecurityQuestions))?;
        let sq = serde_json::from_value(f.data.clone())
            .map_err(|e| AuthError::Internal(format!("security questions data: {e}")))?;
        Ok((f, sq))
    }

    /// Picks `factors.security_questions.ask` of the user's questions at random: (index,
    /// question). Keep the indexes server-side and pass them to [`Self::verify_questions`].
    pub async fn questions_challenge(
        &self,
        user: &UserRecord,
    ) -> Result<Vec<(usize, String)>, AuthError> {
        let (_, sq) = self.questions_of(user).await?;
        Ok(sq
            .challenge(self.cfg().security_questions.ask)
            .into_iter()
            .filter_map(|i| sq.questions.get(i).map(|q| (i, q.question.clone())))
            .collect())
    }

    /// Verifies answers to a challenge: at least `ask` distinct questions, all answered right.
    pub async fn verify_questions(
        &self,
        user: &UserRecord,
        asked: &[usize],
        answers: &[String],
        ip: Option<IpAddr>,
    ) -> Result<PassedFactor, AuthError> {
        let (f, sq) = self.questions_of(user).await?;
        let need = self.cfg().security_questions.ask.min(sq.questions.len());
        let mut distinct = asked.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < need || distinct.len() != asked.len() {
            return Err(AuthError::Rejected(format!(
                "answer {need} different questions"
            )));
        }
        let asked = asked.to_vec();
        let answers = answers.to_vec();
        self.regulated(user, ip, FactorKind::SecurityQuestions, async {
            if blocking(move || sq.verify(&asked, &answers)).await? {
                self.durable().touch_factor(&f.id, now_ms()).await?;
                Ok(self.passed(FactorKind::SecurityQuestions, &f.id))
            } else {
                Err(AuthError::InvalidCredentials)
            }
        })
        .await
    }

    /// Enrols (or replaces) the user's security questions and answers.
    pub async fn enrol_questions(
        &self,
        user: &UserRecord,
        answers: &[(String, String)],
    ) -> Result<FactorRecord, AuthError> {
        let cfg = self.cfg().security_questions.clone();
        if !cfg.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::SecurityQuestions));
        }
        let argon = self.cfg().password.argon2;
        let answers = answers.to_vec();
        let material = blocking(move || questions::enrol(&cfg, &argon, &answers))
            .await?
            .map_err(|e| match e {
                questions::QuestionsError::Hash(h) => AuthError::Internal(h.to_string()),
                other => AuthError::Rejected(other.to_string()),
            })?;
        for old in self.factors_of(user, FactorKind::SecurityQuestions).await? {
            self.durable().delete_factor(&old.id).await?;
            self.audit_removed(Actor::User, user, &old, "replaced")
                .await?;
        }
        let mut f = FactorRecord::new(&user.id, material.kind.as_str(), material.label.clone());
        f.data = material.data;
        self.durable().create_factor(&f).await?;
        self.audit_enrolled(Actor::User, user, &f).await?;
        Ok(f)
    }
}
