//! Signing in through an upstream OpenID Provider — a real one, the certified npm
//! `oidc-provider` (e2e/oidc-op/op.js) — through the portal as a browser does: the first
//! sign-in creates the user with the provider's groups; a policy on an upstream group
//! decides; the provider's MFA counts for AAL2 within the trust window, and outside it (or
//! when the provider's `amr` is not trusted) stepgate asks for its own TOTP; forged and
//! replayed ID tokens (another key, another audience, a nonce used before, an answer this
//! browser did not ask for) are refused and audited.
//!
//! One file a theme: `sign_in`, `step_up`, `tokens`, `logout`, `re_check`; what they
//! share is in `common`.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod logout;
mod re_check;
mod sign_in;
mod step_up;
mod tokens;
