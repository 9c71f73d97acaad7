//! Signing in through an upstream OpenID Provider — a real one, the certified npm
//! `oidc-provider` (e2e/oidc-op/op.js) — through the portal as a browser does: the first
//! sign-in creates the user with the provider's groups; a policy on an upstream group
//! decides; the provider's MFA counts for AAL2 within the trust window, and outside it (or
//! when the provider's `amr` is not trusted) stepgate asks for its own TOTP; forged and
//! replayed ID tokens (another key, another audience, a nonce used before, an answer this
//! browser did not ask for) are refused and audited.

mod support;

use axum::routing::any;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use stepgate_store::{factor_context, FactorRecord, UserRecord, UserSource};
use support::oidc_op::{free_port, Op, TokenTap};
use support::{audit, totp_data, upstream, user, Browser, Page, Person, Server, JANE};

const CONFIG: &str = r#"
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
const ALICE: Person = Person {
    username: "alice",
    password: "",
    totp_base32: JANE.totp_base32,
};

struct Setup {
    op: Op,
    tap: TokenTap,
    h: Server,
}

/// The provider, the tap on its token endpoint, and stepgate in front of an app that says
/// whom stepgate told it the user is. `None`: Node or the package is missing (skipped).
async fn start() -> Option<Setup> {
    start_with(CONFIG, Vec::new()).await
}

/// [`start`] with another configuration and local users created first.
async fn start_with(config: &str, locals: Vec<UserRecord>) -> Option<Setup> {
    let op_port = free_port();
    let issuer = format!("http://127.0.0.1:{op_port}");
    let tap = TokenTap::start(&issuer).await;
    let app = axum::Router::new().fallback(any(|h: axum::http::HeaderMap| async move {
        let v = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        format!(
            "app saw user={} groups={}",
            v("remote-user"),
            v("remote-groups")
        )
    }));
    let h = Server::build(config)
        .with("ISSUER", &issuer)
        .with("DISCOVERY", &tap.discovery_url)
        .with("UPSTREAM", upstream::serve(app).await)
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
async fn through_provider(s: &Setup, b: &Browser, path: &str) -> Page {
    let login = Page::open(b, &s.h.at(path)).await;
    assert!(
        login.html.contains("Sign in with Corp SSO"),
        "the sign-in page offers the provider:\n{}",
        login.html
    );
    let href = button(&login.html);
    Page::open(b, &s.h.at(&href)).await
}

/// The provider button's link on the sign-in page.
fn button(html: &str) -> String {
    let needle = "<a class=\"button secondary\" href=\"";
    let at = html.find(needle).unwrap() + needle.len();
    html[at..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#x2f;", "/")
}

/// Enrols a TOTP authenticator (the demo's seed) for `username`, as the account page would.
async fn enrol_totp(h: &Server, username: &str) {
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

#[tokio::test]
async fn the_first_sign_in_creates_the_user_and_a_policy_on_an_upstream_group_decides() {
    let Some(s) = start().await else { return };
    // Alice: an administrator upstream, who did password + MFA there just now.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/admin/licences").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(
        page.html.contains("app saw user=alice"),
        "upstream MFA within the window passes the AAL2 sign-in policy: {}",
        page.html
    );
    assert!(page.html.contains("corp:admins"), "{}", page.html);
    let alice = user(&s.h.st, "alice").await;
    assert_eq!(alice.source, UserSource::Upstream);
    assert_eq!(alice.groups, vec!["corp:admins", "corp:staff"]);
    assert_eq!(alice.email.as_deref(), Some("alice@corp.example"));
    assert_eq!(alice.name.as_deref(), Some("Alice Upstream"));
    assert_eq!(
        alice.attributes.get("department"),
        Some(&stepgate_store::AttributeValue::One("finance".into()))
    );
    let created = audit(&s.h.st, Some("user.created")).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].detail["provider"], "corp");

    // Bob: staff only upstream. Signed in, but the admin area is refused by the group
    // policy; the rest of the app is open to him.
    s.op.next("bob-sub", &["pwd", "mfa"], None, 0).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/admin/licences").await;
    assert!(
        page.html.contains("The admin area is for administrators."),
        "{} {}",
        page.status,
        page.html
    );
    let page = Page::open(&b, &s.h.at("/reports")).await;
    assert!(page.html.contains("app saw user=bob"), "{}", page.html);
    assert_eq!(user(&s.h.st, "bob").await.groups, vec!["corp:staff"]);

    // A second sign-in finds Alice by (provider, sub) and refreshes her from the provider;
    // no second user.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let page = through_provider(&s, &Browser::new(), "/").await;
    assert!(page.html.contains("app saw user=alice"), "{}", page.html);
    assert_eq!(audit(&s.h.st, Some("user.created")).await.len(), 2);
}

