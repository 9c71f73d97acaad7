//! What the upstream-OIDC tests share: the config with a real OpenID Provider (npm
//! `oidc-provider`) in front of stepgate, starting both, and signing in through the provider.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use stepgate_store::{factor_context, FactorRecord, UserRecord};

use crate::support::oidc_op::{self, free_port, Op, TokenTap};
use crate::support::{totp_data, upstream, user, Browser, Page, Person, Server, JANE};

pub(crate) const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
    routes:
      - { name: admin area, path: /admin/**, tags: [admin] }
      - { name: payroll, path: /payroll/**, tags: [sensitive] }
sessions: { cookie: { secure: false } }
identity_providers:
  - id: corp
    name: Corp SSO
    issuer: "ISSUER"
    discovery_url: "DISCOVERY"
    client_id: stepgate
    client_secret: { inline_insecure: stepgate-secret }
    scopes: [openid, profile, email, groups]
    claims: { groups_prefix: "corp:", attributes: { department: department } }
    step_up_acr: "urn:corp:mfa"
    trust:
      window: 5m
      amr: { pwd: knowledge, mfa: possession }
      acr: { "urn:corp:mfa": [knowledge, possession] }
policies:
  - name: admin-area-for-upstream-admins
    priority: 5
    targets: { routes: [{ tags: [admin] }] }
    conditions:
      - not: { groups: { any: ["corp:admins"] } }
    outcome: { deny: { message: The admin area is for administrators. } }
  - name: payroll-needs-fresh-mfa
    priority: 7
    targets: { routes: [{ tags: [sensitive] }] }
    outcome: { step_up: { min_aal: 2, max_age: 2m, message: Payroll needs a fresh confirmation. } }
  - name: sign-in-needs-mfa
    priority: 10
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 20
    outcome: allow
"#;

/// Alice at the provider, with the demo's TOTP seed once she enrols one here.
pub(crate) const ALICE: Person = Person {
    username: "alice",
    password: "",
    totp_base32: JANE.totp_base32,
};

pub(crate) struct Setup {
    pub(crate) op: Op,
    pub(crate) tap: TokenTap,
    pub(crate) h: Server,
}

/// The provider, the tap on its token endpoint, and stepgate in front of an app that says
/// whom stepgate told it the user is. `None`: Node or the package is missing (skipped).
pub(crate) async fn start() -> Option<Setup> {
    start_with(CONFIG, Vec::new()).await
}

/// [`start`] with another configuration and local users created first.
pub(crate) async fn start_with(config: &str, locals: Vec<UserRecord>) -> Option<Setup> {
    let op_port = free_port();
    let issuer = format!("http://127.0.0.1:{op_port}");
    let tap = TokenTap::start(&issuer).await;
    let h = Server::build(config)
        .with("ISSUER", &issuer)
        .with("DISCOVERY", &tap.discovery_url)
        .with("UPSTREAM", upstream::whoami().await)
        .start()
        .await;
    for u in locals {
        h.st.stores.durable.create_user(&u).await.unwrap();
    }
    let callback = format!("{}/_stepgate/login/upstream/corp/callback", h.public_url);
    let op = Op::start(op_port, &callback).await?;
    Some(Setup { op, tap, h })
}

/// Opens `path` of the app signed out, and follows the sign-in page's "Sign in with Corp
/// SSO" button through the provider and back: the page it ends on.
pub(crate) async fn through_provider(s: &Setup, b: &Browser, path: &str) -> Page {
    oidc_op::through_provider(&s.h, b, path, "Corp SSO").await
}

/// `sub` signs in at the provider with password and MFA just now, through "Sign in with
/// Corp SSO" from `path` in `b`: the page it ends on.
pub(crate) async fn with_mfa(s: &Setup, b: &Browser, sub: &str, path: &str) -> Page {
    s.op.next(sub, &["pwd", "mfa"], None, 0).await;
    through_provider(s, b, path).await
}

/// Enrols a TOTP authenticator (the demo's seed) for `username`, as the account page would.
pub(crate) async fn enrol_totp(h: &Server, username: &str) {
    let u = user(&h.st, username).await;
    let mut f = FactorRecord::new(&u.id, "totp", "Phone");
    f.secret = Some(
        h.key
            .seal(&ALICE.seed(), &factor_context(&u.id, &f.id))
            .unwrap(),
    );
    f.data = serde_json::to_value(totp_data()).unwrap();
    h.st.stores.durable.create_factor(&f).await.unwrap();
}

/// `claims` signed ES256 with `key_pem` under key id `kid`.
pub(crate) fn sign(claims: &serde_json::Value, key_pem: &[u8], kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(key_pem).unwrap()).unwrap()
}

/// The claims of a token (unverified: the test reads what the provider issued).
pub(crate) fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}
