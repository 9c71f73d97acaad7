//! How stepgate reads an HTTP request, as the upstream behind it will read it.
//!
//! Pure functions, no I/O: every entry point (the reverse proxy, each forward-auth
//! endpoint) reads the request target, the cookies and the client address through this
//! crate, so one request has one reading wherever it arrives, and anything that could be
//! read two ways is refused rather than guessed at.
