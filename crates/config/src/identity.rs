//! `identity_providers:` — upstream OpenID Connect providers users sign in through (the
//! first factor comes from the provider; stepgate's policies, context checks and step-up
//! apply on top). See docs/identity-providers.md.

use std::collections::BTreeMap;

use marked_yaml::Spanned;
use serde::Deserialize;
use stepgate_policy::HumanDuration;
pub use stepgate_signals::connectors::SecretSource;

/// One upstream OpenID Provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// Short name, in URLs and in the user link (`[a-z0-9_-]`, at most 32).
    pub id: Spanned<String>,
    /// The kind of provider: `oidc` (the only one so far).
    #[serde(default)]
    pub kind: ProviderKind,
    /// The button's label ("Sign in with <name>"); default the id.
    #[serde(default)]
    pub name: Option<String>,
    /// The issuer identifier: the ID token's `iss` must equal it, and discovery is read from
    /// `{issuer}/.well-known/openid-configuration` unless `discovery_url` says otherwise.
    pub issuer: Spanned<String>,
    /// Where the provider's metadata is (default under the issuer).
    #[serde(default)]
    pub discovery_url: Option<Spanned<String>>,
    /// The client id stepgate is registered under.
    pub client_id: Spanned<String>,
    /// The client secret (`{file: path}`, `{env: VAR}`, or `{inline_insecure: ...}` for
    /// tests), sent with HTTP Basic authentication to the token endpoint. Required unless
    /// `private_key_jwt` is set (which is then used instead).
    #[serde(default)]
    pub client_secret: Option<SecretSource>,
    /// Authenticate to the token endpoint with a JWT signed by a private key instead of a
    /// secret (`private_key_jwt`, RFC 7523 / OpenID Connect Core §9).
    #[serde(default)]
    pub private_key_jwt: Option<PrivateKeyJwtConfig>,
    /// Scopes asked for; `openid` is always sent.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Which claims name the user, and what else is copied to the user record.
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Link a first sign-in to an existing user with the same e-mail address, only when the
    /// provider says the address is verified (`email_verified: true`). Never by an
    /// unverified address.
    #[serde(default)]
    pub link_by_verified_email: bool,
    /// What the provider's `amr`/`acr` count for (nothing, by default).
    #[serde(default)]
    pub trust: TrustConfig,
    /// Timeout of each request to the provider (discovery, keys, token).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Delegated step-up: the `acr` value to ask the provider for (with `max_age=0` and
    /// `prompt=login`) when a step-up page offers confirming there; its answer counts only
    /// with that `acr` and a fresh `auth_time`, as `trust.acr` maps it. Unset: no
    /// delegated step-up.
    #[serde(default)]
    pub step_up_acr: Option<String>,
    /// Also read the user-info endpoint with the access token and take the claims the ID
    /// token lacks from it (some providers put groups there only).
    #[serde(default)]
    pub userinfo: bool,
    /// Whether `stepgate serve` refuses to start when the provider's discovery document
    /// cannot be read (otherwise it is read at the first sign-in, and a failure refuses
    /// that sign-in).
    #[serde(default)]
    pub required: bool,
    /// Signing out of stepgate also signs out at the provider (OpenID Connect RP-Initiated
    /// Logout 1.0): the browser is sent to its `end_session_endpoint` with the ID token as
    /// `id_token_hint` and comes back to `{portal}/login/upstream/{id}/signed-out` (register
    /// that as a post-logout redirect URI at the provider).
    #[serde(default)]
    pub sign_out_upstream: bool,
    /// Accept the provider's back-channel logout tokens (OpenID Connect Back-Channel Logout
    /// 1.0) at `{portal}/login/upstream/{id}/backchannel-logout`: a verified token ends the
    /// stepgate sessions signed in through the provider with its `sid` (or, without one, of
    /// its `sub`), and the grants of stepgate's own OpenID clients from those sessions.
    #[serde(default)]
    pub back_channel_logout: bool,
    /// Re-check a signed-in user at the provider this often: the refresh token it issued at
    /// sign-in (kept sealed in the session) is redeemed, and a provider that refuses it
    /// (the user was disabled or signed out there) ends the stepgate session. Unset: no
    /// re-check (a user disabled upstream keeps their session until it ends). Providers
    /// that issue refresh tokens only for `offline_access` need that scope.
    #[serde(default)]
    pub refresh_interval: Option<HumanDuration>,
    /// E-mail domains whose users sign in here (home-realm discovery): a name typed on the
    /// sign-in page ending in `@<domain>` is sent to this provider (with it as
    /// `login_hint`) instead of being asked for a password.
    #[serde(default)]
    pub domains: Vec<String>,
}

