//! The one copy loop that converts any reader into any writer.
//!
//! A reader thread walks the source's map in increasing order, reads data runs into large
//! buffers aligned to the writer's unit, and marks which units are all zero; the calling thread
//! hands the non-zero units to the writer. Buffers go back and forth through two bounded
//! channels, so memory stays at a few buffers and reading (decompressing) overlaps writing
//! (compressing).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tracing::debug;

use super::{is_zero, DiskFormat, DiskReader, DiskWriter, Extent, FormatError, Options, Target};
use crate::io::device::{Device, DeviceError};
use crate::io::digests::DigestTee;
use crate::io::progress::Reporter;
use crate::io::publish::{self, Publication, Resolved};

/// Target size of one read buffer; rounded down to whole writer units (at least one).
const BUFFER_TARGET: u64 = 4 << 20;

/// How many buffers exist at once: one being filled, one being written, one queued.
const BUFFERS: usize = 3;

/// What a conversion did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConvertStats {
    /// Guest size of the source (and of the destination).
    pub virtual_size: u64,
    /// Bytes read from the source's data runs (zero-filled gaps inside a buffer included).
    pub bytes_read: u64,
    /// Bytes handed to the writer as data.
    pub bytes_written: u64,
    /// Guest bytes never handed to the writer: zero runs and all-zero units.
    pub zero_bytes_skipped: u64,
}

/// One message from the reader thread, in guest order.
enum Chunk {
    /// `buf[..len]` holds the guest bytes at `offset`; `runs` are the byte ranges (relative to
    /// `offset`) of consecutive non-zero units.
    Data {
        offset: u64,
        buf: Vec<u8>,
        len: usize,
        runs: Vec<(usize, usize)>,
    },
    /// `len` guest bytes that read as zero and were not read.
    Zero(u64),
}

/// Copies every non-zero unit of `reader` (the image at `input`, named if its reader fails
/// abnormally) into `writer`, then finishes the writer. `tee`, when
/// given, receives the whole guest stream in order (zero runs as [`DigestTee::zeros`], never
/// read): the digests of a raw output, computed as it is written.
///
/// The caller fsyncs and renames the output; [`convert_file`] does all of that.
pub fn convert(
    input: &Path,
    reader: &mut dyn DiskReader,
    writer: Box<dyn DiskWriter>,
    tee: Option<&mut DigestTee>,
    reporter: &dyn Reporter,
) -> Result<ConvertStats, FormatError> {
    let size = reader.virtual_size();
    let unit = writer.granularity().max(1);
    let buffer_len = (BUFFER_TARGET / unit).max(1) * unit;
    let buffer_len = usize::try_from(buffer_len).map_err(|_| FormatError::Unsupported {
        path: PathBuf::new(),
        what: format!("a writer unit of {unit:#x} bytes"),
    })?;
    debug!(size, unit, buffer_len, "converting");
    reporter.start("converting", Some(size), 0);
    let result = std::thread::scope(|scope| {
        let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Chunk>(1);
        let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
        let producer = std::thread::Builder::new()
            .name("convert-read".into())
            .spawn_scoped(scope, move || {
                produce(reader, unit, buffer_len, &chunk_tx, &free_rx)
            })
            .map_err(|source| FormatError::io(Path::new("convert-read thread"), source))?;
        let consumed = consume(writer, size, &chunk_rx, &free_tx, tee, reporter);
        // Unblock the reader if the writer failed while it waits for a free buffer or a slot.
        drop(chunk_rx);
        drop(free_tx);
        let produced = producer.join().unwrap_or_else(|_| {
            Err(FormatError::ReaderPanicked {
                path: input.to_owned(),
            })
        });
        // The reader ended normally, so the writer saw the whole guest stream.
        // A reader error explains a short stream better than the writer's view of it.
        let bytes_read = produced?;
        let (writer, bytes_written) = consumed?;
        writer.finish()?;
        Ok(ConvertStats {
            virtual_size: size,
            bytes_read,
            bytes_written,
            zero_bytes_skipped: size - bytes_written,
        })
    });
    reporter.finish();
    result
}

