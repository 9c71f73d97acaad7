//! Security questions: answers normalised, then hashed with argon2id; a configurable
//! number of the enrolled questions is asked at random and all asked must match.

use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::config::{Argon2Config, SecurityQuestionsConfig};
use crate::factor::{FactorKind, FactorMaterial};
use crate::password::{hash_secret, verify_secret, HashError};

/// One enrolled question with the hash of its normalised answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolledQuestion {
    /// The question as shown to the user.
    pub question: String,
    /// argon2id PHC hash of the normalised answer.
    pub answer_hash: String,
}

/// The `data` of a security questions factor record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityQuestions {
    /// The enrolled questions.
    pub questions: Vec<EnrolledQuestion>,
}

/// Why an enrolment is refused.
#[derive(Debug, thiserror::Error)]
pub enum QuestionsError {
    /// Fewer questions than configured.
    #[error("answer {need} different questions (got {got})")]
    TooFew {
        /// Required count.
        need: usize,
        /// Given count.
        got: usize,
    },
    /// An answer is too short once normalised.
    #[error("the answer to \"{question}\" is too short: use at least {min} letters or digits")]
    AnswerTooShort {
        /// The question.
        question: String,
        /// Minimum length.
        min: usize,
    },
    /// The same question twice.
    #[error("each question can be used once: \"{0}\" appears twice")]
    Duplicate(String),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// Normalises an answer so that "  New   York! " and "new york" match: Unicode
/// lowercase, punctuation removed, whitespace collapsed.
pub fn normalise_answer(answer: &str) -> String {
    let cleaned: String = answer
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .flat_map(char::to_lowercase)
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Enrols questions and answers; returns the factor material to store.
pub fn enrol(
    cfg: &SecurityQuestionsConfig,
    argon: &Argon2Config,
    answers: &[(String, String)],
) -> Result<FactorMaterial, QuestionsError> {
    if answers.len() < cfg.enrol {
        return Err(QuestionsError::TooFew {
            need: cfg.enrol,
            got: answers.len(),
        });
    }
    let mut questions = Vec::with_capacity(answers.len());
    for (i, (q, a)) in answers.iter().enumerate() {
        if answers[..i]
            .iter()
            .any(|(other, _)| other.trim() == q.trim())
        {
            return Err(QuestionsError::Duplicate(q.clone()));
        }
        let norm = normalise_answer(a);
        if norm.chars().filter(|c| !c.is_whitespace()).count() < cfg.min_answer_length {
            return Err(QuestionsError::AnswerTooShort {
                question: q.clone(),
                min: cfg.min_answer_length,
            });
        }
        questions.push(EnrolledQuestion {
            question: q.trim().to_string(),
            answer_hash: hash_secret(argon, norm.as_bytes())?,
        });
    }
    let data = serde_json::to_value(SecurityQuestions { questions }).unwrap_or_default();
    Ok(FactorMaterial {
        kind: FactorKind::SecurityQuestions,
        label: "Security questions".into(),
        secret: None,
        data,
    })
}

impl SecurityQuestions {
    /// Picks `ask` question indexes at random for a challenge.
    pub fn challenge(&self, ask: usize) -> Vec<usize> {
        let n = self.questions.len();
        let mut picked = sample(&mut rand::thread_rng(), n, ask.min(n)).into_vec();
        picked.sort_unstable();
        picked
    }

    /// Verifies answers to a challenge: every asked index must be answered correctly.
    /// All hashes are checked even after a mismatch so timing does not tell which failed.
    pub fn verify(&self, asked: &[usize], answers: &[String]) -> bool {
        if asked.is_empty() || asked.len() != answers.len() {
            return false;
        }
        let mut ok = true;
        for (idx, answer) in asked.iter().zip(answers) {
            let Some(q) = self.questions.get(*idx) else {
                return false;
            };
            ok &= verify_secret(&q.answer_hash, normalise_answer(answer).as_bytes());
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalise_answer("  New   York! "), "new york");
        assert_eq!(normalise_answer("O'Brien-Smith"), "o brien smith");
        assert_eq!(normalise_answer("ÉCOLE"), "école");
    }

    #[test]
    fn enrol_challenge_verify() {
        let cfg = SecurityQuestionsConfig::default();
        let argon = Argon2Config::insecure_for_tests();
        let answers = vec![
            ("First pet?".to_string(), "Rex".to_string()),
            ("Birth city?".to_string(), "New York".to_string()),
            ("First school?".to_string(), "Lincoln High".to_string()),
        ];
        let m = enrol(&cfg, &argon, &answers).unwrap();
        assert_eq!(m.kind, FactorKind::SecurityQuestions);
        assert!(!m.data.to_string().contains("Rex"));
        let sq: SecurityQuestions = serde_json::from_value(m.data).unwrap();
        let asked = sq.challenge(cfg.ask);
        assert_eq!(asked.len(), 2);
        let right: Vec<String> = asked
            .iter()
            .map(|i| format!("  {} ", answers[*i].1.to_uppercase()))
            .collect();
        assert!(sq.verify(&asked, &right));
        let mut wrong = right.clone();
        wrong[1] = "nope".into();
        assert!(!sq.verify(&asked, &wrong));
        assert!(!sq.verify(&asked, &right[..1]));
        assert!(!sq.verify(&[7, 8], &right));
    }

    #[test]
    fn enrol_rejections() {
        let cfg = SecurityQuestionsConfig::default();
        let argon = Argon2Config::insecure_for_tests();
        let two = vec![
            ("a".to_string(), "xyzw".to_string()),
            ("b".to_string(), "xyzw".to_string()),
        ];
        assert!(matches!(
            enrol(&cfg, &argon, &two),
            Err(QuestionsError::TooFew { need: 3, got: 2 })
        ));
        let dup = vec![
            ("a".to_string(), "xyzw".to_string()),
            ("a".to_string(), "xyzw".to_string()),
            ("c".to_string(), "xyzw".to_string()),
        ];
        assert!(matches!(
            enrol(&cfg, &argon, &dup),
            Err(QuestionsError::Duplicate(_))
        ));
        let short = vec![
            ("a".to_string(), "x!".to_string()),
            ("b".to_string(), "xyzw".to_string()),
            ("c".to_string(), "xyzw".to_string()),
        ];
        assert!(matches!(
            enrol(&cfg, &argon, &short),
            Err(QuestionsError::AnswerTooShort { .. })
        ));
    }
}
