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
    if name
        .bytes()
        .any(|b| b == b'_' || b == b'.' || b.is_ascii_uppercase())
    {
        Cow::Owned(
            name.bytes()
                .map(|b| match b.to_ascii_lowercase() {
                    b'_' | b'.' => '-',
                    other => other as char,
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(name)
    }
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
    }
}
