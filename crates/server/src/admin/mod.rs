//! The admin API, `{portal}/admin/api/v1`: users, devices, sessions, decisions, the audit
//! log, policies and the configuration, for scripts (API tokens with scopes) and
//! administrators (their portal session; a change also needs a fresh AAL3). Served on the
//! portal's listener under the portal path, so it shares its TLS, host checks and request
//! ids, and the portal's session is the console's.
//!
//! - [`ENDPOINTS`]: the route table. The router ([`routes`]) and the OpenAPI 3.1 document
//!   ([`openapi::document`], served at `/admin/api/v1/openapi.json`) are both built from it,
//!   so the document cannot miss a route.
//! - [`caller`]: authentication, the scope check and the audit record of every call.
//! - [`admission`]: an administrator's session (console page or API call) decided by the
//!   access pipeline as a request to the admin app (`admin.app`), with the floor on top
//!   (`admin.group`, and a fresh AAL3 for a change).
//! - [`tokens`]: the API tokens (`stepgate admin token create|list|revoke`).
//! - [`problem`]: RFC 9457 problem documents for every error, and the extractors that
//!   answer a bad query or body with one naming the field.
//! - One file per resource: [`users`], [`devices`], [`sessions`], [`decisions`],
//!   [`audit`], [`policies`] (with [`policy_history`]: versions saved in the store), [`config`].
//! - [`console`]: the admin console, server-rendered pages under `{portal}/admin/` (a
//!   dashboard, users, devices, sessions, decisions and their traces, policies with
//!   what-if and a draft's validation, the audit log), one file per page, reading through
//!   the resource files above and under the same rules.
//!
//! What does not belong here: any decision. A decision re-run and what-if go through the
//! access pipeline (`access::what_if`); unlocking, resetting factors and ending sessions
//! through the services the portal and CLI use.

pub mod admission;
pub mod audit;
pub mod caller;
pub mod config;
pub mod console;
pub mod decisions;
pub mod devices;
pub mod openapi;
pub mod policies;
pub mod policy_history;
pub mod problem;
pub mod sessions;
pub mod tokens;
pub mod users;

use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use serde::Serialize;

use crate::app::state::Shared;
pub use caller::Caller;
pub use problem::Problem;
pub use tokens::Scope;

/// Where the API lives under the portal path.
pub const BASE: &str = "/admin/api/v1";

/// A query parameter an endpoint reads.
#[derive(Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// What it does.
    pub about: &'static str,
}

/// One endpoint of the API.
pub struct Endpoint {
    /// Its method.
    pub method: Method,
    /// Its path under [`BASE`] (`{name}` marks a path parameter).
    pub path: &'static str,
    /// Its OpenAPI `operationId`, and the audit record's `operation`.
    pub operation: &'static str,
    /// The group of endpoints (OpenAPI tag).
    pub tag: &'static str,
    /// The scope it needs; a `…:write` scope is a change.
    pub scope: Scope,
    /// What it does.
    pub summary: &'static str,
    /// Its query parameters.
    pub query: &'static [Param],
    /// What its request body is, when it reads one.
    pub body: Option<&'static str>,
}

const PAGE: [Param; 2] = [
    Param {
        name: "limit",
        about: "at most this many items (default 50, at most 200)",
    },
    Param {
        name: "offset",
        about: "skip this many items (default 0)",
    },
];

/// `user`, as the listings by owner read it.
const USER: Param = Param {
    name: "user",
    about: "only this username's",
};

/// A listing by owner's parameters.
const BY_OWNER: [Param; 3] = [USER, PAGE[0], PAGE[1]];

/// The time window of a search.
const SINCE_UNTIL: [Param; 2] = [
    Param {
        name: "since",
        about: "RFC 3339 time, inclusive",
    },
    Param {
        name: "until",
        about: "RFC 3339 time, exclusive",
    },
];

/// `limit` of a listing paged by cursor.
const LIMIT: Param = Param {
    name: "limit",
    about: "at most this many (default 50, at most 200)",
};

macro_rules! endpoint {
    ($m:ident $path:literal $op:literal $tag:literal $scope:ident $summary:literal
     $(query: $q:expr;)? $(body: $b:literal)?) => {
        Endpoint {
            method: Method::$m,
            path: $path,
            operation: $op,
            tag: $tag,
            scope: Scope::$scope,
            summary: $summary,
            query: { let _q: &'static [Param] = &[]; $( let _q: &'static [Param] = $q; )? _q },
            body: { let _b: Option<&'static str> = None; $( let _b = Some($b); )? _b },
        }
    };
}

