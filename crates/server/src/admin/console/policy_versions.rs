//! `{portal}/admin/policies/versions` (only with `admin.policy_edits: store`): the policy
//! sets saved in the store — their history (version, author, time, note), one version's
//! YAML, a diff between two (or against the one in force), a draft policy set validated
//! with the configuration files and replayed against the last 24 hours, then saved as the
//! next version, and a one-click rollback. Every read and write goes through the API's
//! code (`admin::policy_history`: listing, find, compared, save_version, roll_back), so the
//! rules are the API's: a change needs the CSRF token, `admin.group` and a fresh AAL3, and
//! is audited (`policy.saved`, and the console's `admin.write`).

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::Form;
use chrono::Utc;
use minijinja::context;
use serde_json::{json, Value};

use super::{shown, Admin, Changing};
use crate::admin::caller::step_up_needed;
use crate::admin::policy_history::{compared, find, listing, refusal, roll_back, save_version};
use crate::admin::Problem;
use crate::app::stored_policies;
use crate::portal::error::PortalError;
use crate::portal::pages::{Message, WayOn};

/// Where the page lives under the portal.
const HERE: &str = "/admin/policies/versions";
/// The largest draft the form takes.
const DRAFT_MAX: usize = 256 * 1024;
/// How many versions the page lists.
const LISTED: usize = 50;

/// The page for a server whose policies come from the files.
fn edits_off(a: &Admin) -> Response {
    Message {
        portal: a.here.portal(),
        title: "Policy versions are off",
        text: "This server takes its policies from the configuration files (admin.policy_edits: yaml). Set admin.policy_edits: store and restart to save versioned policy sets here.",
        way_on: Some(WayOn::new(a.here.portal_url("/admin/policies"), "Policies")),
        also: None,
    }
    .render(StatusCode::NOT_FOUND)
}

/// What the page shows besides the history.
#[derive(Default)]
struct Shown {
    status: Option<StatusCode>,
    /// The draft in the form (the version in force's text when none).
    draft: Option<String>,
    note: String,
    /// The draft's check: valid with its replay, or its errors.
    result: Option<Value>,
    /// The step-up page's URL when a save waits for it.
    step_up: Option<String>,
    error: Option<String>,
}

/// `GET {portal}/admin/policies/versions?version=N&from=A&to=B&done=`.
pub async fn page(
    a: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    if !a.st.stored_policies.enabled() {
        return Ok(edits_off(&a));
    }
    show(&a, &q, Shown::default()).await
}

/// A number the query names, or a 400's words.
fn number(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, String> {
    match super::param(q, name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| format!("{name} must be a version number, not `{v}`")),
    }
}

/// The version `?version=` names, and the diff `?from=&to=` asks for (`to` defaults to
/// the version in force; `from` 0 is the empty set).
async fn asked(a: &Admin, q: &HashMap<String, String>) -> Result<(Value, Value), Problem> {
    let in_force = a.st.stored_policies.in_force().map(|v| v.version);
    let bad = |e: String| Problem::bad_request(e);
    let version = match number(q, "version").map_err(bad)? {
        Some(n) => {
            let v = find(&a.st, n).await?;
            json!({ "version": v.version, "author": v.author, "created_at": v.created_at,
                    "note": v.note, "text": v.text, "in_force": in_force == Some(v.version) })
        }
        None => Value::Null,
    };
    let from = number(q, "from").map_err(bad)?;
    let diff = match (from, number(q, "to").map_err(bad)?.or(in_force)) {
        (Some(from), Some(to)) => {
            let mut d = compared(&a.st, to, from).await?;
            let lines: Vec<Value> = d["diff"]
                .as_str()
                .unwrap_or("")
                .lines()
                .map(|l| {
                    let kind = match l.as_bytes().first() {
                        Some(b'+') if !l.starts_with("+++") => "add",
                        Some(b'-') if !l.starts_with("---") => "del",
                        _ => "same",
                    };
                    json!({ "kind": kind, "text": l })
                })
                .collect();
            d["lines"] = json!(lines);
            d
        }
        (Some(_), None) => return Err(bad("no version is in force yet: name `to` too".into())),
        (None, _) => Value::Null,
    };
    Ok((version, diff))
}

