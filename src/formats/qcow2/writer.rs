//! Writing qcow2 images in the layout `qemu-img convert` produces.
//!
//! Host clusters are handed out in the order qemu allocates them: header, refcount table,
//! first refcount block, L1, then (preallocation off) each L2 table just before its first data
//! cluster and data in guest order, or (metadata) every L2 table followed by all its data
//! clusters. A refcount block is placed, as qemu does, at the first free cluster after the
//! allocation that first needs it. Data is written as it comes; L2 tables, refcount blocks,
//! the refcount table, L1 and header are written in `finish`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::compress::ClusterCompressor;
use super::header::{
    Compression, Header, DEFAULT_REFCOUNT_ORDER, INCOMPAT_COMPRESSION, V3_HEADER_LEN,
};
use super::refcount;
use super::tables::{encode_compressed, COPIED};
use crate::formats::{DiskWriter, FormatError, Options, Target};

/// Default cluster size, as qemu-img.
const DEFAULT_CLUSTER_SIZE: u64 = 64 << 10;
/// qemu-img convert copies in requests of at most 2 MiB; an allocation run ends there.
const CONVERT_CHUNK: u64 = 2 << 20;
/// Compressed bytes are gathered into writes of about this size.
const OUT_BUFFER: usize = 4 << 20;
/// Zero-filling (preallocation=full) writes this much at a time.
const ZERO_CHUNK: u64 = 1 << 20;
/// How often a writer waiting for compressed clusters checks that its workers are alive.
const WORKER_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Memory the compression queue may take (large clusters queue fewer per worker).
const QUEUE_MEMORY: u64 = 64 << 20;
/// Clusters queued for compression per worker, bounding memory.
const QUEUE_PER_WORKER: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prealloc {
    Off,
    Metadata,
    Falloc,
    Full,
}

/// Host cluster allocation and the refcounts it implies, mirroring qemu's allocator.
struct Allocator {
    /// Next never-used host cluster.
    next_free: u64,
    /// Refcount of every host cluster below `next_free`.
    refcounts: Vec<u16>,
    /// Host cluster of each refcount block (0: none yet).
    refblocks: Vec<u64>,
    entries_per_block: u64,
}

impl Allocator {
    /// Clusters 0 (header), 1 (refcount table) and 2 (first refcount block) are in use.
    fn new(cluster_bits: u32) -> Allocator {
        Allocator {
            next_free: 3,
            refcounts: vec![1, 1, 1],
            refblocks: vec![2],
            entries_per_block: refcount::entries_per_block(cluster_bits, DEFAULT_REFCOUNT_ORDER),
        }
    }

    /// Takes `n` clusters without counting them yet (qemu's `alloc_clusters_noref`).
    fn reserve(&mut self, n: u64) -> u64 {
        let start = self.next_free;
        self.next_free += n;
        self.refcounts.resize(self.next_free as usize, 0);
        start
    }

    fn incref(&mut self, cluster: u64) {
        if let Some(count) = self.refcounts.get_mut(cluster as usize) {
            *count = count.saturating_add(1);
        }
    }

    /// Takes `n` clusters and counts them, without yet placing missing refcount blocks.
    fn alloc(&mut self, n: u64) -> u64 {
        let start = self.reserve(n);
        for c in start..start + n {
            self.incref(c);
        }
        start
    }

    /// Places a refcount block for every block covering `first..end` that lacks one, at the
    /// next free cluster (after the allocation that needed it), as qemu does.
    fn settle(&mut self, first: u64, end: u64) {
        if end <= first {
            return;
        }
        for block in first / self.entries_per_block..=(end - 1) / self.entries_per_block {
            let block = block as usize;
            if self.refblocks.len() <= block {
                self.refblocks.resize(block + 1, 0);
            }
            if self.refblocks[block] == 0 {
                let at = self.alloc(1);
                self.refblocks[block] = at;
                // The new block may itself lie in a block without a refcount block.
                self.settle(at, at + 1);
            }
        }
    }
}

/// Writes to the file through a buffer that gathers contiguous writes.
struct Output {
    path: PathBuf,
    file: File,
    start: u64,
    buf: Vec<u8>,
    /// End of the furthest byte written.
    end: u64,
}

