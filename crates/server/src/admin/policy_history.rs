//! Policy history (`admin.policy_edits: store`): the versions of the policy set saved
//! through the API, one shown, two compared, a draft saved as the next version and an
//! older version restored as the next (rollback). Saving and restoring go through
//! `app::stored_policies`, which validates a set as a reload does, puts it in force and
//! announces it to the other nodes; each is audited (`policy.saved`) with the caller.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use stepgate_store::PolicyVersion;

use super::problem::{Body, Params, Problem};
use super::{Caller, DEFAULT_LIMIT, MAX_LIMIT};
use crate::app::state::Shared;
use crate::app::stored_policies::{self, SaveRefused};

/// A version without its text, as listed.
fn summary(v: &PolicyVersion) -> serde_json::Value {
    json!({
        "version": v.version,
        "author": v.author,
        "note": v.note,
        "rollback_of": v.rollback_of,
        "created_at": v.created_at,
        "sha256": v.sha256,
        "lines": v.text.lines().count(),
    })
}

/// The query of `GET /policies/versions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    before: Option<i64>,
    limit: Option<usize>,
}

/// `GET /policies/versions`.
pub async fn list(
    State(st): State<Shared>,
    Params(q): Params<Listing>,
) -> Result<Response, Problem> {
    Ok(Json(listing(&st, q.before, q.limit).await?).into_response())
}

/// The versions numbered below `before` (all when none), newest first, at most `limit`:
/// `GET /policies/versions`'s document, which the console's versions page shows.
pub async fn listing(
    st: &Shared,
    before: Option<i64>,
    limit: Option<usize>,
) -> Result<serde_json::Value, Problem> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(Problem::bad_field("limit", "limit must be 1 or more"));
    }
    let limit = limit.min(MAX_LIMIT);
    let items = st
        .stores
        .durable
        .list_policy_versions(before, limit as u32 + 1)
        .await?;
    let more = items.len() > limit;
    let items: Vec<_> = items.iter().take(limit).collect();
    let sp = &st.stored_policies;
    Ok(json!({
        "policy_edits": if sp.enabled() { "store" } else { "yaml" },
        "in_force": sp.in_force().map(|v| v.version),
        "items": items.iter().map(|v| summary(v)).collect::<Vec<_>>(),
        "next": more.then(|| items.last().map(|v| v.version.to_string())).flatten(),
    }))
}

/// Version `version`, or a 404 naming it.
pub async fn find(st: &Shared, version: i64) -> Result<PolicyVersion, Problem> {
    st.stores
        .durable
        .get_policy_version(version)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no policy version {version}")))
}

/// `GET /policies/versions/{version}`.
pub async fn show(State(st): State<Shared>, Path(version): Path<i64>) -> Result<Response, Problem> {
    let v = find(&st, version).await?;
    let mut body = summary(&v);
    body["text"] = json!(v.text);
    body["in_force"] = json!(st
        .stored_policies
        .in_force()
        .is_some_and(|f| f.version == v.version));
    Ok(Json(body).into_response())
}

/// The query of `GET /policies/versions/{version}/diff`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    against: Option<i64>,
}

/// `GET /policies/versions/{version}/diff`: from `against` (the version before it by
/// default; 0 is the empty set) to `version`, as a unified diff.
pub async fn diff(
    State(st): State<Shared>,
    Path(version): Path<i64>,
    Params(q): Params<DiffQuery>,
) -> Result<Response, Problem> {
    Ok(Json(compared(&st, version, q.against.unwrap_or(version - 1)).await?).into_response())
}

/// From version `against` (0: the empty set) to `version`: lines added and removed and the
/// unified diff — `GET /policies/versions/{version}/diff`'s document, the console's too.
pub async fn compared(
    st: &Shared,
    version: i64,
    against: i64,
) -> Result<serde_json::Value, Problem> {
    let to = find(st, version).await?;
    let from_text = if against == 0 {
        String::new()
    } else {
        find(st, against).await?.text
    };
    let (added, removed, unified) = unified_diff(against, &from_text, version, &to.text);
    Ok(json!({
        "from": against, "to": version,
        "added": added, "removed": removed, "diff": unified,
    }))
}

