//! Fuzz target `strict_reader`: see `gatehouse_fuzz::strict_reader` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::strict_reader(data));
