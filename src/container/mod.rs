//! Containers around disk images: the cloud-init NoCloud seed ISO, OVF descriptors with their
//! manifests, OVA archives, and the Glance `container_format` vocabulary.
//!
//! Everything here writes small metadata in memory and streams disk images from their files;
//! outputs are written under a temporary name and renamed into place once complete.

pub mod glance;
pub mod iso;
pub mod manifest;
pub mod ova;
pub mod ovf;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use crate::glance::ContainerFormat;
use crate::glance::DiskFormat;
use crate::io::publish::Publication;
use crate::ErrorKind;

/// Why a container could not be built, or why a combination was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{path}: cannot {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A caller-supplied value (file name, volume id, sizes) that the container cannot hold.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A word that is not Glance's.
    #[error(transparent)]
    Word(#[from] crate::glance::UnknownWord),
    /// A disk format / container format pair that Glance (or the container itself) refuses.
    #[error("disk format {disk_format} cannot go in container {container}: {reason}")]
    Incompatible {
        disk_format: DiskFormat,
        container: ContainerFormat,
        reason: &'static str,
    },
    /// A file changed size between the moment it was described and the moment it was copied.
    #[error(
        "{path}: expected {expected} bytes, read {actual}; did the file change while being packed?"
    )]
    SizeChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
}

impl ContainerError {
    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> ContainerError {
        ContainerError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }

    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> ContainerError {
        ContainerError::InvalidInput {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ContainerError::InvalidInput { .. }
            | ContainerError::Word(_)
            | ContainerError::Incompatible { .. } => ErrorKind::Usage,
            ContainerError::Io { .. } | ContainerError::SizeChanged { .. } => ErrorKind::Other,
        }
    }
}

/// Refuses a `disk_format` / `container_format` pair that Glance rejects or that the container
/// cannot really carry. Strict on purpose: OVF and OVA are only produced around VMDK, the only
/// disk format every OVF consumer reads.
pub fn validate(disk: DiskFormat, container: ContainerFormat) -> Result<(), ContainerError> {
    let incompatible = |reason| ContainerError::Incompatible {
        disk_format: disk,
        container,
        reason,
    };
    // Glance: when either side is aki, ari or ami, both must be the same word.
    const AMAZON_PAIRING: &str = "Glance requires the disk format and the container format to \
                                  match when either is aki, ari or ami";
    if (disk.amazon().is_some() || container.amazon().is_some())
        && disk.amazon() != container.amazon()
    {
        return Err(incompatible(AMAZON_PAIRING));
    }
    match container {
        ContainerFormat::Ovf | ContainerFormat::Ova if disk != DiskFormat::Vmdk => Err(
            incompatible("OVF packages are only built around VMDK disks (convert to vmdk first)"),
        ),
        ContainerFormat::ContainerDisk if !matches!(disk, DiskFormat::Qcow2 | DiskFormat::Raw) => {
            Err(incompatible(
                "KubeVirt containerDisks hold qcow2 or raw disks",
            ))
        }
        _ => Ok(()),
    }
}

/// Longest member name of a package: the USTAR name field, so no prefix splitting is needed.
const MAX_MEMBER_NAME: usize = 100;

/// Checks the name of a file inside an OVF package (descriptor, manifest, disk): a plain file
/// name that survives a manifest line (`SHA256(name)= …`), an XML attribute and a USTAR header.
fn check_member_name(name: &str) -> Result<(), ContainerError> {
    let reason = if name.is_empty() || name.len() > MAX_MEMBER_NAME {
        Some(format!("must be 1 to {MAX_MEMBER_NAME} bytes"))
    } else if name == "." || name == ".." || name.contains(['/', '\\']) {
        Some("must be a plain file name, without directories".to_owned())
    } else if name.chars().any(|c| c.is_control() || c == ')') {
        Some("must not contain control characters or ')'".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ContainerError::invalid("package member name", name, reason)),
        None => Ok(()),
    }
}