/// The reader side: returns the bytes read. Stops quietly when the writer side hangs up.
fn produce(
    reader: &mut dyn DiskReader,
    unit: u64,
    buffer_len: usize,
    chunks: &mpsc::SyncSender<Chunk>,
    free: &mpsc::Receiver<Vec<u8>>,
) -> Result<u64, FormatError> {
    let size = reader.virtual_size();
    let mut allocated = 0;
    let mut bytes_read = 0;
    let mut pos = 0u64;
    while pos < size {
        // `pos` is always unit-aligned here.
        let first = reader.map(pos)?;
        // A zero-length answer would never end the loop; treat it as one byte.
        let first_len = first.len.clamp(1, size - pos);
        if first.extent == Extent::Zero {
            let mut end = pos + first_len;
            // Readers may answer cluster by cluster: merge zero runs until one unit is covered.
            while end < size && end - pos < unit {
                let next = reader.map(end)?;
                if next.extent != Extent::Zero {
                    break;
                }
                end += next.len.clamp(1, size - end);
            }
            let skip_to = if end == size { size } else { end / unit * unit };
            if skip_to > pos {
                if chunks.send(Chunk::Zero(skip_to - pos)).is_err() {
                    return Ok(bytes_read);
                }
                pos = skip_to;
                continue;
            }
        }
        let mut buf = match free.try_recv() {
            Ok(buf) => buf,
            Err(_) if allocated < BUFFERS => {
                allocated += 1;
                vec![0u8; buffer_len]
            }
            Err(_) => match free.recv() {
                Ok(buf) => buf,
                Err(_) => return Ok(bytes_read),
            },
        };
        let len = fill(reader, pos, &mut buf, (first.extent, first_len), unit)?;
        bytes_read += len as u64;
        let runs = nonzero_runs(&buf[..len], unit as usize);
        let chunk = Chunk::Data {
            offset: pos,
            buf,
            len,
            runs,
        };
        if chunks.send(chunk).is_err() {
            return Ok(bytes_read);
        }
        pos += len as u64;
    }
    Ok(bytes_read)
}

/// Fills `buf` with guest bytes from `start` (unit-aligned), following the map; returns how many
/// bytes it holds. It stops early at a unit boundary when a zero run covers at least one whole
/// unit from there on, so the next round can skip it unread.
fn fill(
    reader: &mut dyn DiskReader,
    start: u64,
    buf: &mut [u8],
    first: (Extent, u64),
    unit: u64,
) -> Result<usize, FormatError> {
    let size = reader.virtual_size();
    let end = (start + buf.len() as u64).min(size);
    let mut pos = start;
    let mut run = first;
    loop {
        let (extent, run_len) = run;
        let run_end = pos + run_len.min(end - pos);
        let at = (pos - start) as usize;
        let to = (run_end - start) as usize;
        match extent {
            Extent::Data => reader.read_at(pos, &mut buf[at..to])?,
            Extent::Zero => {
                let boundary = pos.div_ceil(unit) * unit;
                let zero_end = pos + run_len;
                let whole_unit_follows =
                    boundary > start && boundary < end && zero_end >= (boundary + unit).min(size);
                if whole_unit_follows {
                    buf[at..(boundary - start) as usize].fill(0);
                    return Ok((boundary - start) as usize);
                }
                buf[at..to].fill(0);
            }
        }
        pos = run_end;
        if pos >= end {
            return Ok((end - start) as usize);
        }
        let next = reader.map(pos)?;
        run = (next.extent, next.len.clamp(1, size - pos));
    }
}

/// Byte ranges of consecutive units of `data` that are not all zero.
fn nonzero_runs(data: &[u8], unit: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (index, piece) in data.chunks(unit).enumerate() {
        if is_zero(piece) {
            continue;
        }
        let from = index * unit;
        let to = from + piece.len();
        match runs.last_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => runs.push((from, to)),
        }
    }
    runs
}

