//! What the guest boots: its kernel, initrd and command line, found the way its GRUB finds
//! them, and extracted for QEMU's direct kernel boot (`-kernel`, `-initrd`, `-append`).
//!
//! [`find`] reads the partition table (or takes the whole disk when there is none), keeps the
//! ext2/3/4 volumes, and looks on each, in partition order, for `/boot/grub/grub.cfg` (a root
//! filesystem holding /boot, as Debian's images) then `/grub/grub.cfg` (a separate /boot
//! partition, as Ubuntu's partition 16 `BOOT`). The first found decides: its first menu entry's
//! `linux` and `initrd` paths are resolved on the volume where the configuration was found
//! (GRUB's root after its `search`), or on the partition a `(hd0,gptN)` prefix names. The
//! command line is GRUB's: `BOOT_IMAGE=<kernel path>` then the entry's arguments.
//!
//! Without any grub.cfg, a Debian/Ubuntu root filesystem (one with `/etc`) is searched for
//! `/vmlinuz` + `/initrd.img` (the symbolic links the kernel packages keep) or `/boot/vmlinuz`
//! + `/boot/initrd.img`, and the command line is `root=LABEL=<label> ro` (or `root=UUID=`).
//!
//! [`extract`] streams the kernel into one writer and the initrds, concatenated with GRUB's
//! 4-byte alignment (Linux unpacks concatenated initramfs archives), into another.
//!
//! Every failure is a [`GuestFsError`] naming what was not understood; a caller can log it and
//! boot through the firmware instead.

use std::io::Write;

use super::ext4::{self, Ext4, Kind};
use super::gpt::{self, Table};
use super::grub;
use super::{GuestFsError, Volume};
use crate::formats::DiskReader;

/// Where GRUB's configuration is looked for on each volume, in order.
pub const GRUB_CONFIGS: [&str; 2] = ["/boot/grub/grub.cfg", "/grub/grub.cfg"];
/// Kernel and initrd paths of the fallback, in order (Debian/Ubuntu's symbolic links).
pub const FALLBACKS: [(&str, &str); 2] = [
    ("/vmlinuz", "/initrd.img"),
    ("/boot/vmlinuz", "/boot/initrd.img"),
];
/// The largest grub.cfg read (Debian's is ~10 KiB).
pub const MAX_GRUB_CFG: u64 = 1 << 20;
/// The largest kernel or initrd accepted (an initrd of every module is ~100 MiB).
pub const MAX_BOOT_FILE: u64 = 1 << 30;
/// Linux filesystems examined at most (a GPT may list thousands of entries; cloud images have
/// one or two).
pub const MAX_LINUX_VOLUMES: usize = 16;
/// GRUB places each initrd after the previous one at this alignment.
const INITRD_ALIGN: u64 = 4;

/// A volume of the disk: a partition, or the whole disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The partition number (as Linux numbers it), `None` for the whole disk.
    pub partition: Option<u32>,
    /// Byte offset and length on the disk.
    pub start: u64,
    pub len: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.partition {
            Some(n) => write!(f, "partition {n}"),
            None => f.write_str("the whole disk"),
        }
    }
}

/// A file to extract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    pub location: Location,
    /// The path as named by the configuration (symbolic links are followed when reading).
    pub path: String,
    /// The inode the path resolved to.
    pub inode: u32,
    pub size: u64,
}

/// What to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: BootFile,
    /// Loaded one after the other as one initramfs; empty when the entry has no initrd.
    pub initrds: Vec<BootFile>,
    /// The kernel command line.
    pub cmdline: String,
    /// Where this came from: `partition 1: /boot/grub/grub.cfg, line 13`, or the fallback.
    pub source: String,
    /// Arguments of the GRUB entry that expanded a variable and were left out.
    pub dropped_args: Vec<String>,
}

impl BootFiles {
    /// Bytes [`extract`] writes for the initrds (with alignment padding).
    pub fn initrd_len(&self) -> u64 {
        let mut len = 0;
        for (i, initrd) in self.initrds.iter().enumerate() {
            len += initrd.size;
            if i + 1 < self.initrds.len() {
                len = len.next_multiple_of(INITRD_ALIGN);
            }
        }
        len
    }
}

