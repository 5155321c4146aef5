#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodelens::fuzzing::config_file(data));
