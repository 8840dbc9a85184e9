//! Fuzzes the vmdk reader: any bytes, opened as vmdk, read through map/read_at.
#![no_main]

use cloudimg::formats::DiskFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_format(DiskFormat::Vmdk, data));
