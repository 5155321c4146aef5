#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodelens::fuzzing::proc_loadavg_pressure(data));
