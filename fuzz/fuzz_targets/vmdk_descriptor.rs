//! Fuzzes the VMDK text descriptor parser (monolithicFlat descriptors are plain downloads).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_vmdk_descriptor(data));