/// The writer side: returns the writer (to finish) and the bytes written.
fn consume(
    mut writer: Box<dyn DiskWriter>,
    size: u64,
    chunks: &mpsc::Receiver<Chunk>,
    free: &mpsc::SyncSender<Vec<u8>>,
    mut tee: Option<&mut DigestTee>,
    reporter: &dyn Reporter,
) -> Result<(Box<dyn DiskWriter>, u64), FormatError> {
    let mut covered = 0u64;
    let mut written = 0u64;
    while let Ok(chunk) = chunks.recv() {
        match chunk {
            Chunk::Zero(len) => {
                if let Some(tee) = tee.as_deref_mut() {
                    tee.zeros(len);
                }
                covered += len;
                reporter.advance(len);
            }
            Chunk::Data {
                offset,
                buf,
                len,
                runs,
            } => {
                for (from, to) in runs {
                    writer.write_data(offset + from as u64, &buf[from..to])?;
                    written += (to - from) as u64;
                }
                if let Some(tee) = tee.as_deref_mut() {
                    tee.update(&buf[..len]);
                }
                covered += len as u64;
                reporter.advance(len as u64);
                // The reader may have finished and hung up; the buffer is then simply dropped.
                let _ = free.send(buf);
            }
        }
    }
    if covered != size {
        // Only reachable when the reader stopped with an error, which the caller reports.
        debug!(covered, size, "reader stopped early");
    }
    Ok((writer, written))
}

/// Where a conversion reads from.
pub enum Source<'a> {
    /// An image file; its format is detected by content unless given.
    File {
        path: &'a Path,
        format: Option<DiskFormat>,
    },
    /// A reader the caller opened (and may have wrapped: bake's cancellable reader) on the
    /// image at `path`.
    Reader {
        reader: &'a mut dyn DiskReader,
        path: &'a Path,
    },
}

impl<'a> Source<'a> {
    /// An image file whose format is detected by content.
    pub fn file(path: &'a Path) -> Source<'a> {
        Source::File { path, format: None }
    }
}

/// What a conversion writes.
#[derive(Clone, Copy)]
pub struct Output<'a> {
    pub path: &'a Path,
    pub format: DiskFormat,
    /// qemu-img's `-o` settings for `format`.
    pub options: &'a Options,
}

/// Converts `source` into a new image at `output.path`: the one way a file is converted.
///
/// The output is written under a temporary name in its folder ([`crate::io::publish`]),
/// fsynced and renamed to its final name only when everything succeeded; on failure the
/// temporary (and a vmdk monolithicFlat extent) is deleted.
///
/// `tee` hashes the output as it is written; only a raw output's bytes are the guest stream
/// (the other formats write their tables after the data and the header last), so any other
/// format with a `tee` is refused rather than given wrong digests.
pub fn convert_file(
    source: Source<'_>,
    output: Output<'_>,
    tee: Option<&mut DigestTee>,
    reporter: &dyn Reporter,
) -> Result<ConvertStats, FormatError> {
    if tee.is_some() && output.format != DiskFormat::Raw {
        return Err(FormatError::Unsupported {
            path: output.path.to_owned(),
            what: format!("hashing a {} output as it is written", output.format),
        });
    }
    let mut opened;
    let (input, reader): (&Path, &mut dyn DiskReader) = match source {
        Source::File { path, format } => {
            opened = super::open(path, format)?;
            (path, opened.as_mut())
        }
        Source::Reader { reader, path } => (path, reader),
    };
    let size = reader.virtual_size();
    if let Resolved::BlockDevice(device) = publish::resolve(output.path)? {
        let writer = device_writer(&device, output.format, size, output.options)?;
        return convert(input, reader, writer, tee, reporter);
    }
    publish(output.path, output.format, |target| {
        let writer = super::create(target, output.format, size, output.options)?;
        let writer = super::writeback::Writeback::wrap(writer, target.path);
        convert(input, reader, writer, tee, reporter)
    })
}

