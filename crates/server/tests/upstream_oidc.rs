//! Signing in through an upstream OpenID Provider — a real one, the certified npm
//! `oidc-provider` (e2e/oidc-op/op.js) — through the portal as a browser does: the first
//! sign-in creates the user with the provider's groups; a policy on an upstream group
//! decides; the provider's MFA counts for AAL2 within the trust window, and outside it (or
//! when the provider's `amr` is not trusted) stepgate asks for its own TOTP; forged and
//! replayed ID tokens (another key, another audience, a nonce used before, an answer this
//! browser did not ask for) are refused and audited.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use stepgate_store::{factor_context, FactorRecord, UserRecord, UserSource};
use support::oidc_op::{self, free_port, link_after, Op, TokenTap};
use support::upstream::assert_saw;
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
async fn through_provider(s: &Setup, b: &Browser, path: &str) -> Page {
    oidc_op::through_provider(&s.h, b, path, "Corp SSO").await
}

/// `sub` signs in at the provider with password and MFA just now, through "Sign in with
/// Corp SSO" from `path` in `b`: the page it ends on.
async fn with_mfa(s: &Setup, b: &Browser, sub: &str, path: &str) -> Page {
    s.op.next(sub, &["pwd", "mfa"], None, 0).await;
    through_provider(s, b, path).await
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
    let b = Browser::new();
    let page = with_mfa(&s, &b, "alice-sub", "/admin/licences").await;
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
    let b = Browser::new();
    let page = with_mfa(&s, &b, "bob-sub", "/admin/licences").await;
    assert!(
        page.html.contains("The admin area is for administrators."),
        "{} {}",
        page.status,
        page.html
    );
    let page = Page::open(&b, &s.h.at("/reports")).await;
    assert_saw(&page, "bob");
    assert_eq!(user(&s.h.st, "bob").await.groups, vec!["corp:staff"]);

    // A second sign-in finds Alice by (provider, sub) and refreshes her from the provider;
    // no second user.
    let page = with_mfa(&s, &Browser::new(), "alice-sub", "/").await;
    assert_saw(&page, "alice");
    assert_eq!(audit(&s.h.st, Some("user.created")).await.len(), 2);
}

