//! The console's versions page: history, a version, a diff, a draft checked, replayed
//! and saved, a rollback, under the API's rules; no page with edits off.

use chrono::Utc;
use serde_json::json;

use crate::common::*;
use crate::support;
use crate::support::{aal3_session, audit, field, signed_in_session, user, Server};

/// The console's page (or form) at `path` under `/_stepgate/admin`, with `session`.
async fn console(
    s: &Server,
    session: &str,
    path: &str,
    form: Option<&[(&str, &str)]>,
) -> (u16, String, String) {
    let url = s.at(&format!("/_stepgate/admin{path}"));
    let r = match form {
        Some(f) => http().post(url).form(f),
        None => http().get(url),
    };
    let r = r
        .header("cookie", format!("stepgate_session={session}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = support::header(&r, "location");
    (status, location, r.text().await.unwrap())
}

#[tokio::test]
async fn the_console_checks_saves_diffs_and_rolls_back_versions_under_the_apis_rules() {
    let s = console_server("store").await;
    let jane = user(&s.st, "jane").await;
    let aal2 = signed_in_session(&s.st, &jane, Utc::now()).await;
    assert_eq!(reports(&s, &aal2).await, 200);
    s.st.access.decision_log().unwrap().flush().await;
    // One recorded decision that no longer reads: the replay skips it and says so.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        s.dir.path().join("data/stepgate.db").display()
    ))
    .await
    .unwrap();
    let corrupted =
        sqlx::query("UPDATE decisions SET detail_json = 'not json' WHERE app = 'console'")
            .execute(&db)
            .await
            .unwrap()
            .rows_affected();
    assert!(corrupted >= 1);

    let (status, _, html) = console(&s, &aal2, "/policies/versions", None).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("No version saved yet") && html.contains(">Versions</a>"),
        "{html}"
    );
    assert!(
        html.contains("id=\"step-up-needed\""),
        "AAL2 is told to step up first: {html}"
    );
    let csrf = field(&html, "csrf");

    // A bad draft: its error positioned, no save button.
    let (status, _, html) = console(
        &s,
        &aal2,
        "/policies/versions/check",
        Some(&[("csrf", &csrf), ("draft", BAD)]),
    )
    .await;
    assert_eq!(status, 422, "{html}");
    assert!(
        html.contains("line 4, column 23") && !html.contains("id=\"save-version\""),
        "{html}"
    );
    // A good one: loads, replayed (the unreadable record counted), and can be saved.
    let (status, _, html) = console(
        &s,
        &aal2,
        "/policies/versions/check",
        Some(&[("csrf", &csrf), ("draft", CLOSED)]),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("id=\"save-version\""), "{html}");
    assert!(
        html.contains(&format!("{corrupted} records could not be re-decided")),
        "{html}"
    );
    let checked = field(&html, "checked");
    let save_form = |csrf: String, checked: String| {
        vec![
            ("csrf", csrf),
            ("draft", CLOSED.to_string()),
            ("note", "close the reports".to_string()),
            ("base", "0".to_string()),
            ("checked", checked),
        ]
    };

    // AAL2: the page again, the draft kept, the step-up link; nothing saved.
    let f = save_form(csrf.clone(), checked.clone());
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, html) = console(&s, &aal2, "/policies/versions/save", Some(&f)).await;
    assert_eq!(status, 403, "{html}");
    assert!(
        html.contains("step-up?t=") && html.contains("reports-closed"),
        "{html}"
    );
    assert!(s
        .st
        .stores
        .durable
        .latest_policy_version()
        .await
        .unwrap()
        .is_none());

    // AAL3 just now: a forged CSRF token and a draft edited since its check are refused.
    let fresh = aal3_session(&s.st, &jane, Utc::now()).await;
    let (_, _, html) = console(&s, &fresh, "/policies/versions", None).await;
    assert!(!html.contains("id=\"step-up-needed\""), "{html}");
    let csrf = field(&html, "csrf");
    let post = |f: Vec<(&'static str, String)>| {
        let s = &s;
        let fresh = fresh.clone();
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            console(s, &fresh, "/policies/versions/save", Some(&f)).await
        }
    };
    let (status, ..) = post(save_form("forged".into(), checked.clone())).await;
    assert_ne!(status, 303);
    let (status, _, html) = post(save_form(csrf.clone(), "0".repeat(64))).await;
    assert_eq!(status, 409, "{html}");
    assert!(s
        .st
        .stores
        .durable
        .latest_policy_version()
        .await
        .unwrap()
        .is_none());
    let (status, location, _) = post(save_form(csrf.clone(), checked)).await;
    assert_eq!(status, 303);
    assert!(
        location.contains("/admin/policies/versions?done="),
        "{location}"
    );
    assert_eq!(
        reports(&s, &aal2).await,
        403,
        "version 1 decides the next request"
    );

    // Version 2 (the files' set) through the API's code; the history, a version, a diff.
    let t = admin_token(&s).await;
    assert_eq!(save(&s, &t, OPEN, Some(1)).await.0, 201);
    let (_, _, html) = console(&s, &fresh, "/policies/versions?version=1", None).await;
    assert!(
        html.contains("id=\"version-text\"") && html.contains("closed for audit"),
        "{html}"
    );
    assert!(
        html.contains("close the reports") && html.contains("admin:jane"),
        "{html}"
    );
    let (_, _, html) = console(&s, &fresh, "/policies/versions?from=1", None).await;
    let diff = &html[html.find("id=\"diff\"").expect("the diff")..];
    assert!(
        diff.contains("From version 1 to version 2")
            && diff.contains("<del>-  - name: reports-closed</del>"),
        "{diff}"
    );
    let (status, _, _) = console(&s, &fresh, "/policies/versions?version=9", None).await;
    assert_eq!(status, 404);

    // One-click rollback to version 1: needs AAL3 (AAL2 goes to the step-up page).
    let roll = [("csrf", csrf.as_str()), ("base", "2")];
    let (status, location, _) = console(
        &s,
        &aal2,
        "/policies/versions/1/rollback",
        Some(&[
            (
                "csrf",
                &field(
                    &console(&s, &aal2, "/policies/versions", None).await.2,
                    "csrf",
                ),
            ),
            ("base", "2"),
        ]),
    )
    .await;
    assert_eq!(status, 303);
    assert!(location.contains("/_stepgate/step-up?t="), "{location}");
    let (status, location, _) =
        console(&s, &fresh, "/policies/versions/1/rollback", Some(&roll)).await;
    assert_eq!(
        (status, location.contains("done=")),
        (303, true),
        "{location}"
    );
    let v3 =
        s.st.stores
            .durable
            .latest_policy_version()
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        (v3.version, v3.rollback_of, v3.author.as_str()),
        (3, Some(1), "admin:jane")
    );
    assert_eq!(reports(&s, &aal2).await, 403, "rolled back to version 1");

    let saved = audit(&s.st, Some("policy.saved")).await;
    let by: Vec<_> = saved
        .iter()
        .map(|e| (e.detail["version"].clone(), e.actor.clone().unwrap()))
        .collect();
    assert_eq!(by[0], (json!(1), "admin:jane".to_string()));
    assert_eq!(by[2], (json!(3), "admin:jane".to_string()));
    assert_eq!(saved[0].ip.as_deref(), Some("127.0.0.1"));
    let ops: Vec<_> = audit(&s.st, Some("admin.write"))
        .await
        .iter()
        .map(|e| e.detail["operation"].clone())
        .collect();
    assert!(
        ops.contains(&json!("console.policy_save"))
            && ops.contains(&json!("console.policy_rollback")),
        "{ops:?}"
    );
}

#[tokio::test]
async fn with_edits_off_the_console_has_no_versions_page() {
    let s = console_server("yaml").await;
    let jane = user(&s.st, "jane").await;
    let fresh = aal3_session(&s.st, &jane, Utc::now()).await;
    let (status, _, html) = console(&s, &fresh, "/policies/versions", None).await;
    assert_eq!(status, 404);
    assert!(html.contains("admin.policy_edits: yaml"), "{html}");
    let (_, _, html) = console(&s, &fresh, "/policies", None).await;
    assert!(!html.contains(">Versions</a>"), "{html}");
}
