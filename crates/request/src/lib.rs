//! How stepgate reads an HTTP request, as the upstream behind it will read it.
//!
//! Pure functions, no I/O: every entry point (the reverse proxy, each forward-auth
//! endpoint) reads the request target, the cookies and the client address through this
//! crate, so one request has one reading wherever it arrives, and anything that could be
//! read two ways is refused rather than guessed at.
//!
//! - [`target`]: the method and `/path?query`, in the normal form routes are matched on
//!   and the upstream is sent.
//! - [`forwarded`]: the client address behind trusted proxies, failing safe to "unknown".
//! - [`cookies`]: `Cookie` headers by the RFC 6265 grammar, exact names, repeats refused.
//! - [`names`]: header names as CGI-style upstreams fold them (`Remote_User`).
//!
//! What does not belong here: anything that needs the configuration, a store or the
//! network (that is the server's), or a policy decision.

pub mod cookies;
pub mod forwarded;
pub mod names;
pub mod target;
mod words;

pub use forwarded::{client_addr, ClientAddr, ForwardedHeader};
pub use target::{read_method, read_target, MethodRefusal, Target, TargetRefusal, TargetRules};