/// Finds the kernel, initrd and command line the guest boots.
pub fn find(reader: &mut dyn DiskReader) -> Result<BootFiles, GuestFsError> {
    let table = gpt::read(&mut Volume::whole(reader))?;
    let mut linux = Vec::new();
    let candidates = volumes(&table, reader.virtual_size());
    for location in &candidates {
        if linux.len() < MAX_LINUX_VOLUMES && ext4::probe(&mut volume(reader, location)?)? {
            linux.push(location.clone());
        }
    }
    if linux.is_empty() {
        return Err(GuestFsError::NoLinuxFilesystem {
            searched: describe(&table, &candidates),
        });
    }
    let mut searched = Vec::new();
    for location in &linux {
        let mut fs = match Ext4::open(volume(reader, location)?) {
            Ok(fs) => fs,
            Err(e) => {
                searched.push(format!("{location}: {e}"));
                continue;
            }
        };
        for config in GRUB_CONFIGS {
            match fs.resolve(config) {
                Ok(inode) => {
                    let bytes = fs.read_file(&inode, MAX_GRUB_CFG, config)?;
                    drop(fs);
                    return from_grub(reader, &linux, location, config, &bytes);
                }
                Err(GuestFsError::NotFound { .. } | GuestFsError::NotADirectory { .. }) => {
                    searched.push(format!("{location}: no {config}"));
                }
                Err(e) => searched.push(format!("{location}: {config}: {e}")),
            }
        }
    }
    for location in &linux {
        if let Some(found) = fallback(reader, location, &mut searched)? {
            return Ok(found);
        }
    }
    Err(GuestFsError::NoBootConfig {
        searched: searched.join("; "),
    })
}

/// Streams the kernel into `kernel_out` and the initrds (concatenated, each starting at a
/// 4-byte boundary) into `initrd_out`. Returns the bytes written to each.
pub fn extract(
    reader: &mut dyn DiskReader,
    boot: &BootFiles,
    kernel_out: &mut dyn Write,
    initrd_out: &mut dyn Write,
) -> Result<(u64, u64), GuestFsError> {
    let kernel = copy(reader, &boot.kernel, kernel_out, "kernel")?;
    let mut initrd = 0u64;
    for (i, file) in boot.initrds.iter().enumerate() {
        initrd += copy(reader, file, initrd_out, "initrd")?;
        if i + 1 < boot.initrds.len() {
            let pad = initrd.next_multiple_of(INITRD_ALIGN) - initrd;
            initrd_out
                .write_all(&[0u8; INITRD_ALIGN as usize][..pad as usize])
                .map_err(|source| GuestFsError::Write {
                    what: "initrd",
                    source,
                })?;
            initrd += pad;
        }
    }
    Ok((kernel, initrd))
}

fn copy(
    reader: &mut dyn DiskReader,
    file: &BootFile,
    out: &mut dyn Write,
    what: &'static str,
) -> Result<u64, GuestFsError> {
    let mut fs = Ext4::open(volume(reader, &file.location)?)?;
    let inode = fs.inode(file.inode)?;
    if inode.kind() != Kind::File || inode.size != file.size {
        return Err(GuestFsError::NotAFile {
            path: format!(
                "{}: {} (changed since it was found)",
                file.location, file.path
            ),
        });
    }
    fs.copy(&inode, out).map_err(|e| match e {
        GuestFsError::Write { source, .. } => GuestFsError::Write { what, source },
        other => other,
    })
}

/// The volumes to look at: every partition, or the whole disk.
fn volumes(table: &Table, disk_size: u64) -> Vec<Location> {
    match table {
        Table::None => vec![Location {
            partition: None,
            start: 0,
            len: disk_size,
        }],
        Table::Gpt(parts) | Table::Mbr(parts) => parts
            .iter()
            .map(|p| Location {
                partition: Some(p.number),
                start: p.start(),
                len: p.len(),
            })
            .collect(),
    }
}

fn describe(table: &Table, candidates: &[Location]) -> String {
    let kind = match table {
        Table::Gpt(_) => "GPT",
        Table::Mbr(_) => "MBR",
        Table::None => return "no partition table, and the whole disk is not ext2/3/4".into(),
    };
    let names: Vec<String> = candidates.iter().map(ToString::to_string).collect();
    format!("{kind} with {}", names.join(", "))
}

fn volume<'a>(
    reader: &'a mut dyn DiskReader,
    location: &Location,
) -> Result<Volume<'a>, GuestFsError> {
    Volume::new(reader, location.start, location.len)
}

