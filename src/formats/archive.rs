//! Disks inside archives (`.tar.gz`, `.tar.xz`, `.ova`), read by streaming decompression.
//!
//! A helper thread decompresses and walks the tar to the first entry that is a disk, then
//! streams that entry's bytes through a bounded channel; the reader on the other end serves the
//! copy loop forwards only. The inner disk is recognised from the entry's first bytes and name:
//! raw (Ubuntu's `.tar.gz`, Debian's `disk.raw`), fixed VHD (Ubuntu's `-azure.vhd.tar.gz`) or
//! streamOptimized VMDK (an OVA).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;

use tracing::debug;

use tar_guard::TarGuard;

use super::{DiskFormat, DiskReader, Extent, FormatError, ImageInfo, Mapping, Probe};

mod tar_guard;

/// gzip member magic (RFC 1952).
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// xz stream header magic.
const XZ_MAGIC: &[u8] = &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
/// POSIX ustar (and GNU tar's `ustar  `) magic, at this offset of the first header.
const USTAR_MAGIC: &[u8] = b"ustar";
const USTAR_MAGIC_OFFSET: usize = 257;
/// A VHD footer's cookie; a fixed VHD is the disk followed by a 512-byte footer.
const VHD_COOKIE: &[u8] = b"conectix";
const VHD_FOOTER_LEN: u64 = 512;
/// Magics of formats that need random access and so cannot be read out of a stream.
const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
const VMDK_SPARSE_MAGIC: &[u8] = b"KDMV";
/// VDI's signature 0xbeda107f, little-endian, after the 64-byte text.
const VDI_SIGNATURE: &[u8] = &[0x7f, 0x10, 0xda, 0xbe];
const VDI_SIGNATURE_OFFSET: usize = 64;
/// How many leading bytes of the entry are looked at to recognise the inner format.
const HEAD_LEN: usize = 512;
/// Size of one chunk passed from the unpacking thread; a few are in flight at once.
const CHUNK_LEN: usize = 1 << 20;
/// Chunks queued between the threads (bounded memory: this many + 2 chunks).
const CHUNKS_IN_FLIGHT: usize = 4;
/// Most memory the xz decoder may use: enough for `xz -9` (64 MiB dictionary), while a hostile
/// header asking for a 1.5 GiB dictionary fails instead of allocating it.
const XZ_MEMORY_LIMIT: u64 = 72 << 20;
/// Buffer for reading the compressed file.
const INPUT_BUFFER: usize = 1 << 20;
/// Entries that describe a disk rather than being one: OVF descriptors, manifests, signing
/// certificates, metadata files, package manifests, and the kernel and initrd some Ubuntu
/// tarballs carry next to the root disk.
const NOT_DISK_SUFFIXES: &[&str] = &[".ovf", ".mf", ".cert", ".json", ".manifest", ".txt"];
const NOT_DISK_PARTS: &[&str] = &["vmlinuz", "initrd", "readme"];

/// The container around the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    TarXz,
    /// A plain tar, such as an OVA.
    Tar,
}

impl ArchiveKind {
    /// What `info` shows as `archive`.
    pub fn name(self) -> &'static str {
        match self {
            ArchiveKind::TarGz => "tar.gz",
            ArchiveKind::TarXz => "tar.xz",
            ArchiveKind::Tar => "tar",
        }
    }
}

/// Recognises gzip, xz and ustar by their magic numbers.
pub fn probe(probe: &Probe) -> Option<ArchiveKind> {
    let head = probe.head.as_slice();
    if head.starts_with(GZIP_MAGIC) {
        Some(ArchiveKind::TarGz)
    } else if head.starts_with(XZ_MAGIC) {
        Some(ArchiveKind::TarXz)
    } else if head
        .get(USTAR_MAGIC_OFFSET..USTAR_MAGIC_OFFSET + USTAR_MAGIC.len())
        .is_some_and(|magic| magic == USTAR_MAGIC)
    {
        Some(ArchiveKind::Tar)
    } else {
        None
    }
}