/// `private_key_jwt` client authentication: the key stepgate signs its client assertions
/// with (its public half registered at the provider).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrivateKeyJwtConfig {
    /// PEM file of the private key (PKCS#8, or a PKCS#1 RSA / SEC1 EC key), relative to
    /// the configuration's directory; read at each use, so a rotated key counts at once.
    pub key_file: std::path::PathBuf,
    /// The `kid` header, as the key is registered at the provider (default none).
    #[serde(default)]
    pub key_id: Option<String>,
    /// The signing algorithm: `ES256` (the default for an EC key), `ES384`, `RS256` (the
    /// default for an RSA key), `RS384`, `RS512`, `PS256`, `PS384`, `PS512`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// The assertion's `aud`: `token_endpoint` (the default; what Entra ID and Okta
    /// require) or `issuer`.
    #[serde(default)]
    pub audience: AssertionAudience,
}

/// What a client assertion's `aud` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssertionAudience {
    /// The provider's token endpoint URL.
    #[default]
    TokenEndpoint,
    /// The provider's issuer identifier.
    Issuer,
}

/// The algorithms a `private_key_jwt` assertion may be signed with.
pub const ASSERTION_ALGORITHMS: [&str; 8] = [
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
];

/// The provider's protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenID Connect, authorization code flow with PKCE.
    #[default]
    Oidc,
}

/// Which ID token (or userinfo) claims become the user's name, e-mail, groups and
/// attributes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    /// The claim holding the username (default `preferred_username`; falls back to nothing:
    /// a token without it is refused).
    pub username: String,
    /// Lower-case the username.
    pub username_lowercase: bool,
    /// The display name's claim.
    pub name: String,
    /// The e-mail address's claim (its verification is read from `email_verified`).
    pub email: String,
    /// The groups' claim (a list of strings, or one string split on `groups_separator`).
    pub groups: String,
    /// How a single-string groups claim is split (default `,`).
    pub groups_separator: String,
    /// Put before every upstream group (`corp:` → `corp:admins`), so upstream groups can
    /// never pose as local ones.
    pub groups_prefix: String,
    /// User attributes from claims: attribute name → claim name.
    pub attributes: BTreeMap<String, String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            username: "preferred_username".into(),
            username_lowercase: false,
            name: "name".into(),
            email: "email".into(),
            groups: "groups".into(),
            groups_separator: ",".into(),
            groups_prefix: String::new(),
            attributes: BTreeMap::new(),
        }
    }
}

/// How much of what the provider says it did stepgate believes, and for how long.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// The upstream's authentication counts only when its `auth_time` is at most this old
    /// at sign-in; after that only the sign-in itself counts (AAL1) and stepgate asks for
    /// its own factors. Default `10m`.
    pub window: HumanDuration,
    /// `amr` values believed, each as a factor of the given class.
    pub amr: BTreeMap<String, TrustedFactor>,
    /// `acr` values believed, each as the factors of the given classes.
    pub acr: BTreeMap<String, Vec<TrustedFactor>>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            window: HumanDuration::from_secs(600),
            amr: BTreeMap::new(),
            acr: BTreeMap::new(),
        }
    }
}

