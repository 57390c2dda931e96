//! The fuzz targets' checks. They live in `checks.rs`, which `tests/properties.rs` and
//! `tests/fuzz_regressions.rs` include too, so cargo-fuzz, the property tests and the
//! regression tests hold every entry point to the same invariants.

mod checks;

pub use checks::*;
