//! The `oidc:` section: stepgate as an OpenID Provider. Each client is an app of the policy
//! model (`app:`), so its sign-ins are decided by the same policies as the app's requests.
//!
//! ```yaml
//! oidc:
//!   issuer: https://sso.example.com        # default: server.public_url
//!   acr:
//!     names: { aal1: aal1, aal2: aal2, aal3: aal3 }   # published in `acr` and discovery
//!     aliases: { mfa: 2, phr: 3, phrh: 3 }            # also understood in acr_values
//!   clients:
//!     - id: grafana
//!       name: Grafana
//!       type: confidential
//!       secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$…"  # `stepgate oidc client add` makes one
//!       redirect_uris: [https://grafana.example.com/login/generic_oauth]
//!       post_logout_redirect_uris: [https://grafana.example.com/login]
//!       scopes: [openid, profile, email, groups]
//!       grant_types: [authorization_code, refresh_token]
//!       app: grafana
//! ```

use std::collections::{BTreeMap, HashSet};

use marked_yaml::{Span, Spanned};
use serde::Deserialize;
use stepgate_policy::HumanDuration;

/// `oidc:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` of every token and the discovery document's base: an http(s) origin with
    /// no path. Default: `server.public_url`.
    #[serde(default)]
    pub issuer: Option<Spanned<String>>,
    /// The names `acr` values are published under.
    #[serde(default)]
    pub acr: AcrConfig,
    /// How long an authorization code may be redeemed. Default `60s` (at most `60s`).
    #[serde(default = "default_code_lifetime")]
    pub code_lifetime: HumanDuration,
    /// The relying parties.
    #[serde(default)]
    pub clients: Vec<OidcClient>,
    /// The key pairwise subject identifiers are computed with (`{file: …}` or `{env: …}`;
    /// at least 32 characters). Required when a client has `subject_type: pairwise`; the
    /// same key must stay, or every pairwise `sub` changes.
    #[serde(default)]
    pub pairwise_secret: Option<crate::identity::SecretSource>,
}

/// `oidc.clients[].subject_type` (OIDC Core §8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    /// `sub` is the user's stable id, the same for every client.
    #[default]
    Public,
    /// `sub` is derived from the user's id and the client's sector: stable for the sector,
    /// not linkable across sectors.
    Pairwise,
}

/// `oidc.acr`: the NIST levels under the names an organisation's apps use.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcrConfig {
    /// The published name of each level (`aal1`, `aal2`, `aal3`), e.g. a URI. Default: the
    /// level's own name.
    #[serde(default = "default_acr_names")]
    pub names: BTreeMap<String, String>,
    /// More `acr_values` understood on requests, and the level (1–3) each stands for.
    #[serde(default)]
    pub aliases: BTreeMap<String, u8>,
}

impl Default for AcrConfig {
    fn default() -> Self {
        AcrConfig {
            names: default_acr_names(),
            aliases: BTreeMap::new(),
        }
    }
}

impl AcrConfig {
    /// The published `acr` of level `aal` (1–3).
    pub fn name(&self, aal: u8) -> String {
        let key = format!("aal{aal}");
        self.names.get(&key).cloned().unwrap_or(key)
    }

    /// The level an `acr` value on a request stands for: a published name, an alias, or
    /// `aal1`–`aal3`.
    pub fn level(&self, acr: &str) -> Option<u8> {
        for (k, v) in &self.names {
            if v == acr {
                return k.strip_prefix("aal").and_then(|n| n.parse().ok());
            }
        }
        if let Some(&n) = self.aliases.get(acr) {
            return Some(n);
        }
        acr.strip_prefix("aal")
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=3).contains(n))
    }
}

/// Whether a client keeps a secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientType {
    /// A server-side app that authenticates to the token endpoint.
    #[default]
    Confidential,
    /// A browser or native app: no secret, PKCE required.
    Public,
}