/// Opens the first disk inside the archive.
pub fn open(
    path: &Path,
    mut file: File,
    kind: ArchiveKind,
) -> Result<Box<dyn DiskReader>, FormatError> {
    // The probe left the file position anywhere.
    file.seek(SeekFrom::Start(0))
        .map_err(|source| FormatError::io(path, source))?;
    let (entry, mut stream) = EntryStream::start(path, file, kind)?;
    debug!(path = %path.display(), entry = %entry.name, size = entry.size, "disk inside archive");
    let head = stream
        .head()
        .map_err(|source| FormatError::io(path, source))?;
    let inner = inner_format(&head, &entry).map_err(|what| FormatError::Unsupported {
        path: path.to_owned(),
        what: format!("{what} in archive entry {}; extract it first", entry.name),
    })?;
    let disk: Box<dyn DiskReader> = match inner {
        Inner::Vmdk => super::vmdk::open_stream(path, Box::new(stream), entry.size)?,
        Inner::Raw => Box::new(StreamDisk::new(path, stream, entry.size, false)),
        Inner::FixedVhd => {
            if entry.size < VHD_FOOTER_LEN || entry.size % 512 != 0 {
                return Err(FormatError::malformed(
                    path,
                    "vhd",
                    0,
                    format!(
                        "archive entry {} of {} bytes cannot be a fixed VHD (data + 512-byte footer)",
                        entry.name, entry.size
                    ),
                ));
            }
            Box::new(StreamDisk::new(path, stream, entry.size, true))
        }
    };
    Ok(Box::new(Archived {
        disk,
        kind,
        entry: entry.name,
    }))
}

/// The disk formats that can be read from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    Raw,
    FixedVhd,
    Vmdk,
}

/// Decides the inner format from the first bytes and the name; `Err` names a format that
/// needs random access.
fn inner_format(head: &[u8], entry: &EntryMeta) -> Result<Inner, &'static str> {
    let name = entry.name.to_ascii_lowercase();
    if head.starts_with(VMDK_SPARSE_MAGIC) {
        Ok(Inner::Vmdk)
    } else if head.starts_with(QCOW2_MAGIC) {
        Err("a qcow2 image")
    } else if head.starts_with(VHD_COOKIE) {
        Err("a dynamic VHD")
    } else if head
        .get(VDI_SIGNATURE_OFFSET..VDI_SIGNATURE_OFFSET + VDI_SIGNATURE.len())
        .is_some_and(|signature| signature == VDI_SIGNATURE)
    {
        Err("a VDI image")
    } else if super::vhdx::starts_like_vhdx(head) {
        Err("a VHDX image")
    } else if let Some(foreign) = super::foreign::probe_head(head) {
        Err(foreign.described())
    } else if name.ends_with(".vhd") {
        Ok(Inner::FixedVhd)
    } else if name.ends_with(".vmdk") {
        Err("a VMDK that is not streamOptimized")
    } else {
        Ok(Inner::Raw)
    }
}

/// The disk entry chosen in the tar.
#[derive(Clone, Debug)]
struct EntryMeta {
    name: String,
    size: u64,
}

/// What the unpacking thread sends, in order: one `Entry` (or a failure), then `Data` chunks;
/// the channel closing after the last chunk means the end of the entry.
enum Message {
    Entry(EntryMeta),
    Data(Vec<u8>),
    Failed(std::io::Error),
    UnsafeName(String),
    /// A pax-format sparse entry (`GNU.sparse.*` records), which the tar crate cannot expand.
    PaxSparse(String),
}

/// The bytes of the disk entry, arriving from the unpacking thread.
struct EntryStream {
    receiver: mpsc::Receiver<Message>,
    chunk: Vec<u8>,
    at: usize,
    /// Joined on drop, so no unpacking outlives the reader.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EntryStream {
    fn drop(&mut self) {
        // Hanging up first makes the thread's next send fail, which ends it.
        drop(std::mem::replace(
            &mut self.receiver,
            mpsc::sync_channel(0).1,
        ));
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                debug!("the archive unpacking thread panicked");
            }
        }
    }
}

