//! Reading the guest view of a qcow2 image.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::compress::ClusterDecompressor;
use super::header::{Compression, Header};
use super::tables::{self, L2Entry, Subclusters, SUBCLUSTERS};
use super::Defect;
use crate::formats::{DiskFormat, DiskReader, Extent, FormatError, ImageInfo, Mapping};

/// How many L2 tables stay cached (at most 2 MiB each).
const L2_CACHE_TABLES: usize = 8;
/// `map` stops walking after this many bytes; the caller asks again.
const MAX_MAP_RUN: u64 = 1 << 30;
/// Compressed clusters are inflated ahead, up to this many bytes of guest data at once, so
/// that decompression runs in parallel whatever read sizes the caller uses.
const READ_AHEAD_BYTES: u64 = 8 << 20;
/// Largest host span read with one pread for a read-ahead batch.
const MAX_BATCH_BYTES: u64 = 32 << 20;
/// At most this many threads inflate one read-ahead batch.
const MAX_INFLATE_THREADS: usize = 8;
/// Batches smaller than this are inflated on the calling thread.
const MIN_PARALLEL_CLUSTERS: usize = 8;
/// The header, with extensions, must fit in this many leading bytes.
const HEADER_READ: usize = 4096;

/// One compressed cluster to inflate: its bytes, its output, its host offset (for errors).
type InflateJob<'a> = (&'a [u8], &'a mut [u8], u64);

/// What is at a guest offset, up to the end of its (sub)cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Zero,
    /// Guest bytes at this host offset (already adjusted to the queried offset).
    Data(u64),
    /// The whole cluster is compressed: `len` bytes at `host`.
    Compressed {
        host: u64,
        len: u64,
    },
}

pub struct Qcow2Reader {
    path: PathBuf,
    file: Arc<File>,
    file_len: u64,
    header: Header,
    l1: Vec<u64>,
    /// Recently used L2 tables: (host offset, raw 64-bit words), most recent last.
    l2_cache: Vec<(u64, Vec<u64>)>,
    inflater: Inflater,
    /// Inflated compressed clusters: consecutive guest clusters from `ahead_first`.
    ahead: Vec<u8>,
    ahead_first: u64,
    ahead_count: u64,
    /// The next batch, being inflated in the background.
    prefetch: Option<Prefetch>,
    /// The buffer the next background batch inflates into.
    spare: Vec<u8>,
}

/// Reads the header area (at most one cluster, 2 MiB) and walks its extensions as qemu does.
pub(super) fn check_extensions(
    path: &Path,
    file: &File,
    file_len: u64,
    header: &Header,
) -> Result<(), FormatError> {
    let mut area = vec![0; header.extensions_end().min(file_len) as usize];
    file.read_exact_at(&mut area, 0)
        .map_err(|e| FormatError::io(path, e))?;
    header.check_extensions(&area).map_err(|d| d.at(path))
}