impl Output {
    fn write(&mut self, host: u64, bytes: &[u8]) -> Result<(), FormatError> {
        if host != self.start + self.buf.len() as u64 || self.buf.len() >= OUT_BUFFER {
            self.flush()?;
            self.start = host;
        }
        if self.buf.is_empty() && bytes.len() >= OUT_BUFFER {
            self.start = host + bytes.len() as u64;
            return self.write_now(host, bytes);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes at once, bypassing the buffer (whose range never overlaps `host..`).
    fn write_now(&mut self, host: u64, bytes: &[u8]) -> Result<(), FormatError> {
        self.file
            .write_all_at(bytes, host)
            .map_err(|e| FormatError::io(&self.path, e))?;
        self.end = self.end.max(host + bytes.len() as u64);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FormatError> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.write_now(self.start, &buf)?;
            self.buf = buf;
            self.buf.clear();
        }
        Ok(())
    }
}

/// The L2 table being filled (preallocation off, compressed).
struct OpenL2 {
    l1_index: u64,
    host: u64,
    entries: Vec<u64>,
}

/// A run of data clusters allocated by one qemu write request.
struct Run {
    first: u64,
    /// Next guest cluster that would continue the run.
    next_guest: u64,
}

struct Job {
    seq: u64,
    guest: u64,
    data: Vec<u8>,
    out: Vec<u8>,
}

struct Done {
    guest: u64,
    data: Vec<u8>,
    out: Vec<u8>,
    compressed: bool,
}

/// Compression workers; results are placed in submission order.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<(u64, Done)>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    max_in_flight: usize,
    next_seq: u64,
    next_place: u64,
    ready: BTreeMap<u64, Done>,
    spare: Vec<Vec<u8>>,
}

impl Pool {
    fn new(kind: Compression, threads: usize, cluster_size: u64) -> std::io::Result<Pool> {
        let threads = threads.max(1);
        // Each queued cluster holds its data and a compression buffer of about twice its size.
        let by_memory = (QUEUE_MEMORY / (3 * cluster_size)) as usize;
        let max_in_flight = (threads * QUEUE_PER_WORKER).min(by_memory).max(threads + 1);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(max_in_flight);
        let (done_tx, done_rx) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let mut compressor = ClusterCompressor::new(kind)?;
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            workers.push(std::thread::spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => break,
                };
                let Ok(mut job) = job else { break };
                // A panic inside the compression library must not take the writer down:
                // store that cluster uncompressed and start with a fresh compressor.
                let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    compressor.compress(&job.data, &mut job.out)
                }));
                let compressed = match attempt {
                    Ok(compressed) => compressed,
                    Err(_) => match ClusterCompressor::new(kind) {
                        Ok(fresh) => {
                            compressor = fresh;
                            false
                        }
                        Err(_) => break,
                    },
                };
                let done = Done {
                    guest: job.guest,
                    data: job.data,
                    out: job.out,
                    compressed,
                };
                if done_tx.send((job.seq, done)).is_err() {
                    break;
                }
            }));
        }
        Ok(Pool {
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            in_flight: 0,
            max_in_flight,
            next_seq: 0,
            next_place: 0,
            ready: BTreeMap::new(),
            spare: Vec::new(),
        })
    }
}

/// Waits for a result; fails instead of hanging when a worker has died.
fn wait_result(pool: &Pool) -> Result<Option<(u64, Done)>, ()> {
    loop {
        match pool.results.recv_timeout(WORKER_POLL) {
            Ok(r) => return Ok(Some(r)),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if pool.workers.iter().any(|w| w.is_finished()) {
                    // A finished worker may still have sent its last result.
                    return pool.results.try_recv().map(Some).map_err(|_| ());
                }
            }
        }
    }
}

pub struct Qcow2Writer {
    path: PathBuf,
    out: Output,
    header: Header,
    cluster_size: u64,
    l2_entries: u64,
    prealloc: Prealloc,
    alloc: Allocator,
    l1: Vec<u64>,
    /// Metadata preallocation: (L2 host cluster, first data host cluster) per L1 entry.
    layout: Vec<(u64, u64)>,
    open_l2: Option<OpenL2>,
    run: Option<Run>,
    pool: Option<Pool>,
    /// qemu's `free_byte_offset`: where the next compressed cluster may go (0: none).
    free_byte: u64,
    /// Guest offset written up to (for ordering checks and zero filling).
    written_to: u64,
}