/// One relying party: `oidc.clients[]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcClient {
    /// `client_id`. Required.
    pub id: Spanned<String>,
    /// Shown on the portal's pages. Default: the app's name.
    #[serde(default)]
    pub name: Option<String>,
    /// `confidential` (default) or `public`.
    #[serde(default, rename = "type")]
    pub client_type: ClientType,
    /// The argon2 hash (PHC string) of a confidential client's secret.
    #[serde(default)]
    pub secret_hash: Option<Spanned<String>>,
    /// A JWKS file (relative to the configuration) with the public keys the client signs
    /// its `private_key_jwt` assertions with (RFC 7523), instead of or beside a secret.
    #[serde(default)]
    pub jwks_file: Option<Spanned<String>>,
    /// Where stepgate posts a logout token (OIDC Back-Channel Logout 1.0) when a session
    /// the client signed in with ends.
    #[serde(default)]
    pub backchannel_logout_uri: Option<Spanned<String>>,
    /// Where codes may be sent: matched exactly. At least one.
    #[serde(default)]
    pub redirect_uris: Vec<Spanned<String>>,
    /// Where RP-initiated logout may return to: matched exactly.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<Spanned<String>>,
    /// Scopes the client may ask for. Default `[openid, profile, email, groups]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Spanned<String>>,
    /// `authorization_code` (with optionally `refresh_token`), and/or `client_credentials`
    /// for a service with no user. Default `[authorization_code, refresh_token]`.
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<Spanned<String>>,
    /// The app (`apps[].id`) whose policies decide this client's sign-ins. Required.
    pub app: Spanned<String>,
    /// Lifetime of ID tokens. Default `5m`.
    #[serde(default = "default_token_lifetime")]
    pub id_token_lifetime: HumanDuration,
    /// Lifetime of access tokens. Default `5m`.
    #[serde(default = "default_token_lifetime")]
    pub access_token_lifetime: HumanDuration,
    /// Lifetime of a refresh token (each refresh issues a new one); never beyond the
    /// session it came from. Default `8h`.
    #[serde(default = "default_refresh_lifetime")]
    pub refresh_token_lifetime: HumanDuration,
    /// The algorithm of the client's ID tokens (OIDC Dynamic Client Registration's name):
    /// `ES256` (default), `EdDSA` or `RS256`.
    #[serde(default = "default_id_token_alg")]
    pub id_token_signed_response_alg: Spanned<String>,
    /// `public` (default) or `pairwise`.
    #[serde(default)]
    pub subject_type: SubjectType,
    /// A pairwise client's sector: clients of one sector see the same `sub`. Default: the
    /// host of the client's redirect URIs (which must then share one host).
    #[serde(default)]
    pub sector_identifier: Option<Spanned<String>>,
}

/// The algorithms an ID token can be signed with.
pub const ID_TOKEN_ALGS: &[&str] = &["ES256", "EdDSA", "RS256"];

fn default_id_token_alg() -> Spanned<String> {
    Spanned::new(Span::new_blank(), "ES256".to_string())
}

impl OidcClient {
    /// The sector of a pairwise client: `sector_identifier`, else its redirect URIs' one
    /// host (`None` when they have several, a configuration error).
    pub fn sector(&self) -> Option<String> {
        if let Some(s) = &self.sector_identifier {
            return Some(s.as_str().to_string());
        }
        let mut hosts = self
            .redirect_uris
            .iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .filter_map(|u| u.host_str().map(str::to_ascii_lowercase));
        let first = hosts.next()?;
        hosts.all(|h| h == first).then_some(first)
    }

    /// Whether `uri` is one of the registered redirect URIs, exactly.
    pub fn redirect_ok(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|u| u.as_str() == uri)
    }

    /// Whether `uri` is one of the registered post-logout redirect URIs, exactly.
    pub fn post_logout_ok(&self, uri: &str) -> bool {
        self.post_logout_redirect_uris
            .iter()
            .any(|u| u.as_str() == uri)
    }

    /// Whether the client may use `grant`.
    pub fn grant_ok(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g.as_str() == grant)
    }

    /// Whether the client may ask for `scope`.
    pub fn scope_ok(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s.as_str() == scope)
    }
}

impl OidcConfig {
    /// The client with this `client_id`.
    pub fn client(&self, id: &str) -> Option<&OidcClient> {
        self.clients.iter().find(|c| c.id.as_str() == id)
    }