impl Qcow2Reader {
    pub fn open(path: &Path, file: File) -> Result<Qcow2Reader, FormatError> {
        let file_len = crate::io::sys::file_len(&file).map_err(|e| FormatError::io(path, e))?;
        let mut head = vec![0; HEADER_READ.min(file_len as usize)];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| FormatError::io(path, e))?;
        let header = Header::parse(&head).map_err(|d| d.at(path))?;
        header.check_supported().map_err(|d| d.at(path))?;
        check_extensions(path, &file, file_len, &header)?;
        let l1 = read_l1(path, &file, file_len, &header)?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_INFLATE_THREADS);
        let inflater = Inflater::new(header.compression, threads);
        Ok(Qcow2Reader {
            path: path.to_owned(),
            file: Arc::new(file),
            file_len,
            header,
            l1,
            l2_cache: Vec::new(),
            inflater,
            ahead: Vec::new(),
            ahead_first: 0,
            ahead_count: 0,
            prefetch: None,
            spare: Vec::new(),
        })
    }

    fn malformed(&self, offset: u64, reason: impl Into<String>) -> FormatError {
        FormatError::malformed(&self.path, "qcow2", offset, reason)
    }

    /// The raw L2 words of the table at `offset`, cached.
    fn l2_table(&mut self, offset: u64) -> Result<&[u64], FormatError> {
        if let Some(i) = self.l2_cache.iter().position(|(o, _)| *o == offset) {
            let entry = self.l2_cache.remove(i);
            self.l2_cache.push(entry);
        } else {
            let cluster = self.header.cluster_size();
            if offset
                .checked_add(cluster)
                .is_none_or(|end| end > self.file_len)
            {
                return Err(self.malformed(offset, "L2 table past end of file"));
            }
            let mut bytes = vec![0; cluster as usize];
            self.file
                .read_exact_at(&mut bytes, offset)
                .map_err(|e| FormatError::io(&self.path, e))?;
            let words = bytes
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            if self.l2_cache.len() >= L2_CACHE_TABLES {
                self.l2_cache.remove(0);
            }
            self.l2_cache.push((offset, words));
        }
        Ok(self.l2_cache.last().map_or(&[][..], |(_, w)| &w[..]))
    }

    /// What is at guest `offset` (< virtual size) and for how many bytes.
    fn piece(&mut self, offset: u64) -> Result<(Piece, u64), FormatError> {
        let bits = self.header.cluster_bits;
        let cluster = self.header.cluster_size();
        let l2_entries = self.header.l2_entries();
        let guest_cluster = offset >> bits;
        let in_cluster = offset & (cluster - 1);
        let remaining = self.header.size - offset;
        let l1_index = (guest_cluster / l2_entries) as usize;
        let l1_entry = self.l1.get(l1_index).copied().unwrap_or(0);
        let l2_offset = tables::l1_l2_offset(l1_entry, cluster).map_err(|d| d.at(&self.path))?;
        if l2_offset == 0 {
            return Ok((Piece::Zero, (cluster - in_cluster).min(remaining)));
        }
        let extended = self.header.extended_l2();
        let zero_flag = self.header.version >= 3 && !extended;
        let index = (guest_cluster % l2_entries) as usize;
        let words_per_entry = if extended { 2 } else { 1 };
        let (raw, bitmap) = {
            let table = self.l2_table(l2_offset)?;
            let at = index * words_per_entry;
            (
                table.get(at).copied().unwrap_or(0),
                table.get(at + 1).copied().unwrap_or(0),
            )
        };
        let entry = tables::decode_l2(raw, bits, zero_flag).map_err(|d| d.at(&self.path))?;
        let to_cluster_end = (cluster - in_cluster).min(remaining);
        if let L2Entry::Compressed { host, len } = entry {
            return Ok((Piece::Compressed { host, len }, to_cluster_end));
        }
        if !extended {
            return Ok(match entry {
                L2Entry::Normal { host, .. } => (Piece::Data(host + in_cluster), to_cluster_end),
                _ => (Piece::Zero, to_cluster_end),
            });
        }
        let entry_at = l2_offset + (index as u64) * 16;
        let sub = Subclusters::decode(bitmap, entry_at).map_err(|d| d.at(&self.path))?;
        let sub_size = cluster / SUBCLUSTERS;
        let sub_index = in_cluster / sub_size;
        let len = (sub_size - in_cluster % sub_size).min(remaining);
        let allocated = sub.alloc & (1 << sub_index) != 0;
        Ok(match entry {
            L2Entry::Normal { host, .. } if allocated => (Piece::Data(host + in_cluster), len),
            L2Entry::Unallocated if allocated => {
                return Err(self.malformed(entry_at, "allocated subcluster without a host cluster"))
            }
            _ => (Piece::Zero, len),
        })
    }

    fn check_in_file(&self, host: u64, len: u64) -> Result<(), FormatError> {
        if host.checked_add(len).is_none_or(|end| end > self.file_len) {
            return Err(self.malformed(host, "data cluster past end of file"));
        }
        Ok(())
    }

    /// Inflates `batch` into `out` on this thread (and its helpers).
    fn inflate_batch(&mut self, batch: &[(u64, u64)], out: &mut [u8]) -> Result<(), FormatError> {
        let file = Arc::clone(&self.file);
        let result = self.inflater.run(&file, self.file_len, batch, out);
        result.map_err(|e| self.inflate_error(e))
    }

    fn inflate_error(&self, error: InflateError) -> FormatError {
        match error {
            InflateError::Io(e) => FormatError::io(&self.path, e),
            InflateError::Bad(host, reason) => self.malformed(host, reason),
        }
    }

    /// Starts inflating, in the background, the run of compressed clusters that follows the
    /// read-ahead cache, so that it is ready when the caller gets there.
    fn start_prefetch(&mut self) {
        let cluster = self.header.cluster_size();
        let first = self.ahead_first + self.ahead_count;
        let batch = self.plan_batch(first);
        if batch.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.spare);
        out.resize(batch.len() * cluster as usize, 0);
        let mut inflater = std::mem::replace(
            &mut self.inflater,
            Inflater::new(self.header.compression, 1),
        );
        let file = Arc::clone(&self.file);
        let file_len = self.file_len;
        let count = batch.len() as u64;
        let handle = std::thread::spawn(move || {
            let result = inflater.run(&file, file_len, &batch, &mut out);
            (inflater, out, result)
        });
        self.prefetch = Some(Prefetch {
            first,
            count,
            handle,
        });
    }

    /// The compressed clusters from guest cluster `first` on that one batch inflates:
    /// consecutive, host-increasing, within the read-ahead and host span limits.
    /// A malformed entry ends the batch; its error surfaces when the caller reads there.
    fn plan_batch(&mut self, first: u64) -> Vec<(u64, u64)> {
        let cluster = self.header.cluster_size();
        let max = (READ_AHEAD_BYTES / cluster).max(1) as usize;
        let mut batch: Vec<(u64, u64)> = Vec::new();
        let mut next = first * cluster;
        while batch.len() < max && next < self.header.size {
            match self.piece(next) {
                Ok((Piece::Compressed { host, len }, _))
                    if host < self.file_len
                        && batch.last().is_none_or(|b| host >= b.0)
                        && batch
                            .first()
                            .is_none_or(|b| host + len - b.0 <= MAX_BATCH_BYTES) =>
                {
                    batch.push((host, len));
                    next += cluster;
                }
                _ => break,
            }
        }
        batch
    }

    /// Copies bytes of compressed cluster at guest `offset` from the read-ahead cache,
    /// refilling it with the run of compressed clusters starting there when needed.
    fn read_compressed(
        &mut self,
        offset: u64,
        first: (u64, u64),
        dst: &mut [u8],
    ) -> Result<(), FormatError> {
        let cluster = self.header.cluster_size();
        let guest = offset / cluster;
        if !(self.ahead_first..self.ahead_first + self.ahead_count).contains(&guest) {
            self.ahead_count = 0;
            let mut ready = false;
            if let Some(prefetch) = self.prefetch.take() {
                let (first, count) = (prefetch.first, prefetch.count);
                let (inflater, out, result) = prefetch
                    .handle
                    .join()
                    .map_err(|_| self.malformed(first * cluster, "inflate thread panicked"))?;
                self.inflater = inflater;
                self.spare = std::mem::replace(&mut self.ahead, out);
                if first == guest {
                    result.map_err(|e| self.inflate_error(e))?;
                    self.ahead_first = first;
                    self.ahead_count = count;
                    ready = true;
                }
            }
            if !ready {
                let mut batch = self.plan_batch(guest);
                if batch.is_empty() {
                    batch.push(first);
                }
                let mut bytes = std::mem::take(&mut self.ahead);
                bytes.resize(batch.len() * cluster as usize, 0);
                let result = self.inflate_batch(&batch, &mut bytes);
                self.ahead = bytes;
                result?;
                self.ahead_first = guest;
                self.ahead_count = batch.len() as u64;
            }
            self.start_prefetch();
        }
        let at = ((guest - self.ahead_first) * cluster + offset % cluster) as usize;
        let src = self
            .ahead
            .get(at..at + dst.len())
            .ok_or_else(|| self.malformed(first.0, "read past the cluster"))?;
        dst.copy_from_slice(src);
        Ok(())
    }
}

