//! `compare`: whether two images hold the same guest bytes, as `qemu-img compare` decides it.
//!
//! Both readers are walked at increasing offsets in runs both agree on (so archive readers
//! work); runs that are zero in both are skipped without reading. The part of the larger image
//! past the smaller one's end must read as zeroes, unless `strict`, where a size difference or a
//! run that is data in one image and a hole in the other is a difference. A mismatch is
//! reported at the start of its 512-byte sector, as qemu reports it.

use super::{DiskReader, Extent, FormatError};
use crate::io::progress::Reporter;

/// Bytes compared per read.
const CHUNK: u64 = 1 << 20;
/// qemu reports mismatches at sector granularity.
const SECTOR: u64 = 512;

/// What `compare` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Same guest bytes (`sizes_differ`: the larger image's tail reads as zeroes).
    Identical { sizes_differ: bool },
    /// The first differing sector starts at `offset` (`sizes_differ`: it is in the larger
    /// image's tail).
    ContentMismatch { offset: u64, sizes_differ: bool },
    /// Strict mode: the virtual sizes differ.
    SizeMismatch,
    /// Strict mode: data in one image, a hole in the other, from `offset`.
    AllocationMismatch { offset: u64 },
}

/// Compares the guest bytes of `a` and `b`.
pub fn compare(
    a: &mut dyn DiskReader,
    b: &mut dyn DiskReader,
    strict: bool,
    reporter: &dyn Reporter,
) -> Result<Comparison, FormatError> {
    let (size_a, size_b) = (a.virtual_size(), b.virtual_size());
    let sizes_differ = size_a != size_b;
    if strict && sizes_differ {
        return Ok(Comparison::SizeMismatch);
    }
    let common = size_a.min(size_b);
    reporter.start("compare", Some(size_a.max(size_b)), 0);
    let result =
        walk(a, b, common, strict, reporter).and_then(|found| match found {
            Some(comparison) => Ok(Some(comparison)),
            None => {
                // The larger image's tail must be zeroes.
                let larger: &mut dyn DiskReader = if size_a > size_b { a } else { b };
                Ok(first_nonzero(larger, common, reporter)?.map(|offset| {
                    Comparison::ContentMismatch {
                        offset,
                        sizes_differ,
                    }
                }))
            }
        });
    reporter.finish();
    Ok(result?.unwrap_or(Comparison::Identical { sizes_differ }))
}

/// Compares the first `end` bytes of both images.
fn walk(
    a: &mut dyn DiskReader,
    b: &mut dyn DiskReader,
    end: u64,
    strict: bool,
    reporter: &dyn Reporter,
) -> Result<Option<Comparison>, FormatError> {
    let mut buf_a = vec![0u8; CHUNK as usize];
    let mut buf_b = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    while offset < end {
        let (map_a, map_b) = (a.map(offset)?, b.map(offset)?);
        let len = map_a.len.min(map_b.len).min(end - offset).min(CHUNK);
        if strict && map_a.extent != map_b.extent {
            return Ok(Some(Comparison::AllocationMismatch { offset }));
        }
        let n = len as usize;
        let mismatch = match (map_a.extent, map_b.extent) {
            (Extent::Zero, Extent::Zero) => None,
            (Extent::Data, Extent::Zero) => {
                a.read_at(offset, &mut buf_a[..n])?;
                first_nonzero_in(&buf_a[..n])
            }
            (Extent::Zero, Extent::Data) => {
                b.read_at(offset, &mut buf_b[..n])?;
                first_nonzero_in(&buf_b[..n])
            }
            (Extent::Data, Extent::Data) => {
                a.read_at(offset, &mut buf_a[..n])?;
                b.read_at(offset, &mut buf_b[..n])?;
                buf_a[..n].iter().zip(&buf_b[..n]).position(|(x, y)| x != y)
            }
        };
        if let Some(at) = mismatch {
            // Found before the larger image's tail: qemu has not looked at sizes yet.
            return Ok(Some(Comparison::ContentMismatch {
                offset: sector_start(offset + at as u64),
                sizes_differ: false,
            }));
        }
        offset += len;
        reporter.advance(len);
    }
    Ok(None)
}

