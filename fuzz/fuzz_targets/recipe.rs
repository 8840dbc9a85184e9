//! Fuzzes the bake recipe reader: any bytes as a TOML recipe, then the composition.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_recipe(data));