/// Every endpoint of the API (the OpenAPI document is built from this table).
pub static ENDPOINTS: [Endpoint; 31] = [
    endpoint!(GET "/users" "listUsers" "users" UsersRead
        "Users by username; `search` matches username, name and e-mail"
        query: &[Param { name: "search", about: "a substring of the username, name or e-mail (any case)" },
                 PAGE[0], PAGE[1]];),
    endpoint!(POST "/users" "createUser" "users" UsersWrite
        "Creates a local user (no factors: send them an invitation with `stepgate user invite`)"
        body: "{\"username\": text, \"email\"?: text, \"name\"?: text, \"groups\"?: [text]}"),
    endpoint!(GET "/users/{username}" "showUser" "users" UsersRead
        "A user: record, lock state, enrolled factors (no secrets) and live session count"),
    endpoint!(POST "/users/{username}/disable" "disableUser" "users" UsersWrite
        "Disables a user and ends their sessions"),
    endpoint!(POST "/users/{username}/enable" "enableUser" "users" UsersWrite
        "Enables a disabled user"),
    endpoint!(POST "/users/{username}/unlock" "unlockUser" "users" UsersWrite
        "Lifts the user's lockout (failure count and bans)"),
    endpoint!(POST "/users/{username}/reset-factors" "resetFactors" "users" UsersWrite
        "Removes the user's factors (and the password when asked) and lifts any lock"
        body: "{\"include_password\"?: boolean}"),
    endpoint!(GET "/users/{username}/sessions" "listUserSessions" "sessions" SessionsRead
        "The user's live sessions (by handle, never the id)"),
    endpoint!(DELETE "/users/{username}/sessions" "revokeUserSessions" "sessions" SessionsWrite
        "Ends every session of the user"),
    endpoint!(GET "/sessions" "listSessions" "sessions" SessionsRead
        "Live sessions of every user (or of `user`)"
        query: &BY_OWNER;),
    endpoint!(DELETE "/sessions/{handle}" "revokeSession" "sessions" SessionsWrite
        "Ends the session with this handle; its next request is refused"),
    endpoint!(GET "/devices" "listDevices" "devices" DevicesRead
        "Registered devices of every user (or of `user`)"
        query: &BY_OWNER;),
    endpoint!(GET "/devices/{id}" "showDevice" "devices" DevicesRead
        "A device with its posture and compliance result (failing checks named)"),
    endpoint!(GET "/decisions" "searchDecisions" "decisions" DecisionsRead
        "Recorded decisions, newest first; follow `next` for the next page"
        query: &[USER,
                 Param { name: "app", about: "only this app's" },
                 Param { name: "outcome", about: "allow, step_up, deny, sign_in or unavailable" },
                 Param { name: "policy", about: "only those this policy decided" },
                 SINCE_UNTIL[0], SINCE_UNTIL[1], LIMIT,
                 Param { name: "cursor", about: "the `next` of the previous page" }];),
    endpoint!(GET "/decisions/{request_id}" "showDecision" "decisions" DecisionsRead
        "A recorded decision with its trace (as recorded, or worked out again from its context)"),
    endpoint!(POST "/decisions/{request_id}/rerun" "rerunDecision" "decisions" DecisionsRead
        "Decides the recorded request again under the configuration in force, through the access pipeline"),
    endpoint!(POST "/decisions/replay" "replayDecisions" "decisions" DecisionsRead
        "Decides every decision recorded over `since` again under a draft: how many outcomes would change, grouped by app and policy, with examples"
        query: &[Param { name: "since", about: "how far back (`24h`, `7d`; default 24h)" },
                 Param { name: "examples", about: "request ids shown per group (default 3, at most 20)" },
                 Param { name: "policies_only", about: "true: the body is a policy set (`policies:` only), loaded with the configuration files in force" }];
        body: "the draft as YAML text: a whole configuration, or a policy set with `policies_only=true`"),
    endpoint!(GET "/audit/export" "exportAudit" "audit" AuditRead
        "Audit events in append order, one a line (`application/x-ndjson`), as stepgate records them or as OCSF"
        query: &[Param { name: "format", about: "jsonl (default) or ocsf" },
                 Param { name: "kind", about: "only this kind" },
                 SINCE_UNTIL[0], SINCE_UNTIL[1]];),
    endpoint!(GET "/audit" "searchAudit" "audit" AuditRead
        "Audit events in append order (or newest first); follow `next_after_seq`"
        query: &[Param { name: "kind", about: "only this kind (`admin.write`, `login.failure`, …)" },
                 Param { name: "actor", about: "only this actor" },
                 Param { name: "subject", about: "only this subject" },
                 Param { name: "user", about: "only events this user (a username or user id) did or underwent" },
                 Param { name: "address", about: "only events from this client address" },
                 SINCE_UNTIL[0], SINCE_UNTIL[1],
                 Param { name: "after_seq", about: "only events after this sequence number" },
                 Param { name: "newest_first", about: "true for newest first" },
                 LIMIT];),
    endpoint!(GET "/audit/verify" "verifyAudit" "audit" AuditRead
        "Checks the audit log's hash chain end to end"),
    endpoint!(GET "/policies" "listPolicies" "policies" PoliciesRead
        "The policies in priority order, with report-only matches over the last 24 hours"),
    endpoint!(POST "/policies/validate" "validatePolicies" "policies" PoliciesRead
        "Loads a draft configuration (YAML text) and answers its errors with line and column"
        body: "the draft configuration as YAML text (`Content-Type: application/yaml`)"),
    endpoint!(POST "/policies/what-if" "whatIf" "policies" PoliciesRead
        "Decides a stated request context under the configuration in force, with the trace"
        body: "a request context (docs/configuration.md#request-context)"),
    endpoint!(GET "/policies/versions" "listPolicyVersions" "policies" PoliciesRead
        "Saved versions of the policy set (`admin.policy_edits: store`), newest first; follow `next` as `before`"
        query: &[Param { name: "before", about: "only versions numbered below this" }, LIMIT];),
    endpoint!(GET "/policies/versions/{version}" "showPolicyVersion" "policies" PoliciesRead
        "A saved version of the policy set, with its YAML text"),
    endpoint!(GET "/policies/versions/{version}/diff" "diffPolicyVersions" "policies" PoliciesRead
        "A unified diff from another version (`against`, by default the one before; 0 is the empty set) to this one"
        query: &[Param { name: "against", about: "the version to compare with" }];),
    endpoint!(POST "/policies/versions" "savePolicyVersion" "policies" PoliciesWrite
        "Saves a draft policy set as the next version and puts it in force on every node; a draft that does not load with the configuration files is refused with each error's line and column"
        body: "{\"text\": the policy set as YAML (`policies:` only), \"base\"?: the version it was edited from, \"note\"?: text}"),
    endpoint!(POST "/policies/versions/{version}/rollback" "rollbackPolicyVersion" "policies" PoliciesWrite
        "Saves this version's policy set again as the next version (one-click rollback), in force on every node"
        body: "{\"base\"?: the newest version as the caller saw it, \"note\"?: text} (may be empty)"),
    endpoint!(GET "/config" "showConfig" "config" ConfigRead
        "The configuration in force: its version hash, files and counts"),
    endpoint!(POST "/config/reload" "reloadConfig" "config" ConfigWrite
        "Reloads the configuration file (as SIGHUP does); an invalid file is refused and the running one kept"),
    endpoint!(GET "/openapi.json" "openapi" "meta" ConfigRead
        "This API's OpenAPI 3.1 document (needs no credentials)"),
];