    /// Every meaning error, with where it was written (`apps`: the configured app ids).
    pub fn problems(&self, apps: &[&str]) -> Vec<(Span, String)> {
        let mut out: Vec<(Span, String)> = Vec::new();
        if let Some(iss) = &self.issuer {
            match url::Url::parse(iss) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.path() == "/"
                        && u.query().is_none()
                        && u.fragment().is_none()
                        && !iss.ends_with('/') => {}
                _ => out.push((
                    *iss.span(),
                    format!(
                        "oidc.issuer `{}`: expected an http(s) origin with no path, query or trailing slash, e.g. https://sso.example.com",
                        iss.as_str()
                    ),
                )),
            }
        }
        for (k, v) in &self.acr.names {
            if !matches!(k.as_str(), "aal1" | "aal2" | "aal3") || v.trim().is_empty() {
                out.push((
                    Span::new_blank(),
                    format!("oidc.acr.names: `{k}: {v}`: expected aal1, aal2 or aal3, each with a non-empty name"),
                ));
            }
        }
        for (k, v) in &self.acr.aliases {
            if !(1..=3).contains(v) {
                out.push((
                    Span::new_blank(),
                    format!("oidc.acr.aliases: `{k}` stands for level {v}: expected 1, 2 or 3"),
                ));
            }
        }
        if self.code_lifetime.0.is_zero() || self.code_lifetime.as_secs() > 60 {
            out.push((
                Span::new_blank(),
                format!(
                    "oidc.code_lifetime {}: expected between 1s and 60s",
                    self.code_lifetime
                ),
            ));
        }
        let mut ids = HashSet::new();
        for c in &self.clients {
            let id = c.id.as_str();
            let at = |s: &Span| *s;
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                out.push((
                    at(c.id.span()),
                    format!("oidc client id `{id}`: expected letters, digits, `-`, `_` or `.`"),
                ));
            }
            // ID tokens and the gateway's identity assertions share the issuer and the keys:
            // an app must never receive an ID token whose audience is its own id.
            if apps.contains(&id) {
                out.push((
                    at(c.id.span()),
                    format!("oidc client id `{id}` is also an app's id: give the client an id of its own (its ID tokens must not carry an app's audience)"),
                ));
            }
            if !ids.insert(id) {
                out.push((
                    at(c.id.span()),
                    format!("oidc client id `{id}` is used twice"),
                ));
            }
            if !apps.contains(&c.app.as_str()) {
                out.push((
                    at(c.app.span()),
                    format!(
                        "oidc client `{id}`: app `{}` is not one of the configured apps ({})",
                        c.app.as_str(),
                        apps.join(", ")
                    ),
                ));
            }
            if let (ClientType::Public, Some(j)) = (c.client_type, &c.jwks_file) {
                out.push((
                    at(j.span()),
                    format!("oidc client `{id}` is public: a public client has no keys; remove `jwks_file` or make it `type: confidential`"),
                ));
            }
            match (c.client_type, &c.secret_hash) {
                (ClientType::Confidential, None) if c.jwks_file.is_none() => out.push((
                    at(c.id.span()),
                    format!("oidc client `{id}` is confidential but has no `secret_hash` or `jwks_file`: add the argon2 hash of its secret (`stepgate oidc client add` makes one) or its keys for private_key_jwt, or make it `type: public`"),
                )),
                (ClientType::Confidential, None) => {}
                (ClientType::Public, Some(h)) => out.push((
                    at(h.span()),
                    format!("oidc client `{id}` is public: a public client has no secret; remove `secret_hash` or make it `type: confidential`"),
                )),
                (ClientType::Confidential, Some(h)) => {
                    let ok = argon2::PasswordHash::new(h.as_str())
                        .is_ok_and(|p| p.algorithm.as_str().starts_with("argon2"));
                    if !ok {
                        out.push((
                            at(h.span()),
                            format!("oidc client `{id}`: secret_hash is not an argon2 PHC string (`$argon2id$v=19$…`): never the secret itself"),
                        ));
                    }
                }
                (ClientType::Public, None) => {}
            }
            if c.redirect_uris.is_empty() && c.grant_ok("authorization_code") {
                out.push((
                    at(c.id.span()),
                    format!("oidc client `{id}` has no redirect_uris: expected at least one"),
                ));
            }
            for u in c.redirect_uris.iter().chain(&c.post_logout_redirect_uris) {
                if let Some(why) = redirect_problem(u) {
                    out.push((
                        at(u.span()),
                        format!("oidc client `{id}`: `{}`: {why}", u.as_str()),
                    ));
                }
            }
            if let Some(u) = &c.backchannel_logout_uri {
                let ok = url::Url::parse(u).is_ok_and(|x| {
                    matches!(x.scheme(), "http" | "https") && x.fragment().is_none()
                });
                if !ok {
                    out.push((
                        at(u.span()),
                        format!("oidc client `{id}`: backchannel_logout_uri `{}` is not an absolute http(s) URL without a fragment", u.as_str()),
                    ));
                }
            }
            if !c.scope_ok("openid") {
                out.push((
                    at(c.id.span()),
                    format!("oidc client `{id}`: scopes must include `openid`"),
                ));
            }
            for s in &c.scopes {
                if !SCOPES.contains(&s.as_str()) {
                    out.push((
                        at(s.span()),
                        format!(
                            "oidc client `{id}`: unknown scope `{}`: expected one of {}",
                            s.as_str(),
                            SCOPES.join(", ")
                        ),
                    ));
                }
            }
            for g in &c.grant_types {
                if !GRANT_TYPES.contains(&g.as_str()) {
                    out.push((
                        at(g.span()),
                        format!(
                            "oidc client `{id}`: unsupported grant type `{}`: expected authorization_code, refresh_token or client_credentials",
                            g.as_str()
                        ),
                    ));
                }
            }
            if !c.grant_ok("authorization_code") && !c.grant_ok("client_credentials") {
                out.push((
                    at(c.id.span()),
                    format!("oidc client `{id}`: grant_types must include `authorization_code` or `client_credentials`"),
                ));
            }
            if c.grant_ok("client_credentials") && c.client_type == ClientType::Public {
                out.push((
                    at(c.id.span()),
                    format!("oidc client `{id}` is public: client_credentials needs a confidential client"),
                ));
            }
            for (what, d) in [
                ("id_token_lifetime", c.id_token_lifetime),
                ("access_token_lifetime", c.access_token_lifetime),
                ("refresh_token_lifetime", c.refresh_token_lifetime),
            ] {
                if d.0.is_zero() {
                    out.push((
                        at(c.id.span()),
                        format!("oidc client `{id}`: {what} must be longer than 0s"),
                    ));
                }
            }
            if c.subject_type == SubjectType::Pairwise {
                if self.pairwise_secret.is_none() {
                    out.push((
                        at(c.id.span()),
                        format!("oidc client `{id}` is pairwise: set oidc.pairwise_secret (`{{file: PATH}}` or `{{env: NAME}}`, at least 32 characters)"),
                    ));
                }
                if c.sector_identifier
                    .as_ref()
                    .is_some_and(|s| s.trim().is_empty())
                {
                    out.push((
                        at(c.id.span()),
                        format!("oidc client `{id}`: sector_identifier is empty"),
                    ));
                } else if c.sector().is_none() && c.grant_ok("authorization_code") {
                    out.push((
                        at(c.id.span()),
                        format!("oidc client `{id}` is pairwise and its redirect URIs are on several hosts: set sector_identifier (e.g. the host they share a sector under)"),
                    ));
                }
            }
            let alg = &c.id_token_signed_response_alg;
            if !ID_TOKEN_ALGS.contains(&alg.as_str()) {
                out.push((
                    at(alg.span()),
                    format!(
                        "oidc client `{id}`: id_token_signed_response_alg `{}`: expected one of {} (never `none` or HMAC)",
                        alg.as_str(),
                        ID_TOKEN_ALGS.join(", ")
                    ),
                ));
            }
            if c.access_token_lifetime.as_secs() > 3600 || c.id_token_lifetime.as_secs() > 3600 {
                out.push((
                    at(c.id.span()),
                    format!("oidc client `{id}`: ID and access tokens live at most 1h (use refresh tokens for longer)"),
                ));
            }
        }
        out
    }
}

