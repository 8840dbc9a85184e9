//! Fuzzes OVA/tar member handling: the input is split into members (name, contents) that are
//! packed into a real tar, then opened and read as the archive reader reads an `.ova`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_ova(data));