/// The handler of an endpoint.
fn handler(e: &Endpoint) -> Option<MethodRouter<Shared>> {
    let f = MethodFilter::try_from(e.method.clone()).unwrap_or(MethodFilter::GET);
    Some(match e.operation {
        "listUsers" => on(f, users::list),
        "createUser" => on(f, users::create),
        "showUser" => on(f, users::show),
        "disableUser" => on(f, users::disable),
        "enableUser" => on(f, users::enable),
        "unlockUser" => on(f, users::unlock),
        "resetFactors" => on(f, users::reset_factors),
        "listUserSessions" => on(f, sessions::of_user),
        "revokeUserSessions" => on(f, sessions::revoke_of_user),
        "listSessions" => on(f, sessions::list),
        "revokeSession" => on(f, sessions::revoke),
        "listDevices" => on(f, devices::list),
        "showDevice" => on(f, devices::show),
        "searchDecisions" => on(f, decisions::search),
        "showDecision" => on(f, decisions::show),
        "rerunDecision" => on(f, decisions::rerun),
        "replayDecisions" => on(f, decisions::replay_draft),
        "exportAudit" => on(f, audit::export),
        "searchAudit" => on(f, audit::search),
        "verifyAudit" => on(f, audit::verify),
        "listPolicies" => on(f, policies::list),
        "validatePolicies" => on(f, policies::validate),
        "whatIf" => on(f, policies::what_if),
        "listPolicyVersions" => on(f, policy_history::list),
        "showPolicyVersion" => on(f, policy_history::show),
        "diffPolicyVersions" => on(f, policy_history::diff),
        "savePolicyVersion" => on(f, policy_history::save),
        "rollbackPolicyVersion" => on(f, policy_history::rollback),
        "showConfig" => on(f, config::show),
        "reloadConfig" => on(f, config::reload),
        "openapi" => on(f, openapi::serve),
        // Every operation of the table is above (the route table's unit test).
        _ => return None,
    })
}

