//! The request target (`/path?query`) as routes are matched on it and as the upstream
//! receives it.
//!
//! A route is only a boundary if a client cannot reach the same resource under another
//! spelling. Upstreams decode `%61dmin` to `admin` and resolve `/x/../admin` to `/admin`,
//! some (Tomcat, Jetty, Spring) read `;x` path parameters and strip them, some (IIS) read
//! `\` as `/` or fold Unicode case. So a target is put in the one form RFC 3986 (§6.2.2)
//! makes equivalent to it — percent-encoded unreserved characters decoded, the hex digits of
//! every other escape in upper case, dot segments removed — and the proxy sends that same
//! form upstream, so the path decided on is the path served. A spelling whose meaning
//! depends on the upstream is refused ([`TargetRefusal`]), never guessed at.

use std::borrow::Cow;

/// Why a request target was refused: the upstream could read it another way than stepgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefusal {
    /// Not `/…` (the asterisk form of `OPTIONS *`, an empty or relative target).
    #[error("the request target must start with /")]
    NotOriginForm,
    /// A raw byte outside printable ASCII (UTF-8 must be percent-encoded in a target).
    #[error(
        "the request target has a raw byte outside printable ASCII (0x{0:02X}); percent-encode it"
    )]
    RawByte(u8),
    /// A raw `\`, which some upstreams read as `/`.
    #[error("the request target has a \\, which some upstreams read as /")]
    Backslash,
    /// `"`, `<`, `>` or a backquote, which a URI may not hold and every browser encodes
    /// (HTTP parsers differ on whether to accept them raw).
    #[error("the request target has {0:?}, which must be percent-encoded")]
    Unsafe(char),
    /// A `#`: a fragment is the browser's, never sent to a server.
    #[error("the request target has a #, which no client sends")]
    Fragment,
    /// A `%` not followed by two hex digits (in the path).
    #[error("the path has a % not followed by two hex digits")]
    BadEscape,
    /// `%00` anywhere.
    #[error("the request target has an encoded NUL (%00)")]
    NulEscape,
    /// `%2F` or `%5C` in the path: a separator some upstreams decode and others do not.
    #[error("the path has an encoded / or \\ (%2F, %5C), which upstreams read differently")]
    EncodedSeparator,
    /// The path's escapes decode to bytes that are not UTF-8 (overlong forms, surrogates,
    /// stray continuation bytes), which upstreams decode differently or not at all.
    #[error("the path's percent-escapes are not valid UTF-8")]
    BadUtf8,
    /// `;` (raw or `%3B`) in a path segment: Tomcat, Jetty and Spring strip what follows
    /// as path parameters, other upstreams do not. An app may opt in to having them
    /// stripped (`path_parameters: strip`).
    #[error("the path has ; parameters, which some upstreams strip and others keep")]
    PathParameters,
    /// A `..` segment that removes an empty one (`/public//../admin`, and as well
    /// `/public//x/../../admin` or `/public//./../admin`): RFC 3986 resolves it to
    /// `/public/admin`, an upstream that merges slashes first (nginx, many frameworks) to
    /// `/admin`.
    #[error(
        "the path has a .. segment removing an empty one (//), which upstreams resolve differently"
    )]
    DotSegmentAfterEmpty,
    /// In an app whose paths are matched ignoring case: a letter that case mapping turns
    /// into ASCII letters (`ſ` into `S`, the Kelvin sign into `k`, `ß` into `SS`). Routes
    /// fold ASCII case only, while an upstream that folds Unicode case would serve
    /// `/ſecret` as `/secret`, outside `/secret`'s route.
    #[error("the path has {} (U+{:04X}), which a case-insensitive upstream may read as ASCII letters", .0, u32::from(*.0))]
    CaseFoldsToAscii(char),
}

/// What an app lets through that the strict reading refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetRules {
    /// Raw `;` path parameters are removed from every segment before the path is matched
    /// and before it is forwarded (`path_parameters: strip`); refused otherwise.
    pub strip_path_parameters: bool,
    /// The upstream matches paths ignoring case: letters that fold into ASCII are refused.
    pub case_insensitive: bool,
}

/// A request target read as the upstream will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The path in normal form: what routes are matched on and what is forwarded.
    pub path: Cow<'a, str>,
    /// The query as sent (without `?`), checked but not rewritten: routes never read it.
    pub query: Option<&'a str>,
}