#[tokio::test]
async fn upstream_mfa_counts_within_the_trust_window_and_otherwise_stepgate_asks_for_totp() {
    let Some(s) = start().await else { return };
    s.op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let page = through_provider(&s, &Browser::new(), "/").await;
    assert!(page.html.contains("app saw user=alice"), "{}", page.html);
    enrol_totp(&s.h, "alice").await;

    // Ten minutes ago upstream, with a five-minute window: the upstream's MFA no longer
    // counts, and the sign-in policy's AAL2 asks for stepgate's own TOTP.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 600).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert!(
        page.url.path().ends_with("/_stepgate/step-up"),
        "outside the trust window: {} {}",
        page.url,
        page.html
    );
    let r = page.submit_code(&b, &ALICE.code(0)).await;
    let done = Page::read(r).await;
    assert!(done.html.contains("app saw user=alice"), "{}", done.html);

    // Amr values the provider is not trusted for never raise the level, however strong
    // they sound.
    s.op.next("alice-sub", &["pwd", "hwk", "otp"], None, 0)
        .await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert!(
        page.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        page.url
    );
    // A trusted acr counts as the classes it is mapped to.
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:mfa"), 0)
        .await;
    let page = through_provider(&s, &Browser::new(), "/").await;
    assert!(page.html.contains("app saw user=alice"), "{}", page.html);
}

#[tokio::test]
async fn a_verified_email_links_a_local_user_and_nothing_takes_over_an_account_by_name() {
    let config = CONFIG.replace("    trust:", "    link_by_verified_email: true\n    trust:");
    let local = |name: &str, email: &str| {
        let mut u = UserRecord::new(name);
        u.email = Some(email.into());
        u.groups = vec!["local-staff".into()];
        u
    };
    let locals = vec![
        local("alice.local", "Alice@corp.example"),
        local("bob", "bob@other.example"),
        local("robert", "bob@corp.example"),
    ];
    let Some(s) = start_with(&config, locals).await else {
        return;
    };
    // Alice's address is verified upstream: she signs in as the local user with it, who
    // keeps their own groups (a local user is not rewritten by the provider).
    s.op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let page = through_provider(&s, &Browser::new(), "/").await;
    assert!(
        page.html
            .contains("app saw user=alice.local groups=local-staff"),
        "{}",
        page.html
    );
    let linked = audit(&s.h.st, Some("user.linked")).await;
    assert_eq!(linked.len(), 1);
    assert_eq!(user(&s.h.st, "alice.local").await.source, UserSource::Local);
    assert!(s
        .h
        .st
        .stores
        .durable
        .get_user_by_username("alice")
        .await
        .unwrap()
        .is_none());

    // Bob's address is not verified upstream: never linked to robert by it; and the
    // username `bob` belongs to a local account, which the provider's bob cannot take.
    s.op.next("bob-sub", &["pwd", "mfa"], None, 0).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert!(page.html.contains("already exists"), "{}", page.html);
    assert!(b.session_id(&s.h.base).is_none());
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert_eq!(rows.last().unwrap().detail["reason"], "unusable");

    // A disabled user is refused at the next sign-in through the provider.
    let mut a = user(&s.h.st, "alice.local").await;
    a.disabled = true;
    s.h.st.stores.durable.update_user(&a).await.unwrap();
    s.op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let page = through_provider(&s, &Browser::new(), "/").await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert!(page.html.contains("disabled"), "{}", page.html);
}

