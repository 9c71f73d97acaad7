//! Header names as an upstream may read them.
//!
//! CGI-style gateways (WSGI, PHP-FPM, Rack) expose a header as `HTTP_` + its name upper-cased
//! with `-` turned into `_`, so `Remote_User: mallory` and `Remote-User: jane` both become
//! `HTTP_REMOTE_USER`, and which one the app sees depends on the server. A header that must
//! only come from stepgate is therefore removed under every name that folds to it.

/// Whether `name` reads as `canonical` to an upstream that ignores case and reads `_` as
/// `-`. `canonical` is lower case with `-` (as `http::HeaderName` spells names).
pub fn folds_to(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name.bytes().zip(canonical.bytes()).all(|(a, c)| {
            let a = match a.to_ascii_lowercase() {
                b'_' => b'-',
                other => other,
            };
            a == c
        })
}

/// Whether `name` is `canonical` spelled another way (an underscore, other case): such a
/// header comes from a client trying its luck, never from a proxy stepgate trusts.
pub fn respelled(name: &str, canonical: &str) -> bool {
    name != canonical && folds_to(name, canonical)
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
            "Remote_user",
        ] {
            assert!(folds_to(n, "remote-user"), "{n}");
        }
        for n in [
            "remote-users",
            "remoteuser",
            "remote user",
            "x-remote-user",
            "",
        ] {
            assert!(!folds_to(n, "remote-user"), "{n}");
        }
        assert!(respelled("remote_user", "remote-user"));
        assert!(!respelled("remote-user", "remote-user"));
    }
}
