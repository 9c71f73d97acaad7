//! The tokens the provider signs: ID tokens (OIDC Core §2: ES256, or EdDSA / RS256 per
//! client) and access tokens as JWTs (RFC 9068, `typ: at+jwt`, ES256), with the provider's
//! own key set (`AppState::oidc_keys`: apart from the identity assertion's, published at
//! the provider's `jwks_uri`, each algorithm's key rotated with overlap on the assertion
//! keys' schedule); and their verification here (userinfo, introspection, logout hints, the
//! gateway's bearer tokens).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use stepgate_config::{AssertionConfig, Config, OidcClient};
use stepgate_store::UserRecord;

use super::grant::Authorization;
use crate::gateway::assertion::keys::KeyAlg;
use crate::gateway::assertion::AssertionKeys;

/// The `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The key schedule's configuration: the assertion's, with retired keys kept long enough
/// for the longest-lived ID or access token to verify.
pub fn key_config(cfg: &Config) -> AssertionConfig {
    let mut a = cfg.gateway.assertion.clone();
    let longest = cfg
        .oidc
        .clients
        .iter()
        .map(|c| c.access_token_lifetime.max(c.id_token_lifetime))
        .max();
    if let Some(l) = longest {
        if l.0 > a.ttl.0 {
            a.ttl = l;
        }
    }
    a
}

/// The `aud` of the access tokens minted for `app`'s clients. Not the app id itself, which
/// is the `aud` of the identity assertion stepgate signs for that app with the same keys:
/// an app verifying assertions (`aud` = its id) refuses an access token, and the gateway
/// (this `aud`, `typ: at+jwt`) refuses an assertion.
pub fn access_audience(app: &str) -> String {
    format!("urn:stepgate:api:{app}")
}

/// The algorithms the provider's key set holds keys for: none without clients; else ES256
/// (access and logout tokens, and ID tokens by default) and each client's ID token
/// algorithm.
pub fn key_algs(cfg: &Config) -> Vec<KeyAlg> {
    if cfg.oidc.clients.is_empty() {
        return Vec::new();
    }
    let mut algs = vec![KeyAlg::ES256];
    for c in &cfg.oidc.clients {
        if let Some(a) = KeyAlg::parse(c.id_token_signed_response_alg.as_str()) {
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
    }
    algs
}

/// The algorithm of `client`'s ID tokens (ES256 unless it chose another).
pub fn id_token_alg(client: &OidcClient) -> KeyAlg {
    KeyAlg::parse(client.id_token_signed_response_alg.as_str()).unwrap_or_default()
}

/// `at_hash`: the left half of the hash of the access token, base64url: SHA-256 for ES256
/// and RS256, SHA-512 for EdDSA (Ed25519's hash, as OpenID Connect's errata and RPs read it).
pub fn at_hash(access_token: &str, alg: KeyAlg) -> String {
    match alg {
        KeyAlg::EdDSA => B64.encode(&sha2::Sha512::digest(access_token.as_bytes())[..32]),
        KeyAlg::ES256 | KeyAlg::RS256 => B64.encode(&Sha256::digest(access_token.as_bytes())[..16]),
    }
}

/// What both tokens say of the user for the granted scopes.
fn user_claims(m: &mut Map<String, Value>, user: &UserRecord, scope: &str) {
    let has = |s: &str| scope.split(' ').any(|x| x == s);
    if has("profile") {
        m.insert("preferred_username".into(), json!(user.username));
        if let Some(n) = &user.name {
            m.insert("name".into(), json!(n));
        }
    }
    if has("email") {
        if let Some(e) = &user.email {
            m.insert("email".into(), json!(e));
        }
    }
    if has("groups") {
        m.insert("groups".into(), json!(user.groups));
    }
}

/// Everything the tokens of one issue share.
pub struct Issue<'a> {
    /// The issuer.
    pub issuer: &'a str,
    /// The client.
    pub client: &'a OidcClient,
    /// The authorization.
    pub auth: &'a Authorization,
    /// The user.
    pub user: &'a UserRecord,
    /// `sid`.
    pub sid: &'a str,
    /// The `sub` the client sees ([`super::subject`]): the user's id, or pairwise.
    pub sub: &'a str,
    /// The user's id sealed, for a pairwise client's access token (`sgu`).
    pub sealed_uid: Option<String>,
    /// The published `acr`.
    pub acr: String,
    /// When.
    pub now: DateTime<Utc>,
}

