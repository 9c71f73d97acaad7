//! Signing in through an upstream provider: the first sign-in creates the user, a
//! verified email links a local user (a name never takes an account over), a required provider
//! that cannot be reached stops the start, a domain's address goes to its provider, and
//! stepgate signs in through another stepgate whose `acr`/`amr` it trusts.

use stepgate_store::{UserRecord, UserSource};

use crate::common::*;
use crate::support;
use crate::support::oidc_op::link_after;
use crate::support::upstream::assert_saw;
use crate::support::{audit, upstream, user, Browser, Page, Server, JANE};

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