pub fn create(
    target: Target<'_>,
    virtual_size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    let invalid = |key: &str, value: &str, reason: &str| FormatError::InvalidOption {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let version = match options.choice("compat", &["0.10", "1.1"])? {
        Some("0.10") => 2,
        _ => 3,
    };
    let cluster_size = options
        .size("cluster_size")?
        .unwrap_or(DEFAULT_CLUSTER_SIZE);
    if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
        return Err(invalid(
            "cluster_size",
            &cluster_size.to_string(),
            "must be a power of two between 512 and 2M",
        ));
    }
    let prealloc = match options.choice("preallocation", &["off", "metadata", "falloc", "full"])? {
        Some("metadata") => Prealloc::Metadata,
        Some("falloc") => Prealloc::Falloc,
        Some("full") => Prealloc::Full,
        _ => Prealloc::Off,
    };
    let compression = match options.choice("compression_type", &["zlib", "zstd"])? {
        Some("zstd") => Compression::Zstd,
        _ => Compression::Zlib,
    };
    if compression == Compression::Zstd && version < 3 {
        return Err(invalid("compression_type", "zstd", "needs compat=1.1"));
    }
    let compress = options.flag("compress")?.unwrap_or(false);
    if compress && prealloc != Prealloc::Off {
        return Err(invalid(
            "compress",
            "on",
            "cannot be combined with preallocation",
        ));
    }
    if options.flag("lazy_refcounts")? == Some(true) {
        return Err(invalid(
            "lazy_refcounts",
            "on",
            "cloudimg never writes lazy refcounts",
        ));
    }
    if let Some(bits) = options.number("refcount_bits")? {
        if bits != 16 {
            return Err(invalid(
                "refcount_bits",
                &bits.to_string(),
                "only 16 is supported",
            ));
        }
    }
    options.reject_unknown("qcow2")?;

    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(target.path)
        .map_err(|e| FormatError::io(target.path, e))?;
    let pool = if compress {
        Some(
            Pool::new(compression, options.threads(), cluster_size)
                .map_err(|e| FormatError::io(target.path, e))?,
        )
    } else {
        None
    };
    Ok(Box::new(Qcow2Writer::new(
        target.path,
        file,
        virtual_size,
        version,
        cluster_size.trailing_zeros(),
        prealloc,
        compression,
        pool,
    )?))
}