impl EntryStream {
    fn start(
        path: &Path,
        file: File,
        kind: ArchiveKind,
    ) -> Result<(EntryMeta, EntryStream), FormatError> {
        let (sender, receiver) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("archive-unpack".into())
            .spawn(move || unpack(file, kind, &sender))
            .map_err(|source| FormatError::io(path, source))?;
        let stream = EntryStream {
            receiver,
            chunk: Vec::new(),
            at: 0,
            thread: Some(thread),
        };
        match stream.receiver.recv() {
            Ok(Message::Entry(entry)) => Ok((entry, stream)),
            Ok(Message::Failed(source)) => Err(FormatError::malformed(
                path,
                kind.name(),
                0,
                format!("cannot read the archive: {source}"),
            )),
            Ok(Message::UnsafeName(name)) => Err(FormatError::malformed(
                path,
                kind.name(),
                0,
                format!("entry {name:?} is absolute or contains '..'"),
            )),
            Ok(Message::PaxSparse(name)) => Err(FormatError::Unsupported {
                path: path.to_owned(),
                what: format!(
                    "entry {name:?} is a pax-format sparse file; repack it with GNU tar's \
                     default format (tar -S --format=gnu)"
                ),
            }),
            Ok(Message::Data(_)) | Err(_) => Err(FormatError::malformed(
                path,
                kind.name(),
                0,
                "the archive holds no disk image",
            )),
        }
    }

    /// The first bytes of the entry (fewer if the entry is shorter), without consuming them.
    fn head(&mut self) -> Result<Vec<u8>, std::io::Error> {
        if self.at == self.chunk.len() {
            self.next_chunk()?;
        }
        let rest = self.chunk.get(self.at..).unwrap_or_default();
        Ok(rest[..rest.len().min(HEAD_LEN)].to_vec())
    }

    /// Loads the next chunk; an empty chunk means the end of the entry.
    fn next_chunk(&mut self) -> Result<(), std::io::Error> {
        self.at = 0;
        self.chunk = match self.receiver.recv() {
            Ok(Message::Data(chunk)) => chunk,
            Ok(Message::Failed(error)) => return Err(error),
            Ok(Message::Entry(_) | Message::UnsafeName(_) | Message::PaxSparse(_)) | Err(_) => {
                Vec::new()
            }
        };
        Ok(())
    }
}

impl EntryStream {
    /// Waits for the unpacking thread to reach the end of the archive; fails if anything after
    /// the entry (further entries, the compressed stream's trailer) is corrupt or if the entry
    /// holds more bytes than were consumed.
    fn expect_end(&mut self) -> Result<(), std::io::Error> {
        if self.at < self.chunk.len() {
            return Err(std::io::Error::other(
                "the entry holds more bytes than its size",
            ));
        }
        loop {
            match self.receiver.recv() {
                Ok(Message::Failed(error)) => return Err(error),
                Ok(Message::Data(chunk)) if !chunk.is_empty() => {
                    return Err(std::io::Error::other(
                        "the entry holds more bytes than its size",
                    ))
                }
                Ok(_) => {}
                Err(_) => return Ok(()),
            }
        }
    }
}

impl Read for EntryStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.chunk.len() {
            self.next_chunk()?;
        }
        let rest = self.chunk.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

/// The unpacking thread: finds the disk entry and streams it. It stops when the reader hangs
/// up (a failed send).
fn unpack(file: File, kind: ArchiveKind, sender: &mpsc::SyncSender<Message>) {
    let input = BufReader::with_capacity(INPUT_BUFFER, file);
    let decoded: Box<dyn Read> = match kind {
        ArchiveKind::TarGz => Box::new(flate2::read::MultiGzDecoder::new(input)),
        ArchiveKind::TarXz => {
            match xz2::stream::Stream::new_stream_decoder(
                XZ_MEMORY_LIMIT,
                xz2::stream::CONCATENATED,
            ) {
                Ok(stream) => Box::new(xz2::read::XzDecoder::new_stream(input, stream)),
                Err(error) => {
                    let _ = sender.send(Message::Failed(error.into()));
                    return;
                }
            }
        }
        ArchiveKind::Tar => Box::new(input),
    };
    let mut archive = tar::Archive::new(TarGuard::new(decoded));
    let result = stream_first_disk(&mut archive, sender).and_then(|()| {
        // Read to the end so that the decompressor verifies its checksums (gzip CRC32, xz
        // check): a corrupt trailer must fail the conversion, not pass unnoticed. Nothing after
        // the disk is interpreted.
        let mut rest = archive.into_inner();
        rest.disable();
        std::io::copy(&mut rest, &mut std::io::sink())
    });
    if let Err(error) = result {
        let _ = sender.send(Message::Failed(error));
    }
}

