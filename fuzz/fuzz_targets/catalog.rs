//! Fuzzes the catalog TOML readers: any text as a source catalog and as a user catalog.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_catalog(data));