#[tokio::test]
async fn a_sensitive_route_is_stepped_up_at_the_provider_with_acr_values_and_max_age() {
    let Some(s) = start().await else { return };
    // Signed in four minutes ago upstream, with MFA: AAL2, but not fresh enough for payroll.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 240).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert!(page.html.contains("app saw user=alice"), "{}", page.html);
    let step = Page::open(&b, &s.h.at("/payroll/march")).await;
    assert!(
        step.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        step.url
    );
    assert!(step.html.contains("Confirm with Corp SSO"), "{}", step.html);
    let confirm =
        s.h.at(&button_of(&step.html, "<a class=\"button\" href=\""));
    let refused_as = |reason: &'static str| {
        let st = s.h.st.clone();
        async move {
            let rows = audit(&st, Some("signin.upstream_refused")).await;
            assert_eq!(rows.last().unwrap().detail["reason"], reason, "{rows:?}");
            rows.len()
        }
    };

    // The provider answers at another level, or with an old authentication, or as someone
    // else: each refused, and the session is not stepped up.
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:pwd"), 0)
        .await;
    let page = Page::open(&b, &confirm).await;
    assert_eq!(page.status, 401, "{}", page.html);
    assert_eq!(refused_as("refused").await, 1);
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:mfa"), 600)
        .await;
    let page = Page::open(&b, &confirm).await;
    assert_eq!(page.status, 401, "{}", page.html);
    assert_eq!(refused_as("refused").await, 2);
    // (Someone else: the provider's own key, signing for bob, who is no one here.)
    let key = s.op.key_pem.clone();
    s.tap.rewrite(move |t| {
        let mut c = claims_of(t);
        c["sub"] = "bob-sub".into();
        sign(&c, &key, "op-key-1")
    });
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:mfa"), 0)
        .await;
    let page = Page::open(&b, &confirm).await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert_eq!(refused_as("unusable").await, 3);
    s.tap.clear();
    let still = Page::open(&b, &s.h.at("/payroll/march")).await;
    assert!(
        still.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        still.url
    );

    // The provider asked to authenticate again now, at the configured level: it does, and
    // payroll opens.
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:mfa"), 0)
        .await;
    let r = b.tab(false).get(&confirm).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let auth = url::Url::parse(&support::header(&r, "location")).unwrap();
    let q: std::collections::HashMap<_, _> = auth.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("acr_values").map(String::as_str),
        Some("urn:corp:mfa")
    );
    assert_eq!(q.get("max_age").map(String::as_str), Some("0"));
    assert_eq!(q.get("prompt").map(String::as_str), Some("login"));
    let page = Page::open(&b, auth.as_str()).await;
    assert!(page.html.contains("app saw user=alice"), "{}", page.html);
    assert_eq!(page.url.path(), "/payroll/march");
    assert_eq!(audit(&s.h.st, Some("stepup.upstream")).await.len(), 1);
}

/// The link after `needle` in `html`, entities decoded.
fn button_of(html: &str, needle: &str) -> String {
    let at = html
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle} in {html}"))
        + needle.len();
    html[at..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#x2f;", "/")
}

/// `claims` signed ES256 with `key_pem` under key id `kid`.
fn sign(claims: &serde_json::Value, key_pem: &[u8], kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(key_pem).unwrap()).unwrap()
}

/// The claims of a token (unverified: the test reads what the provider issued).
fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Asserts the last sign-in was refused as `reason`, with no session.
async fn refused(s: &Setup, b: &Browser, page: &Page, reason: &str, count: usize) {
    assert_eq!(page.status, 401, "{}", page.html);
    assert!(
        page.html.contains("could not be verified") || page.html.contains("did not sign you in"),
        "{}",
        page.html
    );
    assert!(b.session_id(&s.h.base).is_none(), "no session");
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert_eq!(rows.len(), count, "{rows:?}");
    assert_eq!(
        rows[count - 1].detail["reason"],
        reason,
        "{:?}",
        rows[count - 1]
    );
}

