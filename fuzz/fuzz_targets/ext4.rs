//! Fuzzes guestfs: an ext2/3/4 filesystem (the input): tree walk, files, links, boot::find and extract.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_ext4(data));