/// Why a batch could not be inflated.
enum InflateError {
    Io(std::io::Error),
    /// The compressed cluster at this host offset is bad.
    Bad(u64, String),
}

/// Inflating state that can move to a background thread: decompressors and buffers.
struct Inflater {
    kind: Compression,
    threads: usize,
    decompressors: Vec<ClusterDecompressor>,
    /// Compressed bytes of the batch.
    compressed: Vec<u8>,
}

/// A batch being inflated in the background.
struct Prefetch {
    first: u64,
    count: u64,
    handle: JoinHandle<(Inflater, Vec<u8>, Result<(), InflateError>)>,
}

impl Inflater {
    fn new(kind: Compression, threads: usize) -> Inflater {
        Inflater {
            kind,
            threads,
            decompressors: Vec::new(),
            compressed: Vec::new(),
        }
    }

    /// Reads the host span of `batch` with one pread and inflates each cluster into the
    /// consecutive cluster-sized slices of `out`, on up to `threads` threads.
    fn run(
        &mut self,
        file: &File,
        file_len: u64,
        batch: &[(u64, u64)],
        out: &mut [u8],
    ) -> Result<(), InflateError> {
        let cluster = out.len() / batch.len().max(1);
        let start = batch.iter().map(|b| b.0).min().unwrap_or(0);
        let end = batch.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        let end = end.min(file_len);
        if start >= end || cluster == 0 {
            return Err(InflateError::Bad(
                start,
                "compressed cluster past end of file".into(),
            ));
        }
        self.compressed.resize((end - start) as usize, 0);
        file.read_exact_at(&mut self.compressed, start)
            .map_err(InflateError::Io)?;
        let workers = if batch.len() >= MIN_PARALLEL_CLUSTERS {
            self.threads.min(batch.len())
        } else {
            1
        };
        while self.decompressors.len() < workers {
            self.decompressors.push(ClusterDecompressor::new());
        }
        let kind = self.kind;
        let compressed = &self.compressed;
        let jobs: Vec<InflateJob<'_>> = batch
            .iter()
            .zip(out.chunks_mut(cluster))
            .map(|(&(host, len), dst)| {
                let from = (host - start) as usize;
                let to = ((host + len).min(end) - start) as usize;
                (compressed.get(from..to).unwrap_or(&[]), dst, host)
            })
            .collect();
        let per_worker = jobs.len().div_ceil(workers);
        let mut groups: Vec<Vec<InflateJob<'_>>> = Vec::new();
        let mut jobs = jobs.into_iter();
        loop {
            let group: Vec<_> = jobs.by_ref().take(per_worker).collect();
            if group.is_empty() {
                break;
            }
            groups.push(group);
        }
        let mut decompressors = self.decompressors.iter_mut();
        let results: Vec<Result<(), (u64, String)>> = std::thread::scope(|s| {
            let mut groups = groups.into_iter();
            // The calling thread takes the first group itself.
            let own = groups.next().zip(decompressors.next());
            let handles: Vec<_> = groups
                .zip(decompressors)
                .map(|(group, d)| s.spawn(move || inflate_all(d, kind, group)))
                .collect();
            let mut results = vec![own.map_or(Ok(()), |(group, d)| inflate_all(d, kind, group))];
            results.extend(handles.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err((start, "inflate worker panicked".into())))
            }));
            results
        });
        for result in results {
            result.map_err(|(host, reason)| InflateError::Bad(host, reason))?;
        }
        Ok(())
    }
}

