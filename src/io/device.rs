//! Block devices as outputs: written in place (a device is never renamed over), only when it is
//! large enough and nobody uses it.
//!
//! "In use" is checked three ways, so the refusal can say why: a filesystem on the device or
//! one of its partitions is listed in `/proc/self/mountinfo`; a holder (device-mapper, md,
//! LVM) is listed in sysfs `holders/`; and the device is opened with `O_EXCL`, which the
//! kernel refuses (`EBUSY`) while anything has claimed it, and which keeps anyone from
//! mounting it while cloudimg writes.
//!
//! Zeroes: the copy loop skips zero regions, which on a device still hold old data. They are
//! zeroed with `BLKZEROOUT`: the kernel uses the device's write-zeroes command when it has one
//! (sysfs `queue/write_zeroes_max_bytes` > 0; a loop device punches holes in its file) and
//! writes zero pages itself otherwise, so the result always reads back as zeroes. Discard is
//! never trusted to zero (`BLKDISCARDZEROES` has answered 0 on every device since Linux 4.12),
//! and where the ioctl is refused cloudimg writes the zeroes itself.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::sys;

/// Zeroes written per call when the kernel cannot zero a range itself.
const ZERO_CHUNK: usize = 1 << 20;
/// `BLKZEROOUT` takes ranges in whole 512-byte sectors (the smallest logical block size).
const SECTOR: u64 = 512;

/// Why a block device cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the block device holds {device_size} bytes, fewer than the image's {needed}")]
    TooSmall {
        path: PathBuf,
        device_size: u64,
        needed: u64,
    },
    #[error("{path}: the block device is in use ({why}); unmount or release it first")]
    InUse { path: PathBuf, why: String },
    #[error("{path}: only -O raw is written onto a block device, not {format}")]
    NotRaw { path: PathBuf, format: &'static str },
}

impl DeviceError {
    fn io(path: &Path, action: &'static str, source: io::Error) -> DeviceError {
        DeviceError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }

    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            DeviceError::Io { .. } => crate::ErrorKind::Other,
            DeviceError::TooSmall { .. }
            | DeviceError::InUse { .. }
            | DeviceError::NotRaw { .. } => crate::ErrorKind::Usage,
        }
    }
}

/// A block device opened exclusively for writing `size` bytes from its start.
#[derive(Debug)]
pub struct Device {
    path: PathBuf,
    file: File,
    /// Whether `BLKZEROOUT` works; cleared at its first refusal.
    kernel_zeroes: bool,
}

impl Device {
    /// Opens the block device at `path` for an image of `needed` bytes, refusing one that is
    /// smaller, mounted, held or otherwise claimed.
    pub fn open(path: &Path, needed: u64) -> Result<Device, DeviceError> {
        let metadata = std::fs::metadata(path).map_err(|e| DeviceError::io(path, "inspect", e))?;
        if let Some(why) = in_use(metadata.rdev()) {
            return Err(DeviceError::InUse {
                path: path.to_owned(),
                why,
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::EBUSY) => DeviceError::InUse {
                    path: path.to_owned(),
                    why: "claimed by another user of the device".into(),
                },
                _ => DeviceError::io(path, "open for writing", source),
            })?;
        let device_size =
            sys::block_device_size(&file).map_err(|e| DeviceError::io(path, "read the size", e))?;
        if device_size < needed {
            return Err(DeviceError::TooSmall {
                path: path.to_owned(),
                device_size,
                needed,
            });
        }
        Ok(Device {
            path: path.to_owned(),
            file,
            kernel_zeroes: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| DeviceError::io(&self.path, "write", e))
    }

    /// Makes `[from, to)` read as zeroes: the whole sectors inside by the kernel, the rest (and
    /// everything, when the kernel refuses) by writing zeroes.
    pub fn zero(&mut self, from: u64, to: u64) -> Result<(), DeviceError> {
        if from >= to {
            return Ok(());
        }
        let inner_from = from.next_multiple_of(SECTOR);
        let inner_to = to / SECTOR * SECTOR;
        if self.kernel_zeroes && inner_from < inner_to {
            match sys::zero_block_range(&self.file, inner_from, inner_to - inner_from) {
                Ok(()) => {
                    self.write_zeroes(from, inner_from)?;
                    return self.write_zeroes(inner_to, to);
                }
                Err(error) => {
                    tracing::debug!(path = %self.path.display(), %error,
                        "BLKZEROOUT refused; writing zeroes");
                    self.kernel_zeroes = false;
                }
            }
        }
        self.write_zeroes(from, to)
    }

    fn write_zeroes(&self, from: u64, to: u64) -> Result<(), DeviceError> {
        let zeroes = vec![0u8; ZERO_CHUNK.min((to - from) as usize)];
        let mut at = from;
        while at < to {
            let n = (to - at).min(zeroes.len() as u64) as usize;
            self.write_at(&zeroes[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Waits until everything written is on the device.
    pub fn sync(&self) -> Result<(), DeviceError> {
        self.file
            .sync_all()
            .map_err(|e| DeviceError::io(&self.path, "sync", e))
    }
}

/// `major:minor` of a device number, as mountinfo and sysfs write it.
fn dev_name(rdev: u64) -> String {
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// Why the device `rdev` (or one of its partitions) is in use, if it is.
fn in_use(rdev: u64) -> Option<String> {
    let whole = dev_name(rdev);
    let mut devices = vec![whole.clone()];
    devices.extend(partitions(&whole));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(why) = mounted(&mountinfo, &devices) {
        return Some(why);
    }
    devices.iter().find_map(|device| {
        let holders = Path::new("/sys/dev/block").join(device).join("holders");
        let names: Vec<String> = std::fs::read_dir(holders)
            .ok()?
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        (!names.is_empty()).then(|| format!("{device} is held by {}", names.join(", ")))
    })
}

/// `major:minor` of the partitions of the whole disk `whole` (sysfs subfolders that have a
/// `partition` file).
fn partitions(whole: &str) -> Vec<String> {
    let folder = Path::new("/sys/dev/block").join(whole);
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.path().join("partition").exists())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("dev")).ok())
        .map(|dev| dev.trim().to_owned())
        .collect()
}

/// The mount point of the first of `devices` that `mountinfo` lists (field 3 is
/// `major:minor`, field 5 the mount point).
fn mounted(mountinfo: &str, devices: &[String]) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let (device, point) = (fields.get(2)?, fields.get(4)?);
        devices
            .iter()
            .any(|d| d == device)
            .then(|| format!("{device} is mounted at {point}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:30 / /proc rw - proc proc rw
40 22 7:3 / /mnt/x rw,relatime - ext4 /dev/loop3 rw
";

    #[test]
    fn mountinfo_names_the_mount_point() {
        assert_eq!(
            mounted(MOUNTINFO, &["7:3".into()]).as_deref(),
            Some("7:3 is mounted at /mnt/x")
        );
        assert_eq!(
            mounted(MOUNTINFO, &["8:0".into(), "8:1".into()]).as_deref(),
            Some("8:1 is mounted at /")
        );
        // Neither a prefix nor another field matches.
        assert_eq!(mounted(MOUNTINFO, &["7:30".into(), "0:3".into()]), None);
        assert_eq!(mounted("", &["7:3".into()]), None);
    }

    #[test]
    fn device_numbers_are_major_colon_minor() {
        assert_eq!(dev_name(libc::makedev(259, 7)), "259:7");
    }

    #[test]
    fn a_regular_file_is_not_a_block_device() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            Device::open(file.path(), 0),
            Err(DeviceError::Io { .. })
        ));
    }
}