#[tokio::test]
async fn upstream_mfa_counts_within_the_trust_window_and_otherwise_stepgate_asks_for_totp() {
    let Some(s) = start().await else { return };
    let page = with_mfa(&s, &Browser::new(), "alice-sub", "/").await;
    assert_saw(&page, "alice");
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
    assert_saw(&done, "alice");

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
    assert_saw(&page, "alice");
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
    let page = with_mfa(&s, &Browser::new(), "alice-sub", "/").await;
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
    let b = Browser::new();
    let page = with_mfa(&s, &b, "bob-sub", "/").await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert!(page.html.contains("already exists"), "{}", page.html);
    assert!(b.session_id(&s.h.base).is_none());
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert_eq!(rows.last().unwrap().detail["reason"], "unusable");

    // A disabled user is refused at the next sign-in through the provider.
    let mut a = user(&s.h.st, "alice.local").await;
    a.disabled = true;
    s.h.st.stores.durable.update_user(&a).await.unwrap();
    let page = with_mfa(&s, &Browser::new(), "alice-sub", "/").await;
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
    assert_saw(&page, "alice");
    let step = Page::open(&b, &s.h.at("/payroll/march")).await;
    assert!(
        step.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        step.url
    );
    assert!(step.html.contains("Confirm with Corp SSO"), "{}", step.html);
    let confirm =
        s.h.at(&link_after(&step.html, "<a class=\"button\" href=\""));
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
    assert_saw(&page, "alice");
    assert_eq!(page.url.path(), "/payroll/march");
    assert_eq!(audit(&s.h.st, Some("stepup.upstream")).await.len(), 1);
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
    assert_saw(&page, "alice");

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
    let mut r = b
        .get(s.h.at(&link_after(
            &login.html,
            "<a class=\"button secondary\" href=\"",
        )))
        .send()
        .await
        .unwrap();
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

/// [`CONFIG`] with signing out at the provider and its back-channel logout on.
fn with_logout() -> String {
    CONFIG.replace(
        "    step_up_acr:",
        "    sign_out_upstream: true\n    back_channel_logout: true\n    step_up_acr:",
    )
}

/// The provider's logout page's form, confirmed ("Yes, sign me out"), in `b`.
async fn confirm_logout_at_provider(b: &Browser, page: &Page) -> Page {
    assert_eq!(page.status, 200, "{} {}", page.url, page.html);
    let action = link_after(&page.html, "action=\"");
    let xsrf = support::field(&page.html, "xsrf");
    let r = b
        .post(page.url.join(&action).unwrap())
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    Page::read(r).await
}

/// Signs out of stepgate in `b` (the account page's form), not following the answer.
async fn sign_out(s: &Setup, b: &Browser) -> reqwest::Response {
    let account = Page::open(b, &s.h.at("/_stepgate/account")).await;
    b.tab(false)
        .post(s.h.at("/_stepgate/logout"))
        .form(&[("csrf", account.field("csrf"))])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn signing_out_signs_out_at_the_provider_whose_back_channel_logout_ends_the_other_sessions() {
    let Some(s) = start_with(&with_logout(), Vec::new()).await else {
        return;
    };
    // Alice signs in twice, in two browsers (two sessions at the provider, each its sid).
    let (b1, b2) = (Browser::new(), Browser::new());
    for b in [&b1, &b2] {
        let page = with_mfa(&s, b, "alice-sub", "/").await;
        assert_saw(&page, "alice");
    }
    let sids: Vec<String> = s
        .tap
        .seen()
        .iter()
        .map(|t| claims_of(t)["sid"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(sids[0], sids[1]);

    // Signing out of stepgate in the first sends the browser to the provider's
    // end-session endpoint with its ID token as the hint, and back to stepgate.
    let r = sign_out(&s, &b1).await;
    assert_eq!(r.status(), 303);
    let to = reqwest::Url::parse(&support::header(&r, "location")).unwrap();
    assert_eq!(to.path(), "/session/end", "{to}");
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(q["id_token_hint"], s.tap.seen()[0]);
    assert_eq!(q["client_id"], "stepgate");
    assert_eq!(
        q["post_logout_redirect_uri"],
        format!(
            "{}/_stepgate/login/upstream/corp/signed-out",
            s.h.public_url
        )
    );
    assert!(
        b1.session_id(&s.h.base).is_none(),
        "signed out of stepgate first"
    );
    let at_op = Page::open(&b1, to.as_str()).await;
    let back = confirm_logout_at_provider(&b1, &at_op).await;
    assert_eq!(
        back.url.path(),
        "/_stepgate/login/upstream/corp/signed-out",
        "{}",
        back.html
    );
    assert!(back.html.contains("You are signed out."), "{}", back.html);
    // The provider told stepgate (its back-channel logout for the first session, which
    // had already ended here); the second session, another one at the provider, stands.
    let rows = audit(&s.h.st, Some("signout.upstream")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["sid"], sids[0].as_str());
    assert_eq!(rows[0].detail["ended"], 0);
    let page = Page::open(&b2, &s.h.at("/")).await;
    assert_saw(&page, "alice");

    // Signing out at the provider itself (not through stepgate) ends the second session
    // here through the provider's back-channel logout.
    let at_op = Page::open(&b2, &format!("{}/session/end", s.op.issuer)).await;
    confirm_logout_at_provider(&b2, &at_op).await;
    let rows = audit(&s.h.st, Some("signout.upstream")).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].detail["sid"], sids[1].as_str());
    assert_eq!(rows[1].detail["ended"], 1);
    assert_eq!(rows[1].actor.as_deref(), Some("alice"));
    let page = Page::open(&b2, &s.h.at("/")).await;
    assert!(
        page.html.contains("Sign in with Corp SSO"),
        "the second session ended: {}",
        page.html
    );
}

#[tokio::test]
async fn forged_and_replayed_logout_tokens_end_nothing() {
    let Some(s) = start_with(&with_logout(), Vec::new()).await else {
        return;
    };
    let b = Browser::new();
    let page = with_mfa(&s, &b, "alice-sub", "/").await;
    assert_saw(&page, "alice");
    let sid = claims_of(&s.tap.seen()[0])["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let url = s.h.at("/_stepgate/login/upstream/corp/backchannel-logout");
    let now = chrono::Utc::now().timestamp();
    let good = serde_json::json!({
        "iss": s.op.issuer, "aud": "stepgate", "iat": now, "exp": now + 120,
        "jti": "logout-1", "sid": sid,
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let post = |token: String| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[("logout_token", token)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let op_key = s.op.key_pem.clone();
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let changed = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = good.clone();
        f(&mut c);
        sign(&c, &op_key, "op-key-1")
    };
    let forged = [
        ("another key", sign(&good, other.as_bytes(), "op-key-1")),
        (
            "another audience",
            changed(&|c| c["aud"] = "another-app".into()),
        ),
        (
            "another issuer",
            changed(&|c| c["iss"] = "https://evil.example".into()),
        ),
        ("an ID token (nonce)", changed(&|c| c["nonce"] = "n".into())),
        (
            "no event",
            changed(&|c| c["events"] = serde_json::json!({})),
        ),
        (
            "no sid or sub",
            changed(&|c| {
                c.as_object_mut().unwrap().remove("sid");
            }),
        ),
        (
            "no jti",
            changed(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        ("expired", changed(&|c| c["exp"] = (now - 3600).into())),
        ("old", changed(&|c| c["iat"] = (now - 3600).into())),
        ("not a token", "garbage".to_string()),
    ];
    for (what, token) in forged {
        assert_eq!(post(token).await, 400, "{what}");
        let page = Page::open(&b, &s.h.at("/")).await;
        assert!(
            page.html.contains("app saw user=alice"),
            "a logout token with {what} ended the session"
        );
    }
    assert!(audit(&s.h.st, Some("signout.upstream")).await.is_empty());

    // The provider's own token: the session ends. The same token again is refused.
    let genuine = sign(&good, &op_key, "op-key-1");
    assert_eq!(post(genuine.clone()).await, 200);
    let page = Page::open(&b, &s.h.at("/")).await;
    assert!(page.html.contains("Sign in with Corp SSO"), "{}", page.html);
    assert_eq!(post(genuine).await, 400, "a replayed logout token");
    let rows = audit(&s.h.st, Some("signout.upstream")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["ended"], 1);

    // By subject alone: every session of the subject through this provider ends.
    let b = Browser::new();
    with_mfa(&s, &b, "alice-sub", "/").await;
    let by_sub = changed(&|c| {
        c.as_object_mut().unwrap().remove("sid");
        c["sub"] = "alice-sub".into();
        c["jti"] = "logout-2".into();
    });
    assert_eq!(post(by_sub).await, 200);
    let page = Page::open(&b, &s.h.at("/")).await;
    assert!(page.html.contains("Sign in with Corp SSO"), "{}", page.html);
}

#[tokio::test]
async fn anonymous_garbage_at_the_callback_is_audited_at_a_bounded_rate_and_counted() {
    // A local `alice`, not linked: the provider's alice is refused by name.
    let Some(s) = start_with(CONFIG, vec![UserRecord::new("alice")]).await else {
        return;
    };
    let url =
        s.h.at("/_stepgate/login/upstream/corp/callback?code=x&state=y");
    let limit = stepgate_server::portal::upstream::ANONYMOUS_AUDIT_PER_MINUTE as usize;
    for _ in 0..limit + 7 {
        let page = Page::open(&Browser::new(), &url).await;
        assert_eq!(page.status, 401, "{}", page.html);
    }
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert_eq!(
        rows.len(),
        limit,
        "at most the minute's allowance is written"
    );
    let key = stepgate_server::portal::upstream::suppressed_audit_key("corp");
    assert_eq!(s.h.st.stores.hot.get_counter(&key).await.unwrap(), 7);
    // A refusal that names a user is always written.
    s.op.next("alice-sub", &["pwd"], None, 0).await;
    let page = through_provider(&s, &Browser::new(), "/").await;
    assert_eq!(page.status, 403, "{}", page.html);
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert_eq!(rows.len(), limit + 1);
    assert_eq!(rows[limit].actor.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_user_disabled_upstream_is_signed_out_at_the_next_re_check() {
    let config = CONFIG.replace(
        "    step_up_acr:",
        "    refresh_interval: 1s\n    step_up_acr:",
    );
    let Some(s) = start_with(&config, Vec::new()).await else {
        return;
    };
    let b = Browser::new();
    let page = with_mfa(&s, &b, "alice-sub", "/").await;
    assert_saw(&page, "alice");
    let session = b.session_id(&s.h.base).unwrap();
    let kept = |sid: String| {
        let st = s.h.st.clone();
        async move {
            st.sessions
                .peek(&sid)
                .await
                .unwrap()
                .unwrap()
                .1
                .upstream
                .unwrap()
        }
    };
    let first = kept(session.clone()).await;
    assert!(
        first.refresh.is_some(),
        "the refresh token is kept (sealed)"
    );
    // Within the interval, no question to the provider.
    let issued = s.tap.seen().len();
    Page::open(&b, &s.h.at("/")).await;
    assert_eq!(s.tap.seen().len(), issued);

    // Past it, the provider is asked (its refresh token redeemed) and still vouches: the
    // request goes through, and the session keeps the new refresh token it issued.
    for round in 1..=2 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let page = Page::open(&b, &s.h.at("/")).await;
        assert_saw(&page, "alice");
        assert_eq!(
            s.tap.seen().len(),
            issued + round,
            "re-checked at the provider"
        );
    }
    let now = kept(session.clone()).await;
    assert!(now.checked_at > first.checked_at);
    assert_ne!(now.refresh, first.refresh);

    // Disabled upstream: the next re-check is refused, and the session ends.
    s.op.disable("alice-sub").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let page = Page::open(&b, &s.h.at("/")).await;
    assert!(
        page.html.contains("Sign in with Corp SSO"),
        "signed out: {}",
        page.html
    );
    assert!(s.h.st.sessions.peek(&session).await.unwrap().is_none());
    let rows = audit(&s.h.st, Some("signout.upstream_refused")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].actor.as_deref(), Some("alice"));
    assert!(
        rows[0].detail["detail"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{:?}",
        rows[0]
    );
}

/// Opens payroll in `b`, and steps up on the page it leads to with TOTP `code`: the page
/// that ends on.
async fn payroll_with_totp(s: &Setup, b: &Browser, code: &str) -> Page {
    let step = Page::open(b, &s.h.at("/payroll/march")).await;
    assert!(
        step.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        step.url
    );
    Page::read(step.submit_code(b, code).await).await
}

#[tokio::test]
async fn a_step_up_re_checks_the_user_at_the_provider_and_one_disabled_there_cannot_step_up() {
    // An hour between re-checks: none falls due during the test, so only the step-up asks.
    let config = CONFIG.replace(
        "    step_up_acr:",
        "    refresh_interval: 1h\n    step_up_acr:",
    );
    let Some(s) = start_with(&config, Vec::new()).await else {
        return;
    };
    // Alice, signed in four minutes ago upstream with MFA: AAL2, not fresh for payroll,
    // which asks for a step-up; she confirms with stepgate's own TOTP.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 240).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert_saw(&page, "alice");
    enrol_totp(&s.h, "alice").await;
    // Still vouched for: the provider is asked (the refresh token redeemed), and the
    // step-up counts.
    let asked = s.tap.seen().len();
    let page = payroll_with_totp(&s, &b, &ALICE.code(0)).await;
    assert_saw(&page, "alice");
    assert_eq!(page.url.path(), "/payroll/march");
    assert_eq!(s.tap.seen().len(), asked + 1, "re-checked at the provider");

    // Disabled upstream since she signed in: the provider refuses the re-check, so the
    // step-up is refused and the session ended, though the TOTP code was right.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 240).await;
    let b = Browser::new();
    assert_saw(&through_provider(&s, &b, "/").await, "alice");
    let session = b.session_id(&s.h.base).unwrap();
    s.op.disable("alice-sub").await;
    let page = payroll_with_totp(&s, &b, &ALICE.code(1)).await;
    assert_eq!(page.status, 401, "{}", page.html);
    assert!(
        page.html.contains("Corp SSO no longer signs you in"),
        "{}",
        page.html
    );
    assert!(s.h.st.sessions.peek(&session).await.unwrap().is_none());
    let again = Page::open(&b, &s.h.at("/payroll/march")).await;
    assert!(
        again.html.contains("Sign in with Corp SSO"),
        "{}",
        again.html
    );
    let rows = audit(&s.h.st, Some("signout.upstream_refused")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["at"], "step_up");
    assert_eq!(audit(&s.h.st, Some("stepup.success")).await.len(), 1);
}

#[tokio::test]
async fn a_passkey_step_up_the_provider_refuses_is_told_in_json_and_a_forged_one_audited() {
    let config = CONFIG.replace(
        "    step_up_acr:",
        "    refresh_interval: 1h\n    step_up_acr:",
    );
    let Some(s) = start_with(&config, Vec::new()).await else {
        return;
    };
    s.op.next("alice-sub", &["pwd", "mfa"], None, 240).await;
    let b = Browser::new();
    assert_saw(&through_provider(&s, &b, "/").await, "alice");
    let alice = user(&s.h.st, "alice").await;
    let mut passkey = support::Passkey::register(&s.h.st, &alice).await;

    // A forged assertion: refused, and audited as a failed step-up with the passkey.
    let step = Page::open(&b, &s.h.at("/payroll/march")).await;
    let (status, body) = passkey.step_up_answer(&b, &s.h.base, &step, true).await;
    assert_eq!(status, 401, "{body}");
    let rows = audit(&s.h.st, Some("stepup.failure")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].actor.as_deref(), Some("alice"));
    assert_eq!(rows[0].detail["factor"], "webauthn");
    assert_eq!(rows[0].ip.as_deref(), Some("127.0.0.1"));

    // Disabled upstream: the right passkey's step-up is refused by the re-check, in the
    // JSON the page script reads — the sentence to show, and where to sign in again.
    s.op.disable("alice-sub").await;
    let step = Page::open(&b, &s.h.at("/payroll/march")).await;
    let (status, body) = passkey.step_up_answer(&b, &s.h.base, &step, false).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Corp SSO no longer signs you in")),
        "{body}"
    );
    assert_eq!(body["signed_out"], true, "{body}");
    assert!(
        body["redirect"]
            .as_str()
            .is_some_and(|r| r.ends_with("/_stepgate/login")),
        "{body}"
    );
    let rows = audit(&s.h.st, Some("signout.upstream_refused")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["at"], "step_up");
}

/// An ES256 key pair: its PKCS#8 PEM and its public JWK (`kid` `k1`).
fn es256_key() -> (String, serde_json::Value) {
    use base64::Engine as _;
    let k = rcgen::KeyPair::generate().unwrap();
    let raw = k.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
        "kid": "k1", "use": "sig", "alg": "ES256",
    });
    (k.serialize_pem(), jwk)
}

#[tokio::test]
async fn private_key_jwt_authenticates_stepgate_at_the_token_endpoint() {
    let (pem, jwk) = es256_key();
    let (other_pem, _) = es256_key();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.pem"), &pem).unwrap();
    std::fs::write(dir.path().join("other.pem"), &other_pem).unwrap();
    let op_port = free_port();
    let issuer = format!("http://127.0.0.1:{op_port}");
    // No tap: the assertion's audience is the provider's own token endpoint.
    let config = |key: &str| {
        CONFIG
            .replace(
                "    client_id: stepgate\n",
                "    client_id: stepgate-pkjwt\n",
            )
            .replace(
                "    client_secret: { inline_insecure: stepgate-secret }\n",
                &format!(
                    "    private_key_jwt: {{ key_file: \"{}\", key_id: k1 }}\n",
                    dir.path().join(key).display()
                ),
            )
            .replace(
                "\"DISCOVERY\"",
                "\"ISSUER/.well-known/openid-configuration\"",
            )
    };
    let upstream_url = upstream::whoami().await;
    // stepgate with the registered key, and another with a key the provider does not know.
    let h = Server::build(&config("client.pem"))
        .with("ISSUER", &issuer)
        .with("UPSTREAM", upstream_url)
        .start()
        .await;
    let h2 = Server::build(&config("other.pem"))
        .with("ISSUER", &issuer)
        .with("UPSTREAM", upstream_url)
        .start()
        .await;
    let callbacks = [&h, &h2]
        .map(|h| format!("{}/_stepgate/login/upstream/corp/callback", h.public_url))
        .join(" ");
    let jwk = jwk.to_string();
    let Some(op) = Op::start_with(op_port, &callbacks, &[("OP_PKJWT_JWK", &jwk)]).await else {
        return;
    };
    op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let b = Browser::new();
    let login = Page::open(&b, &h.at("/")).await;
    let page = Page::open(
        &b,
        &h.at(&link_after(
            &login.html,
            "<a class=\"button secondary\" href=\"",
        )),
    )
    .await;
    assert_saw(&page, "alice");

    // The other key: the provider's token endpoint refuses stepgate, and so the sign-in
    // is refused.
    op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let b = Browser::new();
    let login = Page::open(&b, &h2.at("/")).await;
    let page = Page::open(
        &b,
        &h2.at(&link_after(
            &login.html,
            "<a class=\"button secondary\" href=\"",
        )),
    )
    .await;
    assert_eq!(page.status, 401, "{}", page.html);
    let rows = audit(&h2.st, Some("signin.upstream_refused")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].detail["reason"], "refused");
    assert!(
        rows[0].detail["detail"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{:?}",
        rows[0]
    );
}

/// Stepgate A, an OpenID Provider whose sign-in asks for a password and TOTP.
const STEPGATE_A: &str = r#"
apps:
  - { id: b-portal, name: Stepgate B, hosts: [b.test] }
sessions: { cookie: { secure: false } }
policies:
  - name: sign-in-needs-mfa
    priority: 10
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 20
    outcome: allow
oidc:
  clients:
    - id: stepgate-b
      secret_hash: "SECRET_HASH"
      redirect_uris: ["B_CALLBACK"]
      app: b-portal
"#;

/// Stepgate B, signing in through A, trusting A's `aal2` (and its `amr`) as two factors.
const STEPGATE_B: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
sessions: { cookie: { secure: false } }
identity_providers:
  - id: stepgate-a
    name: Stepgate A
    issuer: "A_ISSUER"
    client_id: stepgate-b
    client_secret: { inline_insecure: b-secret-for-the-test }
    scopes: [openid, profile]
    trust:
      window: 5m
      ACR_OR_AMR
policies:
  - name: sign-in-needs-mfa
    priority: 10
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 20
    outcome: allow
"#;

#[tokio::test]
async fn stepgate_signs_in_through_another_stepgate_whose_acr_and_amr_it_trusts() {
    let cheap = stepgate_authn::config::Argon2Config::insecure_for_tests();
    let hash = stepgate_authn::password::hash_secret(&cheap, b"b-secret-for-the-test").unwrap();
    for (trust, counted) in [
        ("acr: { aal2: [knowledge, possession] }", vec!["pwd", "otp"]),
        (
            "amr: { pwd: knowledge, otp: possession }",
            vec!["pwd", "otp"],
        ),
    ] {
        // B first (A must know its callback); A on `localhost`, so the two portals' cookies
        // (one browser) are apart.
        let a_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a_port = a_listener.local_addr().unwrap().port();
        drop(a_listener);
        let a_issuer = format!("http://localhost:{a_port}");
        let b = Server::build(&STEPGATE_B.replace("ACR_OR_AMR", trust))
            .with("A_ISSUER", &a_issuer)
            .with("UPSTREAM", upstream::whoami().await)
            .start()
            .await;
        let a = Server::build(STEPGATE_A)
            .with("SECRET_HASH", &hash)
            .with(
                "B_CALLBACK",
                format!(
                    "{}/_stepgate/login/upstream/stepgate-a/callback",
                    b.public_url
                ),
            )
            .public_url(move |_| format!("http://localhost:{a_port}"))
            .on_port(a_port)
            .demo_users()
            .start()
            .await;
        assert_eq!(a.public_url, a_issuer);

        // Jane opens B's app, chooses Stepgate A, signs in there with her password and
        // TOTP, and comes back signed in to B at AAL2 without B asking for anything more.
        let browser = Browser::new();
        let login = Page::open(&browser, &b.at("/")).await;
        assert!(
            login.html.contains("Sign in with Stepgate A"),
            "{}",
            login.html
        );
        let at_a = Page::open(
            &browser,
            &b.at(&link_after(
                &login.html,
                "<a class=\"button secondary\" href=\"",
            )),
        )
        .await;
        assert!(
            at_a.url.as_str().starts_with(&a_issuer),
            "at A's sign-in page: {}",
            at_a.url
        );
        let r = at_a
            .submit(
                &browser,
                "/_stepgate/login",
                &[("username", JANE.username), ("password", JANE.password)],
            )
            .await;
        let step = Page::read(r).await;
        assert!(
            step.url.path().ends_with("/_stepgate/step-up"),
            "A asks for its second factor: {} {}",
            step.url,
            step.html
        );
        let done = Page::read(step.submit_code(&browser, &JANE.code(0)).await).await;
        assert!(
            done.url.as_str().starts_with(&b.base),
            "back at B: {} {}",
            done.url,
            done.html
        );
        assert_saw(&done, "jane");
        let row = audit(&b.st, Some("signin.upstream")).await;
        assert_eq!(row.len(), 1);
        assert_eq!(row[0].detail["acr"], "aal2");
        assert_eq!(
            row[0].detail["amr"],
            serde_json::json!(["pwd", "otp", "mfa"]),
            "A's own amr"
        );
        let got: Vec<&str> = row[0].detail["counted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got, counted, "{trust}");
        assert!(done.html.contains("amr=pwd"), "{}", done.html);
        assert_eq!(user(&b.st, "jane").await.source, UserSource::Upstream);
    }
}

#[tokio::test]
async fn an_address_in_a_providers_domain_signs_in_there_and_a_default_provider_skips_the_page() {
    let config = CONFIG.replace(
        "    step_up_acr:",
        "    domains: [corp.example]\n    step_up_acr:",
    );
    let Some(s) = start_with(&config, Vec::new()).await else {
        return;
    };
    s.op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    // The page takes the address first: no password is required to submit it.
    let b = Browser::new();
    let login = Page::open(&b, &s.h.at("/reports")).await;
    assert!(
        !login
            .html
            .contains("autocomplete=\"current-password\" required"),
        "{}",
        login.html
    );
    let r = login
        .submit(
            &b.tab(false),
            "/_stepgate/login",
            &[("username", "Alice@Corp.Example"), ("password", "")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let start = support::header(&r, "location");
    assert!(start.contains("/login/upstream/corp?"), "{start}");
    let to_op = b.tab(false).get(&start).send().await.unwrap();
    let at_op = support::header(&to_op, "location");
    assert!(
        at_op.starts_with(&s.op.issuer) && at_op.contains("login_hint=Alice%40Corp.Example"),
        "{at_op}"
    );
    let page = Page::open(&b, &at_op).await;
    assert_saw(&page, "alice");
    assert_eq!(page.url.path(), "/reports", "back where she was going");

    // A name in no provider's domain, with no password yet: the page again, the name
    // kept, no error.
    let b = Browser::new();
    let login = Page::open(&b, &s.h.at("/")).await;
    let r = login
        .submit(
            &b,
            "/_stepgate/login",
            &[("username", "carol@elsewhere.example"), ("password", "")],
        )
        .await;
    let again = Page::read(r).await;
    assert_eq!(again.status, 200);
    assert!(
        again.html.contains("value=\"carol@elsewhere.example\""),
        "{}",
        again.html
    );
    assert!(!again.html.contains("login-error"), "{}", again.html);

    // `server.default_provider`: the sign-in page sends everyone there at once, unless
    // asked for with `?local`.
    let config = format!("server: {{ default_provider: corp }}\n{CONFIG}");
    let Some(s) = start_with(&config, Vec::new()).await else {
        return;
    };
    s.op.next("bob-sub", &["pwd", "mfa"], None, 0).await;
    let page = Page::open(&Browser::new(), &s.h.at("/reports")).await;
    assert_saw(&page, "bob");
    let local = Page::open(&Browser::new(), &s.h.at("/_stepgate/login?local")).await;
    assert_eq!(local.status, 200);
    assert!(local.html.contains("name=\"password\""), "{}", local.html);
}
