//! Fuzzes OpenPGP: the first byte picks a keyring (armored or binary keys) or a detached
//! signature (armored or binary) checked against Ubuntu's signing keys.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_openpgp(data));
