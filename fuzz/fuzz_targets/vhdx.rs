//! Fuzzes the vhdx reader: any bytes, opened as vhdx, read through map/read_at.
#![no_main]

use cloudimg::formats::DiskFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_format(DiskFormat::Vhdx, data));