impl Qcow2Writer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        path: &Path,
        file: File,
        virtual_size: u64,
        version: u32,
        cluster_bits: u32,
        prealloc: Prealloc,
        compression: Compression,
        pool: Option<Pool>,
    ) -> Result<Qcow2Writer, FormatError> {
        let cluster_size = 1u64 << cluster_bits;
        // qemu rounds the virtual size up to whole sectors.
        let size = virtual_size.div_ceil(512) * 512;
        let mut header = Header {
            version,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits,
            size,
            crypt_method: 0,
            l1_size: 0,
            l1_table_offset: 0,
            refcount_table_offset: cluster_size,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible: if compression == Compression::Zstd {
                INCOMPAT_COMPRESSION
            } else {
                0
            },
            compatible: 0,
            autoclear: 0,
            refcount_order: DEFAULT_REFCOUNT_ORDER,
            header_length: if version >= 3 { V3_HEADER_LEN } else { 72 },
            compression,
        };
        let l1_entries = header.l1_entries_needed(size);
        if l1_entries * 8 > super::header::MAX_L1_BYTES {
            return Err(FormatError::InvalidOption {
                key: "size".into(),
                value: size.to_string(),
                reason: "too large for this cluster size (L1 table above 32 MiB)".into(),
            });
        }
        header.l1_size = l1_entries as u32;
        let mut alloc = Allocator::new(cluster_bits);
        if l1_entries > 0 {
            let clusters = (l1_entries * 8).div_ceil(cluster_size);
            let l1 = alloc.alloc(clusters);
            alloc.settle(l1, l1 + clusters);
            header.l1_table_offset = l1 * cluster_size;
        }
        let l2_entries = header.l2_entries();
        let mut writer = Qcow2Writer {
            path: path.to_owned(),
            out: Output {
                path: path.to_owned(),
                file,
                start: 0,
                buf: Vec::new(),
                end: 0,
            },
            header,
            cluster_size,
            l2_entries,
            prealloc,
            alloc,
            l1: vec![0; l1_entries as usize],
            layout: Vec::new(),
            open_l2: None,
            run: None,
            pool,
            free_byte: 0,
            written_to: 0,
        };
        if prealloc != Prealloc::Off {
            writer.preallocate_metadata();
        }
        Ok(writer)
    }

    /// Allocates every L2 table followed by its data clusters (qemu's metadata preallocation).
    fn preallocate_metadata(&mut self) {
        let guest_clusters = self.header.size.div_ceil(self.cluster_size);
        for (i, l1) in self.l1.iter_mut().enumerate() {
            let l2 = self.alloc.alloc(1);
            self.alloc.settle(l2, l2 + 1);
            let n = (guest_clusters - i as u64 * self.l2_entries).min(self.l2_entries);
            let data = self.alloc.alloc(n);
            self.alloc.settle(data, data + n);
            *l1 = (l2 * self.cluster_size) | COPIED;
            self.layout.push((l2, data));
        }
    }

    /// Ends the current allocation run, placing the refcount blocks it needs after it.
    fn end_run(&mut self) {
        if let Some(run) = self.run.take() {
            self.alloc.settle(run.first, self.alloc.next_free);
        }
    }

    /// Writes out the open L2 table.
    fn close_l2(&mut self) -> Result<(), FormatError> {
        if let Some(l2) = self.open_l2.take() {
            let bytes: Vec<u8> = l2.entries.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.out.write(l2.host * self.cluster_size, &bytes)?;
        }
        Ok(())
    }

    /// Makes sure the L2 table for guest cluster `guest` is open, allocating it if needed.
    fn open_l2_for(&mut self, guest: u64) -> Result<(), FormatError> {
        let l1_index = guest / self.l2_entries;
        if self
            .open_l2
            .as_ref()
            .is_some_and(|l2| l2.l1_index == l1_index)
        {
            return Ok(());
        }
        self.end_run();
        self.close_l2()?;
        let host = self.alloc.alloc(1);
        self.alloc.settle(host, host + 1);
        if let Some(entry) = self.l1.get_mut(l1_index as usize) {
            *entry = (host * self.cluster_size) | COPIED;
        }
        self.open_l2 = Some(OpenL2 {
            l1_index,
            host,
            entries: vec![0; self.l2_entries as usize],
        });
        Ok(())
    }

    fn set_l2(&mut self, guest: u64, entry: u64) {
        let index = (guest % self.l2_entries) as usize;
        if let Some(slot) = self
            .open_l2
            .as_mut()
            .and_then(|l2| l2.entries.get_mut(index))
        {
            *slot = entry;
        }
    }

    /// Host cluster for an uncompressed data cluster, preallocation off.
    fn place_data_cluster(&mut self, guest: u64) -> Result<u64, FormatError> {
        self.open_l2_for(guest)?;
        let chunk_clusters = (CONVERT_CHUNK / self.cluster_size).max(1);
        let continues = self
            .run
            .as_ref()
            .is_some_and(|r| r.next_guest == guest && !guest.is_multiple_of(chunk_clusters));
        if !continues {
            self.end_run();
        }
        let host = self.alloc.alloc(1);
        match &mut self.run {
            Some(run) => run.next_guest = guest + 1,
            None => {
                self.run = Some(Run {
                    first: host,
                    next_guest: guest + 1,
                })
            }
        }
        self.set_l2(guest, (host * self.cluster_size) | COPIED);
        Ok(host)
    }

    /// Host data cluster of `guest` in a preallocated layout.
    fn preallocated_cluster(&self, guest: u64) -> Option<u64> {
        let (_, data) = self.layout.get((guest / self.l2_entries) as usize)?;
        Some(data + guest % self.l2_entries)
    }

    /// Writes zeroes over the preallocated data clusters of guest bytes `from..to`.
    fn zero_fill(&mut self, from: u64, to: u64) -> Result<(), FormatError> {
        let zeros = vec![0; ZERO_CHUNK.min(self.cluster_size * self.l2_entries) as usize];
        let mut pos = from;
        while pos < to {
            let guest = pos / self.cluster_size;
            let region_end = ((guest / self.l2_entries + 1) * self.l2_entries * self.cluster_size)
                .min(to)
                .min(pos + zeros.len() as u64);
            let Some(host) = self.preallocated_cluster(guest) else {
                break;
            };
            let host = host * self.cluster_size + pos % self.cluster_size;
            let len = (region_end - pos) as usize;
            self.out.write(host, &zeros[..len])?;
            pos = region_end;
        }
        Ok(())
    }

    /// Byte allocation for a compressed cluster (qemu's `qcow2_alloc_bytes`).
    fn alloc_bytes(&mut self, size: u64) -> u64 {
        let cs = self.cluster_size;
        let mut offset = self.free_byte;
        let free_in_cluster = cs - offset % cs;
        if offset == 0 || free_in_cluster < size {
            let new = self.alloc.reserve(1) * cs;
            if offset == 0 || offset.div_ceil(cs) * cs != new {
                offset = new;
            }
        }
        let (first, last) = (offset / cs, (offset + size - 1) / cs);
        for c in first..=last {
            self.alloc.incref(c);
        }
        self.alloc.settle(first, last + 1);
        self.free_byte = if (offset + size).is_multiple_of(cs) {
            0
        } else {
            offset + size
        };
        offset
    }

    /// Places one compressed (or incompressible) cluster, in guest order.
    fn place_compressed(&mut self, done: &Done) -> Result<(), FormatError> {
        self.open_l2_for(done.guest)?;
        if done.compressed {
            let len = done.out.len() as u64;
            let host = self.alloc_bytes(len);
            self.out.write(host, &done.out)?;
            self.set_l2(
                done.guest,
                encode_compressed(host, len, self.header.cluster_bits),
            );
        } else {
            let host = self.alloc.alloc(1);
            self.alloc.settle(host, host + 1);
            self.out.write(host * self.cluster_size, &done.data)?;
            self.set_l2(done.guest, (host * self.cluster_size) | COPIED);
        }
        Ok(())
    }

    /// Places every finished job that is next in order; waits for one if `block`.
    fn drain(&mut self, block: bool) -> Result<(), FormatError> {
        loop {
            let Some(pool) = self.pool.as_mut() else {
                return Ok(());
            };
            if let Some(done) = pool.ready.remove(&pool.next_place) {
                pool.next_place += 1;
                pool.in_flight -= 1;
                self.place_compressed(&done)?;
                if let Some(pool) = self.pool.as_mut() {
                    pool.spare.push(done.data);
                    pool.spare.push(done.out);
                }
                continue;
            }
            let wait = block && pool.in_flight >= pool.max_in_flight
                || block && pool.jobs.is_none() && pool.in_flight > 0;
            let received = if wait {
                wait_result(pool)
            } else {
                match pool.results.try_recv() {
                    Ok(r) => Ok(Some(r)),
                    Err(mpsc::TryRecvError::Empty) => Ok(None),
                    Err(mpsc::TryRecvError::Disconnected) if pool.in_flight == 0 => Ok(None),
                    Err(mpsc::TryRecvError::Disconnected) => Err(()),
                }
            };
            match received {
                Ok(Some((seq, done))) => {
                    pool.ready.insert(seq, done);
                }
                Ok(None) => return Ok(()),
                Err(()) => {
                    return Err(FormatError::Io {
                        path: self.path.clone(),
                        source: std::io::Error::other("compression worker stopped"),
                    })
                }
            }
        }
    }

    fn submit(&mut self, guest: u64, bytes: &[u8]) -> Result<(), FormatError> {
        let cs = self.cluster_size as usize;
        let Some(pool) = self.pool.as_mut() else {
            return Ok(());
        };
        let mut data = pool.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(bytes);
        // The last cluster of a disk is compressed zero-padded to a whole cluster, like qemu.
        data.resize(cs, 0);
        let out = pool.spare.pop().unwrap_or_default();
        let job = Job {
            seq: pool.next_seq,
            guest,
            data,
            out,
        };
        pool.next_seq += 1;
        pool.in_flight += 1;
        let sent = pool.jobs.as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(FormatError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("compression worker stopped"),
            });
        }
        self.drain(true)
    }

    fn finish_pool(&mut self) -> Result<(), FormatError> {
        let workers = match self.pool.as_mut() {
            Some(pool) => {
                pool.jobs = None;
                std::mem::take(&mut pool.workers)
            }
            None => return Ok(()),
        };
        self.drain(true)?;
        for worker in workers {
            if worker.join().is_err() {
                return Err(FormatError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other("compression worker panicked"),
                });
            }
        }
        Ok(())
    }

    /// Moves the refcount table out of cluster 1 when it has too many refcount blocks.
    fn grow_reftable(&mut self) {
        loop {
            let needed = (self.alloc.refblocks.len() as u64 * 8).div_ceil(self.cluster_size);
            if needed <= u64::from(self.header.refcount_table_clusters) {
                return;
            }
            let old = self.header.refcount_table_offset / self.cluster_size;
            for c in old..old + u64::from(self.header.refcount_table_clusters) {
                if let Some(count) = self.alloc.refcounts.get_mut(c as usize) {
                    *count = 0;
                }
            }
            let at = self.alloc.alloc(needed);
            self.alloc.settle(at, at + needed);
            self.header.refcount_table_offset = at * self.cluster_size;
            self.header.refcount_table_clusters = needed as u32;
        }
    }

    fn write_metadata(&mut self) -> Result<(), FormatError> {
        let cs = self.cluster_size;
        // L2 tables of a preallocated layout.
        let guest_clusters = self.header.size.div_ceil(cs);
        let mut table = vec![0u8; cs as usize];
        for (i, &(l2, data)) in self.layout.iter().enumerate() {
            table.fill(0);
            let n = (guest_clusters - i as u64 * self.l2_entries).min(self.l2_entries);
            for (j, slot) in table.chunks_exact_mut(8).take(n as usize).enumerate() {
                slot.copy_from_slice(&(((data + j as u64) * cs) | COPIED).to_be_bytes());
            }
            self.out.write(l2 * cs, &table)?;
        }
        self.grow_reftable();
        // Refcount blocks.
        let per_block = self.alloc.entries_per_block as usize;
        for (b, &host) in self.alloc.refblocks.iter().enumerate() {
            if host == 0 {
                continue;
            }
            let counts = self
                .alloc
                .refcounts
                .get(b * per_block..)
                .map(|c| &c[..c.len().min(per_block)])
                .unwrap_or(&[]);
            let block = refcount::encode16(counts, cs as usize);
            self.out.write(host * cs, &block)?;
        }
        // Refcount table.
        let reftable: Vec<u8> = self
            .alloc
            .refblocks
            .iter()
            .flat_map(|&h| (h * cs).to_be_bytes())
            .collect();
        self.out
            .write(self.header.refcount_table_offset, &reftable)?;
        // L1 table, at its real length.
        let l1: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.out.write(self.header.l1_table_offset, &l1)?;
        let header = self.header.encode();
        self.out.write(0, &header)?;
        self.out.flush()
    }
}

