//! Fuzz target `token_review`: see `gatehouse_fuzz::token_review` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::token_review(data));