impl Issue<'_> {
    /// The access token's claims (RFC 9068 §2.2, with `acr`, `amr`, `auth_time`): its
    /// audience is the client's app, so stepgate's gateway accepts it for that app only.
    pub fn access_claims(&self, jti: &str) -> Value {
        let iat = self.now.timestamp();
        let mut m = Map::new();
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("sub", json!(self.sub)),
            ("aud", json!(access_audience(self.client.app.as_str()))),
            ("client_id", json!(self.client.id.as_str())),
            ("iat", json!(iat)),
            ("nbf", json!(iat)),
            (
                "exp",
                json!(iat + self.client.access_token_lifetime.as_secs() as i64),
            ),
            ("jti", json!(jti)),
            ("scope", json!(self.auth.scope)),
            ("acr", json!(self.acr)),
            ("amr", json!(self.auth.amr)),
            ("auth_time", json!(self.auth.auth_time)),
            ("sid", json!(self.sid)),
            ("gid", json!(self.auth.gid)),
        ] {
            m.insert(k.into(), v);
        }
        // RFC 8176 names no method for an untrusted upstream sign-in: no `amr` then.
        if self.auth.amr.is_empty() {
            m.remove("amr");
        }
        match &self.sealed_uid {
            // A pairwise client: the user's id only sealed, and the username only when the
            // scope grants it (it would link the user across sectors).
            Some(sealed) => {
                m.insert("sgu".into(), json!(sealed));
            }
            // The gateway reads the username from `preferred_username` (else `sub`).
            None => {
                m.insert("preferred_username".into(), json!(self.user.username));
            }
        }
        user_claims(&mut m, self.user, &self.auth.scope);
        Value::Object(m)
    }

    /// The ID token's claims.
    pub fn id_claims(&self, access_token: &str, with_nonce: bool) -> Value {
        let iat = self.now.timestamp();
        let mut m = Map::new();
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("sub", json!(self.sub)),
            ("aud", json!(self.client.id.as_str())),
            ("azp", json!(self.client.id.as_str())),
            ("iat", json!(iat)),
            (
                "exp",
                json!(iat + self.client.id_token_lifetime.as_secs() as i64),
            ),
            ("auth_time", json!(self.auth.auth_time)),
            ("acr", json!(self.acr)),
            ("amr", json!(self.auth.amr)),
            ("sid", json!(self.sid)),
            (
                "at_hash",
                json!(at_hash(access_token, id_token_alg(self.client))),
            ),
        ] {
            m.insert(k.into(), v);
        }
        if self.auth.amr.is_empty() {
            m.remove("amr");
        }
        if with_nonce {
            if let Some(n) = &self.auth.nonce {
                m.insert("nonce".into(), json!(n));
            }
        }
        user_claims(&mut m, self.user, &self.auth.scope);
        Value::Object(m)
    }
}

/// The claims of a JWT this provider signed (`typ` as given), checked: signature by a
/// published key — the key names the algorithm (the header's must agree), so an ES256 key
/// never checks an RS256 signature and `none` or HMAC never get a key —, issuer, and —
/// unless `allow_expired` (a logout hint) — expiry.
pub fn verify(
    keys: &AssertionKeys,
    issuer: &str,
    token: &str,
    typ: Option<&str>,
    allow_expired: bool,
) -> Option<Value> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if let Some(want) = typ {
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(want))
        {
            return None;
        }
    }
    let set = keys.jwk_set();
    let jwk = set.find(header.kid.as_deref()?)?;
    let alg = jwk
        .common
        .key_algorithm
        .and_then(|a| KeyAlg::parse(&format!("{a:?}")))?;
    if header.alg != alg.algorithm() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let mut v = Validation::new(alg.algorithm());
    v.set_issuer(&[issuer]);
    v.validate_aud = false;
    v.validate_exp = !allow_expired;
    v.set_required_spec_claims(&["iss", "sub", "exp"]);
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .ok()
        .map(|d| d.claims)
}

/// The ES256-only [`verify`] of access tokens: the gateway and the resource endpoints take
/// access tokens signed with ES256 alone, whatever the clients' ID token algorithms.
pub fn verify_access(keys: &AssertionKeys, issuer: &str, token: &str) -> Option<Value> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != Algorithm::ES256 {
        return None;
    }
    verify(keys, issuer, token, Some(ACCESS_TOKEN_TYP), false)
}
