//! Fuzz target `image_review`: see `gatehouse_fuzz::image_review` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::image_review(data));
