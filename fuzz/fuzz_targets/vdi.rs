//! Fuzzes the vdi reader: any bytes, opened as vdi, read through map/read_at.
#![no_main]

use cloudimg::formats::DiskFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_format(DiskFormat::Vdi, data));
