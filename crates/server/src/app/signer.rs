//! The server's HMAC signer: signed short-lived values (return targets, step-up and blocked
//! links), session ids that carry a MAC, CSRF tokens and session handles. Its key is
//! derived from the secrets key, so every node of a cluster accepts what another signed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies short-lived values with HMAC-SHA256 under a key derived from the
/// secrets key, so every node of a cluster accepts what another signed.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { .. }")
    }
}

impl Signer {
    /// A signer from raw key material (already secret and uniform).
    pub fn new(material: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(b"stepgate signer v1")
            .expect("any key length works for HMAC");
        mac.update(material);
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Signer { key }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("32-byte key");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// `payload` for `purpose`, valid until `expires` (Unix seconds).
    pub fn sign(&self, purpose: &str, payload: &str, expires: i64) -> String {
        let exp = expires.to_string();
        let tag = self.mac(&[purpose.as_bytes(), payload.as_bytes(), exp.as_bytes()]);
        format!("{}.{}.{}", B64.encode(payload), exp, B64.encode(tag))
    }

    /// The payload, if the token was signed for `purpose` and has not expired at `now`.
    pub fn verify(&self, purpose: &str, token: &str, now: i64) -> Option<String> {
        let mut it = token.splitn(3, '.');
        let payload = B64.decode(it.next()?).ok()?;
        let exp_s = it.next()?;
        let tag = B64.decode(it.next()?).ok()?;
        let exp: i64 = exp_s.parse().ok()?;
        let want = self.mac(&[purpose.as_bytes(), &payload, exp_s.as_bytes()]);
        if !bool::from(want.as_slice().ct_eq(&tag)) || now > exp {
            return None;
        }
        String::from_utf8(payload).ok()
    }

    /// A new session id: 256 random bits and a 128-bit MAC over them under this node's key
    /// (`<random>.<mac>`, URL-safe base64). Every node sharing the key can tell an id it
    /// issued from a made-up one without a store lookup, so a flood of forged session
    /// cookies costs a MAC each, not a store round trip each.
    pub fn session_id(&self) -> String {
        let r = random_id();
        let tag = self.mac(&[b"session-id", r.as_bytes()]);
        format!("{r}.{}", B64.encode(&tag[..16]))
    }

    /// Whether `id` is a session id this key issued (constant time in the MAC).
    pub fn session_id_ok(&self, id: &str) -> bool {
        let Some((r, tag)) = id.split_once('.') else {
            return false;
        };
        let Ok(tag) = B64.decode(tag) else {
            return false;
        };
        let want = self.mac(&[b"session-id", r.as_bytes()]);
        tag.len() == 16 && bool::from(want[..16].ct_eq(&tag))
    }

    /// A handle for the session `id` that pages may show (the sessions page's "End" buttons):
    /// a MAC of the id under this key, from which the id cannot be derived.
    pub fn session_handle(&self, id: &str) -> String {
        B64.encode(&self.mac(&[b"session-handle", id.as_bytes()])[..16])
    }

    /// Whether `handle` is the handle of the session `id` (constant time).
    pub fn session_handle_ok(&self, id: &str, handle: &str) -> bool {
        let want = self.session_handle(id);
        !handle.is_empty() && bool::from(want.as_bytes().ct_eq(handle.as_bytes()))
    }

    /// The CSRF token bound to a session (or pre-session) identifier.
    pub fn csrf_token(&self, binding: &str) -> String {
        B64.encode(self.mac(&[b"csrf", binding.as_bytes()]))
    }

    /// Checks a submitted CSRF token in constant time.
    pub fn csrf_ok(&self, binding: &str, submitted: &str) -> bool {
        let want = self.csrf_token(binding);
        !submitted.is_empty() && bool::from(want.as_bytes().ct_eq(submitted.as_bytes()))
    }
}

/// A random URL-safe identifier with 256 bits of entropy (session ids, nonces).
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_carry_a_mac_only_their_key_accepts() {
        let s = Signer::new(b"k");
        let id = s.session_id();
        assert!(s.session_id_ok(&id));
        assert_ne!(id, s.session_id(), "ids are random");
        // Another key, a bare random id, a changed random part or tag: all refused.
        assert!(!Signer::new(b"other").session_id_ok(&id));
        assert!(!s.session_id_ok(&random_id()));
        let (r, tag) = id.split_once('.').unwrap();
        let mut flipped = r.to_string().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(!s.session_id_ok(&format!("{flipped}.{tag}")));
        assert!(!s.session_id_ok(&format!("{r}.{}", &tag[..tag.len() - 2])));
        assert!(!s.session_id_ok(&format!("{r}.")));
        assert!(!s.session_id_ok(""));
    }

    #[test]
    fn signed_tokens_round_trip_and_expire() {
        let s = Signer::new(b"k");
        let t = s.sign("rt", "http://a/x?y=1", 100);
        assert_eq!(s.verify("rt", &t, 99).as_deref(), Some("http://a/x?y=1"));
        assert_eq!(s.verify("rt", &t, 101), None, "expired");
        assert_eq!(s.verify("other", &t, 99), None, "wrong purpose");
        assert_eq!(Signer::new(b"j").verify("rt", &t, 99), None, "wrong key");
        let forged = t.replacen("aHR0", "aHR1", 1);
        assert_eq!(s.verify("rt", &forged, 99), None, "tampered payload");
        let later = t.replace(".100.", ".999.");
        assert_eq!(s.verify("rt", &later, 200), None, "tampered expiry");
    }

    #[test]
    fn csrf_tokens_bind_to_the_session() {
        let s = Signer::new(b"k");
        let t = s.csrf_token("sess-1");
        assert!(s.csrf_ok("sess-1", &t));
        assert!(!s.csrf_ok("sess-2", &t));
        assert!(!s.csrf_ok("sess-1", ""));
    }
}
