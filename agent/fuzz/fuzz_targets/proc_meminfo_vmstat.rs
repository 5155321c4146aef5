#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodelens::fuzzing::proc_meminfo_vmstat(data));
