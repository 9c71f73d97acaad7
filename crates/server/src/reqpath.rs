//! The request path as routes are matched on it and as the upstream receives it.
//!
//! A route is only a boundary if a client cannot reach the same resource under another
//! spelling. Upstreams decode `%61dmin` to `admin`, resolve `/x/../admin` to `/admin`, and
//! some (Tomcat, IIS) read `..;` as `..` or `\` as `/`. So before a request is decided its
//! path is put in the one form RFC 3986 (§6.2.2) makes equivalent to it: percent-encoded
//! unreserved characters decoded, dot segments removed. The proxy then sends that same
//! path upstream, so the path decided on is the path served. Spellings whose meaning
//! depends on the upstream (an encoded `/` or `\`, a raw `\`, a dot segment with
//! parameters) are refused rather than guessed at.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmbiguousPath {
    /// `%2F` or `%5C`: a separator some upstreams decode and others do not.
    #[error("the path has an encoded / or \\ (%2F, %5C), which upstreams read differently")]
    EncodedSeparator,
    /// A raw `\`, which some upstreams read as `/`.
    #[error("the path has a \\, which some upstreams read as /")]
    Backslash,
    /// `..;x` or `.;x`, which some upstreams read as a dot segment.
    #[error("the path has a dot segment with parameters (..;), which some upstreams resolve")]
    DotSegmentWithParameters,
    /// A `%` not followed by two hex digits, or an encoded NUL.
    #[error("the path has a malformed or NUL percent-escape")]
    BadEscape,
    /// In an app whose paths are matched ignoring case: a letter that case mapping turns
    /// into ASCII letters (`ſ` into `S`, the Kelvin sign `K` into `k`, `ß` into `SS`).
    /// Routes fold ASCII case only, while an upstream that folds Unicode case would serve
    /// `/ſecret` as `/secret`, outside `/secret`'s route.
    #[error("the path has {} (U+{:04X}), which a case-insensitive upstream may read as ASCII letters", .0, u32::from(*.0))]
    CaseFoldsToAscii(char),
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The normal form of an origin-form path (no query). Borrowed, at no cost, when the path
/// is already normal (no `%`, `\` or dot segment), which is nearly always.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, AmbiguousPath> {
    if !path.starts_with('/') {
        // `*` (OPTIONS): nothing to normalize, and no route matches it.
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') {
        return Err(AmbiguousPath::Backslash);
    }
    let dotted = path.contains("/.") && has_dot_segment(path);
    if !dotted && !bytes.contains(&b'%') {
        return Ok(Cow::Borrowed(path));
    }
    // Decode what RFC 3986 says is equivalent (unreserved characters); keep every other
    // escape, with its hex digits in upper case.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b as char);
            i += 1;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(AmbiguousPath::BadEscape);
        };
        let v = (hi * 16 + lo) as u8;
        match v {
            b'/' | b'\\' => return Err(AmbiguousPath::EncodedSeparator),
            0 => return Err(AmbiguousPath::BadEscape),
            v if unreserved(v) => decoded.push(v as char),
            v => decoded.push_str(&format!("%{v:02X}")),
        }
        i += 3;
    }
    // Remove dot segments (RFC 3986 §5.2.4), keeping empty segments as they are.
    let mut out: Vec<&str> = Vec::new();
    let mut segments = decoded.split('/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let bare = without_parameters(seg);
        if bare != seg && (bare == "." || bare == "..") {
            return Err(AmbiguousPath::DotSegmentWithParameters);
        }
        let last = segments.peek().is_none();
        match seg {
            "." | ".." => {
                if seg == ".." {
                    out.pop();
                }
                // `/a/b/..` is `/a/`: a dot segment at the end leaves a trailing slash.
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    if normal == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(normal))
}

/// Checks a normal-form path (see [`normalize`]) of an app whose paths are matched ignoring
/// case: refused when it names, raw or percent-encoded, a letter whose case mapping holds
/// ASCII letters ([`AmbiguousPath::CaseFoldsToAscii`]). Its meaning would depend on how
/// far the upstream folds case, and route patterns fold ASCII only.
pub fn case_fold_unambiguous(path: &str) -> Result<(), AmbiguousPath> {
    let bytes = path.as_bytes();
    // Nearly every path: plain ASCII, no escapes.
    if bytes.is_ascii() && !bytes.contains(&b'%') {
        return Ok(());
    }
    // A `%` without two hex digits after it stays as it is (`normalize` has refused those
    // already on the request paths).
    match percent_encoding::percent_decode(bytes)
        .decode_utf8_lossy()
        .chars()
        .find(|&c| folds_to_ascii(c))
    {
        Some(c) => Err(AmbiguousPath::CaseFoldsToAscii(c)),
        None => Ok(()),
    }
}

/// Whether a non-ASCII letter's upper or lower case, or that one's other case (`ẞ` → `ß`
/// → `SS`), holds an ASCII letter.
fn folds_to_ascii(c: char) -> bool {
    let ascii = |m: char| m.is_ascii_alphabetic();
    !c.is_ascii()
        && c.to_lowercase()
            .chain(c.to_uppercase())
            .any(|m| ascii(m) || m.to_uppercase().chain(m.to_lowercase()).any(ascii))
}

/// A path segment without its parameters (`..;x` → `..`).
fn without_parameters(seg: &str) -> &str {
    seg.split(';').next().unwrap_or(seg)
}

/// Whether a segment is `.` or `..` (or one of them with parameters).
fn has_dot_segment(path: &str) -> bool {
    path.split('/')
        .map(without_parameters)
        .any(|bare| bare == "." || bare == "..")
}

/// `uri` with its path in normal form (the query, scheme and authority as they were); the
/// same `Uri` when the path was normal already.
pub fn normalize_uri(uri: &axum::http::Uri) -> Result<Option<axum::http::Uri>, AmbiguousPath> {
    let Cow::Owned(path) = normalize(uri.path())? else {
        return Ok(None);
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| AmbiguousPath::BadEscape)?);
    axum::http::Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| AmbiguousPath::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, AmbiguousPath> {
        normalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a/b", "/a/b/", "//a", "/a.b/c..d/.e", "/a%20b", "*"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
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
    }

    #[test]
    fn spellings_upstreams_disagree_on_are_refused() {
        use AmbiguousPath::*;
        assert_eq!(n("/admin%2Frevoke"), Err(EncodedSeparator));
        assert_eq!(n("/data/..%2fadmin"), Err(EncodedSeparator));
        assert_eq!(n("/data/..%5Cadmin"), Err(EncodedSeparator));
        assert_eq!(n("/data\\..\\admin"), Err(Backslash));
        assert_eq!(n("/data/..;/admin"), Err(DotSegmentWithParameters));
        assert_eq!(n("/data/.;x/admin"), Err(DotSegmentWithParameters));
        assert_eq!(n("/data/%2e%2e;/admin"), Err(DotSegmentWithParameters));
        assert_eq!(n("/a%"), Err(BadEscape));
        assert_eq!(n("/a%4"), Err(BadEscape));
        assert_eq!(n("/a%zz"), Err(BadEscape));
        assert_eq!(n("/a%00"), Err(BadEscape));
        // Parameters on an ordinary segment are the upstream's business.
        assert_eq!(n("/a;jsessionid=1/./b").unwrap(), "/a;jsessionid=1/b");
    }

    #[test]
    fn the_query_and_authority_are_kept() {
        let u: axum::http::Uri = "https://app.test/x/../%64ata?q=%2F..".parse().unwrap();
        let v = normalize_uri(&u).unwrap().unwrap();
        assert_eq!(v.to_string(), "https://app.test/data?q=%2F..");
        let u: axum::http::Uri = "/data?x".parse().unwrap();
        assert!(normalize_uri(&u).unwrap().is_none());
    }

    #[test]
    fn exactly_the_letters_whose_case_holds_ascii_fold_to_ascii() {
        // Every non-ASCII code point whose upper, lower or folded case (Unicode's
        // SpecialCasing and CaseFolding) holds an ASCII letter, as Python's `str.upper`,
        // `lower` and `casefold` list them.
        let expected: Vec<u32> = vec![
            0xDF, 0x130, 0x131, 0x149, 0x17F, 0x1F0, 0x1E96, 0x1E97, 0x1E98, 0x1E99, 0x1E9A,
            0x1E9E, 0x212A, 0xFB00, 0xFB01, 0xFB02, 0xFB03, 0xFB04, 0xFB05, 0xFB06,
        ];
        let found: Vec<u32> = (0x80..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|&c| folds_to_ascii(c))
            .map(u32::from)
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn a_letter_that_folds_to_ascii_is_refused_raw_or_encoded() {
        use AmbiguousPath::CaseFoldsToAscii;
        let ok = |p: &str| case_fold_unambiguous(p);
        // `ſecret` (U+017F), the Kelvin sign, a dotted capital I, `ß`, a ligature.
        assert_eq!(ok("/%C5%BFecret"), Err(CaseFoldsToAscii('ſ')));
        assert_eq!(ok("/%c5%bfecret/x"), Err(CaseFoldsToAscii('ſ')));
        assert_eq!(ok("/a/%E2%84%AAeys"), Err(CaseFoldsToAscii('\u{212A}')));
        assert_eq!(ok("/%C4%B0d"), Err(CaseFoldsToAscii('İ')));
        assert_eq!(ok("/stra%C3%9Fe"), Err(CaseFoldsToAscii('ß')));
        assert_eq!(ok("/%EF%AC%81le"), Err(CaseFoldsToAscii('ﬁ')));
        assert_eq!(ok("/ſecret"), Err(CaseFoldsToAscii('ſ')));
        // ASCII, escapes of other bytes, and letters whose case stays outside ASCII.
        for p in [
            "/",
            "/Admin/USERS",
            "/a%20b",
            "/caf%C3%A9",
            "/%C3%85ngstr%C3%B6m",
            "/%E2%84%AB",
            "/%D0%9C%D0%BE%D1%81%D0%BA%D0%B2%D0%B0",
            "/%FF%FE",
            "/100%25",
        ] {
            assert_eq!(ok(p), Ok(()), "{p}");
        }
    }
}
