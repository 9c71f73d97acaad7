//! `Cookie` headers read by the RFC 6265 grammar (§4.2.1, §5.4), and the names of
//! stepgate's own cookies under every spelling an upstream or browser might give them.
//!
//! A cookie is found under its exact name: names are never percent-decoded or case-folded,
//! so `__Host-session` counts only as itself (a sibling host cannot set that one), never as
//! `__host-session` or `%5F_Host-session`. A cookie stepgate reads that appears more than
//! once (a second one planted by a sibling subdomain, say) is [`Lookup::Repeated`]: the
//! caller refuses the request rather than pick one.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue};

/// Whether `b` may appear in a cookie name (an RFC 7230 `token`).
fn tchar(b: u8) -> bool {
    CLASSES[usize::from(b)] & TCHAR != 0
}

/// Whether `b` is a `cookie-octet` (RFC 6265 §4.1.1).
fn cookie_octet(b: u8) -> bool {
    CLASSES[usize::from(b)] & COOKIE_OCTET != 0
}

const TCHAR: u8 = 1;
const COOKIE_OCTET: u8 = 2;

/// Each byte's classes, looked up once per byte: every request's cookies are checked
/// against the grammar, a value byte by byte.
const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
        {
            t[i] |= TCHAR;
        }
        if matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E) {
            t[i] |= COOKIE_OCTET;
        }
        i += 1;
    }
    t
};

/// One `name=value` piece of a `Cookie` header, if it follows the grammar: a token name and
/// a value of cookie-octets, optionally in double quotes (which are not part of the value).
/// Whitespace around the piece is tolerated, as browsers send it.
pub fn parse_pair(piece: &str) -> Option<(&str, &str)> {
    let piece = piece.trim_matches([' ', '\t']);
    let (name, value) = piece.split_once('=')?;
    pair_value(name, value).map(|v| (name, v))
}

/// The value of the pair `name=value` (split at the first `=` of a trimmed piece), if it
/// follows the grammar (see [`parse_pair`]).
fn pair_value<'a>(name: &str, value: &'a str) -> Option<&'a str> {
    if name.is_empty() || !name.bytes().all(tchar) {
        return None;
    }
    let value = match value.strip_prefix('"') {
        Some(v) => v.strip_suffix('"')?,
        None => value,
    };
    cookie_octets(value.as_bytes()).then_some(value)
}

/// Whether every byte of `value` is a [`cookie_octet`]: eight bytes at a time (a session
/// cookie's value is tens of bytes, checked on every request), the rest one by one. A
/// byte is *not* one when it is below `0x21`, above `0x7E`, or one of `"` `,` `;` `\`;
/// each test below says whether any of the eight bytes is such a byte (exactly: the
/// subtraction tricks can misplace which byte, never whether there is one).
fn cookie_octets(value: &[u8]) -> bool {
    use crate::words::{has_byte, word, HIGHS, ONES};
    // Any byte below 0x21 (the trick holds for bounds up to 0x80).
    let below = |x: u64| x.wrapping_sub(ONES * 0x21) & !x & HIGHS;
    // Any byte above 0x7E (its high bit set after adding 1, or set already).
    let above = |x: u64| (x.wrapping_add(ONES) | x) & HIGHS;
    let mut chunks = value.chunks_exact(8);
    for chunk in &mut chunks {
        let x = word(chunk);
        let bad = below(x)
            | above(x)
            | has_byte(x, b'"')
            | has_byte(x, b',')
            | has_byte(x, b';')
            | has_byte(x, b'\\');
        if bad != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| cookie_octet(b))
}

/// Every well-formed `(name, value)` pair of every `Cookie` header, in order (HTTP/2 sends
/// one header per cookie). Pieces that do not follow the grammar are skipped.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(pieces)
        .filter_map(parse_pair)
}

