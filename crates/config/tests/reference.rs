//! docs/configuration.md documents every key the configuration accepts, and nothing else.
//!
//! The accepted keys are read from the loader itself: a mapping holding one unknown key is
//! refused with the list of keys valid there (serde's `deny_unknown_fields`), so probing each
//! section, and each key that turns out to be a section or a list of them, walks the whole
//! tree with no second list to keep in step.

use std::collections::BTreeSet;

use stepgate_config::load_str;

const PROBE: &str = "zz_probe_key";

/// YAML for `value` at the dotted `path` (`apps[].routes[].x`: list items).
fn nest(path: &[String], value: &str) -> String {
    let mut yaml = value.to_string();
    for seg in path.iter().rev() {
        yaml = match seg.strip_suffix("[]") {
            Some(k) => format!("{{ {k}: [ {yaml} ] }}"),
            None => format!("{{ {seg}: {yaml} }}"),
        };
    }
    yaml
}

/// The keys valid in the mapping at `path`, when it is one.
fn keys_at(path: &[String]) -> Option<Vec<String>> {
    let text = nest(path, &format!("{{ {PROBE}: 1 }}"));
    let err = load_str("probe.yaml", &text, None).err()?;
    // Only an unknown *key* in a mapping (enum variants are values, documented with them).
    let d = err.diagnostics.iter().find(|d| {
        d.message.starts_with(&format!("unknown key `{PROBE}`"))
            || d.message.starts_with(&format!("unknown section `{PROBE}`"))
    })?;
    // "...: expected one of `a`, `b`" or "did you mean" (not for the probe's name).
    let list = d.message.split_once("expected one of ")?.1;
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every accepted key path, `a.b`, with `[]` after list sections (`apps[].routes[].path`).
pub fn accepted_keys() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        assert!(path.len() < 10, "probing ran away at {path:?}");
        let Some(keys) = keys_at(&path) else { continue };
        for k in keys {
            let mut child = path.clone();
            child.push(k.clone());
            if keys_at(&child).is_some() {
                todo.push(child.clone());
            } else {
                let mut item = path.clone();
                item.push(format!("{k}[]"));
                if keys_at(&item).is_some() {
                    todo.push(item.clone());
                    child = item;
                }
            }
            out.insert(child.join("."));
        }
    }
    out
}

