//! Header names as an upstream may read them.
//!
//! CGI-style gateways (WSGI, PHP-FPM, Rack) expose a header as `HTTP_` + its name upper-cased
//! with `-` turned into `_`, so `Remote_User: mallory` and `Remote-User: jane` both become
//! `HTTP_REMOTE_USER`, and which one the app sees depends on the server. A header that must
//! only come from stepgate is therefore removed under every name that folds to it; `.` is
//! folded like `_` (some gateways map it to `_` as well, and no real header has one).

use std::borrow::Cow;

/// `name` as such an upstream may read it: lower case, `_` and `.` read as `-`. Borrowed
/// when it is that already (nearly every name `http::HeaderName` gives).
pub fn fold(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| fold_byte(b) != b) {
        Cow::Owned(name.bytes().map(|b| fold_byte(b) as char).collect())
    } else {
        Cow::Borrowed(name)
    }
}

/// One byte of a name as [`fold`] reads it. Folding goes byte by byte and keeps the
/// length, so a name's folded first byte and length are known without folding it.
pub const fn fold_byte(b: u8) -> u8 {
    match b.to_ascii_lowercase() {
        b'_' | b'.' => b'-',
        other => other,
    }
}

/// Whether `name` folds to `folded` (a name [`fold`] leaves as it is): `fold(name) ==
/// folded`, without folding `name`.
pub fn folds_to(name: &str, folded: &str) -> bool {
    name.len() == folded.len()
        && name
            .bytes()
            .zip(folded.bytes())
            .all(|(n, f)| fold_byte(n) == f)
}

/// Whether `name` has a byte that [`fold`] folds to `-` without being one (`_` or `.`),
/// for a name already in lower case (as `http::HeaderName` gives it): whether it is a
/// respelling at all. Eight bytes at a time, the rest one by one: it runs on every header
/// name of every forward-auth request, where names are short, and measured under callgrind
/// it costs ~80 instructions a name against `memchr2`'s ~100 (mostly its set-up) and ~140
/// for a plain pass over the bytes.
pub fn has_folded_separator(name: &str) -> bool {
    use crate::words::{has_byte, word};
    let mut chunks = name.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let x = word(chunk);
        if has_byte(x, b'_') | has_byte(x, b'.') != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folded_separator_is_found_at_every_place_and_nothing_else_is() {
        // Every byte value at every place of names from 1 to 24 bytes (three chunks and
        // every remainder), against the plain byte test.
        for len in 1..=24 {
            for at in 0..len {
                for b in 0u8..=0x7f {
                    let mut name = vec![b'a'; len];
                    name[at] = b;
                    let name = std::str::from_utf8(&name).unwrap();
                    let plain = name.bytes().any(|b| b == b'_' || b == b'.');
                    assert_eq!(has_folded_separator(name), plain, "{name:?}");
                }
            }
        }
        assert!(!has_folded_separator(""));
        assert!(has_folded_separator("x-forwarded_uri"));
        assert!(!has_folded_separator("x-forwarded-method"));
    }

    #[test]
    fn names_fold_as_cgi_gateways_fold_them() {
        for n in [
            "remote-user",
            "Remote-User",
            "REMOTE_USER",
            "remote_user",
            "Remote.user",
        ] {
            assert_eq!(fold(n), "remote-user", "{n}");
        }
        for n in ["remote-users", "remoteuser", "x-remote-user"] {
            assert_ne!(fold(n), "remote-user", "{n}");
        }
        assert!(matches!(fold("remote-user"), Cow::Borrowed(_)));
        for n in [
            "Remote_User",
            "remote-user",
            "REMOTE.USER",
            "remote-users",
            "remote",
            "",
        ] {
            assert_eq!(folds_to(n, "remote-user"), fold(n) == "remote-user", "{n}");
            assert_eq!(
                fold_byte(n.bytes().next().unwrap_or(b'r')),
                fold(n).bytes().next().unwrap_or(b'r')
            );
        }
    }
}