/// The `;`-separated pieces of one `Cookie` line that are text. A line of visible ASCII
/// (nearly every one) is split as text, the fast way; any other line byte by byte, so that
/// a byte outside ASCII (which no name or value may hold) spoils its own piece, not the
/// well-formed pairs beside it.
fn pieces(line: &HeaderValue) -> Pieces<'_> {
    fn semicolon(b: &u8) -> bool {
        *b == b';'
    }
    match line.to_str() {
        Ok(text) => Pieces::Text(text.split(';')),
        Err(_) => Pieces::Bytes(line.as_bytes().split(semicolon as fn(&u8) -> bool)),
    }
}

/// See [`pieces`].
enum Pieces<'a> {
    Text(std::str::Split<'a, char>),
    Bytes(std::slice::Split<'a, u8, fn(&u8) -> bool>),
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match self {
            Pieces::Text(s) => s.next(),
            Pieces::Bytes(s) => s.find_map(|piece| std::str::from_utf8(piece).ok()),
        }
    }
}

/// What the request says under one cookie name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not sent.
    Absent,
    /// Sent once, with this value.
    One(&'a str),
    /// Sent more than once: which one is meant cannot be told.
    Repeated,
}

impl<'a> Lookup<'a> {
    /// The value when sent exactly once.
    pub fn one(self) -> Option<&'a str> {
        match self {
            Lookup::One(v) => Some(v),
            _ => None,
        }
    }
}

/// The cookie called exactly `name`.
pub fn lookup<'a>(headers: &'a HeaderMap, name: &str) -> Lookup<'a> {
    let mut found = Lookup::Absent;
    for (n, v) in pairs(headers) {
        if n == name {
            found = match found {
                Lookup::Absent => Lookup::One(v),
                _ => return Lookup::Repeated,
            };
        }
    }
    found
}

/// Looks up several names in one pass over the headers (the access decision reads three
/// cookies on every request). `out[i]` is the lookup of `names[i]`.
pub fn lookup_many<'a, const N: usize>(
    headers: &'a HeaderMap,
    names: [&str; N],
) -> [Lookup<'a>; N] {
    let mut out = [Lookup::Absent; N];
    // `pairs`, as plain loops: this runs on every request.
    for line in headers.get_all(http::header::COOKIE) {
        for (n, v) in pieces(line).filter_map(parse_pair) {
            found(&mut out, &names, n, v);
        }
    }
    out
}

/// Records the pair `n=v` in `out` (the lookups of `names`): a name's first sighting is its
/// value, any later one makes it [`Lookup::Repeated`].
fn found<'a, const N: usize>(out: &mut [Lookup<'a>; N], names: &[&str; N], n: &str, v: &'a str) {
    for (i, want) in names.iter().enumerate() {
        if n == *want {
            out[i] = match out[i] {
                Lookup::Absent => Lookup::One(v),
                _ => Lookup::Repeated,
            };
        }
    }
}

/// What a request's one `Cookie` line holds of stepgate's own cookies, found in the same
/// pass that looks the decision's cookies up ([`lookup_many_sorting`]), so that the line is
/// read once per proxied request rather than once to decide and again to strip.
///
/// It names the line it was read from (its bytes' address and length): [`OwnInLine::of`]
/// answers only for that very line, so a map changed in between is read again, never
/// judged by a stale answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnInLine {
    at: usize,
    len: usize,
    ours: bool,
    theirs: bool,
}

impl OwnInLine {
    /// For `line` (the one it was read from): whether it holds one of stepgate's cookies,
    /// and whether it holds any other piece.
    pub fn of(&self, line: &HeaderValue) -> Option<(bool, bool)> {
        let same = line.as_bytes().as_ptr() as usize == self.at && line.len() == self.len;
        same.then_some((self.ours, self.theirs))
    }
}

/// Whether the cookie name `name` is one of `own` (their [`name_key`]s) under any spelling:
/// the same as `own.iter().any(|o| has_key(name, o))`, with the name read once.
pub fn names_own(name: &str, own: &[String]) -> bool {
    let name = name.trim();
    // A byte loop: a name is a few bytes, shorter than a vectorised search's set-up.
    if name.bytes().any(|b| b == b'%') {
        let key = name_key(name);
        return own.contains(&key);
    }
    let bare = unprefixed(name);
    own.iter().any(|o| bare.eq_ignore_ascii_case(o))
}