/// Sends the first disk entry; returns after it, or when the reader hangs up.
fn stream_first_disk(
    archive: &mut tar::Archive<TarGuard<Box<dyn Read>>>,
    sender: &mpsc::SyncSender<Message>,
) -> Result<(), std::io::Error> {
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_gnu_sparse()) {
            continue;
        }
        let path = entry.path()?.into_owned();
        let name = path.to_string_lossy().into_owned();
        if !is_safe_name(&path) {
            let _ = sender.send(Message::UnsafeName(name));
            return Err(std::io::Error::other("unsafe entry name"));
        }
        if !is_disk_name(&name) {
            continue;
        }
        if is_pax_sparse(&mut entry)? {
            let _ = sender.send(Message::PaxSparse(name));
            return Err(std::io::Error::other("pax sparse entry"));
        }
        let size = entry.size();
        if sender
            .send(Message::Entry(EntryMeta { name, size }))
            .is_err()
        {
            return Err(std::io::Error::other("the reader hung up"));
        }
        loop {
            let mut chunk = vec![0u8; CHUNK_LEN];
            let mut filled = 0;
            while filled < CHUNK_LEN {
                match entry.read(&mut chunk[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                return Ok(());
            }
            chunk.truncate(filled);
            if sender.send(Message::Data(chunk)).is_err() {
                return Err(std::io::Error::other("the reader hung up"));
            }
        }
    }
    // Without a disk entry, the channel closing unannounced says so.
    Ok(())
}

/// Whether pax records describe the entry as sparse: its data is then a sparse map followed by
/// the stored pieces, not the file.
fn is_pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<bool, std::io::Error> {
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(false);
    };
    for extension in extensions {
        if extension?.key_bytes().starts_with(b"GNU.sparse.") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Relative names without `..`: anything else could not have come from a sane archiver.
fn is_safe_name(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn is_disk_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or_default();
    !NOT_DISK_SUFFIXES.iter().any(|s| base.ends_with(s))
        && !NOT_DISK_PARTS.iter().any(|p| base.contains(p))
}

/// A raw disk or fixed VHD read forwards from an archive entry. Everything is data (the copy
/// loop skips the all-zero units).
struct StreamDisk {
    path: PathBuf,
    stream: EntryStream,
    /// Entry bytes consumed so far.
    position: u64,
    virtual_size: u64,
    /// A fixed VHD: the last 512 bytes are a footer, checked when the data has been read.
    vhd_footer: bool,
}

impl StreamDisk {
    fn new(path: &Path, stream: EntryStream, entry_size: u64, vhd_footer: bool) -> StreamDisk {
        StreamDisk {
            path: path.to_owned(),
            stream,
            position: 0,
            virtual_size: if vhd_footer {
                entry_size - VHD_FOOTER_LEN
            } else {
                entry_size
            },
            vhd_footer,
        }
    }

    fn format(&self) -> &'static str {
        if self.vhd_footer {
            "vhd"
        } else {
            "raw"
        }
    }

    fn out_of_order(&self, offset: u64) -> FormatError {
        FormatError::OutOfOrder {
            path: self.path.clone(),
            offset,
            position: self.position,
        }
    }

    /// Reads exactly `buf.len()` entry bytes; a short entry is malformed.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        self.stream.read_exact(buf).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                FormatError::malformed(
                    &self.path,
                    self.format(),
                    self.position,
                    "the archive entry ends before its declared size",
                )
            } else {
                FormatError::io(&self.path, source)
            }
        })?;
        self.position += buf.len() as u64;
        Ok(())
    }

    /// Applies the plain file's rule to the footer ([`super::vhd::check_fixed_footer`]), and
    /// requires its guest size to be the data streamed before it (the size already given out).
    fn check_footer(&mut self) -> Result<(), FormatError> {
        let mut footer = [0u8; VHD_FOOTER_LEN as usize];
        let at = self.position;
        self.read_exact(&mut footer)?;
        let guest_size = super::vhd::check_fixed_footer(&self.path, at, &footer)?;
        if guest_size != at {
            return Err(FormatError::malformed(
                &self.path,
                "vhd",
                at,
                format!("footer gives {guest_size} bytes, but the entry holds {at} bytes of data"),
            ));
        }
        Ok(())
    }
}

