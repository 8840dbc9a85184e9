//! Fuzzes guestfs: a partition table (GPT or MBR) read from the input as a disk.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_gpt(data));
