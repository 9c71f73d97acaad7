//! Recovery codes: NIST "look-up secrets". A set of single-use codes, shown once, stored
//! only as argon2id hashes, regenerable (which voids the old set).

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::Argon2Config;
use crate::factor::{FactorKind, FactorMaterial};
use crate::password::{hash_secret, verify_secret, HashError};

/// Alphabet without look-alikes (no 0/O, 1/I/L, U): 30 symbols ≈ 4.9 bits each.
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols per code: 12 → about 58 bits, well above NIST's 20-bit floor for look-up secrets.
const CODE_LEN: usize = 12;

/// One stored code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCode {
    /// argon2id PHC hash of the normalised code.
    pub hash: String,
    /// When it was used, if it was.
    pub used_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The `data` of a recovery codes factor record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCodes {
    /// The codes of the current set.
    pub codes: Vec<StoredCode>,
}

/// A freshly generated set: the plaintext codes to show once, and the material to store.
#[derive(Debug)]
pub struct GeneratedCodes {
    /// Codes formatted `XXXX-XXXX-XXXX`, to show the user once.
    pub plaintext: Vec<String>,
    /// What to store (replaces any previous set).
    pub material: FactorMaterial,
}

/// Generates `count` new codes (regeneration = generating again and replacing the record).
pub fn generate(argon: &Argon2Config, count: usize) -> Result<GeneratedCodes, HashError> {
    let mut rng = rand::thread_rng();
    let mut plaintext = Vec::with_capacity(count);
    let mut codes = Vec::with_capacity(count);
    for _ in 0..count {
        let raw: String = (0..CODE_LEN)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        codes.push(StoredCode {
            hash: hash_secret(argon, raw.as_bytes())?,
            used_at: None,
        });
        plaintext.push(format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12]));
    }
    let data = serde_json::to_value(RecoveryCodes { codes }).unwrap_or_default();
    Ok(GeneratedCodes {
        plaintext,
        material: FactorMaterial {
            kind: FactorKind::RecoveryCodes,
            label: "Recovery codes".into(),
            secret: None,
            data,
        },
    })
}

/// Normalises what a user typed: case and separators do not matter.
pub fn normalise_code(input: &str) -> String {
    input
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl RecoveryCodes {
    /// Codes not used yet.
    pub fn remaining(&self) -> usize {
        self.codes.iter().filter(|c| c.used_at.is_none()).count()
    }

    /// Verifies a code; on success marks it used (store the updated record) and returns its index.
    /// A used code never verifies again.
    pub fn redeem(&mut self, input: &str, now: chrono::DateTime<chrono::Utc>) -> Option<usize> {
        let code = normalise_code(input);
        if code.len() != CODE_LEN {
            return None;
        }
        let idx = self
            .codes
            .iter()
            .position(|c| c.used_at.is_none() && verify_secret(&c.hash, code.as_bytes()))?;
        self.codes[idx].used_at = Some(now);
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_single_use_codes() {
        let g = generate(&Argon2Config::insecure_for_tests(), 10).unwrap();
        assert_eq!(g.plaintext.len(), 10);
        assert!(g
            .plaintext
            .iter()
            .all(|c| c.len() == 14 && c.as_bytes()[4] == b'-'));
        let stored = g.material.data.to_string();
        assert!(g
            .plaintext
            .iter()
            .all(|c| !stored.contains(&c.replace('-', ""))));
        let mut rc: RecoveryCodes = serde_json::from_value(g.material.data).unwrap();
        let now = chrono::Utc::now();
        let typed = g.plaintext[3].to_lowercase().replace('-', " ");
        assert_eq!(rc.redeem(&typed, now), Some(3));
        assert_eq!(rc.redeem(&g.plaintext[3], now), None, "single use");
        assert_eq!(rc.remaining(), 9);
        assert_eq!(rc.redeem("AAAA-BBBB-CCCC", now), None);
        assert_eq!(rc.redeem("short", now), None);
    }

    #[test]
    fn regeneration_voids_old_codes() {
        let argon = Argon2Config::insecure_for_tests();
        let old = generate(&argon, 2).unwrap();
        let new = generate(&argon, 2).unwrap();
        let mut rc: RecoveryCodes = serde_json::from_value(new.material.data).unwrap();
        assert_eq!(rc.redeem(&old.plaintext[0], chrono::Utc::now()), None);
        assert_eq!(rc.redeem(&new.plaintext[1], chrono::Utc::now()), Some(1));
    }
}