/// `name` without a `__Host-` or `__Secure-` prefix in any case (the prefixes
/// [`name_key`] drops).
fn unprefixed(name: &str) -> &str {
    ["__host-", "__secure-"]
        .iter()
        .find_map(|p| {
            name.get(..p.len())
                .filter(|head| head.eq_ignore_ascii_case(p))
                .map(|_| &name[p.len()..])
        })
        .unwrap_or(name)
}

/// [`lookup_many`], and for a request with one `Cookie` line of text (as HTTP/1.1 clients
/// send), what that line holds of `own` ([`names_own`] on each non-empty piece's name), from
/// the same pass over it. `None` for any other request: the stripping reads it itself.
pub fn lookup_many_sorting<'a, const N: usize>(
    headers: &'a HeaderMap,
    names: [&str; N],
    own: &[String],
) -> ([Lookup<'a>; N], Option<OwnInLine>) {
    let mut lines = headers.get_all(http::header::COOKIE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return (lookup_many(headers, names), None);
    };
    let Some(text) = visible_text(line) else {
        return (lookup_many(headers, names), None);
    };
    let mut out = [Lookup::Absent; N];
    let (mut ours, mut theirs) = (false, false);
    // Each piece split once at its first `=`: the name sorted, the pair read from the same
    // split (what `parse_pair` and `set_cookie_name` each split for themselves).
    let mut start = 0;
    for end in memchr::memchr_iter(b';', text.as_bytes()).chain([text.len()]) {
        let piece = text[start..end].trim_matches([' ', '\t']);
        start = end + 1;
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', piece.as_bytes()) {
            Some(at) => (&piece[..at], Some(&piece[at + 1..])),
            None => (piece, None),
        };
        if names_own(name, own) {
            ours = true;
        } else {
            theirs = true;
        }
        if let Some(v) = value.and_then(|v| pair_value(name, v)) {
            found(&mut out, &names, name, v);
        }
    }
    let sorted = OwnInLine {
        at: line.as_bytes().as_ptr() as usize,
        len: line.len(),
        ours,
        theirs,
    };
    (out, Some(sorted))
}

/// `line` as text when every byte of it is visible ASCII or a tab (what
/// [`HeaderValue::to_str`] accepts), checked eight bytes at a time: a `Cookie` line is read
/// on every request, and a browser's runs to hundreds of bytes.
fn visible_text(line: &HeaderValue) -> Option<&str> {
    use crate::words::{word, HIGHS, ONES};
    let visible = |b: &u8| (0x20..0x7f).contains(b) || *b == b'\t';
    let bytes = line.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = word(chunk);
        // Any byte below 0x20, or above 0x7E: then the chunk is read byte by byte (a tab
        // is below 0x20 and allowed).
        let suspect = (x.wrapping_sub(ONES * 0x20) & !x | x.wrapping_add(ONES) | x) & HIGHS;
        if suspect != 0 && !chunk.iter().all(visible) {
            return None;
        }
    }
    if !chunks.remainder().iter().all(visible) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// A cookie name as browsers, frameworks and proxies might all read it: percent-decoded,
/// lower case, without a `__Host-` or `__Secure-` prefix. Two names with the same key may
/// reach some reader as the same cookie: stepgate's cookies are kept apart from an app's
/// under every name with the key of one of theirs.
pub fn name_key(name: &str) -> String {
    let decoded: Cow<'_, str> =
        percent_encoding::percent_decode_str(name.trim()).decode_utf8_lossy();
    let lower = decoded.to_ascii_lowercase();
    for prefix in ["__host-", "__secure-"] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    lower
}

