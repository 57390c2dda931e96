//! Fuzz target `admission_review`: see `gatehouse_fuzz::admission_review` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::admission_review(data));
