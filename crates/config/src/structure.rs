//! Shape errors (unknown keys, wrong types, missing keys) reported all at once, each at the
//! key or value it is about, in words about the key rather than the parser's.
//!
//! serde stops at the first error, so when a file does not deserialise, each top-level
//! section, and each entry of a list section (`apps`, `policies`, `users`), is deserialised
//! again on its own; within each, an unknown key is taken out and the piece tried again,
//! so every misspelt key is reported in one run. The YAML library positions an unknown key
//! in a nested section at the section (it cannot walk through `Spanned` wrappers), so the
//! key is looked up in the tree again here; the nearest valid key is suggested.

use marked_yaml::types::{MarkedMappingNode, MarkedSequenceNode};
use marked_yaml::{Marker, Node};
use serde::de::DeserializeOwned;

/// At most this many shape problems are reported per file (the rest follow once these are
/// fixed): a hostile file with a million bad entries must not produce a million lines.
pub(crate) const MAX_PROBLEMS: usize = 100;

/// Unknown keys taken out of one section or list entry before giving up on it.
const MAX_RETRIES_PER_PIECE: usize = 32;

/// Nodes searched when looking for where an unknown key was written.
const MAX_SEARCH_NODES: usize = 10_000;

/// One shape problem: where, and what is wrong in the admin's words.
#[derive(Debug)]
pub(crate) struct Problem {
    pub marker: Option<Marker>,
    pub message: String,
}

/// Deserialises `node`, or returns every shape problem found in it (at most
/// [`MAX_PROBLEMS`]), in document order.
pub(crate) fn deserialize<T: DeserializeOwned>(node: &Node) -> Result<T, Vec<Problem>> {
    let first = match marked_yaml::from_node::<T>(node) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut problems = Vec::new();
    if let Some(root) = node.as_mapping() {
        'sections: for (key, value) in root.iter() {
            let pieces: Vec<(Node, Option<usize>)> = match value.as_sequence() {
                Some(seq) if !seq.is_empty() => seq
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let one = MarkedSequenceNode::new(*seq.span(), vec![item.clone()]).into();
                        (shell(root, key, one), Some(i))
                    })
                    .collect(),
                _ => vec![(shell(root, key, value.clone()), None)],
            };
            for (piece, index) in pieces {
                problems_in::<T>(piece, key.as_str(), index, &mut problems);
                if problems.len() >= MAX_PROBLEMS {
                    break 'sections;
                }
            }
        }
    }
    if problems.is_empty() {
        // Splitting found nothing (say, a problem only the whole file has): report the
        // error as first found.
        problems.push(describe(&first, node).0);
    }
    problems.truncate(MAX_PROBLEMS);
    problems.sort_by_key(|p| p.marker.map(|m| (m.line(), m.column())));
    Err(problems)
}

/// A top-level mapping holding only `key: value`.
fn shell(
    root: &MarkedMappingNode,
    key: &marked_yaml::types::MarkedScalarNode,
    value: Node,
) -> Node {
    let mut m = MarkedMappingNode::new_empty(*root.span());
    m.insert(key.clone(), value);
    m.into()
}

/// Collects the problems of one piece, taking out each unknown key and trying again.
fn problems_in<T: DeserializeOwned>(
    mut piece: Node,
    key: &str,
    index: Option<usize>,
    out: &mut Vec<Problem>,
) {
    for _ in 0..MAX_RETRIES_PER_PIECE {
        let Err(e) = marked_yaml::from_node::<T>(&piece) else {
            return;
        };
        let (mut problem, unknown_key_at) = describe(&e, &piece);
        if let Some(i) = index {
            // The piece holds entry `i` alone, so the library calls it `key[0]`.
            problem.message =
                problem
                    .message
                    .replacen(&format!("`{key}[0]"), &format!("`{key}[{i}]"), 1);
        }
        out.push(problem);
        match unknown_key_at {
            Some(at) if remove_key(&mut piece, at) => {}
            _ => return,
        }
    }
}

