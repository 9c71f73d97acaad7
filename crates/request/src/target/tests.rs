use super::*;

const STRICT: TargetRules = TargetRules {
    strip_path_parameters: false,
    case_insensitive: false,
};

fn n(p: &str) -> Result<String, TargetRefusal> {
    read_target(p, STRICT).map(|t| t.to_origin_form())
}

#[test]
fn normal_targets_are_borrowed() {
    for p in [
        "/",
        "/a/b",
        "/a/b/",
        "//a",
        "/a.b/c..d/.e",
        "/a%20b",
        "/a?x=%zz&y=%C3",
        "/a?q=1",
    ] {
        let t = read_target(p, STRICT).unwrap();
        assert!(t.unchanged(), "{p}");
        assert_eq!(t.to_origin_form(), p);
    }
}

#[test]
fn equivalent_spellings_come_to_one_path() {
    assert_eq!(n("/%61dmin").unwrap(), "/admin");
    assert_eq!(n("/%61%64%6d%69%6E/").unwrap(), "/admin/");
    assert_eq!(n("/./admin").unwrap(), "/admin");
    assert_eq!(n("/x/../admin").unwrap(), "/admin");
    assert_eq!(n("/x/%2e%2E/admin").unwrap(), "/admin");
    assert_eq!(n("/../../admin").unwrap(), "/admin");
    assert_eq!(n("/a/b/..").unwrap(), "/a/");
    assert_eq!(n("/a/.").unwrap(), "/a/");
    assert_eq!(n("/..").unwrap(), "/");
    assert_eq!(n("/%7euser/a%20b%c3%a9").unwrap(), "/~user/a%20b%C3%A9");
    assert_eq!(n("//x/./admin").unwrap(), "//x/admin");
    // The query is kept as sent, whatever the path becomes.
    assert_eq!(n("/x/../%64ata?q=%2F..").unwrap(), "/data?q=%2F..");
}

#[test]
fn spellings_upstreams_disagree_on_are_refused() {
    use TargetRefusal::*;
    assert_eq!(n("/admin%2Frevoke"), Err(EncodedSeparator));
    assert_eq!(n("/data/..%2fadmin"), Err(EncodedSeparator));
    assert_eq!(n("/data/..%5Cadmin"), Err(EncodedSeparator));
    assert_eq!(n("/data\\..\\admin"), Err(Backslash));
    assert_eq!(n("/data?x=\\"), Err(Backslash));
    assert_eq!(n("/data/..;/admin"), Err(PathParameters));
    assert_eq!(n("/data/.;x/admin"), Err(PathParameters));
    assert_eq!(n("/data/%2e%2e;/admin"), Err(PathParameters));
    assert_eq!(n("/admin;jsessionid=1"), Err(PathParameters));
    assert_eq!(n("/admin%3Bx"), Err(PathParameters));
    assert_eq!(n("/a%"), Err(BadEscape));
    assert_eq!(n("/a%4"), Err(BadEscape));
    assert_eq!(n("/a%zz"), Err(BadEscape));
    assert_eq!(n("/a%00"), Err(NulEscape));
    assert_eq!(n("/public//../admin"), Err(DotSegmentAfterEmpty));
    assert_eq!(n("/public/%2f/"), Err(EncodedSeparator));
    assert_eq!(n("/a//%2e%2e/b"), Err(DotSegmentAfterEmpty));
    assert_eq!(n("/a?b=%00"), Err(NulEscape));
    assert_eq!(n("/a#b"), Err(Fragment));
    for (t, c) in [("/a\"b", '"'), ("/<b>", '<'), ("/a?x>", '>'), ("/a?`", '`')] {
        assert_eq!(n(t), Err(Unsafe(c)), "{t}");
    }
    assert_eq!(n("/a?b#c"), Err(Fragment));
    assert_eq!(n("*"), Err(NotOriginForm));
    assert_eq!(n(""), Err(NotOriginForm));
    assert_eq!(n("http://x/a"), Err(NotOriginForm));
    assert_eq!(n("/admin\u{e9}"), Err(RawByte(0xC3)));
    assert_eq!(n("/a?q=\u{e9}"), Err(RawByte(0xC3)));
    assert_eq!(n("/a b"), Err(RawByte(b' ')));
    assert_eq!(n("/a\tb"), Err(RawByte(b'\t')));
    assert_eq!(n("/a\x7f"), Err(RawByte(0x7F)));
    // Overlong `/` and `.`, a lone continuation byte, a surrogate, a truncated sequence.
    for bad in [
        "/%C0%AF",
        "/%C0%AEadmin",
        "/%80",
        "/%ED%A0%80",
        "/%E2%82",
        "/%FF",
    ] {
        assert_eq!(n(bad), Err(BadUtf8), "{bad}");
    }
    // Valid multi-byte escapes pass, in upper case.
    assert_eq!(n("/caf%c3%a9").unwrap(), "/caf%C3%A9");
}