/// The scopes stepgate knows.
pub const SCOPES: &[&str] = &["openid", "profile", "email", "groups", "offline_access"];

/// The grant types stepgate supports.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];

/// Why `u` cannot be a registered redirect URI: absolute, no fragment; http only for
/// loopback.
fn redirect_problem(u: &str) -> Option<String> {
    let Ok(url) = url::Url::parse(u) else {
        return Some("not an absolute URL".into());
    };
    if url.fragment().is_some() {
        return Some("a redirect URI must not have a fragment".into());
    }
    match url.scheme() {
        "https" => None,
        "http" => None,
        "javascript" | "data" | "file" | "vbscript" => {
            Some(format!("the scheme `{}` is never allowed", url.scheme()))
        }
        // Native apps' private-use schemes (RFC 8252 §7.1) must look like reverse DNS.
        s if s.contains('.') => None,
        s => Some(format!(
            "the scheme `{s}`: expected https, http, or a reverse-DNS private-use scheme (com.example.app)"
        )),
    }
}

fn default_code_lifetime() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_token_lifetime() -> HumanDuration {
    HumanDuration::from_secs(300)
}

fn default_refresh_lifetime() -> HumanDuration {
    HumanDuration::from_secs(8 * 3600)
}

fn default_acr_names() -> BTreeMap<String, String> {
    (1..=3)
        .map(|n| (format!("aal{n}"), format!("aal{n}")))
        .collect()
}