/// Lines added, lines removed and the unified diff from version `from` (text `old`) to
/// version `to` (text `new`): the API's, the console's and `stepgate policy diff`'s.
pub fn unified_diff(from: i64, old: &str, to: i64, new: &str) -> (usize, usize, String) {
    let d = similar::TextDiff::from_lines(old, new);
    let (mut added, mut removed) = (0, 0);
    for c in d.iter_all_changes() {
        match c.tag() {
            similar::ChangeTag::Insert => added += 1,
            similar::ChangeTag::Delete => removed += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    let unified = d
        .unified_diff()
        .context_radius(3)
        .header(
            &stored_policies::source_name(Some(from)),
            &stored_policies::source_name(Some(to)),
        )
        .to_string();
    (added, removed, unified)
}

/// The body of `POST /policies/versions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    /// The policy set: YAML holding `policies:` only.
    text: String,
    /// The version the draft was edited from; refused when another was saved since.
    base: Option<i64>,
    /// Why.
    note: Option<String>,
}

/// `POST /policies/versions`: 201 with the new version, in force on every node.
pub async fn save(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Body(d): Body<Draft>,
) -> Result<Response, Problem> {
    if d.text.trim().is_empty() {
        return Err(Problem::bad_field(
            "text",
            "text is empty: send the policy set as YAML (`policies:` and its list)",
        ));
    }
    let v = save_version(&st, &caller, d.text, d.base, d.note, None).await?;
    Ok((StatusCode::CREATED, Json(summary(&v))).into_response())
}

/// The body of `POST /policies/versions/{version}/rollback` (may be empty).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    base: Option<i64>,
    note: Option<String>,
}

/// `POST /policies/versions/{version}/rollback`: saves that version's text again as the
/// newest (history only grows), 201 with it.
pub async fn rollback(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(version): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let r: Rollback = super::problem::optional_json(&body)?;
    let v = roll_back(&st, &caller, version, r.base, r.note).await?;
    Ok((StatusCode::CREATED, Json(summary(&v))).into_response())
}

/// Saves `text` as the next version after `base` by `caller` (the API's save and the
/// console's): checked as a reload loads it, put in force on every node, audited.
pub async fn save_version(
    st: &Shared,
    caller: &Caller,
    text: String,
    base: Option<i64>,
    note: Option<String>,
    rollback_of: Option<i64>,
) -> Result<std::sync::Arc<PolicyVersion>, Problem> {
    let note = checked_note(note)?;
    let v = stored_policies::save(st, text, base, &caller.actor, note, rollback_of)
        .await
        .map_err(refusal)?;
    st.audit
        .append(saved_event(&caller.actor, caller.ip, &v))
        .await;
    Ok(v)
}

/// Saves version `version`'s text again as the next version (the API's rollback and the
/// console's).
pub async fn roll_back(
    st: &Shared,
    caller: &Caller,
    version: i64,
    base: Option<i64>,
    note: Option<String>,
) -> Result<std::sync::Arc<PolicyVersion>, Problem> {
    let old = find(st, version).await?;
    save_version(st, caller, old.text, base, note, Some(version)).await
}

/// A note as saved: at most 500 characters, no control characters; none when blank.
pub fn checked_note(note: Option<String>) -> Result<Option<String>, Problem> {
    match note {
        Some(n) if n.chars().count() > 500 || n.chars().any(|c| c.is_control() && c != '\n') => {
            Err(Problem::bad_field(
                "note",
                "note must be at most 500 characters, without control characters",
            ))
        }
        n => Ok(n.filter(|n| !n.trim().is_empty())),
    }
}

/// The `policy.saved` audit event of a saved version (the API's, the console's and `stepgate
/// policy rollback`'s).
pub fn saved_event(
    actor: &str,
    ip: Option<std::net::IpAddr>,
    v: &PolicyVersion,
) -> stepgate_store::NewAuditEvent {
    let mut e = stepgate_store::NewAuditEvent::now("policy.saved");
    e.actor = Some(actor.to_string());
    e.subject = Some(format!("policy-version:{}", v.version));
    e.ip = ip.map(|i| i.to_string());
    e.detail = json!({
        "version": v.version, "sha256": v.sha256,
        "rollback_of": v.rollback_of, "note": v.note,
    });
    e
}

/// The problem document for a refused save.
pub fn refusal(e: SaveRefused) -> Problem {
    match e {
        SaveRefused::Off => Problem::conflict(
            "policy edits are off (`admin.policy_edits: yaml`): the policies are the configuration files'; validate a draft with POST /policies/validate",
        ),
        SaveRefused::NoFile => Problem::conflict(
            "this server runs the built-in demo configuration: there is no file to load a policy set with",
        ),
        SaveRefused::Stale { newest } => Problem::conflict(format!(
            "version {newest} was saved since the draft's `base`: compare with it and send the draft again with `base: {newest}`"
        )),
        // Every error with its line and column; nothing was saved.
        SaveRefused::Invalid(e) => super::policies::invalid_draft(e),
        SaveRefused::Refused(errors) => {
            let mut p = Problem::unprocessable(
                "invalid-policy-set",
                "the configuration with this policy set cannot be put in force; the running policies are kept",
            );
            p.errors = Some(json!(errors));
            p
        }
        SaveRefused::Store(e) => e.into(),
    }
}
