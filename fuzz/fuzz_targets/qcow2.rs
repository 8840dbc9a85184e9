//! Fuzzes the qcow2 reader: any bytes, opened as qcow2, read through map/read_at.
#![no_main]

use cloudimg::formats::DiskFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloudimg_fuzz::fuzz_format(DiskFormat::Qcow2, data));
