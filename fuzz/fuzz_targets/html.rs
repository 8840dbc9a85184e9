//! Fuzzes the Apache listing parser (`index::html`): any bytes as a listing page.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_listing(data));
