//! Grain compression: zlib-wrapped deflate, one stream per grain.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Inflates one grain into `out` (one grain long), zero-filling what the stream leaves
/// (a stream's last grain may be short). Fails if the data would inflate past `out` or the
/// stream is cut short.
pub fn inflate_grain(inflater: &mut Decompress, data: &[u8], out: &mut [u8]) -> Result<(), String> {
    inflater.reset(true);
    let status = inflater
        .decompress(data, out, FlushDecompress::Finish)
        .map_err(|e| format!("corrupt deflate data: {e}"))?;
    let written = usize::try_from(inflater.total_out()).unwrap_or(usize::MAX);
    match status {
        Status::StreamEnd => {
            if let Some(rest) = out.get_mut(written..) {
                rest.fill(0);
            }
            Ok(())
        }
        _ if written >= out.len() => Err(format!("grain inflates past {} bytes", out.len())),
        _ => Err("compressed grain is truncated".into()),
    }
}

/// Compresses one grain as a zlib stream, appending it to `out`.
pub fn deflate_grain(
    deflater: &mut Compress,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    deflater.reset();
    // zlib's worst case is a few bytes per 16 KiB stored block plus header and trailer.
    out.reserve(data.len() + data.len() / 1000 + 64);
    loop {
        let consumed = usize::try_from(deflater.total_in()).unwrap_or(usize::MAX);
        let input = data.get(consumed..).unwrap_or_default();
        let status = deflater
            .compress_vec(input, out, FlushCompress::Finish)
            .map_err(|e| format!("deflate failed: {e}"))?;
        if status == Status::StreamEnd {
            return Ok(());
        }
        out.reserve(4096);
    }
}

/// A grain compressor with the level cloudimg uses (zlib's default, as qemu).
pub fn new_deflater() -> Compress {
    Compress::new(Compression::new(6), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grain_round_trips_and_short_output_is_zero_filled() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
        let mut z = Vec::new();
        deflate_grain(&mut new_deflater(), &data, &mut z).unwrap();
        let mut out = vec![0xffu8; 4096];
        inflate_grain(&mut Decompress::new(true), &z, &mut out).unwrap();
        assert_eq!(&out[..3000], &data[..]);
        assert!(out[3000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn grain_inflating_past_one_grain_is_rejected() {
        let mut z = Vec::new();
        deflate_grain(&mut new_deflater(), &[0u8; 8192], &mut z).unwrap();
        let mut out = vec![0u8; 4096];
        let e = inflate_grain(&mut Decompress::new(true), &z, &mut out).unwrap_err();
        assert!(e.contains("past"), "{e}");
    }

    #[test]
    fn truncated_grain_is_rejected() {
        let mut z = Vec::new();
        deflate_grain(&mut new_deflater(), &[1u8; 1000], &mut z).unwrap();
        z.truncate(z.len() - 1);
        let mut out = vec![0u8; 4096];
        assert!(inflate_grain(&mut Decompress::new(true), &z, &mut out).is_err());
    }
}
