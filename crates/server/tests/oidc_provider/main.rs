//! stepgate as an OpenID Provider, driven by a relying party no one here wrote (authlib,
//! tests/oidc/rp.py) and, for what an honest client never does, by hand: a redirect URI
//! that was not registered is never redirected to, a code is good once (and its second use
//! revokes what the first issued), PKCE is S256 and must match, client secrets are checked,
//! codes expire.
//!
//! The RP needs `python3` with authlib, requests and pyotp (`.ci/run` installs them);
//! without them that test is skipped and counted in the run's "skipped: …" line, except
//! under `CI=true`.
//!
//! One file a theme: `authorize`, `codes`, `clients`, `tokens`, `logout`,
//! `relying_party`; what they share is in `common`.

#[path = "../support/mod.rs"]
mod support;

/// docs/gateway.md's Rust recipe for verifying the identity assertion, as an app compiles it.
#[allow(dead_code)]
mod recipe {
    include!("../../../../examples/assertion/verify_assertion.rs");
}

mod authorize;
mod clients;
mod codes;
mod common;
mod logout;
mod relying_party;
mod tokens;
