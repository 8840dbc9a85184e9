//! Compression of single clusters, as qemu does it: raw deflate with a 4 KiB window (level 6),
//! or one zstd frame (level 3), each bounded to one cluster of output.

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use super::header::Compression;

/// qemu's deflate window: 2^12 bytes, raw stream (no zlib header).
const DEFLATE_WINDOW_BITS: u8 = 12;
/// qemu's deflate level (`Z_DEFAULT_COMPRESSION`).
const DEFLATE_LEVEL: u32 = 6;
/// qemu's zstd level (`ZSTD_CLEVEL_DEFAULT`).
const ZSTD_LEVEL: i32 = 3;

/// Compresses whole clusters; one per worker thread.
pub struct ClusterCompressor {
    deflate: Compress,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    kind: Compression,
}

impl ClusterCompressor {
    pub fn new(kind: Compression) -> std::io::Result<ClusterCompressor> {
        let zstd = match kind {
            Compression::Zstd => Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
            Compression::Zlib => None,
        };
        Ok(ClusterCompressor {
            deflate: Compress::new_with_window_bits(
                flate2::Compression::new(DEFLATE_LEVEL),
                false,
                DEFLATE_WINDOW_BITS,
            ),
            zstd,
            kind,
        })
    }

    /// Compresses `data` into `out`. Returns false, like qemu, when the result would not be
    /// smaller than one cluster minus one byte: the cluster is then stored uncompressed.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let limit = data.len().saturating_sub(1);
        out.clear();
        // Room for the whole stream even when it does not shrink: zlib-rs 0.6 panics when its
        // pending buffer cannot drain into a full output while emitting a stored block.
        out.resize(data.len() * 2 + 1024, 0);
        let len = match (self.kind, self.zstd.as_mut()) {
            (Compression::Zstd, Some(z)) => z.compress_to_buffer(data, &mut out[..]).ok(),
            _ => {
                self.deflate.reset();
                match self.deflate.compress(data, out, FlushCompress::Finish) {
                    Ok(Status::StreamEnd) => Some(self.deflate.total_out() as usize),
                    _ => None,
                }
            }
        };
        match len {
            Some(n) if n < limit => {
                out.truncate(n);
                true
            }
            _ => false,
        }
    }
}

/// Inflates compressed clusters, reusing its state between clusters.
pub struct ClusterDecompressor {
    deflate: Decompress,
    zstd: Option<Decoder<'static>>,
}

impl ClusterDecompressor {
    pub fn new() -> ClusterDecompressor {
        ClusterDecompressor {
            deflate: Decompress::new_with_window_bits(false, DEFLATE_WINDOW_BITS),
            zstd: None,
        }
    }

    /// Fills `out` (one cluster) from the stream at the start of `src`; bytes after the stream
    /// are ignored (they belong to the next cluster). Output beyond `out` is never produced.
    pub fn decompress(
        &mut self,
        kind: Compression,
        src: &[u8],
        out: &mut [u8],
    ) -> Result<(), String> {
        match kind {
            Compression::Zlib => {
                self.deflate.reset(false);
                match self.deflate.decompress(src, out, FlushDecompress::Finish) {
                    Ok(_) if self.deflate.total_out() == out.len() as u64 => Ok(()),
                    Ok(_) => Err(format!(
                        "deflate stream ends after {} of {} bytes",
                        self.deflate.total_out(),
                        out.len()
                    )),
                    Err(e) => Err(format!("deflate: {e}")),
                }
            }
            Compression::Zstd => {
                let decoder = match &mut self.zstd {
                    Some(d) => {
                        d.reinit().map_err(|e| format!("zstd: {e}"))?;
                        d
                    }
                    None => self
                        .zstd
                        .insert(Decoder::new().map_err(|e| format!("zstd: {e}"))?),
                };
                let mut input = InBuffer::around(src);
                let mut output = OutBuffer::around(out);
                // Each step consumes input or produces output, so this ends within
                // src.len() + out.len() steps.
                while output.pos() < output.capacity() {
                    let (in_before, out_before) = (input.pos, output.pos());
                    let hint = decoder
                        .run(&mut input, &mut output)
                        .map_err(|e| format!("zstd: {e}"))?;
                    if hint == 0 || (input.pos == in_before && output.pos() == out_before) {
                        break;
                    }
                }
                if output.pos() == output.capacity() {
                    Ok(())
                } else {
                    Err(format!(
                        "zstd frame ends after {} of {} bytes",
                        output.pos(),
                        output.capacity()
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..65536u32).map(|i| (i / 300) as u8).collect()
    }

    #[test]
    fn deflate_round_trip_ignores_trailing_bytes() {
        let mut c = ClusterCompressor::new(Compression::Zlib).unwrap();
        let mut out = Vec::new();
        assert!(c.compress(&sample(), &mut out));
        out.extend_from_slice(&[0xff; 100]);
        let mut back = vec![0; 65536];
        ClusterDecompressor::new()
            .decompress(Compression::Zlib, &out, &mut back)
            .unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn zstd_round_trip() {
        let mut c = ClusterCompressor::new(Compression::Zstd).unwrap();
        let mut out = Vec::new();
        assert!(c.compress(&sample(), &mut out));
        let mut back = vec![0; 65536];
        let mut d = ClusterDecompressor::new();
        d.decompress(Compression::Zstd, &out, &mut back).unwrap();
        assert_eq!(back, sample());
        // A second cluster reuses the decoder.
        d.decompress(Compression::Zstd, &out, &mut back).unwrap();
    }

    #[test]
    fn incompressible_cluster_is_refused() {
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        assert!(!ClusterCompressor::new(Compression::Zlib)
            .unwrap()
            .compress(&noise, &mut out));
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let mut c = ClusterCompressor::new(Compression::Zlib).unwrap();
        let mut out = Vec::new();
        assert!(c.compress(&sample(), &mut out));
        let mut back = vec![0; 65536];
        let mut d = ClusterDecompressor::new();
        assert!(d
            .decompress(Compression::Zlib, &out[..out.len() / 2], &mut back)
            .is_err());
        assert!(d.decompress(Compression::Zstd, &out, &mut back).is_err());
    }
}