/// The page: the history, what the query asks to see, and the draft form.
async fn show(a: &Admin, q: &HashMap<String, String>, s: Shown) -> Result<Response, PortalError> {
    let mut status = s.status.unwrap_or(StatusCode::OK);
    let mut error = s.error;
    let history = match listing(&a.st, None, Some(LISTED)).await {
        Ok(h) => h,
        Err(p) => {
            (status, error) = (shown(&p).0, Some(p.detail.clone()));
            json!({ "items": [] })
        }
    };
    let (version, diff) = match asked(a, q).await {
        Ok(v) => v,
        Err(p) => {
            let (st, e) = shown(&p);
            (status, error) = (st, Some(e));
            (Value::Null, Value::Null)
        }
    };
    let in_force = a.st.stored_policies.in_force();
    let draft = s
        .draft
        .or_else(|| in_force.as_ref().map(|v| v.text.clone()))
        .unwrap_or_default();
    let newest = history["items"][0]["version"].as_i64().unwrap_or(0);
    // Said up front, so an administrator steps up before writing a draft.
    let fresh = step_up_needed(
        &a.st,
        &a.here,
        &a.session,
        a.user.clone(),
        &a.here.portal_url(HERE),
        Utc::now(),
    );
    Ok(a.render(
        status,
        "admin_policy_versions.html",
        context! {
            history => history, version => version, diff => diff, draft => draft,
            note => s.note, result => s.result, newest => newest,
            in_force => in_force.map(|v| v.version), step_up => s.step_up.or(fresh),
            checked => s.result.as_ref().and_then(|r| r["sha256"].as_str().map(str::to_string)),
            error => error, done => q.get("done"),
        },
    ))
}

/// The draft form.
#[derive(serde::Deserialize)]
pub struct Draft {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    draft: String,
    #[serde(default)]
    note: String,
    /// The newest version when the page was shown.
    base: Option<i64>,
    /// The SHA-256 of the draft as checked and replayed (saving needs it to match).
    #[serde(default)]
    checked: String,
}

fn sha256(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The draft loaded with the configuration files and, when it loads, replayed against the
/// last 24 hours' decisions: what the page shows under the form.
async fn checked(a: &Admin, text: &str) -> (StatusCode, Value) {
    if text.len() > DRAFT_MAX {
        let detail = format!("the draft is over {} KiB", DRAFT_MAX / 1024);
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "valid": false, "detail": detail }),
        );
    }
    if text.trim().is_empty() {
        let detail = "the draft is empty: paste the policy set (`policies:` and its list)";
        return (
            StatusCode::BAD_REQUEST,
            json!({ "valid": false, "detail": detail }),
        );
    }
    match stored_policies::loaded(&a.st, text.to_string()).await {
        Ok(cfg) => {
            let policies = cfg.policies.len();
            let replay = crate::admin::decisions::replay_last_day(&a.st, cfg)
                .await
                .unwrap_or(Value::Null);
            let r = json!({ "valid": true, "policies": policies, "replay": replay, "sha256": sha256(text) });
            (StatusCode::OK, r)
        }
        Err(e) => {
            let p = refusal(e);
            let r = json!({ "valid": false, "detail": p.detail, "errors": p.errors });
            (shown(&p).0, r)
        }
    }
}

/// A form posted to the page: its CSRF token, an administrator, and edits on.
fn posted(a: Admin, csrf: &str) -> Result<Admin, Box<Result<Response, PortalError>>> {
    a.check_csrf(csrf).map_err(|e| Box::new(Err(e)))?;
    if !a.st.stored_policies.enabled() {
        return Err(Box::new(Ok(edits_off(&a))));
    }
    Ok(a)
}