impl DiskWriter for Qcow2Writer {
    fn granularity(&self) -> u64 {
        self.cluster_size
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let cs = self.cluster_size;
        let end = offset.checked_add(data.len() as u64);
        if !offset.is_multiple_of(cs)
            || offset < self.written_to
            || end.is_none_or(|e| e > self.header.size)
            || (!(data.len() as u64).is_multiple_of(cs)
                && end.is_some_and(|e| e.div_ceil(cs) * cs < self.header.size))
        {
            return Err(FormatError::OutOfOrder {
                path: self.path.clone(),
                offset,
                position: self.written_to,
            });
        }
        if self.prealloc == Prealloc::Full {
            self.zero_fill(self.written_to, offset)?;
        }
        let mut guest = offset / cs;
        let mut pending: Option<(u64, usize, usize)> = None; // (host, from, to) in data
        for (i, chunk) in data.chunks(cs as usize).enumerate() {
            let from = i * cs as usize;
            if self.pool.is_some() {
                self.submit(guest, chunk)?;
                guest += 1;
                continue;
            }
            let host = match self.prealloc {
                Prealloc::Off => self.place_data_cluster(guest)?,
                _ => self.preallocated_cluster(guest).unwrap_or(0),
            } * cs;
            // Coalesce host-contiguous clusters into one write.
            pending = match pending {
                Some((h, f, t)) if h + (t - f) as u64 == host => Some((h, f, from + chunk.len())),
                Some((h, f, t)) => {
                    self.out.write_now(h, &data[f..t])?;
                    Some((host, from, from + chunk.len()))
                }
                None => Some((host, from, from + chunk.len())),
            };
            guest += 1;
        }
        if let Some((h, f, t)) = pending {
            self.out.write_now(h, &data[f..t])?;
        }
        self.written_to = offset + data.len() as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), FormatError> {
        self.finish_pool()?;
        self.end_run();
        self.close_l2()?;
        if self.prealloc == Prealloc::Full {
            self.zero_fill(self.written_to, self.header.size)?;
        }
        self.write_metadata()?;
        let cs = self.cluster_size;
        let l1_end = self.header.l1_table_offset + self.l1.len() as u64 * 8;
        let len = if self.pool.is_some() {
            self.out.end.max(l1_end).div_ceil(512) * 512
        } else if self.l1.is_empty() {
            self.alloc.next_free * cs
        } else {
            let l1_last = l1_end.div_ceil(cs);
            if self.alloc.next_free > l1_last {
                self.alloc.next_free * cs
            } else {
                l1_end
            }
        };
        let file = &self.out.file;
        file.set_len(len)
            .map_err(|e| FormatError::io(&self.path, e))?;
        if self.prealloc == Prealloc::Falloc {
            crate::io::sys::allocate(file, len).map_err(|e| FormatError::io(&self.path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcount_block_goes_after_the_run_that_crosses_into_it() {
        // 512-byte clusters: one refcount block covers 256 clusters.
        let mut a = Allocator::new(9);
        let run = a.alloc(300);
        assert_eq!(run, 3);
        a.settle(run, run + 300);
        assert_eq!(a.refblocks, vec![2, 303]);
        assert_eq!(a.next_free, 304);
        assert!(a.refcounts.iter().all(|c| *c == 1));
    }

    #[test]
    fn refcount_block_outside_its_range_gets_described_too() {
        let mut a = Allocator::new(9);
        // A run that ends exactly at a block boundary: the new block for 256.. lands at 256
        // (inside its own range) ...
        let run = a.alloc(253);
        a.settle(run, run + 253);
        assert_eq!(a.refblocks, vec![2]);
        a.alloc(1);
        a.settle(256, 257);
        assert_eq!(a.refblocks, vec![2, 257]);
        // ... and a run that jumps a whole block needs blocks for both ranges.
        let run = a.alloc(600);
        a.settle(run, run + 600);
        assert_eq!(a.refblocks, vec![2, 257, 858, 859]);
        assert_eq!(a.refcounts.len() as u64, a.next_free);
    }

    #[test]
    fn compressed_bytes_pack_and_count_every_touching_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.qcow2");
        let file = File::create(&path).unwrap();
        let mut w = Qcow2Writer::new(
            &path,
            file,
            1 << 30,
            3,
            16,
            Prealloc::Off,
            Compression::Zlib,
            None,
        )
        .unwrap();
        let cs = 65536;
        // Cluster 3 is the L1 table; packing starts at cluster 4.
        assert_eq!(w.alloc_bytes(40000), 4 * cs);
        // Spills into the adjacent new cluster 5.
        assert_eq!(w.alloc_bytes(40000), 4 * cs + 40000);
        assert_eq!(&w.alloc.refcounts[4..6], &[2, 1]);
        // An uncompressed cluster takes cluster 6; small data still fills cluster 5.
        assert_eq!(w.alloc.alloc(1), 6);
        assert_eq!(w.alloc_bytes(100), 4 * cs + 80000);
        assert_eq!(w.alloc.refcounts[5], 2);
        // Too big for the rest of cluster 5, and cluster 6 is taken: a fresh cluster 7.
        assert_eq!(w.alloc_bytes(60000), 7 * cs);
        // Ending exactly on a cluster boundary starts the next allocation on a new cluster.
        assert_eq!(w.alloc_bytes(cs - 60000), 7 * cs + 60000);
        assert_eq!(w.free_byte, 0);
        assert_eq!(w.alloc_bytes(10), 8 * cs);
    }
}