/// What a trusted upstream `amr`/`acr` value counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustedFactor {
    /// Something the user knows (a password).
    Knowledge,
    /// Something the user has (an OTP app, a push approval).
    Possession,
    /// A phishing-resistant possession factor (a passkey, FIDO2).
    PhishingResistant,
    /// A hardware-bound phishing-resistant factor (a security key; with a second class,
    /// AAL3).
    HardwareBound,
}

/// `ldap:` — an LDAP directory or Active Directory as a password source: the login form's
/// password is checked by binding to the directory as the user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Name in the user link and the audit log (default `ldap`).
    #[serde(default = "default_ldap_id")]
    pub id: String,
    /// `ldaps://host:636` or `ldap://host:389` (with `starttls: true` off loopback).
    pub url: Spanned<String>,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the certificate authorities trusted for the directory's certificate (only
    /// these: the system's are not consulted); default the system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Service account for search-then-bind (with `bind_password` and `user_base`).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// The service account's password.
    #[serde(default)]
    pub bind_password: Option<SecretSource>,
    /// Where users are searched (subtree).
    #[serde(default)]
    pub user_base: Option<String>,
    /// The filter users must match, ANDed with `(username_attribute=<escaped username>)`.
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// The attribute holding the username (`uid`; Active Directory: `sAMAccountName`).
    #[serde(default = "default_username_attribute")]
    pub username_attribute: String,
    /// Direct bind without a service account: the user's DN or UPN with `{username}`
    /// (`uid={username},ou=people,dc=example,dc=com`, `{username}@corp.example.com`).
    #[serde(default)]
    pub dn_template: Option<String>,
    /// Display name attribute.
    #[serde(default = "default_name_attribute")]
    pub name_attribute: String,
    /// E-mail attribute.
    #[serde(default = "default_mail_attribute")]
    pub email_attribute: String,
    /// Attribute listing the user's groups as DNs (`memberOf`); each group is named by its
    /// first RDN's value (`cn=admins,ou=groups,…` → `admins`).
    #[serde(default = "default_groups_attribute")]
    pub groups_attribute: String,
    /// Instead of `groups_attribute`: search groups under this base with `group_filter`.
    #[serde(default)]
    pub group_base: Option<String>,
    /// The group search's filter; `{dn}` is the user's DN, escaped (Active Directory nested
    /// groups: `(member:1.2.840.113556.1.4.1941:={dn})`).
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// Put before every directory group.
    #[serde(default)]
    pub groups_prefix: String,
    /// User attributes from directory attributes: `attribute: directory attribute`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Timeout of the connection and of each operation, and of the wait for a free
    /// connection when all `pool_size` are busy.
    #[serde(default = "default_ldap_timeout")]
    pub timeout: HumanDuration,
    /// Most connections open to the directory at once (kept open and reused; a sign-in
    /// waits for a free one when all are busy).
    #[serde(default = "default_ldap_pool_size")]
    pub pool_size: usize,
}

fn default_ldap_pool_size() -> usize {
    4
}