fn inflate_all(
    d: &mut ClusterDecompressor,
    kind: Compression,
    jobs: Vec<InflateJob<'_>>,
) -> Result<(), (u64, String)> {
    for (src, dst, host) in jobs {
        d.decompress(kind, src, dst).map_err(|e| (host, e))?;
    }
    Ok(())
}

fn read_l1(
    path: &Path,
    file: &File,
    file_len: u64,
    header: &Header,
) -> Result<Vec<u64>, FormatError> {
    let entries = header.l1_entries_needed(header.size);
    let bytes = entries * 8;
    if entries > 0
        && header
            .l1_table_offset
            .checked_add(bytes)
            .is_none_or(|end| end > file_len)
    {
        return Err(Defect::Malformed {
            offset: header.l1_table_offset,
            reason: "L1 table past end of file".into(),
        }
        .at(path));
    }
    let mut raw = vec![0; bytes as usize];
    file.read_exact_at(&mut raw, header.l1_table_offset)
        .map_err(|e| FormatError::io(path, e))?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

impl DiskReader for Qcow2Reader {
    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        let size = self.header.size;
        if offset >= size {
            return Err(self.malformed(offset, "map past the virtual size"));
        }
        let extent_of = |p: Piece| match p {
            Piece::Zero => Extent::Zero,
            _ => Extent::Data,
        };
        let (first, len) = self.piece(offset)?;
        let extent = extent_of(first);
        let mut end = offset + len;
        while end < size && end - offset < MAX_MAP_RUN {
            let (next, len) = self.piece(end)?;
            if extent_of(next) != extent {
                break;
            }
            end += len;
        }
        Ok(Mapping {
            extent,
            len: end - offset,
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let size = self.header.size;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(self.malformed(offset, "read past the virtual size"));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let want = (buf.len() - done) as u64;
            let (piece, len) = self.piece(pos)?;
            let len = len.min(want);
            match piece {
                Piece::Zero => {
                    buf[done..done + len as usize].fill(0);
                    done += len as usize;
                }
                Piece::Data(host) => {
                    // Extend over host-contiguous pieces so one pread serves a long run.
                    let mut run = len;
                    while run < want {
                        match self.piece(pos + run)? {
                            (Piece::Data(h), l) if h == host + run => run += l.min(want - run),
                            _ => break,
                        }
                    }
                    self.check_in_file(host, run)?;
                    self.file
                        .read_exact_at(&mut buf[done..done + run as usize], host)
                        .map_err(|e| FormatError::io(&self.path, e))?;
                    done += run as usize;
                }
                Piece::Compressed { host, len: clen } => {
                    if host >= self.file_len {
                        return Err(self.malformed(host, "compressed cluster past end of file"));
                    }
                    self.read_compressed(pos, (host, clen), &mut buf[done..done + len as usize])?;
                    done += len as usize;
                }
            }
        }
        Ok(())
    }

    fn info(&self) -> ImageInfo {
        let h = &self.header;
        let mut info = ImageInfo::new(DiskFormat::Qcow2, h.size);
        info.cluster_size = Some(h.cluster_size());
        let compat = if h.version >= 3 { "1.1" } else { "0.10" };
        info.compat = Some(compat.into());
        if self.has_compressed_clusters() {
            info.compression = Some(h.compression.name().into());
        }
        let fs = &mut info.format_specific;
        fs.insert("compat".into(), compat.into());
        fs.insert("compression-type".into(), h.compression.name().into());
        if h.version >= 3 {
            fs.insert("lazy-refcounts".into(), (h.compatible & 1 != 0).into());
        }
        fs.insert("refcount-bits".into(), (1u64 << h.refcount_order).into());
        if h.version >= 3 {
            fs.insert("corrupt".into(), false.into());
            fs.insert("extended-l2".into(), h.extended_l2().into());
        }
        info
    }
}

impl Qcow2Reader {
    /// Whether any of the first L2 tables maps a compressed cluster (bounded scan for `info`).
    fn has_compressed_clusters(&self) -> bool {
        const MAX_SCANNED_TABLES: usize = 64;
        let cluster = self.header.cluster_size();
        let step = if self.header.extended_l2() { 2 } else { 1 };
        let mut table = vec![0; cluster as usize];
        self.l1
            .iter()
            .filter_map(|e| tables::l1_l2_offset(*e, cluster).ok())
            .filter(|o| *o != 0)
            .take(MAX_SCANNED_TABLES)
            .any(|offset| {
                self.file.read_exact_at(&mut table, offset).is_ok()
                    && table.chunks_exact(8).step_by(step).any(|c| {
                        c[0] & 0xc0 == 0x40 // bit 62 set, bit 63 clear
                    })
            })
    }
}
