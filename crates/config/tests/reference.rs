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

/// `docs/configuration.md`'s key index: `| `key` | type |` rows under `## Key index`.
fn documented() -> Vec<(String, String)> {
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
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((key.to_string(), cells.get(2)?.to_string()))
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
    let docs = documented();
    let documented_keys: BTreeSet<&str> = docs.iter().map(|(k, _)| k.as_str()).collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|(k, _)| !documented_keys.contains(k.as_str()))
        .map(|(k, t)| format!("| `{k}` | {t} |"))
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
