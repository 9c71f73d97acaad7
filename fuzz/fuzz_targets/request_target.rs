//! `stepgate_request::read_target` on any text as the request target, under each of the four
//! `TargetRules`. A refusal is always an answer; what is accepted must be the one normal form
//! the module documents, and mean to an upstream exactly what the target as sent means:
//! - the query is the raw one, untouched but for `%00` being refused;
//! - the path starts with `/`, is printable ASCII with no `\`, `;`, `.` or `..` segment, and
//!   every escape left is in upper case, of a byte that is not unreserved, never `%2F`,
//!   `%5C`, `%00` or `%3B`, and decodes (with the rest) to UTF-8;
//! - an upstream that decodes it and resolves dot segments, merging `//` before (nginx, many
//!   frameworks) or after (RFC 3986), reads the same segments from the normal form as from
//!   the target as sent (its `;` parameters removed when the rules strip them);
//! - `unchanged()` says whether the path is the one sent, and reading the normal form again
//!   gives it back unchanged;
//! - stripping path parameters only lets more through (what is refused without it is `;`),
//!   and a case-insensitive app only refuses more (what it adds is `CaseFoldsToAscii`);
//! - in a case-insensitive app no letter of the decoded path has an upper, lower or folded
//!   case holding an ASCII character.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stepgate_request::{read_target, Target, TargetRefusal, TargetRules};

const RULES: [TargetRules; 4] = [
    TargetRules {
        strip_path_parameters: false,
        case_insensitive: false,
    },
    TargetRules {
        strip_path_parameters: true,
        case_insensitive: false,
    },
    TargetRules {
        strip_path_parameters: false,
        case_insensitive: true,
    },
    TargetRules {
        strip_path_parameters: true,
        case_insensitive: true,
    },
];

/// The segments an upstream serves for `path`: every escape decoded, dot segments resolved
/// with `//` merged first or kept until after, and empty segments (which route patterns
/// ignore) dropped. `None` when the escapes are not UTF-8.
fn upstream_reading(path: &str, merge_first: bool) -> Option<Vec<String>> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/').skip(1) {
        match seg {
            "" if merge_first => {}
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    Some(
        out.into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// `path` with each segment's `;` parameters removed, as upstreams that read them do.
fn without_parameters(path: &str) -> String {
    path.split('/')
        .map(|s| s.split(';').next().unwrap_or(s))
        .collect::<Vec<_>>()
        .join("/")
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether case mapping takes `c`, in one or two steps, to something holding ASCII.
fn case_reaches_ascii(c: char) -> bool {
    let once = c.to_lowercase().chain(c.to_uppercase());
    once.flat_map(|m| {
        std::iter::once(m)
            .chain(m.to_lowercase())
            .chain(m.to_uppercase())
    })
    .any(|m| m.is_ascii())
}

fn check_accepted(raw: &str, rules: TargetRules, t: &Target<'_>) {
    let (raw_path, raw_query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    assert_eq!(t.query, raw_query, "the query is the one sent: {raw:?}");
    if let Some(q) = t.query {
        assert!(!q.contains("%00"), "{raw:?}");
    }
    let path = &*t.path;
    let origin = match t.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    assert_eq!(t.to_origin_form(), origin);
    assert_eq!(
        t.unchanged(),
        path == raw_path,
        "unchanged() for {raw:?} read as {path:?}"
    );

    assert!(path.starts_with('/'), "{raw:?} read as {path:?}");
    for b in path.bytes() {
        assert!(
            (0x21..=0x7E).contains(&b) && !b"\\#\"<>`?;".contains(&b),
            "{:?} in {path:?} from {raw:?}",
            b as char
        );
    }
    for seg in path.split('/').skip(1) {
        assert!(
            seg != "." && seg != "..",
            "a dot segment in {path:?} from {raw:?}"
        );
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let xx = bytes.get(i + 1..i + 3).unwrap_or_default();
        assert!(
            xx.len() == 2 && xx.iter().all(|d| matches!(d, b'0'..=b'9' | b'A'..=b'F')),
            "an escape not in upper-case hex in {path:?} from {raw:?}"
        );
        let v = u8::from_str_radix(std::str::from_utf8(xx).unwrap_or("zz"), 16).unwrap_or(0);
        assert!(
            !unreserved(v) && !matches!(v, b'/' | b'\\' | 0 | b';'),
            "%{v:02X} left in {path:?} from {raw:?}"
        );
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8();
    assert!(decoded.is_ok(), "{path:?} from {raw:?} is not UTF-8");

    // The same resource to an upstream, however it resolves `//` and `..`.
    let sent = if rules.strip_path_parameters {
        without_parameters(raw_path)
    } else {
        raw_path.to_owned()
    };
    for merge_first in [false, true] {
        let ours = upstream_reading(path, merge_first);
        let theirs = upstream_reading(&sent, merge_first);
        assert!(ours.is_some());
        assert_eq!(
            ours, theirs,
            "{raw:?} read as {path:?} (rules {rules:?}, merging // first: {merge_first})"
        );
    }

    if rules.case_insensitive {
        if let Ok(d) = &decoded {
            for c in d.chars().filter(|c| !c.is_ascii()) {
                assert!(
                    !case_reaches_ascii(c),
                    "{c:?} (U+{:04X}) accepted in a case-insensitive app: {raw:?}",
                    u32::from(c)
                );
            }
        }
    }

    // The normal form is its own normal form, under these rules and any that refuse less.
    for again_rules in RULES {
        if again_rules.case_insensitive && !rules.case_insensitive {
            continue;
        }
        match read_target(path, again_rules) {
            Ok(again) => {
                assert_eq!(&*again.path, path, "{raw:?} under {again_rules:?}");
                assert!(again.unchanged(), "{path:?} from {raw:?}");
                assert_eq!(again.query, None);
            }
            Err(e) => panic!("the normal form {path:?} of {raw:?} is refused: {e:?}"),
        }
    }
    let again = read_target(&origin, rules).expect("the origin form reads again");
    assert_eq!((&*again.path, again.query), (path, t.query));
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let results = RULES.map(|rules| read_target(raw, rules));
    for (rules, result) in RULES.iter().zip(&results) {
        match result {
            Ok(t) => check_accepted(raw, *rules, t),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    let [strict, strip, ci, strip_ci] = &results;
    // Stripping parameters only lets `;` through; case-insensitivity only refuses letters
    // that fold into ASCII.
    for (without, with) in [(strict, strip), (ci, strip_ci)] {
        match (without, with) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{raw:?}"),
            (Ok(_), Err(e)) => panic!("{raw:?} refused ({e:?}) only when stripping ;"),
            (Err(e), Ok(_)) => assert_eq!(*e, TargetRefusal::PathParameters, "{raw:?}"),
            (Err(a), Err(b)) => {
                if *a != TargetRefusal::PathParameters {
                    assert_eq!(a, b, "{raw:?}");
                }
            }
        }
    }
    for (sensitive, insensitive) in [(strict, ci), (strip, strip_ci)] {
        match (sensitive, insensitive) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{raw:?}"),
            (Err(e), Ok(_)) => panic!("{raw:?} refused ({e:?}) only when case-sensitive"),
            (Ok(_), Err(e)) => assert!(
                matches!(e, TargetRefusal::CaseFoldsToAscii(_)),
                "{raw:?}: {e:?}"
            ),
            (Err(a), Err(b)) => assert_eq!(a, b, "{raw:?}"),
        }
    }
});
