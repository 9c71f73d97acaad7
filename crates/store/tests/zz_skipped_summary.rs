//! Prints the run's "skipped: N tests need …" line (tests/support/skipped.rs).
//!
//! Named to sort last: `cargo test` runs test binaries sorted by package name, then by
//! target name, and `stepgate-store` is the last package of the workspace, so under
//! `cargo test --workspace` this binary runs after every other test binary (only the doc
//! tests follow). Under a narrower run it summarises what ran before it.

#[path = "../../../tests/support/skipped.rs"]
mod skipped;

#[test]
fn summary_of_skipped_tests() {
    skipped::print_summary();
}
