//! KubeVirt containerDisks as OCI images: writing an OCI image layout folder, and pushing one to
//! a registry with the OCI distribution API.
//!
//! A containerDisk is an ordinary OCI image whose single layer is a tar holding the VM disk at
//! `disk/<name>.qcow2` (or `.img` for raw), owned by uid/gid 107 (qemu in KubeVirt's
//! virt-launcher) with mode 0440. KubeVirt reads the first file under `/disk`.
//!
//! - [`layer`] streams the disk into the tar layer blob, hashing as the bytes pass (never holding
//!   the image in memory), gzip optional.
//! - [`layout`] writes and reads the layout folder (`oci-layout`, `index.json`,
//!   `blobs/sha256/…`): config with `architecture`/`os`, manifest annotations with the
//!   provenance, an image index when several architectures are written together.
//! - [`reference`] parses `docker://REGISTRY/REPO[:TAG]`; [`auth`] finds credentials in the
//!   containers auth files and answers `WWW-Authenticate` challenges.
//! - [`registry`] speaks the distribution API (async); [`push`] drives a push: blobs first
//!   (existence checks, cross-repository mounts, monolithic or chunked uploads streamed from
//!   disk), manifests last, `latest` after every other tag, then retirement of old serial tags.
//!
//! The OCI document types come from the `oci-spec` crate. The HTTP side is written here over
//! the crate's reqwest: `oci-client` (the maintained client) brings a second reqwest/rustls
//! stack, has no manifest deletion (retirement needs it) and owns its token cache, while what
//! a push needs is a handful of requests.

pub mod auth;
pub mod layer;
pub mod layout;
pub mod push;
pub mod reference;
pub mod registry;

use std::path::{Path, PathBuf};

use crate::ErrorKind;

pub use layout::{ContainerDisk, LayoutSummary, Provenance};
pub use reference::Reference;

/// Owner of the disk file in the layer: the qemu user of KubeVirt's virt-launcher.
pub const KUBEVIRT_QEMU_ID: u64 = 107;
/// Mode of the disk file in the layer: readable by its owner and group only.
pub const DISK_MODE: u32 = 0o440;
/// Folder of the disk in the layer, the one KubeVirt looks in.
pub const DISK_FOLDER: &str = "disk";

/// Annotation keys of cloudimg's provenance, beside the `org.opencontainers.image.*` ones.
pub const ANNOTATION_SOURCE_URL: &str = "io.cloudimg.source.url";
pub const ANNOTATION_SOURCE_DIGEST: &str = "io.cloudimg.source.digest";
pub const ANNOTATION_SERIAL: &str = "io.cloudimg.serial";
pub const ANNOTATION_RELEASE: &str = "io.cloudimg.release";
pub const ANNOTATION_DISK_FORMAT: &str = "io.cloudimg.disk.format";

/// Why an OCI layout could not be written or read, or a push failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: cannot {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A value given by the caller that an OCI image cannot carry.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The layout folder is not one cloudimg can push: missing files, bad JSON, bad digests.
    #[error("{path}: not a usable OCI image layout: {reason}")]
    BadLayout { path: PathBuf, reason: String },
    /// A blob of the layout does not have the size its descriptor promises.
    #[error("{path}: {actual} bytes, but the descriptor says {expected}")]
    BlobSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// A small document whose bytes do not hash to the digest naming it.
    #[error("{path}: content hashes to {actual}, not {expected}")]
    BlobDigest {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The disk changed size while it was being packed.
    #[error(
        "{path}: expected {expected} bytes, read {actual}; did the file change while being packed?"
    )]
    SizeChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("cannot serialise {what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

impl OciError {
    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> OciError {
        OciError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }

    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> OciError {
        OciError::Invalid {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_layout(path: &Path, reason: impl Into<String>) -> OciError {
        OciError::BadLayout {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            OciError::Invalid { .. } | OciError::BadLayout { .. } => ErrorKind::Usage,
            OciError::BlobSize { .. } | OciError::BlobDigest { .. } => ErrorKind::Integrity,
            OciError::Io { .. } | OciError::SizeChanged { .. } | OciError::Json { .. } => {
                ErrorKind::Other
            }
            OciError::Registry(error) => error.kind(),
            OciError::Auth(error) => error.kind(),
        }
    }
}

/// The OCI (Go) architecture of a Glance `architecture` word or a Debian architecture name,
/// with its variant: `x86_64`/`amd64` → `amd64`, `aarch64`/`arm64` → `arm64`,
/// `armv7l`/`armhf` → `arm` v7, `ppc64le`/`ppc64el` → `ppc64le`, `i686`/`i386` → `386`.
pub fn oci_arch(name: &str) -> Option<(&'static str, Option<&'static str>)> {
    let arch = match name.to_ascii_lowercase().as_str() {
        "x86_64" | "amd64" => ("amd64", None),
        "aarch64" | "arm64" => ("arm64", Some("v8")),
        "armv7l" | "armhf" | "arm" => ("arm", Some("v7")),
        "ppc64le" | "ppc64el" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        "i686" | "i386" | "386" => ("386", None),
        "loongarch64" | "loong64" => ("loong64", None),
        _ => return None,
    };
    Some(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_and_debian_arch_words_map_to_go_arches() {
        assert_eq!(oci_arch("x86_64"), Some(("amd64", None)));
        assert_eq!(oci_arch("amd64"), Some(("amd64", None)));
        assert_eq!(oci_arch("aarch64"), Some(("arm64", Some("v8"))));
        assert_eq!(oci_arch("ppc64el"), Some(("ppc64le", None)));
        assert_eq!(oci_arch("armhf"), Some(("arm", Some("v7"))));
        assert_eq!(oci_arch("i386"), Some(("386", None)));
        assert_eq!(oci_arch("mips"), None);
    }
}