impl DiskReader for StreamDisk {
    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        if offset < self.position {
            return Err(self.out_of_order(offset));
        }
        Ok(Mapping {
            extent: Extent::Data,
            len: self.virtual_size.saturating_sub(offset),
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        if offset < self.position {
            return Err(self.out_of_order(offset));
        }
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.virtual_size) {
            return Err(FormatError::io(
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "read of {:#x} bytes at {offset:#x} passes the disk end {:#x}",
                        buf.len(),
                        self.virtual_size
                    ),
                ),
            ));
        }
        let gap = offset - self.position;
        if gap > 0 {
            let skipped = std::io::copy(&mut (&mut self.stream).take(gap), &mut std::io::sink())
                .map_err(|source| FormatError::io(&self.path, source))?;
            self.position += skipped;
            if skipped < gap {
                return Err(FormatError::malformed(
                    &self.path,
                    self.format(),
                    self.position,
                    "the archive entry ends before its declared size",
                ));
            }
        }
        self.read_exact(buf)?;
        if self.position == self.virtual_size {
            if self.vhd_footer {
                self.check_footer()?;
            }
            let at = self.position;
            self.stream.expect_end().map_err(|source| {
                FormatError::malformed(
                    &self.path,
                    self.format(),
                    at,
                    format!("after the disk entry: {source}"),
                )
            })?;
        }
        Ok(())
    }

    fn info(&self) -> ImageInfo {
        if self.vhd_footer {
            let mut info = ImageInfo::new(DiskFormat::Vhd, self.virtual_size);
            info.subformat = Some("fixed".into());
            info
        } else {
            ImageInfo::new(DiskFormat::Raw, self.virtual_size)
        }
    }
}

/// The inner disk, with the archive facts added to its info.
struct Archived {
    disk: Box<dyn DiskReader>,
    kind: ArchiveKind,
    entry: String,
}

impl DiskReader for Archived {
    fn virtual_size(&self) -> u64 {
        self.disk.virtual_size()
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        self.disk.map(offset)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        self.disk.read_at(offset, buf)
    }

    fn info(&self) -> ImageInfo {
        let mut info = self.disk.info();
        info.format_specific
            .insert("archive".into(), self.kind.name().into());
        info.format_specific
            .insert("entry".into(), self.entry.clone().into());
        info
    }
}

#[cfg(test)]
mod tests {
    use crate::test_tools::{oracles, Tool};

    use super::*;

    fn probe_of(head: &[u8]) -> Probe {
        Probe {
            head: head.to_vec(),
            tail: Vec::new(),
            len: head.len() as u64,
        }
    }

