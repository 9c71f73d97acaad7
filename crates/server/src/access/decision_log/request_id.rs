//! The request id: made per request by the server's connection service, carried in a
//! task-local ([`crate::app::serving`]) to the entry points, returned in [`REQUEST_ID_HEADER`] and the key of the
//! request's decision in the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A request's id: unique across nodes and restarts (a random per-process prefix and a
/// counter), returned to the client in [`REQUEST_ID_HEADER`], shown on the blocked and
/// step-up pages and the key of its decision in the log. Built without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 24]);

/// The response header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl RequestId {
    /// The id of the HTTP request this task is serving (the one its log lines carry), or a
    /// new one outside a request (a CAEP re-evaluation, a test calling a handler).
    pub fn current() -> Self {
        crate::app::serving::SERVING
            .try_with(|s| s.id)
            .unwrap_or_default()
    }

    /// A new id.
    pub fn new() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(rand::random::<u64>) & 0xffff_ffff_ffff;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
        let mut buf = [0u8; 24];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, v) in [prefix, n].into_iter().enumerate() {
            for j in 0..12 {
                buf[i * 12 + j] = HEX[((v >> (4 * (11 - j))) & 0xf) as usize];
            }
        }
        RequestId(buf)
    }

    /// The id as text (24 lower-case hex digits).
    pub fn as_str(&self) -> &str {
        // Only hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or("000000000000000000000000")
    }
}

/// Sets `id` as `response`'s [`REQUEST_ID_HEADER`] (replacing one an upstream set: the id
/// names stepgate's decision on the request).
pub fn set_header(response: &mut axum::response::Response, id: RequestId) {
    if let Ok(v) = axum::http::HeaderValue::from_bytes(&id.0) {
        response.headers_mut().insert(REQUEST_ID_NAME, v);
    }
}

/// Whether `response` carries its request id already ([`set_header`]).
pub fn has_header(response: &axum::response::Response) -> bool {
    response.headers().contains_key(REQUEST_ID_NAME)
}

/// [`REQUEST_ID_HEADER`], checked once, at compile time (a name given as `&str` is parsed
/// and hashed on every call).
pub const REQUEST_ID_NAME: axum::http::HeaderName =
    axum::http::HeaderName::from_static(REQUEST_ID_HEADER);

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_hex_and_distinct() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 24);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        // The same process: the same prefix, the next number.
        assert_eq!(a.as_str()[..12], b.as_str()[..12]);
    }
}