/// `apps[].routes[].tags` as the loader names it in messages: `apps[0].routes[0].tags`.
fn rendered(path: &[String]) -> String {
    path.iter()
        .map(|s| s.replace("[]", "[0]"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The type of the leaf key at `path`, as the loader accepts it.
fn type_of(path: &[String], sections: &BTreeSet<String>) -> String {
    let key = path.join(".");
    if sections.contains(&key) {
        return if key.ends_with("[]") {
            "list of mappings".into()
        } else {
            "mapping".into()
        };
    }
    let at = format!("at `{}`:", rendered(path));
    let rejected = |value: &str| -> Option<String> {
        let text = nest(path, value);
        let err = load_str("probe.yaml", &text, None).err()?;
        err.diagnostics
            .iter()
            .find(|d| d.message.starts_with(&at))
            .map(|d| d.message.clone())
    };
    match rejected("\"zz text\"") {
        None => return "text".into(),
        Some(m) if m.contains("unknown variant") => {
            if let Some((_, choices)) = m.split_once("expected ") {
                let words: Vec<&str> = choices.split('`').skip(1).step_by(2).collect();
                if !words.is_empty() {
                    return format!("one of {}", words.join(", "));
                }
            }
        }
        Some(_) => {}
    }
    for (value, name) in [
        ("1.5", "number"),
        ("7", "whole number"),
        ("true", "boolean"),
        ("90s", "duration"),
        ("[\"zz\"]", "list of text"),
        ("[]", "list"),
        ("{}", "mapping"),
    ] {
        if rejected(value).is_none() {
            return name.into();
        }
    }
    "see the section".into()
}

/// One row of `docs/configuration.md`'s key index.
#[derive(Debug)]
struct Row {
    key: String,
    ty: String,
    default: String,
    required: String,
    example: String,
    secret: String,
}

/// `docs/configuration.md`'s key index: `| `key` | type | default | required | example | secret from |`
/// rows under `## Key index`.
fn documented() -> Vec<Row> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let index = text
        .split_once("\n## Key index\n")
        .expect("docs/configuration.md has a `## Key index` section")
        .1;
    let index = index.split("\n## ").next().unwrap_or(index);
    index
        .lines()
        .filter_map(|l| {
            // Split on the table's `|` but not on one inside a code span (`a|b`).
            let mut cells = Vec::new();
            let mut cell = String::new();
            let mut in_code = false;
            for ch in l.chars() {
                match ch {
                    '`' => {
                        in_code = !in_code;
                        cell.push(ch);
                    }
                    '|' if !in_code => cells.push(std::mem::take(&mut cell).trim().to_string()),
                    _ => cell.push(ch),
                }
            }
            let key = cells
                .get(1)?
                .strip_prefix('`')?
                .strip_suffix('`')?
                .to_string();
            let cell = |i: usize| cells.get(i).cloned().unwrap_or_default();
            Some(Row {
                key,
                ty: cell(2),
                default: cell(3),
                required: cell(4),
                example: cell(5),
                secret: cell(6),
            })
        })
        .collect()
}

#[test]
fn the_key_index_lists_every_accepted_key_with_its_type_and_nothing_else() {
    let keys = accepted_keys();
    let sections: BTreeSet<String> = keys
        .iter()
        .filter(|k| {
            let path: Vec<String> = k.split('.').map(str::to_string).collect();
            keys_at(&path).is_some()
        })
        .cloned()
        .collect();
    let expected: Vec<(String, String)> = keys
        .iter()
        .map(|k| {
            let path: Vec<String> = k.split('.').map(str::to_string).collect();
            (k.clone(), type_of(&path, &sections))
        })
        .collect();
    let docs: Vec<(String, String)> = documented().into_iter().map(|r| (r.key, r.ty)).collect();
    let documented_keys: BTreeSet<&str> = docs.iter().map(|(k, _)| k.as_str()).collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|(k, _)| !documented_keys.contains(k.as_str()))
        .map(|(k, t)| format!("| `{k}` | {t} | default | required | example |  |"))
        .collect();
    let unknown: Vec<&str> = docs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !keys.contains(*k))
        .collect();
    let wrong_type: Vec<String> = docs
        .iter()
        .filter_map(|(k, t)| {
            let want = &expected.iter().find(|(e, _)| e == k)?.1;
            (t != want).then(|| format!("`{k}`: documented `{t}`, accepted `{want}`"))
        })
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && wrong_type.is_empty(),
        "docs/configuration.md's key index is out of step with the loader.\nAccepted but not documented (add these rows):\n{}\nDocumented but not accepted: {unknown:?}\nWrong type: {wrong_type:#?}",
        missing.join("\n")
    );
    // The probe is real: it finds keys the index must hold.
    assert!(keys.contains("factors.webauthn.rp_origin") && keys.contains("log.format"));
}

