//! The test kit every integration test of crates/server includes with `mod support;`.
//!
//! - [`Server`]: a stepgate started from a test's YAML (placeholders filled in, a temporary
//!   base directory, loopback, the demo's users or the test's own), or only its [`State`].
//! - [`user`], [`audit`], [`signed_in_session`], [`aal3_session`]: what tests read of, or put in, its stores.
//! - [`upstream`]: apps behind it (a fixed text, an echo of what arrived, any axum router).
//! - [`Browser`], [`Page`], [`sign_in`]: clients that resolve `*.test` to loopback, keep
//!   cookies and sign in through the portal as a browser does; [`header`], [`retry_after`].
//! - [`Person`], [`JANE`]: who signs in, and the TOTP codes they type.
//! - [`hexnode`]: a recording Hexnode UEM for the device connector's tests.
//! - [`prom`]: a Prometheus scrape read sample by sample, and `promtool check metrics`.
//! - [`oidc_op`]: a real OpenID Provider (npm `oidc-provider`) as the upstream identity
//!   provider, and a tap on its token endpoint for forged and replayed ID tokens.
//! - [`slapd`]: a real LDAP directory (Debian's OpenLDAP) with a test CA and a small tree.
//! - [`Passkey`]: a software passkey registered for a user, signing in through the portal.
//! - [`raw`]: requests written byte for byte, for what an HTTP library would tidy up.
//! - [`error_page`], [`api_refusal`]: the gateway's own error page, or its JSON to an API.
//! - [`window_start`], [`after_window`]: fixed rate-limit windows.
//! - [`skipped`]: a test that returns early because a peer is missing (nginx, Caddy, a
//!   Python module) records it, for the run's "skipped: …" summary line
//!   (tests/support/skipped.rs at the workspace root).
//!
//! Not a test target of its own: cargo builds only the files directly in `tests/`.

// Each test file uses a part of the kit.
#![allow(dead_code, unused_imports)]

mod browser;
pub mod hexnode;
pub mod oidc_op;
pub mod passkey;
mod people;
pub mod prom;
pub mod raw;
mod refusal;
mod server;
#[path = "../../../../tests/support/skipped.rs"]
pub mod skipped;
pub mod slapd;
pub mod upstream;
mod window;

pub use browser::{
    client, field, header, password, redirects, retry_after, sign_in, Browser, Page,
};
pub use passkey::Passkey;
pub use people::{totp_data, Person, JANE};
pub use raw::{raw, raw_get, RawAnswer};
pub use refusal::{api_refusal, error_page};
pub use server::{
    aal3_session, audit, sha256_hex, signed_in_session, user, Server, ServerBuilder, Serving, State,
};
pub use window::{after_window, window_start};
