//! Fuzz target `mutate`: see `gatehouse_fuzz::mutate` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::mutate(data));