#[test]
fn every_key_has_a_default_says_whether_it_is_required_and_has_an_example() {
    let mut lacking = Vec::new();
    for r in documented() {
        for (what, cell) in [
            ("default", &r.default),
            ("required", &r.required),
            ("example", &r.example),
        ] {
            let cell = cell.trim();
            // "section" was the old placeholder that sent the reader elsewhere for the value.
            if cell.is_empty() || cell == "?" || cell == "section" || cell.starts_with("see ") {
                lacking.push(format!("`{}`: no {what} (`{cell}`)", r.key));
            }
        }
        let req = r.required.as_str();
        if !(req == "yes"
            || req == "no"
            || req.starts_with("with `")
            || req.starts_with("for ")
            || req.starts_with("one of `")
            || req.starts_with("the key, from `")
            || req.starts_with("one targeting")
            || req.starts_with("behind ")
            || req.starts_with("Intune"))
        {
            lacking.push(format!(
                "`{}`: required is `{req}`: expected yes, no, or when (`with `section``, `for …`, `one of `a`, `b``)",
                r.key
            ));
        }
        if req == "yes" && r.default != "—" {
            lacking.push(format!(
                "`{}`: required, so its default is `—`, not `{}`",
                r.key, r.default
            ));
        }
    }
    assert!(
        lacking.is_empty(),
        "docs/configuration.md's key index:\n{}",
        lacking.join("\n")
    );
}

/// Whether the key holds (or names where to find) a secret: by its name, for a value (not
/// a section, a duration or a switch), and not an address or a header name.
fn looks_secret(r: &Row) -> bool {
    let leaf = r.key.rsplit('.').next().unwrap_or(&r.key);
    let value = r.ty == "text" || r.ty == "see the section" || r.ty.starts_with("one of file");
    let by_name = [
        "secret",
        "password",
        "token",
        "api_key",
        "key_file",
        "key_env",
        "credential",
        "private",
    ]
    .iter()
    .any(|w| leaf.contains(w))
        && !leaf.ends_with("_url")
        && !leaf.ends_with("_header");
    (value && by_name)
        || matches!(
            r.key.as_str(),
            "factors.email_otp.transport" | "factors.sms_otp.transport"
        )
}

/// Secrets a configuration can take only from a file: a TLS private key is a PEM file by
/// nature (as nginx, Traefik and Caddy take it).
const FILE_ONLY_SECRETS: &[&str] = &[
    "server.tls.key_file",
    "audit.stream[].client_key_file",
    "identity_providers[].private_key_jwt.key_file",
];
/// Secrets inside a transport's settings, whose keys the index does not list one by one:
/// a file (`password_file`, `headers_file`) or an environment variable (`password_env`,
/// `headers_env`) is the way there.
const TRANSPORT_SECRETS: &[&str] = &["factors.email_otp.transport", "factors.sms_otp.transport"];

#[test]
fn every_secret_says_how_to_keep_it_out_of_the_file_and_those_keys_exist() {
    let rows = documented();
    let keys: BTreeSet<String> = rows.iter().map(|r| r.key.clone()).collect();
    let mut wrong = Vec::new();
    let mut secrets = 0;
    for r in &rows {
        if !looks_secret(r) {
            continue;
        }
        secrets += 1;
        let s = r.secret.as_str();
        if s.is_empty() {
            wrong.push(format!("`{}` is a secret: say where it comes from", r.key));
            continue;
        }
        if s.starts_with("not a secret:") {
            continue;
        }
        // The keys the cell names (`key_file`, `bearer_token_env`) must be accepted siblings.
        let parent = r.key.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        let named: Vec<&str> = s
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.ends_with("_file") || w.ends_with("_env"))
            .collect();
        for n in &named {
            let sibling = if parent.is_empty() {
                n.to_string()
            } else {
                format!("{parent}.{n}")
            };
            let inside_transport = TRANSPORT_SECRETS.contains(&r.key.as_str());
            if !inside_transport && !keys.contains(&sibling) {
                wrong.push(format!(
                    "`{}` names `{n}`, but the configuration has no `{sibling}`",
                    r.key
                ));
            }
        }
        let file = named.iter().any(|n| n.ends_with("_file")) || s.contains("{file: ");
        let env = named.iter().any(|n| n.ends_with("_env")) || s.contains("{env: ");
        let ok = if FILE_ONLY_SECRETS.contains(&r.key.as_str()) {
            file
        } else {
            file && env
        };
        if !ok {
            wrong.push(format!(
                "`{}`: a secret needs a `*_file` and a `*_env` way (or `{{file: …}}` / `{{env: …}}`); the index says `{s}`",
                r.key
            ));
        }
    }
    assert!(secrets >= 10, "only {secrets} secrets found");
    assert!(
        wrong.is_empty(),
        "docs/configuration.md's key index:\n{}",
        wrong.join("\n")
    );
}