/// The sector of the first non-zero byte of `reader` from `start` to its end.
fn first_nonzero(
    reader: &mut dyn DiskReader,
    start: u64,
    reporter: &dyn Reporter,
) -> Result<Option<u64>, FormatError> {
    let end = reader.virtual_size();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut offset = start;
    while offset < end {
        let mapping = reader.map(offset)?;
        let len = mapping.len.min(end - offset).min(CHUNK);
        if mapping.extent == Extent::Data {
            let n = len as usize;
            reader.read_at(offset, &mut buf[..n])?;
            if let Some(at) = first_nonzero_in(&buf[..n]) {
                return Ok(Some(sector_start(offset + at as u64)));
            }
        }
        offset += len;
        reporter.advance(len);
    }
    Ok(None)
}

fn first_nonzero_in(bytes: &[u8]) -> Option<usize> {
    if super::is_zero(bytes) {
        None
    } else {
        bytes.iter().position(|&b| b != 0)
    }
}

fn sector_start(offset: u64) -> u64 {
    offset - offset % SECTOR
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{ImageInfo, Mapping};
    use crate::io::progress::Silent;

    /// A reader over bytes; zero runs of 4 KiB blocks are holes.
    struct Bytes(Vec<u8>);

    impl DiskReader for Bytes {
        fn virtual_size(&self) -> u64 {
            self.0.len() as u64
        }
        fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
            let block = 4096u64.min(self.virtual_size() - offset);
            let start = offset as usize;
            let zero = self.0[start..start + block as usize]
                .iter()
                .all(|&b| b == 0);
            Ok(Mapping {
                extent: if zero { Extent::Zero } else { Extent::Data },
                len: block,
            })
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
            let start = offset as usize;
            buf.copy_from_slice(&self.0[start..start + buf.len()]);
            Ok(())
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::new(crate::formats::DiskFormat::Raw, self.virtual_size())
        }
    }

    fn run(a: Vec<u8>, b: Vec<u8>, strict: bool) -> Comparison {
        compare(&mut Bytes(a), &mut Bytes(b), strict, &Silent).unwrap()
    }

    #[test]
    fn identical_bytes_compare_identical() {
        let mut a = vec![0u8; 3 << 20];
        a[5000] = 7;
        assert_eq!(
            run(a.clone(), a, false),
            Comparison::Identical {
                sizes_differ: false
            }
        );
    }

    #[test]
    fn one_differing_byte_is_reported_at_its_sector() {
        let a = vec![0u8; 1 << 20];
        let mut b = a.clone();
        b[3000] = 1;
        assert_eq!(
            run(a, b, false),
            Comparison::ContentMismatch {
                offset: 2560,
                sizes_differ: false
            }
        );
    }

    #[test]
    fn a_longer_image_must_end_in_zeroes_unless_strict() {
        let a = vec![1u8; 8192];
        let mut b = a.clone();
        b.resize(16384, 0);
        assert_eq!(
            run(a.clone(), b.clone(), false),
            Comparison::Identical { sizes_differ: true }
        );
        assert_eq!(run(a.clone(), b.clone(), true), Comparison::SizeMismatch);
        b[9000] = 1;
        assert_eq!(
            run(a, b, false),
            Comparison::ContentMismatch {
                offset: 8704,
                sizes_differ: true
            }
        );
    }

    #[test]
    fn strict_mode_tells_data_from_holes() {
        let a = vec![0u8; 8192];
        let mut b = a.clone();
        b[4096] = 0;
        assert_eq!(
            run(a.clone(), b, true),
            Comparison::Identical {
                sizes_differ: false
            }
        );
        let mut c = a.clone();
        c[5000] = 9;
        assert_eq!(
            run(a, c, true),
            Comparison::AllocationMismatch { offset: 4096 }
        );
    }
}