/// Creates a blank image at `path` (`cloudimg create`), under a temporary name until complete.
pub fn create_blank(
    path: &Path,
    format: DiskFormat,
    virtual_size: u64,
    options: &Options,
) -> Result<(), FormatError> {
    if let Resolved::BlockDevice(device) = publish::resolve(path)? {
        return device_writer(&device, format, virtual_size, options)?.finish();
    }
    publish(path, format, |target| {
        super::create(target, format, virtual_size, options)?.finish()
    })
}

/// A writer of a raw image in place on the block device at `path` (no temporary, no rename):
/// only raw is written onto devices; the device must hold `size` bytes and be unused.
fn device_writer(
    path: &Path,
    format: DiskFormat,
    size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    if format != DiskFormat::Raw {
        return Err(DeviceError::NotRaw {
            path: path.to_owned(),
            format: format.name(),
        }
        .into());
    }
    options.reject_unknown("raw on a block device")?;
    let device = Device::open(path, size)?;
    Ok(super::raw::device_writer(device, size))
}

/// Runs `write` against a temporary beside `dst` ([`crate::io::publish`]), then makes it
/// durable and renames it to `dst`; on failure the temporary (and a vmdk monolithicFlat extent
/// this run created) is deleted, so no partial output ever carries the final name. A symbolic
/// link at `dst` is followed; anything else that is not a regular file is refused.
fn publish<T>(
    dst: &Path,
    dst_format: DiskFormat,
    write: impl FnOnce(Target<'_>) -> Result<T, FormatError>,
) -> Result<T, FormatError> {
    let mut publication = Publication::begin(dst)?;
    let final_path = publication.final_path().to_owned();
    let flat_extent = (dst_format == DiskFormat::Vmdk)
        .then(|| flat_extent_path(&final_path))
        .flatten();
    // Only an extent this conversion creates is removed on failure.
    let new_flat_extent = flat_extent.clone().filter(|path| !path.exists());
    if let Some(extent) = flat_extent {
        publication.sync_also(extent);
    }
    let target = Target {
        path: publication.path(),
        final_path: &final_path,
    };
    let result = write(target).and_then(|value| {
        publication.commit()?;
        Ok(value)
    });
    if result.is_err() {
        if let Some(path) = new_flat_extent {
            if let Err(error) = std::fs::remove_file(&path) {
                debug!(path = %path.display(), %error, "could not remove a partial extent");
            }
        }
    }
    result
}

/// The extent a vmdk monolithicFlat writer creates beside its final name: `<stem>-flat.vmdk`.
fn flat_extent_path(dst: &Path) -> Option<PathBuf> {
    let stem = dst.file_stem()?;
    let mut name = stem.to_os_string();
    name.push("-flat.vmdk");
    Some(dst.with_file_name(name))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::formats::{ImageInfo, Mapping};
    use crate::test_tools::names;

    /// An in-memory source with an explicit map, to drive the loop through every case.
    struct MemReader {
        data: Vec<u8>,
        /// (start, len, kind) runs covering the disk, in order.
        map: Vec<(u64, u64, Extent)>,
        /// Offsets queried with `read_at`, to prove zero runs are never read.
        reads: Arc<Mutex<Vec<(u64, usize)>>>,
        fail_read_at: Option<u64>,
    }

    impl MemReader {
        fn new(data: Vec<u8>, map: Vec<(u64, u64, Extent)>) -> MemReader {
            MemReader {
                data,
                map,
                reads: Arc::default(),
                fail_read_at: None,
            }
        }
    }

    impl DiskReader for MemReader {
        fn virtual_size(&self) -> u64 {
            self.data.len() as u64
        }
        fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
            let (start, len, extent) = *self
                .map
                .iter()
                .find(|(s, l, _)| *s <= offset && offset < s + l)
                .unwrap();
            Ok(Mapping {
                extent,
                len: start + len - offset,
            })
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
            if self.fail_read_at.is_some_and(|at| at <= offset) {
                return Err(FormatError::malformed(
                    Path::new("mem"),
                    "test",
                    offset,
                    "boom",
                ));
            }
            self.reads.lock().unwrap().push((offset, buf.len()));
            let start = offset as usize;
            buf.copy_from_slice(&self.data[start..start + buf.len()]);
            Ok(())
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::new(DiskFormat::Raw, self.data.len() as u64)
        }
    }

    /// What a `MemWriter` received.
    #[derive(Default)]
    struct Recorded {
        bytes: Vec<u8>,
        /// (offset, length) of each `write_data` call.
        writes: Vec<(u64, usize)>,
        finished: bool,
    }

    type Recording = Arc<Mutex<Recorded>>;

    /// Records every write and checks the writer contract.
    struct MemWriter {
        unit: u64,
        size: u64,
        out: Recording,
        fail_at: Option<u64>,
    }

    impl DiskWriter for MemWriter {
        fn granularity(&self) -> u64 {
            self.unit
        }
        fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
            if self.fail_at.is_some_and(|at| at <= offset) {
                return Err(FormatError::malformed(
                    Path::new("out"),
                    "test",
                    offset,
                    "full",
                ));
            }
            let mut out = self.out.lock().unwrap();
            assert_eq!(offset % self.unit, 0, "unaligned write at {offset:#x}");
            let end = offset + data.len() as u64;
            assert!(
                (data.len() as u64).is_multiple_of(self.unit) || end == self.size,
                "partial unit at {offset:#x}"
            );
            if let Some(&(last, len)) = out.writes.last() {
                assert!(offset >= last + len as u64, "not increasing at {offset:#x}");
            }
            out.bytes[offset as usize..end as usize].copy_from_slice(data);
            out.writes.push((offset, data.len()));
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(), FormatError> {
            self.out.lock().unwrap().finished = true;
            Ok(())
        }
    }

    #[derive(Default)]
    struct Counting(AtomicU64);

    impl Reporter for Counting {
        fn start(&self, _label: &str, _total: Option<u64>, _already: u64) {}
        fn advance(&self, bytes: u64) {
            self.0.fetch_add(bytes, Ordering::Relaxed);
        }
        fn finish(&self) {}
    }

    /// [`convert`] of `reader` into `w`, reporting nowhere.
    fn convert_quietly(
        reader: &mut dyn DiskReader,
        w: Box<dyn DiskWriter>,
    ) -> Result<ConvertStats, FormatError> {
        convert(
            Path::new("mem"),
            reader,
            w,
            None,
            &crate::io::progress::Silent,
        )
    }
    fn writer(unit: u64, size: u64, fail_at: Option<u64>) -> (Box<MemWriter>, Recording) {
        let out: Recording = Arc::new(Mutex::new(Recorded {
            bytes: vec![0; size as usize],
            ..Recorded::default()
        }));
        let writer = MemWriter {
            unit,
            size,
            out: out.clone(),
            fail_at,
        };
        (Box::new(writer), out)
    }

    /// 10 MiB + 3 KiB: data, a zero hole, data with an all-zero unit inside, a short tail.
    fn sample() -> MemReader {
        let size = (10 << 20) + 3072;
        let mut data = vec![0u8; size];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        // A hole from 1 MiB + 100 to 5 MiB - 100 (not aligned on purpose).
        data[(1 << 20) + 100..(5 << 20) - 100].fill(0);
        // An all-zero stretch that the map calls data.
        data[6 << 20..7 << 20].fill(0);
        let map = vec![
            (0, (1 << 20) + 100, Extent::Data),
            ((1 << 20) + 100, (4 << 20) - 200, Extent::Zero),
            ((5 << 20) - 100, size as u64 - (5 << 20) + 100, Extent::Data),
        ];
        MemReader::new(data, map)
    }

    #[test]
    fn copies_everything_in_increasing_whole_units() {
        for unit in [512u64, 64 << 10, 2 << 20, 8 << 20] {
            let mut reader = sample();
            let size = reader.virtual_size();
            let (w, out) = writer(unit, size, None);
            let reporter = Counting::default();
            let stats = convert(Path::new("mem"), &mut reader, w, None, &reporter).unwrap();
            let out = out.lock().unwrap();
            assert!(out.finished, "finish was not called");
            assert_eq!(out.bytes, reader.data, "unit {unit}");
            assert_eq!(reporter.0.load(Ordering::Relaxed), size);
            assert_eq!(stats.bytes_written + stats.zero_bytes_skipped, size);
            assert_eq!(
                stats.bytes_written,
                out.writes.iter().map(|w| w.1 as u64).sum::<u64>()
            );
        }
    }

    #[test]
    fn zero_runs_and_zero_units_are_skipped() {
        let unit = 64 << 10;
        let mut reader = sample();
        let reads = reader.reads.clone();
        let size = reader.virtual_size();
        let (w, out) = writer(unit, size, None);
        convert_quietly(&mut reader, w).unwrap();
        let out = out.lock().unwrap();
        for &(offset, len) in &out.writes {
            let written = offset..offset + len as u64;
            assert!(written.end <= (1 << 20) + unit || written.start >= (5 << 20) - unit);
            assert!(written.end <= 6 << 20 || written.start >= 7 << 20);
        }
        // The inner whole units of the hole were never read.
        for &(offset, len) in reads.lock().unwrap().iter() {
            let read = offset..offset + len as u64;
            assert!(read.end <= (1 << 20) + unit || read.start >= (5 << 20) - unit);
        }
        // Consecutive non-zero units go out together: far fewer calls than units.
        assert!(out.writes.len() < 16, "{} writes", out.writes.len());
    }

    #[test]
    fn all_zero_source_writes_nothing() {
        let mut reader = MemReader::new(vec![0; 3 << 20], vec![(0, 3 << 20, Extent::Data)]);
        let (w, out) = writer(64 << 10, 3 << 20, None);
        let stats = convert_quietly(&mut reader, w).unwrap();
        assert_eq!(stats.bytes_written, 0);
        assert!(out.lock().unwrap().writes.is_empty());
        assert!(out.lock().unwrap().finished);
    }

    #[test]
    fn writer_error_stops_the_reader_and_is_returned() {
        let mut reader = sample();
        let size = reader.virtual_size();
        let (w, out) = writer(64 << 10, size, Some(8 << 20));
        let error = convert_quietly(&mut reader, w).unwrap_err();
        assert!(matches!(error, FormatError::Malformed { offset, .. } if offset >= 8 << 20));
        assert!(
            !out.lock().unwrap().finished,
            "finish must not run after an error"
        );
    }

    #[test]
    fn reader_error_is_returned_and_the_writer_not_finished() {
        let mut reader = sample();
        reader.fail_read_at = Some(7 << 20);
        let size = reader.virtual_size();
        let (w, out) = writer(64 << 10, size, None);
        let error = convert_quietly(&mut reader, w).unwrap_err();
        assert!(matches!(error, FormatError::Malformed { reason, .. } if reason == "boom"));
        assert!(!out.lock().unwrap().finished);
    }

    /// A reader with a defect: it panics when asked for data.
    struct PanickingReader;

    impl DiskReader for PanickingReader {
        fn virtual_size(&self) -> u64 {
            1 << 20
        }
        fn map(&mut self, _offset: u64) -> Result<Mapping, FormatError> {
            Ok(Mapping {
                extent: Extent::Data,
                len: 1 << 20,
            })
        }
        fn read_at(&mut self, _offset: u64, _buf: &mut [u8]) -> Result<(), FormatError> {
            panic!("a reader defect");
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::new(DiskFormat::Raw, 1 << 20)
        }
    }

    #[test]
    fn a_panicking_reader_is_reported_with_the_input_path() {
        let (w, out) = writer(64 << 10, 1 << 20, None);
        let input = Path::new("/images/input.qcow2");
        let silent = &crate::io::progress::Silent;
        let error = convert(input, &mut PanickingReader, w, None, silent).unwrap_err();
        assert!(
            matches!(&error, FormatError::ReaderPanicked { path } if path == input),
            "{error}"
        );
        assert!(!out.lock().unwrap().finished);
    }

    #[test]
    fn zero_detection_sees_a_single_byte() {
        let mut block = vec![0u8; 65536 + 7];
        assert!(is_zero(&block));
        for at in [0, 255, 256, 65535, 65536 + 6] {
            block[at] = 1;
            assert!(!is_zero(&block), "byte {at}");
            block[at] = 0;
        }
        assert_eq!(
            nonzero_runs(&[0, 0, 1, 0, 2, 3, 0, 0, 0, 4], 2),
            vec![(2, 6), (8, 10)]
        );
    }

    #[test]
    fn convert_file_renames_on_success_and_cleans_up_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.raw");
        let mut data = vec![0u8; 300_000];
        data[70_000..80_000].fill(0x5a);
        std::fs::write(&src, &data).unwrap();
        let dst = dir.path().join("dst.raw");
        let stats = convert_file(
            Source::File {
                path: &src,
                format: Some(DiskFormat::Raw),
            },
            Output {
                path: &dst,
                format: DiskFormat::Raw,
                options: &Options::default(),
            },
            None,
            &crate::io::progress::Silent,
        )
        .unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        assert_eq!(stats.virtual_size, 300_000);
        assert_eq!(names(dir.path()), ["dst.raw", "src.raw"]);

        let bad = dir.path().join("bad.raw");
        let error = convert_file(
            Source::file(&src),
            Output {
                path: &bad,
                format: DiskFormat::Raw,
                options: &Options::parse("nonsense=1").unwrap(),
            },
            None,
            &crate::io::progress::Silent,
        )
        .unwrap_err();
        assert!(matches!(error, FormatError::InvalidOption { .. }));
        assert!(!bad.exists());
        assert_eq!(names(dir.path()), ["dst.raw", "src.raw"]);
    }

    #[test]
    fn raw_output_is_hashed_as_written_holes_included() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = sample();
        let dst = dir.path().join("out.raw");
        let mut tee = DigestTee::new();
        let output = Output {
            path: &dst,
            format: DiskFormat::Raw,
            options: &Options::default(),
        };
        let stats = convert_file(
            Source::Reader {
                reader: &mut reader,
                path: Path::new("mem"),
            },
            output,
            Some(&mut tee),
            &crate::io::progress::Silent,
        )
        .unwrap();
        // The hole was skipped, not read, and still hashed.
        assert!(stats.zero_bytes_skipped >= 3 << 20, "{stats:?}");
        let written = std::fs::read(&dst).unwrap();
        assert_eq!(written, reader.data);
        let expected = crate::io::digests::digest_reader(&mut &written[..]).unwrap();
        assert_eq!(tee.finish().unwrap(), expected);
    }

    #[test]
    fn hashing_an_output_that_is_not_the_guest_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = sample();
        let dst = dir.path().join("out.qcow2");
        let mut tee = DigestTee::new();
        let output = Output {
            path: &dst,
            format: DiskFormat::Qcow2,
            options: &Options::default(),
        };
        let source = Source::Reader {
            reader: &mut reader,
            path: Path::new("mem"),
        };
        let error = convert_file(source, output, Some(&mut tee), &crate::io::progress::Silent);
        assert!(matches!(error, Err(FormatError::Unsupported { .. })));
        assert!(!dst.exists());
    }

    #[test]
    fn flat_extent_sits_beside_the_destination() {
        assert_eq!(
            flat_extent_path(Path::new("/a/b/disk.vmdk")).unwrap(),
            Path::new("/a/b/disk-flat.vmdk")
        );
    }
}