/// The keys a mapping at `prefix` must have to load, so a key beside them can be tried.
fn context(prefix: &str, path: &[String]) -> &'static str {
    match prefix {
        "" if path[0] == "oidc" || path[0] == "gateway" || path[0] == "policies[]" => {
            "apps: [ { id: wiki, hosts: [wiki.example.com] } ]"
        }
        // `enrolment.at_first_sign_in.networks` names zones of `networks`.
        "" if path[0] == "enrolment" => "networks: { corporate: [10.0.0.0/8] }",
        "enrolment.at_first_sign_in" => "networks: [corporate]",
        "apps[]" => "id: zz",
        "apps[].routes[]" => "path: /zz",
        "policies[]" => "name: zz, priority: 1, outcome: allow",
        "policies[].targets.routes[]" => "path: /zz",
        "users[]" => "username: zz",
        "oidc.clients[]" => "id: zz-client, app: wiki, redirect_uris: [\"https://zz.example/cb\"], secret_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2f5wN5M6UEJdjJkQfyr6AHrhXr0LD4I2WHEbZ1PQ0q4\"",
        "identity_providers[]" => "id: zz, issuer: \"https://idp.example\", client_id: zz, client_secret: { env: ZZ }",
        "identity_providers[].private_key_jwt" => "key_file: zz.pem",
        "ldap" => "url: \"ldaps://ldap.example\", dn_template: \"uid={username},dc=example\"",
        "store.postgres" => "url: \"postgres://zz@127.0.0.1/zz\"",
        "log.otlp" => "endpoint: \"http://127.0.0.1:4318\"",
        "store.redis" => "url: \"redis://127.0.0.1:6379\"",
        "server.tls" => "cert_file: zz.pem, key_file: zz.key",
        "devices.recheck" => "url: \"https://uem.example/hook\"",
        "devices.sources[]" => "name: zz, token_sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"",
        "devices.caep.transmitters[]" => "name: zz, issuer: \"https://idp.example\", audience: zz, jwks_url: \"https://idp.example/jwks\"",
        "devices.compliance.policies[]" => "name: zz",
        "devices.compliance.policies[].rules[]" => "id: zz, non_compliant_if: \"encrypted == false\"",
        "devices.connectors[]" => "name: zz, kind: hexnode, url: \"https://zz.hexnodemdm.com\", secret: { env: ZZ }",
        "gateway.bearer.issuers[]" => "issuer: \"https://idp.example\", jwks_url: \"https://idp.example/jwks\", audiences: [zz]",
        "signals.geoip" => "database: zz.mmdb",
        "signals.ip_risk.http" => "url: \"https://risk.example/{ip}\", score_path: score",
        "signals.ip_risk.feeds[]" => "path: zz.txt",
        "signals.client_certificates.forwarded" => "header: X-Client-Cert",
        "signals.client_certificates.authorities[]" => "name: zz, ca_file: zz.pem",
        "factors.webauthn.attestation_cas[]" => "pem_file: zz.pem, aaguids: [\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"]",
        // A stream of the kind the key belongs to, with what that kind requires.
        "audit.stream[]" => match path.last().map(String::as_str) {
            Some("url" | "secret_file" | "secret_env" | "kind") => {
                "name: zz, kind: webhook, url: \"https://siem.example/hook\""
            }
            Some("client_cert_file" | "client_key_file") => {
                "name: zz, kind: syslog, address: \"siem.example:6514\", ca_file: zz.pem, client_cert_file: zz.pem, client_key_file: zz.key"
            }
            _ => "name: zz, kind: syslog, address: \"siem.example:6514\", ca_file: zz.pem",
        },
        _ => "",
    }
}

