//! Fuzzes guestfs: a grub.cfg: its first menu entry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_grub_cfg(data));
