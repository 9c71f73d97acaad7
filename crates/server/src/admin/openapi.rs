//! The API's OpenAPI 3.1 document, built from the route table ([`super::ENDPOINTS`]) — the
//! table the router is built from — and served at `/admin/api/v1/openapi.json`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{caller, Endpoint, BASE, ENDPOINTS};
use crate::app::state::Shared;

/// `GET /openapi.json` (no credentials: it describes the API, nothing in it).
pub async fn serve(State(st): State<Shared>) -> Response {
    let rt = st.runtime.load_full();
    let mut r = Json(document(&rt.portal_url(BASE), &rt.session_cookie)).into_response();
    r = crate::app::responses::security_headers(r);
    r
}

/// The document, for a server at `server_url`, whose sessions ride in `session_cookie`.
pub fn document(server_url: &str, session_cookie: &str) -> Value {
    let mut paths = Map::new();
    for e in &ENDPOINTS {
        let item = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        item[e.method.as_str().to_ascii_lowercase()] = operation(e);
    }
    let tags: Vec<Value> = [
        "users",
        "sessions",
        "devices",
        "decisions",
        "audit",
        "policies",
        "config",
        "meta",
    ]
    .iter()
    .map(|t| json!({ "name": t }))
    .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "stepgate admin API",
            "version": "1",
            "description": "Users, devices, sessions, decisions, the audit log, policies and the configuration of a stepgate deployment. Authenticate with an API token (`stepgate admin token create`) whose scopes name what it may do, or with an administrator's portal session (a member of `admin.group`; a change also needs AAL3 within `admin.write_max_age`). Errors are RFC 9457 problem documents. See docs/admin-api.md.",
        },
        "servers": [{ "url": server_url }],
        "tags": tags,
        "paths": paths,
        "components": components(session_cookie),
    })
}

/// The document's security schemes and the problem document every error is.
fn components(session_cookie: &str) -> Value {
    json!({
        "securitySchemes": {
            "token": { "type": "http", "scheme": "bearer", "description": "An admin API token; its scopes must include the operation's `x-required-scope`." },
            "session": { "type": "apiKey", "in": "cookie", "name": session_cookie, "description": "An administrator's portal session." },
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "description": "An RFC 9457 problem document (application/problem+json).",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": { "type": "string" },
                    "title": { "type": "string" },
                    "status": { "type": "integer" },
                    "detail": { "type": "string" },
                    "instance": { "type": "string" },
                    "field": { "type": "string", "description": "The field or parameter that was wrong (400)." },
                    "required_scope": { "type": "string", "description": "The scope the token lacks (403)." },
                    "step_up_url": { "type": "string", "description": "Where an administrator steps up to AAL3 (403 step-up-required)." },
                    "errors": { "description": "Positioned errors of a configuration that does not load (422)." },
                },
            },
        },
        "responses": {
            "Problem": {
                "description": "A problem document.",
                "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } },
            },
        },
    })
}

fn operation(e: &Endpoint) -> Value {
    let mut params: Vec<Value> = e
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    params.extend(e.query.iter().map(|p| {
        json!({ "name": p.name, "in": "query", "required": false, "description": p.about, "schema": { "type": "string" } })
    }));
    let problem = json!({ "$ref": "#/components/responses/Problem" });
    let ok = if e.operation == "createUser" {
        "201"
    } else {
        "200"
    };
    let mut responses = Map::new();
    responses.insert(
        ok.into(),
        json!({ "description": "OK", "content": { "application/json": { "schema": {} } } }),
    );
    for code in ["400", "401", "403", "404", "409", "422", "503"] {
        responses.insert(code.into(), problem.clone());
    }
    let mut op = json!({
        "operationId": e.operation,
        "summary": e.summary,
        "tags": [e.tag],
        "parameters": params,
        "responses": responses,
    });
    if e.operation == "openapi" {
        op["security"] = json!([]);
    } else {
        op["security"] = json!([{ "token": [] }, { "session": [] }]);
        op["x-required-scope"] = json!(e.scope.as_str());
        op["description"] = json!(format!(
            "Needs `{}` ({}).",
            e.scope,
            caller::describe(e.scope)
        ));
    }
    if let Some(b) = e.body {
        let media = if e.operation == "validatePolicies" {
            "application/yaml"
        } else {
            "application/json"
        };
        op["requestBody"] = json!({
            "required": e.operation != "resetFactors",
            "description": b,
            "content": { media: { "schema": {} } },
        });
    }
    op
}
