//! stepgate's pure decision core.
pub mod duration;
pub use duration::HumanDuration;