/// The problem `e` describes in `root`, and the position of the unknown key to take out
/// when it is one.
fn describe(e: &marked_yaml::FromNodeError, root: &Node) -> (Problem, Option<Marker>) {
    use marked_yaml::spanned_serde::Error;
    let path = e
        .path()
        .map(|p| p.trim_end_matches(".?").trim_end_matches('?'))
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string);
    let at = |detail: String| match &path {
        Some(p) => format!("at `{p}`: {detail}"),
        None => detail,
    };
    // The library stops walking the path at a `Spanned` wrapper and marks the section:
    // walk it here when every step resolves.
    let mark = path
        .as_deref()
        .and_then(|p| node_at(root, p))
        .and_then(|n| n.span().start().copied())
        .or(e.start_mark());
    match &**e {
        Error::UnknownFieldError(field, expected, _) => {
            // The path ends with the unknown key itself: name the mapping it is in.
            let path = path
                .as_deref()
                .map(|p| p.strip_suffix(field.as_str()).unwrap_or(p))
                .map(|p| p.trim_end_matches('.'))
                .filter(|p| !p.is_empty());
            let key_at = find_key(root, path, field, expected);
            let mut msg = match path {
                Some(p) => format!("unknown key `{field}` in `{p}`"),
                None => format!("unknown section `{field}`"),
            };
            match nearest(field, expected.iter().copied()) {
                Some(s) => msg.push_str(&format!(": did you mean `{s}`?")),
                None if expected.is_empty() => msg.push_str(": this section takes no keys"),
                None => msg.push_str(&format!(
                    ": expected one of {}",
                    expected
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
            (
                Problem {
                    marker: key_at.or(mark),
                    message: msg,
                },
                key_at,
            )
        }
        Error::IntegerParseFailure(..) => {
            let found = mark.and_then(|m| scalar_at(root, m)).unwrap_or_default();
            (
                Problem {
                    marker: mark,
                    message: at(format!(
                        "`{found}` is not a whole number: expected digits only, such as `8080` or `30`"
                    )),
                },
                None,
            )
        }
        Error::FloatParseFailure(..) => {
            let found = mark.and_then(|m| scalar_at(root, m)).unwrap_or_default();
            (
                Problem {
                    marker: mark,
                    message: at(format!("`{found}` is not a number: expected e.g. `2.5`")),
                },
                None,
            )
        }
        Error::NotBoolean(..) => {
            let found = mark.and_then(|m| scalar_at(root, m)).unwrap_or_default();
            (
                Problem {
                    marker: mark,
                    message: at(format!(
                        "`{found}` is not a boolean: expected `true` or `false`"
                    )),
                },
                None,
            )
        }
        Error::Other(msg, _) => (
            Problem {
                marker: mark,
                message: at(reword(msg)),
            },
            None,
        ),
    }
}

/// serde's wording, in the configuration's terms.
fn reword(msg: &str) -> String {
    const TYPES: &[(&str, &str)] = &[
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number, 0 or more"),
        ("usize", "a whole number, 0 or more"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a boolean", "`true` or `false`"),
        ("a sequence", "a list (`- item` lines, or `[a, b]`)"),
        ("a string", "a text value"),
        ("a map", "a mapping of keys (`key: value` lines)"),
    ];
    let mut out = msg.to_string();
    if let Some(missing) = msg.strip_prefix("missing field ") {
        return format!("missing required key {missing}");
    }
    if let Some((found, expected)) = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "))
    {
        let expected = TYPES
            .iter()
            .find(|(t, _)| *t == expected)
            .map_or(expected, |(_, words)| words);
        let expected = expected
            .strip_prefix("struct ")
            .map_or(expected, |_| "a mapping of keys (`key: value` lines)");
        out = format!("found {found}, expected {expected}");
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        if let Some((variant, choices)) = rest.split_once('`') {
            let options: Vec<&str> = choices.split('`').skip(1).step_by(2).collect();
            if let Some(s) = nearest(variant, options.iter().copied()) {
                out.push_str(&format!(" (did you mean `{s}`?)"));
            }
        }
    }
    out
}

/// The valid word closest to `word`, when close enough to be a likely typo.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// One step of a rendered serde path (`apps[0].routes[1].path`).
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() && name != "?" {
            out.push(Step::Key(name));
        }
        // Map keys are the admin's text and may hold brackets: only `[digits]` is an index.
        while let (Some(inner), Some(close)) = (rest.strip_prefix('['), rest.find(']')) {
            if let Some(i) = inner.get(..close - 1).and_then(|d| d.parse().ok()) {
                out.push(Step::Index(i));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// The node `path` leads to, when every step of it resolves.
fn node_at<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    let mut node = root;
    for step in steps(path) {
        node = match step {
            Step::Key(k) => node.as_mapping()?.get_node(k)?,
            Step::Index(i) => node.as_sequence()?.get(i)?,
        };
    }
    Some(node)
}

/// Where key `field` of the mapping the path leads to was written. The path is followed
/// as far as the tree allows; below that, the mapping holding `field` whose other keys are
/// most of them valid there (`expected`) is taken.
fn find_key(root: &Node, path: Option<&str>, field: &str, expected: &[&str]) -> Option<Marker> {
    let mut node = root;
    for step in path.map(steps).unwrap_or_default() {
        let next = match step {
            Step::Key(k) => node.as_mapping().and_then(|m| m.get_node(k)),
            Step::Index(i) => node.as_sequence().and_then(|s| s.get(i)),
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    let mut best: Option<(usize, Marker)> = None;
    let mut queue = std::collections::VecDeque::from([node]);
    let mut seen = 0;
    while let Some(n) = queue.pop_front() {
        seen += 1;
        if seen > MAX_SEARCH_NODES {
            break;
        }
        match n {
            Node::Mapping(m) => {
                if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == field) {
                    let score = m.keys().filter(|k| expected.contains(&k.as_str())).count();
                    if let Some(start) = k.span().start() {
                        if best.is_none_or(|(s, _)| score > s) {
                            best = Some((score, *start));
                        }
                    }
                }
                queue.extend(m.values());
            }
            Node::Sequence(s) => queue.extend(s.iter()),
            Node::Scalar(_) => {}
        }
    }
    best.map(|(_, m)| m)
}

/// Removes the mapping entry whose key was written at `at`; false when there is none.
fn remove_key(node: &mut Node, at: Marker) -> bool {
    match node {
        Node::Mapping(m) => {
            let hit = m
                .keys()
                .find(|k| k.span().start().is_some_and(|s| *s == at))
                .cloned();
            if let Some(k) = hit {
                m.remove(&k);
                return true;
            }
            m.values_mut().any(|v| remove_key(v, at))
        }
        Node::Sequence(s) => s.iter_mut().any(|v| remove_key(v, at)),
        Node::Scalar(_) => false,
    }
}

/// The text of the scalar written at `at`.
fn scalar_at(node: &Node, at: Marker) -> Option<String> {
    match node {
        Node::Scalar(s) => s
            .span()
            .start()
            .is_some_and(|m| *m == at)
            .then(|| s.as_str().to_string()),
        Node::Mapping(m) => m.values().find_map(|v| scalar_at(v, at)),
        Node::Sequence(s) => s.iter().find_map(|v| scalar_at(v, at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_brackets_in_keys_are_walked_without_panicking() {
        let seen = |p: &str| {
            steps(p)
                .iter()
                .map(|s| match s {
                    Step::Key(k) => k.to_string(),
                    Step::Index(i) => format!("#{i}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seen("apps[1].routes[0].path"),
            ["apps", "#1", "routes", "#0", "path"]
        );
        assert_eq!(seen("networks.a[b]]"), ["networks", "a"]);
        assert_eq!(seen("x]["), ["x]"]);
        assert_eq!(seen("a[]"), ["a"]);
    }

    #[test]
    fn a_key_with_brackets_is_reported_not_panicked_on() {
        let node = marked_yaml::parse_yaml(0, "networks:\n  \"a[b]]\": 7\n").unwrap();
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct File {
            networks: std::collections::BTreeMap<String, Vec<String>>,
        }
        let problems = deserialize::<File>(&node).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
