//! Fuzzes the simplestreams parsers: any bytes as `index.json` and as a products file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_streams(data));
