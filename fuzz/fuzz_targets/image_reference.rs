//! Fuzz target `image_reference`: see `gatehouse_fuzz::image_reference` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::image_reference(data));