fn default_scopes() -> Vec<Spanned<String>> {
    ["openid", "profile", "email", "groups"]
        .into_iter()
        .map(|s| Spanned::new(Span::new_blank(), s.to_string()))
        .collect()
}

fn default_grant_types() -> Vec<Spanned<String>> {
    ["authorization_code", "refresh_token"]
        .into_iter()
        .map(|s| Spanned::new(Span::new_blank(), s.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    const HASH: &str = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$3pX3kF6yH7m4h0yV5E0o0w";

    fn yaml(clients: &str) -> String {
        format!("apps:\n  - {{ id: expenses, hosts: [e.test] }}\noidc:\n  clients:\n{clients}")
    }

    #[test]
    fn a_good_client_loads_with_its_defaults() {
        let cfg = load_str(
            "t.yaml",
            &yaml(&format!("    - id: rp\n      secret_hash: \"{HASH}\"\n      redirect_uris: [https://rp.example/cb]\n      app: expenses\n")),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = cfg.oidc.client("rp").unwrap();
        assert!(c.redirect_ok("https://rp.example/cb"));
        assert!(!c.redirect_ok("https://rp.example/cb/"));
        assert!(c.grant_ok("refresh_token") && c.scope_ok("email"));
        assert_eq!(c.access_token_lifetime.as_secs(), 300);
        assert_eq!(cfg.oidc.code_lifetime.as_secs(), 60);
        assert_eq!(cfg.oidc.acr.name(2), "aal2");
    }

    #[test]
    fn each_mistake_is_named_where_it_was_written() {
        let text = yaml(
            "    - id: rp\n      secret_hash: hunter2\n      redirect_uris: [\"https://rp.example/cb#x\", \"javascript:alert(1)\"]\n      scopes: [openid, admin]\n      grant_types: [authorization_code, implicit]\n      app: nope\n    - id: rp\n      type: public\n      secret_hash: \"HASH\"\n      redirect_uris: [https://rp.example/cb]\n      app: expenses\n    - id: pub\n      redirect_uris: [https://rp.example/cb]\n      app: expenses\n",
        )
        .replace("HASH", HASH);
        let e = load_str("t.yaml", &text, None).unwrap_err();
        let text = e.to_string();
        for (line, needle) in [
            (6, "secret_hash is not an argon2 PHC string"),
            (7, "must not have a fragment"),
            (7, "`javascript` is never allowed"),
            (8, "unknown scope `admin`"),
            (9, "unsupported grant type `implicit`"),
            (
                10,
                "app `nope` is not one of the configured apps (expenses)",
            ),
            (11, "oidc client id `rp` is used twice"),
            (13, "is public: a public client has no secret"),
            (
                16,
                "oidc client `pub` is confidential but has no `secret_hash`",
            ),
        ] {
            assert!(
                e.diagnostics
                    .iter()
                    .any(|d| d.line == Some(line) && d.message.contains(needle)),
                "line {line}: `{needle}` in:\n{text}"
            );
        }
        // Shape errors: a misspelt key, a wrong type, with the position.
        let e = load_str(
            "t.yaml",
            &yaml("    - id: rp\n      redirect_uri: [x]\n      app: expenses\n"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("t.yaml:6:") && e.contains("redirect_uris"),
            "{e}"
        );
        let e = load_str(
            "t.yaml",
            &yaml("    - id: rp\n      type: secret\n      app: expenses\n"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.yaml:6:") && e.contains("confidential"), "{e}");
    }

    #[test]
    fn the_issuer_code_lifetime_and_acr_are_checked() {
        let e = load_str(
            "t.yaml",
            "apps: []\noidc:\n  issuer: https://sso.example.com/idp/\n  code_lifetime: 5m\n  acr: { names: { aal4: x }, aliases: { mfa: 5 } }\n",
            None,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("t.yaml:3:") && text.contains("oidc.issuer"),
            "{text}"
        );
        for needle in ["code_lifetime 5m", "aal4", "`mfa` stands for level 5"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(e.diagnostics.iter().all(|d| d.line.is_some()), "{text}");
    }

    #[test]
    fn a_pairwise_client_needs_the_key_and_one_sector_and_algorithms_are_checked() {
        let e = load_str(
            "t.yaml",
            &yaml(&format!("    - id: rp\n      secret_hash: \"{HASH}\"\n      redirect_uris: [https://a.example/cb, https://b.example/cb]\n      subject_type: pairwise\n      id_token_signed_response_alg: HS256\n      app: expenses\n")),
            None,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "set oidc.pairwise_secret",
            "redirect URIs are on several hosts: set sector_identifier",
            "id_token_signed_response_alg `HS256`: expected one of ES256, EdDSA, RS256",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let cfg = load_str(
            "t.yaml",
            &format!("{}  pairwise_secret: {{ env: PAIRWISE }}\n", yaml(&format!("    - id: rp\n      secret_hash: \"{HASH}\"\n      redirect_uris: [https://a.example/cb, https://A.example/other]\n      subject_type: pairwise\n      id_token_signed_response_alg: EdDSA\n      app: expenses\n"))),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = cfg.oidc.client("rp").unwrap();
        assert_eq!(c.sector().as_deref(), Some("a.example"));
        assert_eq!(c.id_token_signed_response_alg.as_str(), "EdDSA");
    }

    #[test]
    fn a_service_client_needs_no_redirect_uri_but_a_secret() {
        let cfg = load_str(
            "t.yaml",
            &yaml(&format!("    - id: sync\n      secret_hash: \"{HASH}\"\n      grant_types: [client_credentials]\n      app: expenses\n")),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg
            .oidc
            .client("sync")
            .unwrap()
            .grant_ok("client_credentials"));
        let e = load_str(
            "t.yaml",
            &yaml("    - id: sync\n      type: public\n      grant_types: [client_credentials]\n      app: expenses\n"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("t.yaml:5:") && e.contains("client_credentials needs a confidential client"),
            "{e}"
        );
        let e = load_str(
            "t.yaml",
            &yaml(&format!("    - id: rp\n      secret_hash: \"{HASH}\"\n      grant_types: [refresh_token]\n      app: expenses\n")),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("must include `authorization_code` or `client_credentials`"),
            "{e}"
        );
    }

    #[test]
    fn acr_names_and_aliases_map_to_levels() {
        let cfg = load_str(
            "t.yaml",
            "apps: []\noidc:\n  acr: { names: { aal2: \"urn:x:mfa\" }, aliases: { phr: 3 } }\n",
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let a = &cfg.oidc.acr;
        assert_eq!(a.name(2), "urn:x:mfa");
        assert_eq!(a.name(1), "aal1", "unnamed levels keep their own name");
        assert_eq!(a.level("urn:x:mfa"), Some(2));
        assert_eq!(a.level("phr"), Some(3));
        assert_eq!(a.level("aal1"), Some(1));
        assert_eq!(a.level("aal9"), None);
        assert_eq!(a.level("gold"), None);
    }
}