async fn unknown() -> Problem {
    Problem::not_found("no such operation")
}

/// The API's routes under `portal_path`; `state` for the guard in front of each.
pub fn routes(state: &Shared, portal_path: &str) -> Router<Shared> {
    let mut r = Router::new();
    for e in &ENDPOINTS {
        let path = format!("{portal_path}{BASE}{}", e.path);
        let mut h = handler(e).unwrap_or_else(|| axum::routing::any(unknown));
        if e.operation != "openapi" {
            h = h.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                move |st, peer, req, next| caller::guard(e, st, peer, req, next),
            ));
        }
        r = r.route(&path, h);
    }
    // The console's pages.
    r = r.merge(console::routes(portal_path));
    // Anything else under the API answers a problem document, never the portal's page.
    r.route(
        &format!("{portal_path}{BASE}/{{*rest}}"),
        axum::routing::any(|| async {
            Problem::not_found(format!(
                "no such endpoint; see {BASE}/openapi.json for the API's endpoints"
            ))
        }),
    )
}

/// One page of a listing.
#[derive(Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// How many matched in all (listings by offset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
    /// The next page's `offset`, or cursor; none on the last page.
    pub next: Option<String>,
}

/// `limit` and `offset`, with the cap.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
#[serde(default)]
pub struct Paging {
    /// At most this many (capped at [`MAX_LIMIT`]).
    pub limit: usize,
    /// Skip this many.
    pub offset: usize,
}

/// The default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub const MAX_LIMIT: usize = 200;

impl Default for Paging {
    fn default() -> Self {
        Paging {
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl Paging {
    /// The page of `all` this asks for.
    pub fn page<T>(self, all: Vec<T>) -> Result<Page<T>, Problem> {
        if self.limit == 0 {
            return Err(Problem::bad_field("limit", "limit must be 1 or more"));
        }
        let limit = self.limit.min(MAX_LIMIT);
        let total = all.len();
        let items: Vec<T> = all.into_iter().skip(self.offset).take(limit).collect();
        let end = self.offset.saturating_add(items.len());
        Ok(Page {
            items,
            total: Some(total),
            next: (end < total).then(|| end.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_handler_and_a_unique_id() {
        let mut seen = std::collections::HashSet::new();
        for e in &ENDPOINTS {
            assert!(seen.insert(e.operation), "{} twice", e.operation);
            assert!(handler(e).is_some(), "{} has no handler", e.operation);
            assert!(e.path.starts_with('/'), "{}", e.path);
        }
    }

    #[test]
    fn pages_are_capped_and_say_where_the_next_starts() {
        let p = Paging {
            limit: 1000,
            offset: 0,
        }
        .page((0..250).collect())
        .unwrap();
        assert_eq!(p.items.len(), MAX_LIMIT);
        assert_eq!(p.next.as_deref(), Some("200"));
        let p = Paging {
            limit: 100,
            offset: 200,
        }
        .page((0..250).collect())
        .unwrap();
        assert_eq!(p.items.len(), 50);
        assert_eq!(p.next, None);
        assert!(Paging {
            limit: 0,
            offset: 0
        }
        .page(vec![1])
        .is_err());
    }
}