/// The boot files of the first menu entry of the grub.cfg `config` found on `location`.
fn from_grub(
    reader: &mut dyn DiskReader,
    linux: &[Location],
    location: &Location,
    config: &str,
    bytes: &[u8],
) -> Result<BootFiles, GuestFsError> {
    let text = String::from_utf8_lossy(bytes);
    let entry = grub::first_menuentry(&text).map_err(|e| GuestFsError::GrubConfig {
        path: format!("{location}: {config}"),
        line: e.line,
        reason: e.reason,
    })?;
    let at = |path: &str| -> Result<(Location, String), GuestFsError> {
        let (device, plain) = grub::split_device(path);
        let Some(device) = device else {
            return Ok((location.clone(), plain.to_owned()));
        };
        let target = grub::device_partition(device)
            .and_then(|n| linux.iter().find(|l| l.partition == Some(n)));
        match target {
            Some(target) => Ok((target.clone(), plain.to_owned())),
            None => Err(GuestFsError::GrubConfig {
                path: format!("{location}: {config}"),
                line: entry.line,
                reason: format!("GRUB device ({device}) is not an ext2/3/4 partition of the disk"),
            }),
        }
    };
    let (kernel_at, kernel_path) = at(&entry.kernel)?;
    let kernel = boot_file(reader, &kernel_at, &kernel_path)?;
    let mut initrds = Vec::new();
    for initrd in &entry.initrds {
        let (initrd_at, initrd_path) = at(initrd)?;
        initrds.push(boot_file(reader, &initrd_at, &initrd_path)?);
    }
    let mut cmdline = format!("BOOT_IMAGE={}", entry.kernel);
    for arg in &entry.args {
        cmdline.push(' ');
        cmdline.push_str(arg);
    }
    Ok(BootFiles {
        kernel,
        initrds,
        cmdline,
        source: format!("{location}: {config}, line {}", entry.line),
        dropped_args: entry.dropped,
    })
}

/// Resolves `path` on `location` to a regular file of acceptable size.
fn boot_file(
    reader: &mut dyn DiskReader,
    location: &Location,
    path: &str,
) -> Result<BootFile, GuestFsError> {
    let mut fs = Ext4::open(volume(reader, location)?)?;
    let named = || format!("{location}: {path}");
    let inode = fs.resolve(path).map_err(|e| match e {
        GuestFsError::NotFound { .. } => GuestFsError::NotFound { path: named() },
        other => other,
    })?;
    if inode.kind() != Kind::File {
        return Err(GuestFsError::NotAFile { path: named() });
    }
    if inode.size > MAX_BOOT_FILE {
        return Err(GuestFsError::TooLarge {
            path: named(),
            size: inode.size,
            limit: MAX_BOOT_FILE,
        });
    }
    Ok(BootFile {
        location: location.clone(),
        path: path.to_owned(),
        inode: inode.number,
        size: inode.size,
    })
}

/// The /vmlinuz fallback on a root filesystem (one with /etc), if it has a kernel.
fn fallback(
    reader: &mut dyn DiskReader,
    location: &Location,
    searched: &mut Vec<String>,
) -> Result<Option<BootFiles>, GuestFsError> {
    let Ok(mut fs) = Ext4::open(volume(reader, location)?) else {
        return Ok(None);
    };
    match fs.resolve("/etc") {
        Ok(etc) if etc.kind() == Kind::Directory => {}
        _ => return Ok(None),
    }
    let sb = fs.superblock();
    let root = if !sb.label.is_empty()
        && sb
            .label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        format!("root=LABEL={}", sb.label)
    } else {
        format!("root=UUID={}", sb.uuid_text())
    };
    drop(fs);
    for (kernel_path, initrd_path) in FALLBACKS {
        let kernel = match boot_file(reader, location, kernel_path) {
            Ok(kernel) => kernel,
            Err(GuestFsError::NotFound { .. }) => {
                searched.push(format!("{location}: no {kernel_path}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let initrds = match boot_file(reader, location, initrd_path) {
            Ok(initrd) => vec![initrd],
            Err(GuestFsError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        return Ok(Some(BootFiles {
            kernel,
            initrds,
            cmdline: format!("{root} ro"),
            source: format!("{location}: {kernel_path} (no grub.cfg)"),
            dropped_args: Vec::new(),
        }));
    }
    Ok(None)
}