impl Target<'_> {
    /// Whether the target is exactly as it was sent (nothing to rewrite before forwarding).
    pub fn unchanged(&self) -> bool {
        matches!(self.path, Cow::Borrowed(_))
    }

    /// `path?query`, as forwarded.
    pub fn to_origin_form(&self) -> String {
        match self.query {
            Some(q) => [&*self.path, "?", q].concat(),
            None => self.path.to_string(),
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Reads an origin-form target (`/path?query`, as sent: nothing decoded) under `rules`.
/// Borrows, at no cost, when the target is already in normal form, which is nearly always.
pub fn read_target(raw: &str, rules: TargetRules) -> Result<Target<'_>, TargetRefusal> {
    if !raw.starts_with('/') {
        return Err(TargetRefusal::NotOriginForm);
    }
    let bytes = raw.as_bytes();
    // One pass over the raw bytes for what is refused anywhere in the target.
    let mut needs_work = false;
    for &b in bytes {
        match b {
            0x21..=0x7E => {}
            other => return Err(TargetRefusal::RawByte(other)),
        }
        match b {
            b'\\' => return Err(TargetRefusal::Backslash),
            b'#' => return Err(TargetRefusal::Fragment),
            b'"' | b'<' | b'>' | b'`' => return Err(TargetRefusal::Unsafe(b as char)),
            b'%' | b';' | b'.' => needs_work = true,
            _ => {}
        }
    }
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    if let Some(q) = query {
        // The query is the upstream's to read; only an encoded NUL, which many upstreams
        // truncate at, is refused.
        if q.as_bytes().windows(3).any(|w| w == b"%00") {
            return Err(TargetRefusal::NulEscape);
        }
    }
    if !needs_work {
        return Ok(Target {
            path: Cow::Borrowed(path),
            query,
        });
    }
    let path = normalize_path(path, rules)?;
    if rules.case_insensitive {
        case_fold_unambiguous(&path)?;
    }
    Ok(Target { path, query })
}

/// The normal form of a path (no query): see the module documentation.
fn normalize_path(path: &str, rules: TargetRules) -> Result<Cow<'_, str>, TargetRefusal> {
    let bytes = path.as_bytes();
    if bytes.contains(&b';') && !rules.strip_path_parameters {
        return Err(TargetRefusal::PathParameters);
    }
    let dotted = path.contains("/.") && has_dot_segment(path);
    let stripping = bytes.contains(&b';');
    if !dotted && !stripping && !bytes.contains(&b'%') {
        return Ok(Cow::Borrowed(path));
    }
    // Path parameters first (as the upstreams that read them do), then escapes.
    let mut decoded = String::with_capacity(path.len());
    let mut raw_segment_bytes: Vec<u8> = Vec::new();
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            decoded.push('/');
        }
        let segment = segment.split(';').next().unwrap_or(segment);
        decode_segment(segment, &mut decoded, &mut raw_segment_bytes)?;
    }
    // Remove dot segments (RFC 3986 §5.2.4), keeping empty segments as they are.
    let mut out: Vec<&str> = Vec::new();
    let mut segments = decoded.split('/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "." | ".." => {
                // An upstream that merges slashes first removes the segment before an empty
                // one instead: whichever `..` takes it, not only one right after `//`.
                if seg == ".." && out.pop() == Some("") {
                    return Err(TargetRefusal::DotSegmentAfterEmpty);
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

/// Appends `segment` to `out` with unreserved escapes decoded and every other escape in
/// upper case, checking that the escapes decode to UTF-8 (`scratch` is reused).
fn decode_segment(
    segment: &str,
    out: &mut String,
    scratch: &mut Vec<u8>,
) -> Result<(), TargetRefusal> {
    let bytes = segment.as_bytes();
    scratch.clear();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            scratch.push(b);
            out.push(b as char);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(TargetRefusal::BadEscape);
        };
        let v = hi * 16 + lo;
        match v {
            b'/' | b'\\' => return Err(TargetRefusal::EncodedSeparator),
            0 => return Err(TargetRefusal::NulEscape),
            b';' => return Err(TargetRefusal::PathParameters),
            v if unreserved(v) => out.push(v as char),
            v => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(v >> 4)] as char);
                out.push(HEX[usize::from(v & 15)] as char);
            }
        }
        scratch.push(v);
        i += 3;
    }
    if std::str::from_utf8(scratch).is_err() {
        return Err(TargetRefusal::BadUtf8);
    }
    Ok(())
}

/// Whether a segment is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    path.split('/')
        .map(|s| s.split(';').next().unwrap_or(s))
        .any(|bare| bare == "." || bare == "..")
}

/// Checks a normal-form path of an app whose paths are matched ignoring case: refused when
/// it names, raw or percent-encoded, a letter whose case mapping holds ASCII letters
/// ([`TargetRefusal::CaseFoldsToAscii`]).
pub fn case_fold_unambiguous(path: &str) -> Result<(), TargetRefusal> {
    let bytes = path.as_bytes();
    if bytes.is_ascii() && !bytes.contains(&b'%') {
        return Ok(());
    }
    match percent_encoding::percent_decode(bytes)
        .decode_utf8_lossy()
        .chars()
        .find(|&c| folds_to_ascii(c))
    {
        Some(c) => Err(TargetRefusal::CaseFoldsToAscii(c)),
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

/// Why a method was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MethodRefusal {
    /// Empty or not an HTTP token.
    #[error("the method is not a valid HTTP method name")]
    Invalid,
    /// `CONNECT` (a tunnel) or `TRACE` (echoes credentials back): stepgate proxies neither.
    #[error("the {0} method is not supported")]
    Unsupported(&'static str),
}

/// Reads a method name as sent (a token, case-sensitive as RFC 9110 says); `CONNECT` and
/// `TRACE` are refused.
pub fn read_method(raw: &[u8]) -> Result<http::Method, MethodRefusal> {
    let m = http::Method::from_bytes(raw).map_err(|_| MethodRefusal::Invalid)?;
    check_method(&m)?;
    Ok(m)
}

/// Refuses the methods stepgate does not proxy (see [`read_method`]).
pub fn check_method(m: &http::Method) -> Result<(), MethodRefusal> {
    if *m == http::Method::CONNECT {
        return Err(MethodRefusal::Unsupported("CONNECT"));
    }
    if *m == http::Method::TRACE {
        return Err(MethodRefusal::Unsupported("TRACE"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