/// `a: 1, b: [2, 3], c: "x, y"` as its entries (commas inside brackets or quotes kept).
fn top_level_entries(flow: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut quoted) = (0i32, false);
    for ch in flow.chars() {
        match ch {
            '"' => quoted = !quoted,
            '[' | '{' if !quoted => depth += 1,
            ']' | '}' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// A configuration holding the mapping at `path` (with what it needs to load) and, when
/// given, `value` at its last key.
fn with_key(path: &[String], value: Option<&str>) -> String {
    fn level(prefix: &str, rest: &[String], all: &[String], value: Option<&str>) -> String {
        let seg = &rest[0];
        // The context's keys, but the one given a value here.
        let leaf = (rest.len() == 1 && value.is_some()).then(|| seg.trim_end_matches("[]"));
        let mut entries: Vec<String> = top_level_entries(context(prefix, all))
            .into_iter()
            .filter(|e| leaf.is_none_or(|k| e.split_once(':').map(|(x, _)| x.trim()) != Some(k)))
            .collect();
        if rest.len() == 1 {
            if let Some(v) = value {
                let k = seg.strip_suffix("[]").unwrap_or(seg);
                entries.push(format!("{k}: {v}"));
            }
        } else {
            let (k, list) = match seg.strip_suffix("[]") {
                Some(k) => (k, true),
                None => (seg.as_str(), false),
            };
            let child = if prefix.is_empty() {
                seg.clone()
            } else {
                format!("{prefix}.{seg}")
            };
            let inner = level(&child, &rest[1..], all, value);
            entries.push(if list {
                format!("{k}: [ {inner} ]")
            } else {
                format!("{k}: {inner}")
            });
        }
        format!("{{ {} }}", entries.join(", "))
    }
    level("", path, path, value)
}

/// The loaded configuration as text, without what depends on the file's text rather than
/// its meaning (the version hash, the YAML positions).
fn meaning(yaml: &str) -> Result<String, String> {
    let c = load_str("defaults.yaml", yaml, None).map_err(|e| e.to_string())?;
    let text = format!("{c:?}");
    let text = text.split(", sources: SourceMap").next().unwrap_or(&text);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("Marker {") {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        rest = &rest[rest.find('}').map_or(rest.len(), |j| j + 1)..];
    }
    out.push_str(rest);
    // A position the loader kept (`Some(Marker …)`) or not: no difference in meaning.
    let out = out.replace("Some()", "None");
    let out = match (out.find("version: \""), out.find("\", apps:")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &out[..a], &out[b + 3..]),
        _ => out,
    };
    Ok(out)
}

/// Documented defaults the loader leaves unset and the server fills in when it starts (so
/// setting the value explicitly changes what the loader returns, not what happens).
const APPLIED_AT_START: &[(&str, &str)] = &[
    ("sessions.cache_ttl", "`2s`: SessionsConfig::cache_ttl()"),
    ("gateway.timeout", "`60s`: applied by the gateway"),
    ("gateway.upgraded_recheck", "`30s`: applied by the gateway"),
    (
        "devices.connectors[].max_state",
        "`managed`: ConnectorConfig::as_source",
    ),
    ("oidc.issuer", "`server.public_url` names another key"),
];

#[test]
fn documented_defaults_are_what_the_loader_uses() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for r in documented() {
        if APPLIED_AT_START.iter().any(|(k, _)| *k == r.key) {
            continue;
        }
        // Only a default that is one literal value (`30s`, `[]`, `stepgate`), not words.
        let d = r.default.trim();
        let Some(lit) = d
            .strip_prefix('`')
            .and_then(|x| x.strip_suffix('`'))
            .filter(|x| !x.contains('`'))
        else {
            continue;
        };
        if r.ty == "mapping" && lit != "{}" {
            continue;
        }
        let value = if r.ty == "text" && !lit.starts_with('"') {
            format!("{lit:?}")
        } else {
            lit.to_string()
        };
        let path: Vec<String> = r.key.split('.').map(str::to_string).collect();
        let base = with_key(&path, None);
        let probe = with_key(&path, Some(&value));
        match (meaning(&base), meaning(&probe)) {
            (Err(e), _) => wrong.push(format!(
                "`{}`: the configuration around it does not load (give `context()` what it needs): {base}\n  {e}",
                r.key
            )),
            (_, Err(e)) => wrong.push(format!(
                "`{}`: the documented default `{lit}` is refused: {e}",
                r.key
            )),
            (Ok(a), Ok(b)) if a != b => {
                let at = a
                    .char_indices()
                    .zip(b.chars())
                    .find(|((_, x), y)| x != y)
                    .map_or(0, |((i, _), _)| i);
                let from = at.saturating_sub(80);
                wrong.push(format!(
                    "`{}`: documented default `{lit}`, but the loader's differs:\n  unset: …{}…\n  `{lit}`: …{}…",
                    r.key,
                    &a[from..(at + 80).min(a.len())],
                    &b[from..(at + 80).min(b.len())]
                ))
            }
            _ => checked += 1,
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md's key index ({checked} defaults agree):\n{}",
        wrong.join("\n")
    );
    assert!(checked >= 150, "only {checked} defaults were compared");
}

/// A secret from a file and from an environment variable at once is refused: which one
/// wins would be a guess.
#[test]
fn a_secret_from_both_a_file_and_an_environment_variable_is_refused() {
    for (yaml, key) in [
        (
            "devices: { recheck: { url: \"https://uem.example/hook\", bearer_token_env: T, bearer_token_file: t.txt } }",
            "`bearer_token_env` and `bearer_token_file`",
        ),
        (
            "signals: { ip_risk: { http: { url: \"https://risk.example/{ip}\", score_path: s, api_key_header: Key, api_key_env: K, api_key_file: k.txt } } }",
            "`api_key_env` and `api_key_file`",
        ),
    ] {
        let e = load_str("both.yaml", yaml, None).expect_err(yaml).to_string();
        assert!(e.contains(key) && e.contains("not both"), "{yaml}: {e}");
    }
    // One of them is fine, and a key file without its header is refused as before.
    load_str(
        "one.yaml",
        "signals: { ip_risk: { http: { url: \"https://risk.example/{ip}\", score_path: s, api_key_header: Key, api_key_file: k.txt } } }\ndevices: { cookie: { key_file: cookie.key } }",
        None,
    )
    .unwrap();
    let e = load_str(
        "nohdr.yaml",
        "signals: { ip_risk: { http: { url: \"https://risk.example/{ip}\", score_path: s, api_key_file: k.txt } } }",
        None,
    )
    .expect_err("a key without a header")
    .to_string();
    assert!(e.contains("api_key_header"), "{e}");
}

/// Every example that is one value is one the loader accepts where the key is.
#[test]
fn every_single_value_example_loads() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for r in documented() {
        let e = r.example.trim();
        let Some(lit) = e
            .strip_prefix('`')
            .and_then(|x| x.strip_suffix('`'))
            .filter(|x| !x.contains('`') && !x.contains('…') && !x.contains("..."))
        else {
            continue;
        };
        let value = if r.ty == "text" && !lit.starts_with('"') {
            format!("{lit:?}")
        } else {
            lit.to_string()
        };
        let path: Vec<String> = r.key.split('.').map(str::to_string).collect();
        match load_str("example.yaml", &with_key(&path, Some(&value)), None) {
            Ok(_) => checked += 1,
            Err(e) => wrong.push(format!("`{}`: the example `{lit}` is refused: {e}", r.key)),
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md's key index ({checked} examples load):\n{}",
        wrong.join("\n")
    );
    assert!(checked >= 250, "only {checked} examples were tried");
}
