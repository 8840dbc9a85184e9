//! Fuzzes the archive reader (tar, tar.gz, tar.xz) and the disk formats read out of a stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_archive(data));
