#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodelens::fuzzing::tracefs_format(data));
