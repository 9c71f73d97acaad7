//! Text eight bytes at a time: the byte tests the readers run on every request (a cookie's
//! value, a `Cookie` line, each header name of a forward-auth request) made on one 64-bit
//! word at a time instead of byte by byte.

/// `0x01` in every byte.
pub(crate) const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` (the high bit) in every byte.
pub(crate) const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The eight bytes of `chunk` as one word.
#[inline]
pub(crate) fn word(chunk: &[u8]) -> u64 {
    let mut eight = [0u8; 8];
    eight.copy_from_slice(chunk);
    u64::from_ne_bytes(eight)
}

/// Non-zero when some byte of `x` is zero (exact as to whether, not as to which byte).
#[inline]
pub(crate) fn has_zero(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Non-zero when some byte of `x` is `b` (exact as to whether).
#[inline]
pub(crate) fn has_byte(x: u64, b: u8) -> u64 {
    has_zero(x ^ (ONES * u64::from(b)))
}
