//! `stepgate_request::cookies` on any `Cookie` header lines (the input split at `\n`; lines
//! that are not a valid header value are dropped). Besides never panicking:
//! - `parse_pair` accepts exactly the RFC 6265 `cookie-pair`s (a token name, a value of
//!   cookie-octets, optionally in double quotes), whitespace around them tolerated;
//! - for every name that appears, stepgate's own and a few respellings, `lookup` is `One(v)`
//!   exactly when one well-formed pair of every header line has that exact name (with value
//!   `v`), `Repeated` when more than one has, `Absent` when none has; `lookup_many` agrees
//!   with `lookup` for every name it is given, repeated names included;
//! - `has_key(name, key)` is `name_key(name) == key` for every key `name_key` gives;
//! - `set_cookie_name` is trimmed, holds no `;` or `=`, and is the pair's name when the
//!   piece is a well-formed pair.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use stepgate_request::cookies::{
    has_key, lookup, lookup_many, name_key, parse_pair, set_cookie_name, Lookup,
};

/// RFC 7230 `tchar`.
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6265 `cookie-octet`: visible ASCII but `"`, `,`, `;` and `\`.
fn cookie_octet(b: u8) -> bool {
    (0x21..=0x7E).contains(&b) && !b"\",;\\".contains(&b)
}

/// A piece (between `;`) as a `cookie-pair`, whitespace around it allowed.
fn well_formed(piece: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = piece.iter().position(|b| !matches!(b, b' ' | b'\t'))?;
    let end = piece.iter().rposition(|b| !matches!(b, b' ' | b'\t'))? + 1;
    let pair = &piece[start..end];
    let eq = pair.iter().position(|&b| b == b'=')?;
    let (name, value) = (&pair[..eq], &pair[eq + 1..]);
    if name.is_empty() || !name.iter().all(|&b| token_byte(b)) {
        return None;
    }
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        [b'"', ..] => return None,
        v => v,
    };
    value
        .iter()
        .all(|&b| cookie_octet(b))
        .then_some((name, value))
}

fuzz_target!(|data: &[u8]| {
    let lines: Vec<HeaderValue> = data
        .split(|&b| b == b'\n')
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    let mut map = HeaderMap::new();
    for l in &lines {
        map.append(http::header::COOKIE, l.clone());
    }
    // Every well-formed pair of every line, in order.
    let expected: Vec<(&str, &str)> = lines
        .iter()
        .flat_map(|l| l.as_bytes().split(|&b| b == b';'))
        .filter_map(well_formed)
        .filter_map(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
        .collect();

    for piece in lines
        .iter()
        .flat_map(|l| l.as_bytes().split(|&b| b == b';'))
    {
        let Ok(piece) = std::str::from_utf8(piece) else {
            continue;
        };
        let ours = well_formed(piece.as_bytes());
        let theirs = parse_pair(piece);
        assert_eq!(
            theirs.map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            ours,
            "{piece:?}"
        );
        let name = set_cookie_name(piece);
        assert!(
            !name.contains([';', '=']) && name == name.trim(),
            "{piece:?}"
        );
        if let Some((n, _)) = theirs {
            assert_eq!(name, n, "{piece:?}");
        }
    }

    let mut names: Vec<String> = vec![
        "s".into(),
        "stepgate_session".into(),
        "__Host-stepgate_session".into(),
    ];
    for (n, _) in expected.iter().take(8) {
        names.push((*n).to_owned());
        names.push(n.to_ascii_uppercase());
        names.push(format!("%{:02X}{}", n.as_bytes()[0], &n[1..]));
        names.push(format!("__Host-{n}"));
    }
    for name in &names {
        let found: Vec<&str> = expected
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect();
        let want = match found.as_slice() {
            [] => Lookup::Absent,
            [v] => Lookup::One(v),
            _ => Lookup::Repeated,
        };
        assert_eq!(lookup(&map, name), want, "{name:?} in {lines:?}");
    }
    for window in names.windows(3) {
        let many = lookup_many(&map, [&*window[0], &*window[1], &*window[0], &*window[2]]);
        for (i, n) in [&window[0], &window[1], &window[0], &window[2]]
            .iter()
            .enumerate()
        {
            assert_eq!(many[i], lookup(&map, n), "{n:?} among {window:?}");
        }
    }

    // Keys: every name, and every piece's text before `=`, against every key.
    let mut spellings = names.clone();
    for l in &lines {
        for piece in String::from_utf8_lossy(l.as_bytes()).split(';') {
            spellings.push(piece.split('=').next().unwrap_or(piece).to_owned());
        }
    }
    spellings.truncate(24);
    let keys: Vec<String> = spellings.iter().map(|s| name_key(s)).collect();
    for s in &spellings {
        for k in &keys {
            assert_eq!(has_key(s, k), name_key(s) == *k, "{s:?} against {k:?}");
        }
    }
});
