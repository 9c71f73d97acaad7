//! The login form's password checked against a real LDAP directory — Debian's OpenLDAP
//! `slapd`, started with a generated configuration and a test CA — through the portal as a
//! browser signs in: LDAPS with the CA pinned, StartTLS with a DN template, groups from
//! `memberOf` or a group search deciding a policy, wrong passwords refused, usernames that
//! try to rewrite the filter (`*`, `)(`, `\00`) refused, and a directory that is down, or
//! presents a certificate from another authority, failing closed and audited.

mod support;

use stepgate_store::{AttributeValue, UserSource};
use support::slapd::Slapd;
use support::upstream::assert_saw;
use support::{audit, upstream, user, Browser, Page, Server};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
    routes:
      - { name: admin area, path: /admin/**, tags: [admin] }
sessions: { cookie: { secure: false } }
regulation: { max_retries: 50, ip_max_retries: 50 }
ldap:
  url: "LDAP_URL"
  ca_file: "CA_FILE"
  timeout: 2s
  groups_prefix: "dir:"
  attributes: { department: departmentNumber }
HOW
policies:
  - name: admin-area-for-directory-admins
    priority: 5
    targets: { routes: [{ tags: [admin] }] }
    conditions:
      - not: { groups: { any: ["dir:admins"] } }
    outcome: { deny: { message: The admin area is for administrators. } }
  - name: password-signs-in
    priority: 10
    targets: { sign_in: true }
    outcome: allow
  - name: everyone
    priority: 20
    outcome: allow
"#;

const SEARCH: &str = "  bind_dn: \"cn=admin,dc=corp,dc=example\"\n  bind_password: { inline_insecure: admin-secret }\n  user_base: \"ou=people,dc=corp,dc=example\"\n";

/// stepgate with `ldap:` pointing at `url` (finding users as `how` says), in front of an
/// app that says whom stepgate told it the user is ([`upstream::whoami`]).
async fn start(url: &str, ca_file: &str, how: &str) -> Server {
    Server::build(&CONFIG.replace("HOW\n", how))
        .with("LDAP_URL", url)
        .with("CA_FILE", ca_file)
        .with("UPSTREAM", upstream::whoami().await)
        .start()
        .await
}

/// Opens `path` signed out and submits `username` and `password` on the sign-in page: the
/// page it ends on.
async fn sign_in(h: &Server, b: &Browser, path: &str, username: &str, password: &str) -> Page {
    let login = Page::open(b, &h.at(path)).await;
    assert_eq!(login.status, 200, "{}", login.html);
    let r = login
        .submit(
            b,
            "/_stepgate/login",
            &[("username", username), ("password", password)],
        )
        .await;
    Page::read(r).await
}

#[tokio::test]
async fn ldaps_search_then_bind_signs_in_with_the_directory_groups() {
    let Some(d) = Slapd::start().await else {
        return;
    };
    let h = start(&d.ldaps_url, d.ca_file.to_str().unwrap(), SEARCH).await;
    let b = Browser::new();
    let page = sign_in(&h, &b, "/admin/x", "alice", "wrong").await;
    assert_eq!(page.status, 401, "{}", page.html);
    assert!(
        page.html.contains("Wrong username or password."),
        "{}",
        page.html
    );
    // An empty password is an anonymous bind to LDAP: never asked, refused.
    let page = sign_in(&h, &b, "/admin/x", "alice", "").await;
    assert_eq!(page.status, 401, "{}", page.html);

    let page = sign_in(&h, &b, "/admin/x", "alice", "alice-pw").await;
    assert_saw(&page, "alice");
    assert!(page.html.contains("dir:admins"), "{}", page.html);
    let alice = user(&h.st, "alice").await;
    assert_eq!(alice.source, UserSource::Upstream);
    assert_eq!(alice.groups, vec!["dir:admins", "dir:staff"]);
    assert_eq!(alice.email.as_deref(), Some("alice@corp.example"));
    assert_eq!(alice.name.as_deref(), Some("Alice Directory"));
    assert_eq!(
        alice.attributes.get("department"),
        Some(&AttributeValue::One("finance".into()))
    );

    // Bob is staff only: the group policy keeps him out of the admin area.
    let b = Browser::new();
    let page = sign_in(&h, &b, "/admin/x", "bob", "bob-pw").await;
    assert!(
        page.html.contains("The admin area is for administrators."),
        "{}",
        page.html
    );
    let page = Page::open(&b, &h.at("/reports")).await;
    assert_saw(&page, "bob");

    // Password changes are the directory's: the old one stops working at once.
    d.set_password("carol", "carol-new").await;
    let page = sign_in(&h, &Browser::new(), "/", "carol", "carol-pw").await;
    assert_eq!(page.status, 401);
    let page = sign_in(&h, &Browser::new(), "/", "carol", "carol-new").await;
    assert_saw(&page, "carol");
    assert!(user(&h.st, "carol").await.groups.is_empty());
}

#[tokio::test]
async fn starttls_with_a_dn_template_and_groups_from_a_group_search() {
    let Some(d) = Slapd::start().await else {
        return;
    };
    let how = "  starttls: true\n  dn_template: \"uid={username},ou=people,dc=corp,dc=example\"\n  group_base: \"ou=groups,dc=corp,dc=example\"\n";
    let h = start(&d.ldap_url, d.ca_file.to_str().unwrap(), how).await;
    let page = sign_in(&h, &Browser::new(), "/admin/x", "alice", "alice-pw").await;
    assert_saw(&page, "alice");
    assert_eq!(
        user(&h.st, "alice").await.groups,
        vec!["dir:admins", "dir:staff"]
    );
    // A DN-special username does not name another entry.
    let page = sign_in(&h, &Browser::new(), "/", "alice,ou=people", "alice-pw").await;
    assert_eq!(page.status, 401, "{}", page.html);
}

#[tokio::test]
async fn a_username_never_changes_the_filter() {
    let Some(d) = Slapd::start().await else {
        return;
    };
    let h = start(&d.ldaps_url, d.ca_file.to_str().unwrap(), SEARCH).await;
    // Unescaped, `al*` would find exactly alice and her password would sign it in; the
    // others would match everyone, or rewrite the filter, or cut it short.
    for name in [
        "al*",
        "*",
        "alice)(uid=*",
        "*)(|(uid=*",
        "alice)(|(objectClass=*",
        "alice\\00",
        "alice\u{0}",
        "(uid=alice)",
    ] {
        let b = Browser::new();
        let page = sign_in(&h, &b, "/", name, "alice-pw").await;
        assert_eq!(page.status, 401, "`{name}` is no one: {}", page.html);
        assert!(b.session_id(&h.base).is_none());
    }
    assert_eq!(
        h.st.stores.durable.list_users().await.unwrap().len(),
        0,
        "no user was created"
    );
    // The real name still works.
    let page = sign_in(&h, &Browser::new(), "/", "alice", "alice-pw").await;
    assert_saw(&page, "alice");
}

#[tokio::test]
async fn a_directory_that_is_down_or_not_the_trusted_one_fails_closed_and_is_audited() {
    let Some(mut d) = Slapd::start().await else {
        return;
    };
    // Another authority's certificate: the TLS handshake fails, the sign-in is refused.
    let other = Slapd::start().await.unwrap();
    let h = start(&d.ldaps_url, other.ca_file.to_str().unwrap(), SEARCH).await;
    let page = sign_in(&h, &Browser::new(), "/", "alice", "alice-pw").await;
    assert_eq!(page.status, 503, "{}", page.html);
    assert!(page.html.contains("cannot be reached"), "{}", page.html);
    let rows = audit(&h.st, Some("signin.directory_unavailable")).await;
    assert_eq!(rows.len(), 1);

    // Down: refused with the same message and audited, and no account is touched.
    let h = start(&d.ldaps_url, d.ca_file.to_str().unwrap(), SEARCH).await;
    let page = sign_in(&h, &Browser::new(), "/", "alice", "alice-pw").await;
    assert_saw(&page, "alice");
    d.stop().await;
    let b = Browser::new();
    let page = sign_in(&h, &b, "/", "alice", "alice-pw").await;
    assert_eq!(page.status, 503, "{}", page.html);
    assert!(page.html.contains("cannot be reached"), "{}", page.html);
    assert!(b.session_id(&h.base).is_none());
    let rows = audit(&h.st, Some("signin.directory_unavailable")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor.as_deref(), Some("alice"));
}

#[tokio::test]
async fn an_unknown_username_costs_the_directory_a_bind_like_a_wrong_password() {
    let Some(d) = Slapd::start().await else {
        return;
    };
    let h = start(&d.ldaps_url, d.ca_file.to_str().unwrap(), SEARCH).await;
    // The binds each refused sign-in makes the directory do: the service account's, then
    // one with the password typed — as the user found, or, for a name no entry has (or a
    // filter-bending one), against an entry that does not exist.
    let mut binds = Vec::new();
    for (name, password) in [
        ("alice", "wrong"),
        ("nobody", "wrong"),
        ("*", "alice-pw"),
        ("bob", "also-wrong"),
    ] {
        let before = d.binds().await;
        let page = sign_in(&h, &Browser::new(), "/", name, password).await;
        assert_eq!(page.status, 401, "{name}: {}", page.html);
        assert!(
            page.html.contains("Wrong username or password."),
            "{name}: {}",
            page.html
        );
        binds.push((name, d.binds().await - before));
    }
    assert_eq!(
        binds,
        vec![("alice", 2), ("nobody", 2), ("*", 2), ("bob", 2)],
        "an unknown name takes the same path as a wrong password"
    );
    assert!(h.st.stores.durable.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn sign_ins_share_a_bounded_pool_of_connections_and_outlive_a_directory_restart() {
    let Some(mut d) = Slapd::start().await else {
        return;
    };
    let how = format!("{SEARCH}  pool_size: 2\n");
    let h = start(&d.ldaps_url, d.ca_file.to_str().unwrap(), &how).await;
    // One after another, on one kept connection: each sign-in binds it as the service
    // account again before searching (2 binds), since the last one left it bound as its
    // user — who may read only their own entry, so a search made as alice would not find
    // bob.
    for name in ["alice", "bob", "carol", "bob"] {
        let binds = d.binds().await;
        let page = sign_in(&h, &Browser::new(), "/", name, &format!("{name}-pw")).await;
        assert_saw(&page, name);
        assert_eq!(d.binds().await - binds, 2, "{name}");
    }
    let before = d.connections_opened().await;
    for (name, password) in [
        ("alice", "alice-pw"),
        ("bob", "wrong"),
        ("carol", "carol-pw"),
    ] {
        sign_in(&h, &Browser::new(), "/", name, password).await;
    }
    // (The count includes the connection that reads it.)
    assert_eq!(
        d.connections_opened().await - before,
        1,
        "three more sign-ins, on the connection kept"
    );

    // Twelve at once: never more than the pool's two open, and every one signed in.
    let before = d.connections_opened().await;
    let names = ["alice", "bob", "carol"];
    let pages = futures_util::future::join_all((0..12).map(|i| {
        let name = names[i % 3];
        let h = &h;
        async move {
            let page = sign_in(h, &Browser::new(), "/", name, &format!("{name}-pw")).await;
            (name, page)
        }
    }))
    .await;
    for (name, page) in pages {
        assert_saw(&page, name);
    }
    let opened = d.connections_opened().await - before - 1;
    assert!(opened <= 1, "one kept, at most one more opened: {opened}");
    assert!(d.connections_open().await - 1 <= 2);

    // Restarted, the directory closed the kept connections: the next sign-ins notice and
    // open new ones, without a refusal.
    d.restart().await;
    for name in ["alice", "bob"] {
        let page = sign_in(&h, &Browser::new(), "/", name, &format!("{name}-pw")).await;
        assert_saw(&page, name);
    }
    assert!(audit(&h.st, Some("signin.directory_unavailable"))
        .await
        .is_empty());
}
