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

#[cfg(test)]
mod tests {
    use super::*;

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