#[tokio::test]
async fn forged_and_replayed_id_tokens_are_refused() {
    let Some(s) = start().await else { return };
    s.op.next("alice-sub", &["pwd", "mfa"], None, 0).await;

    // Signed with another key that claims the provider's key id, or a key id it never
    // published (the keys are fetched again, and it is still unknown).
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    for (n, kid) in [(1, "op-key-1"), (2, "rotated-2")] {
        let other = other.clone();
        s.tap
            .rewrite(move |t| sign(&claims_of(t), other.as_bytes(), kid));
        let b = Browser::new();
        let page = through_provider(&s, &b, "/").await;
        refused(&s, &b, &page, "bad_token", n).await;
    }
    let detail = audit(&s.h.st, Some("signin.upstream_refused")).await[1].detail["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("rotated-2"), "{detail}");

    // The provider's own key, but issued to another client.
    let key = s.op.key_pem.clone();
    s.tap.rewrite(move |t| {
        let mut c = claims_of(t);
        c["aud"] = "another-app".into();
        sign(&c, &key, "op-key-1")
    });
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    refused(&s, &b, &page, "bad_token", 3).await;
    // ... or to several, stepgate among them, with `azp` naming the other.
    let key = s.op.key_pem.clone();
    s.tap.rewrite(move |t| {
        let mut c = claims_of(t);
        c["aud"] = serde_json::json!(["stepgate", "another-app"]);
        c["azp"] = "another-app".into();
        sign(&c, &key, "op-key-1")
    });
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    refused(&s, &b, &page, "bad_token", 4).await;
    // Re-signed by the provider's key as it was: accepted (the rewrites alone failed).
    let key = s.op.key_pem.clone();
    s.tap
        .rewrite(move |t| sign(&claims_of(t), &key, "op-key-1"));
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert!(page.html.contains("app saw user=alice"), "{}", page.html);

    // An earlier sign-in's genuine token, in a new sign-in: its nonce is not this one's.
    let first = s.tap.seen()[0].clone();
    s.tap.rewrite(move |_| first.clone());
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    refused(&s, &b, &page, "bad_token", 5).await;

    // The same callback twice (its flow cookie stolen along with the URL): the token the
    // first one received, with the right nonce, is refused the second time.
    s.tap.clear();
    let b = Browser::not_following();
    let login = Page::open(&b, &s.h.at("/")).await;
    let mut r = b.get(s.h.at(&button(&login.html))).send().await.unwrap();
    let callback = loop {
        let to = r.url().join(&support::header(&r, "location")).unwrap();
        if to.path().ends_with("/callback") {
            break to;
        }
        r = b.get(to).send().await.unwrap();
    };
    let flow_cookie = b
        .cookies(callback.as_str())
        .split("; ")
        .find(|c| c.starts_with("stepgate_upstream="))
        .unwrap()
        .to_string();
    let r = b.get(callback.clone()).send().await.unwrap();
    assert_eq!(r.status(), 303, "the genuine callback signs in");
    let genuine = s.tap.seen().last().unwrap().clone();
    s.tap.rewrite(move |_| genuine.clone());
    let attacker = Browser::not_following();
    let r = attacker
        .get(callback.clone())
        .header("cookie", &flow_cookie)
        .send()
        .await
        .unwrap();
    let page = Page::read(r).await;
    refused(&s, &attacker, &page, "bad_token", 6).await;
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert!(
        rows[5].detail["detail"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{:?}",
        rows[5]
    );

    // A callback this browser never started (no flow cookie): refused before any exchange.
    let page = Page::read(Browser::not_following().get(callback).send().await.unwrap()).await;
    assert_eq!(page.status, 401);
    assert_eq!(
        audit(&s.h.st, Some("signin.upstream_refused")).await.len(),
        7
    );
}

#[tokio::test]
async fn a_required_provider_that_cannot_be_reached_stops_the_start_and_another_does_not() {
    let yaml = |required: bool| {
        format!(
            "policies:\n  - {{ name: a, priority: 1, targets: {{ sign_in: true }}, outcome: allow }}\nidentity_providers:\n  - id: corp\n    issuer: http://127.0.0.1:1\n    client_id: stepgate\n    client_secret: {{ inline_insecure: s }}\n    timeout: 2s\n    required: {required}\n"
        )
    };
    let build = |required: bool| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg =
            stepgate_config::load_str("t.yaml", &yaml(required), Some(dir.path())).unwrap();
        cfg.base_dir = dir.path().to_path_buf();
        stepgate_server::build_state_with(
            cfg,
            stepgate_store::SecretKey::generate(),
            stepgate_server::ServeOptions::default(),
            None,
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
    };
    let e = match build(true).await {
        Ok(_) => panic!("a required provider that cannot be reached must stop the start"),
        Err(e) => e,
    };
    assert!(e.contains("identity provider `corp` is unavailable"), "{e}");
    assert!(e.contains("required: true"), "{e}");
    assert_eq!(build(false).await, Ok(()));
}