    /// Guest bytes with a pattern, a long zero stretch and an odd-sized tail.
    fn disk_bytes(len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8 | 1).collect();
        data[len / 4..len / 2].fill(0);
        data
    }

    /// Runs tar in `dir` with `args`; the file list is last.
    fn tar_in(tar: &Tool, dir: &Path, args: &[&str]) {
        tar.run_in(dir, args);
    }

    fn open_path(path: &Path) -> Result<Box<dyn DiskReader>, FormatError> {
        let mut file = File::open(path).unwrap();
        let kind = probe(&Probe::read(&mut file).unwrap()).expect("an archive magic");
        open(path, file, kind)
    }

    /// Reads the whole guest through map/read_at in 1 MiB steps, as the copy loop does.
    fn read_all(disk: &mut dyn DiskReader) -> Result<Vec<u8>, FormatError> {
        let size = disk.virtual_size();
        let mut out = vec![0u8; size as usize];
        let mut offset = 0;
        while offset < size {
            let run = disk.map(offset)?;
            let len = run.len.min(1 << 20);
            let at = offset as usize;
            disk.read_at(offset, &mut out[at..at + len as usize])?;
            offset += len;
        }
        Ok(out)
    }

    #[test]
    fn probe_recognises_gzip_xz_and_ustar() {
        // gzip: ID1 ID2, CM=8 deflate.
        assert_eq!(
            probe(&probe_of(&[0x1f, 0x8b, 0x08])),
            Some(ArchiveKind::TarGz)
        );
        // xz: 6-byte stream header magic.
        assert_eq!(
            probe(&probe_of(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00])),
            Some(ArchiveKind::TarXz)
        );
        let mut tar_head = vec![0u8; 512];
        // Header field `magic` at 257.
        tar_head[257..262].copy_from_slice(b"ustar");
        assert_eq!(probe(&probe_of(&tar_head)), Some(ArchiveKind::Tar));
        // One byte off in each magic.
        assert_eq!(probe(&probe_of(&[0x1f, 0x8c, 0x08])), None);
        assert_eq!(
            probe(&probe_of(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x01])),
            None
        );
        tar_head[261] = b'x';
        assert_eq!(probe(&probe_of(&tar_head)), None);
        // A head too short to hold the ustar magic.
        assert_eq!(probe(&probe_of(&[0u8; 260])), None);
    }

    #[test]
    fn raw_disk_in_tar_gz_skips_metadata_entries() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = disk_bytes(3 * 1024 * 1024 + 4096);
        std::fs::write(dir.path().join("image.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("disk.img"), &data).unwrap();
        tar_in(
            &tar,
            dir.path(),
            &["-czf", "a.tar.gz", "image.json", "disk.img"],
        );
        let mut disk = open_path(&dir.path().join("a.tar.gz")).unwrap();
        assert_eq!(disk.virtual_size(), data.len() as u64);
        let info = disk.info();
        assert_eq!(info.format, DiskFormat::Raw);
        assert_eq!(info.format_specific["archive"], "tar.gz");
        assert_eq!(info.format_specific["entry"], "disk.img");
        assert!(read_all(disk.as_mut()).unwrap() == data);
    }

    #[test]
    fn vhdx_in_tar_gz_is_named_not_read_as_raw() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut data = disk_bytes(2 << 20);
        data[..8].copy_from_slice(b"vhdxfile");
        std::fs::write(dir.path().join("disk.vhdx"), &data).unwrap();
        tar_in(&tar, dir.path(), &["-czf", "a.tar.gz", "disk.vhdx"]);
        let error = open_path(&dir.path().join("a.tar.gz")).err().unwrap();
        assert!(error.to_string().contains("a VHDX image"), "{error}");
    }

    #[test]
    fn gnu_sparse_entry_reads_back_whole() {
        let Some([tar, xz]) = oracles(["tar", "xz"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let file = File::create(&path).unwrap();
        let size = 5u64 << 20;
        file.set_len(size).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(&[0xee; 5000], 1 << 20).unwrap();
        file.write_all_at(&[0x11; 512], size - 512).unwrap();
        drop(file);
        tar_in(&tar, dir.path(), &["-S", "-cf", "a.tar", "disk.raw"]);
        let plain = std::fs::read(dir.path().join("a.tar")).unwrap();
        // typeflag (offset 156) 'S': an old-style GNU sparse entry, as `tar -S` writes.
        assert_eq!(plain[156], b'S');
        assert!(plain.len() < 1 << 20, "the holes are not stored");
        xz.run([
            "-0".as_ref(),
            "-k".as_ref(),
            dir.path().join("a.tar").as_os_str(),
        ]);
        let expected = std::fs::read(&path).unwrap();
        for (name, kind) in [("a.tar", "tar"), ("a.tar.xz", "tar.xz")] {
            let mut disk = open_path(&dir.path().join(name)).unwrap();
            assert_eq!(disk.virtual_size(), size);
            assert_eq!(disk.info().format_specific["archive"], kind);
            assert!(read_all(disk.as_mut()).unwrap() == expected, "{name}");
        }
    }

    /// A valid VHD footer for `size` bytes of data, all fields big-endian.
    fn vhd_footer(disk_type: u32, size: u64) -> Vec<u8> {
        let mut footer = vec![0u8; 512];
        footer[..8].copy_from_slice(b"conectix"); // cookie
        footer[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit
        footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // version 1.0
        footer[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none (fixed)
        footer[28..32].copy_from_slice(b"qem2"); // creator: size is current_size
        footer[40..48].copy_from_slice(&size.to_be_bytes()); // original size
        footer[48..56].copy_from_slice(&size.to_be_bytes()); // current size
        footer[56..60].copy_from_slice(&[0x01, 0x00, 0x10, 0x3f]); // geometry C/H/S
        footer[60..64].copy_from_slice(&disk_type.to_be_bytes()); // disk type
        let sum = footer
            .iter()
            .fold(0u32, |sum, b| sum.wrapping_add(u32::from(*b)));
        footer[64..68].copy_from_slice(&(!sum).to_be_bytes()); // checksum
        footer
    }

    #[test]
    fn fixed_vhd_in_tar_gz_drops_the_footer() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = disk_bytes(2 << 20);
        let mut file = data.clone();
        file.extend(vhd_footer(2, 2 << 20));
        std::fs::write(dir.path().join("livecd.azure.vhd"), &file).unwrap();
        tar_in(&tar, dir.path(), &["-czf", "a.tar.gz", "livecd.azure.vhd"]);
        let mut disk = open_path(&dir.path().join("a.tar.gz")).unwrap();
        assert_eq!(disk.virtual_size(), 2 << 20);
        let info = disk.info();
        assert_eq!(info.format, DiskFormat::Vhd);
        assert_eq!(info.subformat.as_deref(), Some("fixed"));
        assert!(read_all(disk.as_mut()).unwrap() == data);
    }

    #[test]
    fn vhd_entry_without_footer_fails_at_the_end() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        for (name, footer) in [
            ("nocookie.vhd", vec![0u8; 512]),
            ("dynamic.vhd", vhd_footer(3, 1 << 20)),
            ("other-size.vhd", vhd_footer(2, 1 << 19)),
            ("bad-checksum.vhd", {
                let mut footer = vhd_footer(2, 1 << 20);
                footer[67] ^= 1;
                footer
            }),
        ] {
            let mut file = disk_bytes(1 << 20);
            file.extend(footer);
            std::fs::write(dir.path().join(name), &file).unwrap();
            let archive = format!("{name}.tar");
            tar_in(&tar, dir.path(), &["-cf", &archive, name]);
            let mut disk = open_path(&dir.path().join(archive)).unwrap();
            let error = read_all(disk.as_mut()).unwrap_err();
            assert!(
                matches!(error, FormatError::Malformed { offset, .. } if offset >= 1 << 20),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn going_backwards_is_out_of_order() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk.img"), disk_bytes(1 << 20)).unwrap();
        tar_in(&tar, dir.path(), &["-cf", "a.tar", "disk.img"]);
        let mut disk = open_path(&dir.path().join("a.tar")).unwrap();
        let mut buf = [0u8; 4096];
        // Skipping forward is fine.
        disk.read_at(8192, &mut buf).unwrap();
        assert!(matches!(
            disk.read_at(4096, &mut buf),
            Err(FormatError::OutOfOrder {
                offset: 4096,
                position: 12288,
                ..
            })
        ));
        assert!(matches!(disk.map(0), Err(FormatError::OutOfOrder { .. })));
        // Reading past the end is refused without touching the stream.
        let mut big = vec![0u8; 2 << 20];
        assert!(disk.read_at(12288, &mut big).is_err());
    }

    #[test]
    fn archive_without_disk_is_malformed() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.ovf"), b"<Envelope/>").unwrap();
        std::fs::write(dir.path().join("x.mf"), b"SHA256(x.ovf)= 00").unwrap();
        tar_in(&tar, dir.path(), &["-cf", "a.ova", "x.ovf", "x.mf"]);
        let error = open_path(&dir.path().join("a.ova")).err().unwrap();
        assert!(
            matches!(&error, FormatError::Malformed { reason, .. } if reason.contains("no disk")),
            "{error}"
        );
    }

    #[test]
    fn dotdot_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A hand-made ustar header, since tar(1) and the tar crate both refuse to write `..`.
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..9].copy_from_slice(b"../x.img\0");
        header.set_size(512);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend([0x42; 512]);
        bytes.extend([0u8; 1024]);
        let path = dir.path().join("evil.tar");
        std::fs::write(&path, bytes).unwrap();
        let error = open_path(&path).err().unwrap();
        assert!(
            matches!(&error, FormatError::Malformed { reason, .. } if reason.contains("..")),
            "{error}"
        );
    }

    #[test]
    fn xz_asking_for_a_huge_dictionary_is_refused() {
        let Some([tar, xz]) = oracles(["tar", "xz"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk.img"), disk_bytes(4096)).unwrap();
        tar_in(&tar, dir.path(), &["-cf", "a.tar", "disk.img"]);
        // The header announces 257 MiB of decoder memory; the encoder itself needs little.
        xz.run([
            "-k".as_ref(),
            "--lzma2=preset=0,dict=256MiB".as_ref(),
            dir.path().join("a.tar").as_os_str(),
        ]);
        let error = open_path(&dir.path().join("a.tar.xz")).err().unwrap();
        assert!(matches!(error, FormatError::Malformed { .. }), "{error}");
    }

    #[test]
    fn long_names_sparse_gnu_and_pax_archives_read_back() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{}-server-cloudimg-amd64.img", "n".repeat(120));
        let path = dir.path().join(&name);
        let file = File::create(&path).unwrap();
        file.set_len(12 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        // More islands than the 4 sparse slots of a GNU header: extension blocks follow it.
        for i in 0..12u64 {
            file.write_all_at(&[i as u8 + 1; 3000], i << 20).unwrap();
        }
        drop(file);
        let expected = std::fs::read(&path).unwrap();
        // GNU format with -S; pax format without (see below for pax with -S).
        for (format, mode) in [("gnu", "-Sczf"), ("pax", "-czf")] {
            let archive = format!("{format}.tar.gz");
            tar_in(
                &tar,
                dir.path(),
                &[&format!("--format={format}"), mode, &archive, &name],
            );
            let mut disk = open_path(&dir.path().join(&archive)).unwrap();
            assert_eq!(disk.info().format_specific["entry"], name.as_str());
            assert!(read_all(disk.as_mut()).unwrap() == expected, "{format}");
        }
        // A pax sparse entry would read as its sparse map plus pieces: refused, not garbled.
        tar_in(
            &tar,
            dir.path(),
            &["-S", "--format=pax", "-czf", "pax-sparse.tar.gz", &name],
        );
        assert!(matches!(
            open_path(&dir.path().join("pax-sparse.tar.gz")),
            Err(FormatError::Unsupported { .. })
        ));
    }

    #[test]
    fn gzipped_huge_long_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        header.set_size(4 << 20);
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_cksum();
        let path = dir.path().join("bomb.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        use std::io::Write;
        gz.write_all(header.as_bytes()).unwrap();
        gz.write_all(&vec![b'a'; 4 << 20]).unwrap();
        gz.finish().unwrap();
        let error = open_path(&path).err().unwrap();
        assert!(
            matches!(&error, FormatError::Malformed { reason, .. } if reason.contains("metadata")),
            "{error}"
        );
    }

    #[test]
    fn qcow2_inside_is_unsupported() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut data = b"QFI\xfb\0\0\0\x03".to_vec();
        data.resize(4096, 0);
        std::fs::write(dir.path().join("disk.qcow2"), data).unwrap();
        tar_in(&tar, dir.path(), &["-czf", "a.tar.gz", "disk.qcow2"]);
        assert!(matches!(
            open_path(&dir.path().join("a.tar.gz")),
            Err(FormatError::Unsupported { .. })
        ));
    }

    #[test]
    fn truncated_gzip_is_an_error_not_a_panic() {
        let Some([tar]) = oracles(["tar"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk.img"), disk_bytes(2 << 20)).unwrap();
        tar_in(&tar, dir.path(), &["-czf", "a.tar.gz", "disk.img"]);
        let path = dir.path().join("a.tar.gz");
        let bytes = std::fs::read(&path).unwrap();
        for cut in [10, bytes.len() / 2, bytes.len() - 4] {
            let cut_path = dir.path().join(format!("cut{cut}.tar.gz"));
            std::fs::write(&cut_path, &bytes[..cut]).unwrap();
            let result = open_path(&cut_path).and_then(|mut disk| read_all(disk.as_mut()));
            assert!(result.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn random_bytes_after_gzip_magic_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.tar.gz");
        let mut bytes = vec![0x1f, 0x8b];
        bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        std::fs::write(&path, bytes).unwrap();
        assert!(open_path(&path).is_err());
    }
}