/// Found by the `request_target` fuzz target (`/a//./..`): the refusal looked only at the
/// segment right before a `..`, so a `.` or another segment in between let a `..` remove an
/// empty segment, where a slash-merging upstream removes the one before it.
#[test]
fn a_dot_dot_removing_an_empty_segment_is_refused_whatever_comes_between() {
    use TargetRefusal::DotSegmentAfterEmpty;
    for p in [
        "/a//./..",
        "/public//./../admin",
        "/public//x/../../admin",
        "/public//x/%2e/%2E%2e/../admin",
        "/public//a/b/../../../admin",
        "//x/../../admin",
    ] {
        assert_eq!(n(p), Err(DotSegmentAfterEmpty), "{p}");
    }
    let strip = TargetRules {
        strip_path_parameters: true,
        ..STRICT
    };
    assert_eq!(
        read_target("/public/;x/.;y/..;z/admin", strip),
        Err(DotSegmentAfterEmpty)
    );
    // A `..` that stops short of the empty segment, or has none to remove, reads one way.
    assert_eq!(n("/public//x/../admin").unwrap(), "/public//admin");
    assert_eq!(n("/a//b/c/../..").unwrap(), "/a//");
    assert_eq!(n("/..//admin").unwrap(), "//admin");
}

#[test]
fn path_parameters_are_stripped_only_where_the_app_says_so() {
    let strip = TargetRules {
        strip_path_parameters: true,
        ..STRICT
    };
    let s = |p: &str| read_target(p, strip).map(|t| t.to_origin_form());
    assert_eq!(s("/admin;jsessionid=1").unwrap(), "/admin");
    assert_eq!(s("/a;x/b;y=1/c?q=;").unwrap(), "/a/b/c?q=;");
    // `..;` is `..` to the upstreams that strip parameters, so it is resolved as one.
    assert_eq!(s("/public/..;x/admin").unwrap(), "/admin");
    assert_eq!(s("/public/%2e%2e;/admin").unwrap(), "/admin");
    // An encoded `;` is still refused: upstreams disagree on it whatever the setting.
    assert_eq!(s("/admin%3b"), Err(TargetRefusal::PathParameters));
}

#[test]
fn exactly_the_letters_whose_case_holds_ascii_fold_to_ascii() {
    // Every non-ASCII code point whose upper, lower or folded case (Unicode's
    // SpecialCasing and CaseFolding) holds an ASCII letter, as Python's `str.upper`,
    // `lower` and `casefold` list them.
    let expected: Vec<u32> = vec![
        0xDF, 0x130, 0x131, 0x149, 0x17F, 0x1F0, 0x1E96, 0x1E97, 0x1E98, 0x1E99, 0x1E9A, 0x1E9E,
        0x212A, 0xFB00, 0xFB01, 0xFB02, 0xFB03, 0xFB04, 0xFB05, 0xFB06,
    ];
    let found: Vec<u32> = (0x80..=0x10FFFF)
        .filter_map(char::from_u32)
        .filter(|&c| folds_to_ascii(c))
        .map(u32::from)
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn a_letter_that_folds_to_ascii_is_refused_in_case_insensitive_apps() {
    use TargetRefusal::CaseFoldsToAscii;
    let ci = TargetRules {
        case_insensitive: true,
        ..STRICT
    };
    let r = |p: &str| read_target(p, ci).map(|t| t.to_origin_form());
    assert_eq!(r("/%C5%BFecret"), Err(CaseFoldsToAscii('ſ')));
    assert_eq!(r("/%c5%bfecret/x"), Err(CaseFoldsToAscii('ſ')));
    assert_eq!(r("/a/%E2%84%AAeys"), Err(CaseFoldsToAscii('\u{212A}')));
    assert_eq!(r("/%C4%B0d"), Err(CaseFoldsToAscii('İ')));
    assert_eq!(r("/stra%C3%9Fe"), Err(CaseFoldsToAscii('ß')));
    assert_eq!(r("/%EF%AC%81le"), Err(CaseFoldsToAscii('ﬁ')));
    for p in [
        "/",
        "/Admin/USERS",
        "/a%20b",
        "/caf%C3%A9",
        "/%C3%85ngstr%C3%B6m",
        "/%E2%84%AB",
        "/%D0%9C%D0%BE%D1%81%D0%BA%D0%B2%D0%B0",
        "/100%25",
    ] {
        assert!(r(p).is_ok(), "{p}");
    }
    // The same letters are only the app's business when it matches case exactly.
    assert!(read_target("/%C5%BFecret", STRICT).is_ok());
}

#[test]
fn methods_are_tokens_and_tunnels_are_refused() {
    assert_eq!(read_method(b"GET").unwrap(), http::Method::GET);
    assert_eq!(read_method(b"PROPFIND").unwrap().as_str(), "PROPFIND");
    assert_eq!(read_method(b""), Err(MethodRefusal::Invalid));
    assert_eq!(read_method(b"GE T"), Err(MethodRefusal::Invalid));
    assert_eq!(read_method(b"G\xc3\xa9T"), Err(MethodRefusal::Invalid));
    assert_eq!(
        read_method(b"CONNECT"),
        Err(MethodRefusal::Unsupported("CONNECT"))
    );
    assert_eq!(
        read_method(b"TRACE"),
        Err(MethodRefusal::Unsupported("TRACE"))
    );
}

/// How an upstream reads a path: every escape decoded, dot segments resolved, and (since
/// route patterns ignore them) empty segments dropped — with slashes merged before the dots
/// are resolved (nginx, many frameworks) or after (RFC 3986 §5.2.4).
fn upstream_reading(path: &str, merge_first: bool) -> Option<Vec<String>> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?
        .into_owned();
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
            .map(str::to_string)
            .collect(),
    )
}