/// Whether `name` has the key `key` (a [`name_key`]): the same as `name_key(name) == key`,
/// without allocating for a name that needs no decoding (nearly every one).
pub fn has_key(name: &str, key: &str) -> bool {
    let name = name.trim();
    if name.contains('%') {
        return name_key(name) == key;
    }
    unprefixed(name).eq_ignore_ascii_case(key)
}

/// The name in `name=value` (a `Cookie` piece, or a `Set-Cookie` header's first part),
/// untouched but for whitespace around it.
pub fn set_cookie_name(set_cookie: &str) -> &str {
    let first = set_cookie.split(';').next().unwrap_or("");
    first.split_once('=').map_or(first, |(n, _)| n).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(http::header::COOKIE, l.parse().unwrap());
        }
        h
    }

    /// The eight-at-a-time check agrees with the table for every byte value at every
    /// place of a chunk and of the remainder, alone and beside other bad bytes.
    #[test]
    fn cookie_octets_agrees_with_the_table_for_every_byte_everywhere() {
        for len in 0..=24usize {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    assert_eq!(
                        cookie_octets(&v),
                        cookie_octet(b),
                        "byte {b:#04x} at {at} of {len}"
                    );
                    // Beside a second byte: bad only if either is.
                    for other in [0x00u8, 0x20, 0x21, 0x22, 0x7e, 0x7f, 0x80, 0xff] {
                        let mut w = v.clone();
                        let there = (at + 3) % len;
                        if there == at {
                            continue;
                        }
                        w[there] = other;
                        let want = cookie_octet(b) && cookie_octet(other);
                        assert_eq!(
                            cookie_octets(&w),
                            want,
                            "{b:#04x} at {at}, {other:#04x} at {there} of {len}"
                        );
                    }
                }
            }
        }
        assert!(cookie_octets(b""));
    }

    /// The lookup table holds the RFC's classes, byte for byte.
    #[test]
    fn byte_classes_are_the_rfcs() {
        for b in 0..=255u8 {
            let token = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            let octet = b == 0x21
                || (0x23..=0x2B).contains(&b)
                || (0x2D..=0x3A).contains(&b)
                || (0x3C..=0x5B).contains(&b)
                || (0x5D..=0x7E).contains(&b);
            assert_eq!(tchar(b), token, "tchar {b:#x}");
            assert_eq!(cookie_octet(b), octet, "cookie-octet {b:#x}");
        }
    }

    #[test]
    fn names_are_exact_and_values_follow_the_grammar() {
        let h = headers(&["a=1; __Host-s=abc.def; b=\"quoted\"", "c=3"]);
        assert_eq!(lookup(&h, "a"), Lookup::One("1"));
        assert_eq!(lookup(&h, "__Host-s"), Lookup::One("abc.def"));
        assert_eq!(lookup(&h, "b"), Lookup::One("quoted"));
        assert_eq!(lookup(&h, "c"), Lookup::One("3"));
        // Never decoded, never folded.
        for spelled in ["__host-s", "%5F_Host-s", "__Host-S", "s", " __Host-s"] {
            assert_eq!(lookup(&h, spelled), Lookup::Absent, "{spelled}");
        }
        let h = headers(&["%5F_Host-s=forged; __host-s=forged"]);
        assert_eq!(lookup(&h, "__Host-s"), Lookup::Absent);
    }

    #[test]
    fn a_cookie_sent_twice_is_repeated_whichever_header_carries_it() {
        assert_eq!(lookup(&headers(&["s=1; s=2"]), "s"), Lookup::Repeated);
        assert_eq!(
            lookup(&headers(&["s=1", "x=0; s=1"]), "s"),
            Lookup::Repeated
        );
        assert_eq!(lookup(&headers(&["s=1; S=2"]), "s"), Lookup::One("1"));
        let h = headers(&["s=1; d=2", "s=3"]);
        let [s, d, x] = lookup_many(&h, ["s", "d", "x"]);
        assert_eq!(
            (s, d, x),
            (Lookup::Repeated, Lookup::One("2"), Lookup::Absent)
        );
    }

    #[test]
    fn one_pass_sorting_agrees_with_the_lookup_and_with_each_piece_read_alone() {
        let own = [
            "stepgate_session".to_string(),
            "stepgate_device".to_string(),
        ];
        for line in [
            "stepgate_session=abc",
            "a=1; stepgate_session=abc; b=2",
            "a=1; b=2",
            "__Host-STEPGATE_SESSION=x",
            "stepgate%5Fsession=x; a=1",
            " ; ;stepgate_device=1 ;",
            "stepgate_session=\"bad value\"; a=1",
            "stepgate_session",
            "",
            "s=1; s=2; stepgate_session=3",
        ] {
            let h = headers(&[line]);
            let names = ["s", "stepgate_session", "a"];
            let (found, sorted) = lookup_many_sorting(&h, names, &own);
            assert_eq!(found, lookup_many(&h, names), "{line:?}");
            let pieces: Vec<&str> = line
                .split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            let alone = |p: &&str| own.iter().any(|o| has_key(set_cookie_name(p), o));
            let want = (pieces.iter().any(alone), !pieces.iter().all(alone));
            let line_value = h.get(http::header::COOKIE).unwrap();
            assert_eq!(sorted.unwrap().of(line_value), Some(want), "{line:?}");
            // Another line with the same text is not the line it was read from (an empty
            // one is: every empty value is the same static empty slice).
            let copy = http::HeaderValue::from_bytes(line.as_bytes()).unwrap();
            if !line.is_empty() {
                assert_eq!(sorted.unwrap().of(&copy), None, "{line:?}");
            }
        }
        // Two lines, or a line that is not text: not sorted here.
        let two = headers(&["stepgate_session=1", "a=2"]);
        assert_eq!(lookup_many_sorting(&two, ["a"], &own).1, None);
        let mut odd = HeaderMap::new();
        odd.append(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"stepgate_session=1; x=\xff").unwrap(),
        );
        assert_eq!(lookup_many_sorting(&odd, ["a"], &own).1, None);
    }

    /// The eight-at-a-time text check agrees with `HeaderValue::to_str` for every byte value
    /// at every place of a chunk and of the remainder, beside a tab or a letter, and for a
    /// character outside ASCII (valid UTF-8, which only the check itself refuses) anywhere.
    #[test]
    fn visible_text_agrees_with_to_str_for_every_byte_everywhere() {
        for len in 2..=24usize {
            for at in 0..len - 1 {
                let mut v = vec![b'a'; len];
                v[at..at + 2].copy_from_slice("é".as_bytes());
                let line = HeaderValue::from_bytes(&v).unwrap();
                assert_eq!(visible_text(&line), None, "é at {at} of {len}");
            }
        }
        for len in 1..=24usize {
            for at in 0..len {
                for b in 0..=255u8 {
                    for (there, other) in [(0, b'a'), ((at + 3) % len, b'\t')] {
                        let mut v = vec![b'a'; len];
                        v[there] = other;
                        v[at] = b;
                        let Ok(line) = HeaderValue::from_bytes(&v) else {
                            continue;
                        };
                        assert_eq!(
                            visible_text(&line),
                            line.to_str().ok(),
                            "{b:#04x} at {at}, {other:#04x} at {there} of {len}"
                        );
                    }
                }
            }
        }
    }

    /// Found by the `cookies` fuzz target: a byte outside ASCII anywhere in a `Cookie` line
    /// hid every pair of that line, so a copy of a cookie there did not make the one on
    /// another line `Repeated`.
    #[test]
    fn a_byte_outside_ascii_spoils_only_its_own_piece() {
        let mut h = HeaderMap::new();
        for line in [&b"s=1; x=\xc3\xa9; y=\xff"[..], b"s=2"] {
            h.append(
                http::header::COOKIE,
                http::HeaderValue::from_bytes(line).unwrap(),
            );
        }
        assert_eq!(lookup(&h, "s"), Lookup::Repeated);
        assert_eq!(
            lookup_many(&h, ["s", "x", "y"]),
            [Lookup::Repeated, Lookup::Absent, Lookup::Absent]
        );
        assert_eq!(pairs(&h).collect::<Vec<_>>(), [("s", "1"), ("s", "2")]);
    }

    #[test]
    fn pieces_outside_the_grammar_are_skipped() {
        for piece in [
            "s",
            "=v",
            "s=a b",
            "s=a,b",
            "s=a\\b",
            "s=\"unterminated",
            "s=\"a\"b",
            "s p=v",
            "s(=v",
        ] {
            assert_eq!(parse_pair(piece), None, "{piece}");
        }
        assert_eq!(parse_pair(" s=v\t"), Some(("s", "v")));
        assert_eq!(parse_pair("s="), Some(("s", "")));
        assert_eq!(parse_pair("s=a=b"), Some(("s", "a=b")));
        // A malformed copy does not make a well-formed one repeated.
        assert_eq!(
            lookup(&headers(&["s=good; s=bad value"]), "s"),
            Lookup::One("good")
        );
    }

    #[test]
    fn every_spelling_of_a_name_has_one_key() {
        for n in [
            "stepgate_session",
            "__Host-stepgate_session",
            "__host-STEPGATE_SESSION",
            "__Secure-stepgate_session",
            "stepgate%5Fsession",
            "%5F_Host-stepgate_session",
            "Stepgate_Session",
        ] {
            assert_eq!(name_key(n), "stepgate_session", "{n}");
        }
        assert_ne!(name_key("stepgate_sessions"), "stepgate_session");
        for n in [
            "stepgate_session",
            "__HOST-Stepgate_session",
            "%5F_Host-stepgate_session",
            "stepgate_sessions",
            "__Host-",
            "__Hostile",
            "x",
            "é_session",
        ] {
            assert_eq!(
                has_key(n, "stepgate_session"),
                name_key(n) == "stepgate_session",
                "{n}"
            );
        }
        assert_eq!(set_cookie_name("A=b; Path=/"), "A");
        assert_eq!(set_cookie_name(" x "), "x");
    }

    fn cookie_piece() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "stepgate_session",
            "__Host-stepgate_session",
            "STEPGATE_DEVICE",
            "stepgate%5Fsession",
            "s",
            "a",
            "=",
            "==",
            ";",
            "; ",
            " ",
            "\t",
            "\"",
            "v",
            "1",
            "%",
            ",",
            "\\",
            "é",
            "\u{7f}",
        ])
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5_000))]

        /// On any line made of names, separators, quotes, spaces and odd bytes, the one-pass
        /// sorting finds what the plain lookup finds, and sorts the line as each of its
        /// pieces read alone would (`set_cookie_name` and `has_key`, the stripping's reading).
        #[test]
        fn one_pass_sorting_agrees_on_any_line(pieces in proptest::collection::vec(cookie_piece(), 0..16)) {
            let line = pieces.concat();
            let Ok(value) = HeaderValue::from_str(&line) else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.append(http::header::COOKIE, value);
            let own = ["stepgate_session".to_string(), "stepgate_device".to_string()];
            let names = ["stepgate_session", "s", "a"];
            let (found, sorted) = lookup_many_sorting(&h, names, &own);
            proptest::prop_assert_eq!(found, lookup_many(&h, names), "{:?}", line);
            let line_value = h.get(http::header::COOKIE).unwrap();
            match line_value.to_str() {
                Ok(text) => {
                    let parts: Vec<&str> = text.split(';').map(str::trim).filter(|p| !p.is_empty()).collect();
                    let alone = |p: &&str| own.iter().any(|o| has_key(set_cookie_name(p), o));
                    let want = (parts.iter().any(alone), !parts.iter().all(alone));
                    proptest::prop_assert_eq!(sorted.and_then(|s| s.of(line_value)), Some(want), "{:?}", line);
                }
                Err(_) => proptest::prop_assert_eq!(sorted, None, "{:?}", line),
            }
        }
    }
}