/// Writes `out` through the publisher ([`crate::io::publish`]): `fill` writes a temporary
/// sibling, which is renamed into place (file and folder synced) only when it succeeded, so a
/// crash never leaves a half-written container under the final name. The temporary is removed
/// on failure.
fn write_atomically(
    out: &Path,
    fill: impl FnOnce(&mut BufWriter<File>, &Path) -> Result<(), ContainerError>,
) -> Result<(), ContainerError> {
    let publication =
        Publication::begin(out).map_err(|e| ContainerError::io(out, "start writing", e.into()))?;
    let temp = publication.path().to_owned();
    let file = publication
        .file()
        .try_clone()
        .map_err(|e| ContainerError::io(&temp, "open", e))?;
    let mut writer = BufWriter::new(file);
    fill(&mut writer, &temp)?;
    writer
        .flush()
        .map_err(|e| ContainerError::io(&temp, "write", e))?;
    drop(writer);
    publication
        .commit()
        .map_err(|e| ContainerError::io(out, "publish", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_round_trip_case_insensitively() {
        for format in ContainerFormat::ALL {
            assert_eq!(format.name().parse(), Ok(format));
        }
        assert_eq!("OVA".parse(), Ok(ContainerFormat::Ova));
    }

    /// [`super::validate`] of a word, as a user types it.
    fn validate(disk: &str, container: ContainerFormat) -> Result<(), ContainerError> {
        super::validate(disk.parse()?, container)
    }

    #[test]
    fn unknown_container_name_is_a_usage_error() {
        let err = ContainerError::from("docker".parse::<ContainerFormat>().unwrap_err());
        assert!(matches!(err, ContainerError::Word(_)));
        assert_eq!(err.kind(), ErrorKind::Usage);
    }

    #[test]
    fn bare_takes_every_ordinary_disk_format() {
        for disk in ["vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"] {
            assert!(validate(disk, ContainerFormat::Bare).is_ok(), "{disk}");
        }
    }

    #[test]
    fn amazon_formats_only_pair_with_themselves() {
        assert!(validate("ami", ContainerFormat::Ami).is_ok());
        assert!(validate("aki", ContainerFormat::Aki).is_ok());
        assert!(validate("ari", ContainerFormat::Ari).is_ok());
        for (disk, container) in [
            ("ami", ContainerFormat::Bare),
            ("aki", ContainerFormat::Ami),
            ("raw", ContainerFormat::Ari),
            ("qcow2", ContainerFormat::Aki),
        ] {
            let err = validate(disk, container).unwrap_err();
            assert!(
                matches!(err, ContainerError::Incompatible { .. }),
                "{disk} in {container}"
            );
            assert_eq!(err.kind(), ErrorKind::Usage);
        }
    }

    #[test]
    fn ovf_and_ova_need_vmdk() {
        assert!(validate("vmdk", ContainerFormat::Ovf).is_ok());
        assert!(validate("VMDK", ContainerFormat::Ova).is_ok());
        for disk in ["raw", "qcow2", "iso", "vhd"] {
            assert!(validate(disk, ContainerFormat::Ova).is_err(), "{disk}");
            assert!(validate(disk, ContainerFormat::Ovf).is_err(), "{disk}");
        }
    }

    #[test]
    fn containerdisk_holds_qcow2_or_raw_only() {
        assert!(validate("qcow2", ContainerFormat::ContainerDisk).is_ok());
        assert!(validate("raw", ContainerFormat::ContainerDisk).is_ok());
        for disk in ["vmdk", "vhd", "vdi", "iso"] {
            assert!(
                validate(disk, ContainerFormat::ContainerDisk).is_err(),
                "{disk}"
            );
        }
    }

    #[test]
    fn iso_only_goes_bare() {
        for container in ContainerFormat::ALL {
            let accepted = validate("iso", container).is_ok();
            assert_eq!(accepted, container == ContainerFormat::Bare, "{container}");
        }
    }

    #[test]
    fn unknown_disk_format_is_refused() {
        let err = validate("qcow3", ContainerFormat::Bare).unwrap_err();
        assert!(matches!(err, ContainerError::Word(_)));
        assert_eq!(err.kind(), ErrorKind::Usage);
    }

    #[test]
    fn failed_write_leaves_neither_output_nor_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.iso");
        let result = write_atomically(&out, |w, _| {
            w.write_all(b"partial").unwrap();
            Err(ContainerError::invalid("test", "x", "forced failure"))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