fn piece() -> impl proptest::strategy::Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "/",
        "/",
        "/",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2f",
        "%5C",
        ";",
        "%3b",
        "a",
        "admin",
        "%61",
        "%41",
        "%C3%A9",
        "%c3",
        "%e2%82%ac",
        "%",
        "%zz",
        "?",
        "#",
        "\\",
        "é",
        " ",
        "%00",
        "~",
        "%7E",
        "%20",
        "=",
        "&",
        ":",
        "@",
        "x;y",
    ])
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

    /// What is accepted reads, to an upstream that decodes and resolves it, exactly as its
    /// normal form does: forwarding the normal form never changes what is served, and
    /// routes matched on it are the routes the upstream serves. The normal form is its own
    /// normal form.
    #[test]
    fn an_accepted_target_means_to_the_upstream_what_its_normal_form_means(
        pieces in proptest::collection::vec(piece(), 0..12),
        strip in proptest::bool::ANY,
    ) {
        let raw = format!("/{}", pieces.concat());
        let rules = TargetRules { strip_path_parameters: strip, case_insensitive: false };
        if let Ok(t) = read_target(&raw, rules) {
            let raw_path = raw.split('?').next().unwrap();
            let raw_path = if strip {
                raw_path.split('/').map(|s| s.split(';').next().unwrap()).collect::<Vec<_>>().join("/")
            } else {
                raw_path.to_string()
            };
            for merge_first in [false, true] {
                let ours = upstream_reading(&t.path, merge_first);
                proptest::prop_assert!(ours.is_some());
                proptest::prop_assert_eq!(ours, upstream_reading(&raw_path, merge_first), "{}", raw);
            }
            let again = read_target(&t.path, TargetRules::default()).unwrap();
            proptest::prop_assert_eq!(&*again.path, &*t.path);
            proptest::prop_assert!(again.unchanged());
            // Nothing the upstream would read as a separator, parameter or NUL is left.
            proptest::prop_assert!(!t.path.contains(';'));
            proptest::prop_assert!(!t.path.contains('\\'));
            for seg in t.path.split('/') {
                proptest::prop_assert!(seg != "." && seg != "..", "{}", raw);
            }
            // Every escape left is of a byte a route pattern cannot hold as itself, in upper
            // case: a pattern matches the normal form exactly when it matches the decoded one.
            let b = t.path.as_bytes();
            for (i, _) in t.path.match_indices('%') {
                let xx = &t.path[i + 1..i + 3];
                proptest::prop_assert_eq!(xx, xx.to_ascii_uppercase());
                let v = u8::from_str_radix(xx, 16).unwrap();
                proptest::prop_assert!(!unreserved(v), "{} in {}", xx, raw);
                proptest::prop_assert!(b.len() >= i + 3);
            }
        }
    }
}
