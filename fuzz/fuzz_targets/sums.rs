//! Fuzzes the checksum-file parser (SHA256SUMS / SHA512SUMS): the first byte picks the
//! algorithm, the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_sums(data));