/// `POST {portal}/admin/policies/versions/check` (`draft`: a policy set). A read: the CSRF
/// token and the group, no AAL3.
pub async fn check(a: Admin, Form(f): Form<Draft>) -> Result<Response, PortalError> {
    let a = match posted(a, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (status, result) = checked(&a, &f.draft).await;
    let s = Shown {
        status: Some(status),
        draft: Some(f.draft),
        note: f.note,
        result: Some(result),
        ..Shown::default()
    };
    show(&a, &HashMap::new(), s).await
}

/// `POST {portal}/admin/policies/versions/save`: the checked draft saved as the next
/// version, in force on every node. A change: the CSRF token, the group and a fresh AAL3;
/// without it the page again with the draft kept and the step-up link.
pub async fn save(Changing(a): Changing, Form(f): Form<Draft>) -> Result<Response, PortalError> {
    let a = match posted(a, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let again = |status, error: String, step_up| Shown {
        status: Some(status),
        draft: Some(f.draft.clone()),
        note: f.note.clone(),
        step_up,
        error: Some(error),
        ..Shown::default()
    };
    let back = a.here.portal_url(HERE);
    let user = a.user.clone();
    if let Some(url) = step_up_needed(&a.st, &a.here, &a.session, user, &back, Utc::now()) {
        let e = format!("Saving needs your security key, used within the last {}: step up, then save again. Your draft is kept below.", a.here.config.admin.write_max_age);
        let mut s = again(StatusCode::FORBIDDEN, e, Some(url));
        // Checked again, so that the save button is there once the key is used.
        s.result = Some(checked(&a, &f.draft).await.1);
        return show(&a, &HashMap::new(), s).await;
    }
    if f.checked.is_empty() || f.checked != sha256(&f.draft) {
        let e = "The draft changed since it was checked: validate and replay it again, then save.";
        return show(
            &a,
            &HashMap::new(),
            again(StatusCode::CONFLICT, e.into(), None),
        )
        .await;
    }
    let caller = a.caller();
    let saved = save_version(
        &a.st,
        &caller,
        f.draft.clone(),
        f.base,
        Some(f.note.clone()),
        None,
    );
    match saved.await {
        Ok(v) => {
            let detail = json!({ "version": v.version, "sha256": v.sha256 });
            super::audit_write(&a.st, &caller, None, "console.policy_save", detail).await;
            Ok(a.done(HERE, &format!("Saved version {}: in force now.", v.version)))
        }
        Err(p) => refused(&a, &p, again).await,
    }
}

/// The page again after a refused save: the draft kept, the store's problem shown.
async fn refused(
    a: &Admin,
    p: &Problem,
    again: impl FnOnce(StatusCode, String, Option<String>) -> Shown,
) -> Result<Response, PortalError> {
    let (status, e) = shown(p);
    let mut s = again(status, e, None);
    s.result = Some(json!({ "valid": false, "detail": p.detail, "errors": p.errors }));
    show(a, &HashMap::new(), s).await
}

/// The rollback form.
#[derive(serde::Deserialize)]
pub struct Rollback {
    #[serde(default)]
    csrf: String,
    /// The newest version when the page was shown.
    base: Option<i64>,
}

/// `POST {portal}/admin/policies/versions/{version}/rollback`: that version's text saved
/// again as the next version (history only grows). A change, as [`save`].
pub async fn rollback(
    Changing(a): Changing,
    Path(version): Path<i64>,
    Form(f): Form<Rollback>,
) -> Result<Response, PortalError> {
    let (a, caller) = match a.change(&f.csrf, HERE) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if !a.st.stored_policies.enabled() {
        return Ok(edits_off(&a));
    }
    let note = Some(format!("rollback to version {version} from the console"));
    match roll_back(&a.st, &caller, version, f.base, note).await {
        Ok(v) => {
            let detail = json!({ "version": v.version, "rollback_of": version });
            super::audit_write(&a.st, &caller, None, "console.policy_rollback", detail).await;
            let done = format!(
                "Rolled back to version {version}: saved as version {}, in force now.",
                v.version
            );
            Ok(a.done(HERE, &done))
        }
        Err(p) => {
            let s = Shown {
                status: Some(shown(&p).0),
                error: Some(p.detail.clone()),
                ..Shown::default()
            };
            show(&a, &HashMap::new(), s).await
        }
    }
}