fn default_ldap_id() -> String {
    "ldap".into()
}
fn default_user_filter() -> String {
    "(objectClass=person)".into()
}
fn default_username_attribute() -> String {
    "uid".into()
}
fn default_name_attribute() -> String {
    "displayName".into()
}
fn default_mail_attribute() -> String {
    "mail".into()
}
fn default_groups_attribute() -> String {
    "memberOf".into()
}
fn default_group_filter() -> String {
    "(member={dn})".into()
}
fn default_ldap_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// The meaning errors of `ldap:`.
pub(crate) fn ldap_problems(l: &Spanned<LdapConfig>) -> Vec<(marked_yaml::Span, String)> {
    let mut out = Vec::new();
    let span = *l.span();
    let url = url::Url::parse(l.url.as_str());
    match &url {
        Ok(u) if u.scheme() == "ldaps" || u.scheme() == "ldap" => {
            let loopback = matches!(u.host(), Some(url::Host::Ipv4(a)) if a.is_loopback())
                || matches!(u.host(), Some(url::Host::Ipv6(a)) if a.is_loopback())
                || u.host_str() == Some("localhost");
            if u.scheme() == "ldap" && !l.starttls && !loopback {
                out.push((
                    *l.url.span(),
                    format!(
                        "ldap.url `{}` sends passwords in clear: use ldaps:// or `starttls: true`",
                        l.url.as_str()
                    ),
                ));
            }
            if u.scheme() == "ldaps" && l.starttls {
                out.push((
                    span,
                    "ldap: `starttls: true` is for ldap:// URLs; ldaps:// is TLS already".into(),
                ));
            }
        }
        _ => out.push((
            *l.url.span(),
            format!(
                "bad ldap.url `{}`: expected ldaps://host:636 or ldap://host:389",
                l.url.as_str()
            ),
        )),
    }
    let search = l.bind_dn.is_some() || l.user_base.is_some();
    match (&l.dn_template, search) {
        (Some(_), true) => out.push((span, "ldap: set either `dn_template` (direct bind) or `bind_dn` + `bind_password` + `user_base` (search, then bind), not both".into())),
        (None, false) => out.push((span, "ldap: say how to find the user: `dn_template: uid={username},ou=people,…` or `bind_dn` + `bind_password` + `user_base`".into())),
        (Some(t), false) if !t.contains("{username}") => out.push((span, format!("ldap.dn_template `{t}` has no `{{username}}`"))),
        (None, true) if l.bind_dn.is_none() || l.bind_password.is_none() || l.user_base.is_none() => out.push((span, "ldap: search-then-bind needs all of `bind_dn`, `bind_password` and `user_base`".into())),
        _ => {}
    }
    if !l.user_filter.starts_with('(') || !l.user_filter.ends_with(')') {
        out.push((
            span,
            format!(
                "ldap.user_filter `{}` is not an LDAP filter: expected e.g. (objectClass=person)",
                l.user_filter
            ),
        ));
    }
    if l.group_base.is_some() && !l.group_filter.contains("{dn}") {
        out.push((
            span,
            format!("ldap.group_filter `{}` has no `{{dn}}`", l.group_filter),
        ));
    }
    if l.timeout.0.is_zero() {
        out.push((
            span,
            "ldap.timeout must be longer than 0s, e.g. `5s`".into(),
        ));
    }
    if !(1..=256).contains(&l.pool_size) {
        out.push((
            span,
            format!(
                "ldap.pool_size {} is out of range: between 1 and 256 connections",
                l.pool_size
            ),
        ));
    }
    out
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// Whether `url` is an https URL, or http to a loopback host (a provider on this machine,
/// as in tests).
fn url_ok(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => u.host().is_some(),
        Ok(u) if u.scheme() == "http" => match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// An `amr` value as RFC 8176 spells them: lower-case letters, digits, `_`.
fn amr_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The meaning errors of the providers, each with where to point it (`None`: the entry).
pub(crate) fn problems(
    providers: &[Spanned<IdentityProviderConfig>],
) -> Vec<(marked_yaml::Span, String)> {
    let mut out = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for p in providers {
        let id = p.id.as_str();
        let at_id = *p.id.span();
        if id.is_empty()
            || id.len() > 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            out.push((
                at_id,
                format!("identity_providers: bad id `{id}`: expected 1–32 of a-z, 0-9, `-`, `_` (it appears in URLs)"),
            ));
        } else if !ids.insert(id.to_string()) {
            out.push((
                at_id,
                format!("identity_providers: id `{id}` is used twice"),
            ));
        }
        let who = format!("identity provider `{id}`");
        if !url_ok(p.issuer.as_str()) {
            out.push((
                *p.issuer.span(),
                format!("{who}: bad issuer `{}`: expected an https URL (http only to localhost), e.g. https://login.example.com/realms/corp", p.issuer.as_str()),
            ));
        }
        if let Some(d) = &p.discovery_url {
            if !url_ok(d.as_str()) {
                out.push((
                    *d.span(),
                    format!("{who}: bad discovery_url `{}`: expected an https URL (http only to localhost)", d.as_str()),
                ));
            }
        }
        if p.client_id.trim().is_empty() {
            out.push((
                *p.client_id.span(),
                format!("{who}: client_id is empty: expected the id stepgate is registered under at the provider"),
            ));
        }
        let span = *p.span();
        if p.claims.username.trim().is_empty() {
            out.push((span, format!("{who}: claims.username is empty: expected a claim name such as preferred_username, email or sub")));
        }
        if p.claims.groups_separator.is_empty() {
            out.push((
                span,
                format!("{who}: claims.groups_separator is empty: expected e.g. `,`"),
            ));
        }
        for (attr, claim) in &p.claims.attributes {
            if attr.trim().is_empty() || claim.trim().is_empty() {
                out.push((span, format!("{who}: claims.attributes: `{attr}: {claim}` needs both an attribute name and a claim name")));
            }
        }
        if p.timeout.0.is_zero() {
            out.push((
                span,
                format!("{who}: timeout must be longer than 0s, e.g. `10s`"),
            ));
        }
        match (&p.client_secret, &p.private_key_jwt) {
            (None, None) => out.push((
                span,
                format!("{who}: needs `client_secret` (e.g. `{{ env: IDP_SECRET }}`) or `private_key_jwt` (`{{ key_file: idp-key.pem }}`)"),
            )),
            (_, Some(k)) => {
                if let Some(a) = &k.algorithm {
                    if !ASSERTION_ALGORITHMS.contains(&a.as_str()) {
                        out.push((span, format!("{who}: private_key_jwt.algorithm `{a}` is not one of {}", ASSERTION_ALGORITHMS.join(", "))));
                    }
                }
            }
            _ => {}
        }
        for d in &p.domains {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.contains('.')
                && d.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                });
            if !ok {
                out.push((span, format!("{who}: domains: `{d}` is not an e-mail domain in lower case, e.g. `corp.example.com`")));
            } else if providers
                .iter()
                .any(|q| q.id.as_str() != p.id.as_str() && q.domains.contains(d))
            {
                out.push((
                    span,
                    format!("{who}: domains: `{d}` is claimed by another provider too"),
                ));
            }
        }
        if p.refresh_interval.as_ref().is_some_and(|d| d.0.is_zero()) {
            out.push((
                span,
                format!("{who}: refresh_interval must be longer than 0s, e.g. `15m`"),
            ));
        }
        if p.trust.window.0.is_zero() && !(p.trust.amr.is_empty() && p.trust.acr.is_empty()) {
            out.push((span, format!("{who}: trust.window is 0s, so the trusted amr/acr values never count: expected e.g. `10m`")));
        }
        if let Some(acr) = &p.step_up_acr {
            if !p.trust.acr.contains_key(acr) {
                out.push((span, format!("{who}: step_up_acr `{acr}` is not in trust.acr, so a delegated step-up could never count: map it, e.g. `trust: {{ acr: {{ \"{acr}\": [knowledge, possession] }} }}`")));
            }
        }
        for v in p.trust.amr.keys() {
            if !amr_ok(v) {
                out.push((span, format!("{who}: trust.amr: `{v}` is not an amr value: expected an RFC 8176 value such as pwd, mfa, otp, hwk")));
            }
        }
        for (v, classes) in &p.trust.acr {
            if v.trim().is_empty() || classes.is_empty() {
                out.push((span, format!("{who}: trust.acr: `{v}` needs a value and the factor classes it counts as, e.g. `\"urn:mfa\": [knowledge, possession]`")));
            }
        }
        if p.scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            out.push((
                span,
                format!("{who}: scopes: a scope holds no spaces: list each one"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "identity_providers:\n  - id: corp\n    issuer: https://login.example.com/corp\n    client_id: stepgate\n    client_secret: { env: CORP_SECRET }\n    trust: { window: 5m, amr: { pwd: knowledge, mfa: possession }, acr: { \"urn:mfa\": [knowledge, possession] } }\n";

    #[test]
    fn a_provider_loads_with_its_defaults() {
        let cfg = crate::load_str("t.yaml", GOOD, None).unwrap();
        let p = &cfg.identity_providers[0];
        assert_eq!(p.id.as_str(), "corp");
        assert_eq!(p.scopes, vec!["openid", "profile", "email"]);
        assert_eq!(p.claims.username, "preferred_username");
        assert_eq!(p.trust.amr["mfa"], TrustedFactor::Possession);
        assert_eq!(p.trust.window.0.as_secs(), 300);
        assert!(!p.link_by_verified_email && !p.required);
    }

    #[test]
    fn a_provider_needs_a_secret_or_a_private_key_and_a_known_algorithm() {
        let none = GOOD.replace("    client_secret: { env: CORP_SECRET }\n", "");
        let e = crate::load_str("t.yaml", &none, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `client_secret`"), "{e}");
        let key = none.replace(
            "    trust:",
            "    private_key_jwt: { key_file: k.pem, algorithm: HS256 }\n    refresh_interval: 0s\n    trust:",
        );
        let e = crate::load_str("t.yaml", &key, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("private_key_jwt.algorithm `HS256`"), "{e}");
        assert!(e.contains("refresh_interval must be longer"), "{e}");
        let ok = key.replace(", algorithm: HS256", "").replace("0s", "15m");
        let cfg = crate::load_str("t.yaml", &ok, None).unwrap();
        let p = &cfg.identity_providers[0];
        assert!(p.client_secret.is_none());
        assert_eq!(
            p.private_key_jwt.as_ref().unwrap().audience,
            AssertionAudience::TokenEndpoint
        );
        assert_eq!(p.refresh_interval.as_ref().unwrap().0.as_secs(), 900);
        assert!(!p.sign_out_upstream && !p.back_channel_logout);
    }

    #[test]
    fn a_default_provider_must_exist_and_a_domain_has_one_provider() {
        let e = crate::load_str(
            "t.yaml",
            &format!("server: {{ default_provider: nope }}\n{GOOD}"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("server.default_provider `nope` is not"), "{e}");
        let ok = format!("server: {{ default_provider: corp }}\n{GOOD}");
        assert!(crate::load_str("t.yaml", &ok, None).is_ok());
        let two = GOOD.replace(
            "    trust:",
            "    domains: [corp.example, Bad_Domain]\n    trust:",
        ) + &GOOD
            .replace("identity_providers:\n", "")
            .replace("id: corp", "id: corp2")
            .replace("    trust:", "    domains: [corp.example]\n    trust:");
        let e = crate::load_str("t.yaml", &two, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`Bad_Domain` is not an e-mail domain"), "{e}");
        assert!(
            e.contains("`corp.example` is claimed by another provider"),
            "{e}"
        );
    }

    #[test]
    fn each_mistake_is_reported_where_it_was_written() {
        let text = "identity_providers:\n  - id: Corp!\n    issuer: http://login.example.com\n    client_id: \"\"\n    client_secret: { env: S }\n    trust: { amr: { \"MFA!\": possession } }\n  - id: ok\n    issuer: https://a.example\n    discovery_url: ftp://a.example/x\n    client_id: c\n    client_secret: { env: S }\n  - id: ok\n    issuer: https://b.example\n    client_id: c\n    client_secret: { env: S }\n    trust: { window: 0s, amr: { pwd: knowledge } }\n";
        let e = crate::load_str("t.yaml", text, None).unwrap_err();
        let at = |needle: &str| {
            e.diagnostics
                .iter()
                .find(|d| d.message.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {e}"))
                .line
        };
        assert_eq!(at("bad id `Corp!`"), Some(2));
        assert_eq!(at("bad issuer `http://login.example.com`"), Some(3));
        assert_eq!(at("client_id is empty"), Some(4));
        assert!(at("`MFA!` is not an amr value").is_some());
        assert_eq!(at("bad discovery_url"), Some(9));
        assert_eq!(at("id `ok` is used twice"), Some(12));
        assert!(at("trust.window is 0s").is_some());
        let e = crate::load_str(
            "t.yaml",
            &GOOD.replace("    trust:", "    step_up_acr: urn:other\n    trust:"),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("step_up_acr `urn:other` is not in trust.acr"),
            "{e}"
        );
        let ok = GOOD.replace("    trust:", "    step_up_acr: \"urn:mfa\"\n    trust:");
        assert!(crate::load_str("t.yaml", &ok, None).is_ok());
        // A shape mistake is named with the key it is about.
        let e = crate::load_str("t.yaml", &GOOD.replace("client_id", "client"), None).unwrap_err();
        assert!(e.to_string().contains("client"), "{e}");
        let e = crate::load_str("t.yaml", &GOOD.replace("possession }", "posession }"), None)
            .unwrap_err();
        assert!(e.to_string().contains("posession"), "{e}");
    }

    #[test]
    fn an_ldap_section_says_how_to_find_users_and_never_sends_passwords_in_clear() {
        let ok = "ldap:\n  url: ldaps://dc1.corp.example\n  bind_dn: cn=svc\n  bind_password: { env: LDAP_PW }\n  user_base: dc=corp\n";
        let cfg = crate::load_str("t.yaml", ok, None).unwrap();
        let l = cfg.ldap.unwrap();
        assert_eq!(
            (l.id.as_str(), l.username_attribute.as_str()),
            ("ldap", "uid")
        );
        assert_eq!(l.groups_attribute, "memberOf");
        let err = |text: &str| {
            crate::load_str("t.yaml", text, None)
                .unwrap_err()
                .to_string()
        };
        let e = err("ldap:\n  url: ldap://dc1.corp.example\n  dn_template: \"{username}@corp\"\n");
        assert!(e.contains("t.yaml:2") && e.contains("in clear"), "{e}");
        assert!(crate::load_str("t.yaml", "ldap:\n  url: ldap://dc1.corp.example\n  starttls: true\n  dn_template: \"{username}@corp\"\n", None).is_ok());
        let e = err("ldap:\n  url: ldaps://dc1\n");
        assert!(e.contains("say how to find the user"), "{e}");
        let e = err("ldap:\n  url: ldaps://dc1\n  dn_template: uid=x\n");
        assert!(e.contains("no `{username}`"), "{e}");
        let e =
            err("ldap:\n  url: ldaps://dc1\n  dn_template: \"{username}\"\n  user_base: dc=corp\n");
        assert!(e.contains("not both"), "{e}");
        let e = err("ldap:\n  url: ldaps://dc1\n  bind_dn: cn=svc\n  user_base: dc=corp\n");
        assert!(e.contains("needs all of"), "{e}");
        let e = err("ldap:\n  url: https://dc1\n  dn_template: \"{username}\"\n");
        assert!(e.contains("bad ldap.url"), "{e}");
        let e = err("ldap:\n  url: ldaps://dc1\n  dn_template: \"{username}\"\n  pool_size: 0\n");
        assert!(e.contains("ldap.pool_size 0 is out of range"), "{e}");
    }

    #[test]
    fn only_https_or_loopback_http_is_a_provider_url() {
        assert!(url_ok("https://login.example.com/realms/corp"));
        assert!(url_ok("http://127.0.0.1:9000"));
        assert!(url_ok("http://localhost:9000/op"));
        assert!(url_ok("http://[::1]:9000"));
        assert!(!url_ok("http://login.example.com"));
        assert!(!url_ok("http://10.0.0.1"));
        assert!(!url_ok("ftp://login.example.com"));
        assert!(!url_ok("login.example.com"));
    }
}
