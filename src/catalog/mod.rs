//! Catalogs: what a distribution's image site looks like, as data.
//!
//! A catalog (`catalogs/<name>.toml`) names the site, its streams and their folder and file-name
//! patterns, the file kinds and what their bytes are, the checksum file and whether (and with
//! which keys) it is signed. Built-in catalogs are compiled in; a user may load another from a
//! file. Everything is validated at load time so that discovery never meets a bad pattern.
//!
//! The format carries a distribution as one file; `ubuntu` and `debian` are built in. Where the
//! two sites differ the catalog says so, not the code:
//! - file names: Ubuntu's are a stream `file_prefix` plus the kind's suffix; Debian's carry the
//!   build and an image variant, so a stream may give a whole `file_name` pattern instead
//!   (`debian-{version}-{variant}-{arch}-{serial}`), each kind naming its `variant`;
//! - releases: Ubuntu's listings describe them in words, Debian's table listings do not, so a
//!   catalog may declare `[[releases]]` (code name, version, the streams that carry them);
//! - checksums and signature: `SHA512SUMS` / `sha512` and `[signature] published = false`;
//! - `default_kind`: the file `fetch` takes when none is named.

pub mod glance;
pub mod pattern;
pub mod user;
mod validate;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::ErrorKind;

pub use glance::{GlancePreset, GlanceSpec};
pub use pattern::{compare_versions, PatternError, Placeholder, Vars};
pub use validate::Invalid;

/// The built-in catalogs: name and TOML text.
const BUILTIN: &[(&str, &str)] = &[
    ("ubuntu", include_str!("../../catalogs/ubuntu.toml")),
    ("debian", include_str!("../../catalogs/debian.toml")),
];

/// Upper bound for a user catalog file: real ones are a few KiB.
const MAX_CATALOG_BYTES: u64 = 1024 * 1024;

/// The stream names a catalog may define (the CLI's `--stream` values).
pub const STREAM_NAMES: &[&str] = &["released", "daily", "minimal", "minimal-daily"];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no built-in catalog named {name:?} (known: {known})")]
    UnknownBuiltin { name: String, known: String },
    #[error("{path}: cannot read catalog")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: catalog is over {limit} bytes (read {size})")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{origin}: not a valid catalog file")]
    Parse {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    /// A source catalog value that breaks a rule (the entry, field and value are in `source`).
    #[error("{origin}: invalid catalog")]
    Rule {
        origin: String,
        #[source]
        source: Invalid,
    },
    #[error("{origin}: {reason}")]
    Invalid { origin: String, reason: String },
}

impl CatalogError {
    /// A catalog is something the user chose (a name or a file): every failure is Usage.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CatalogError::UnknownBuiltin { .. }
            | CatalogError::Read { .. }
            | CatalogError::TooLarge { .. }
            | CatalogError::Parse { .. }
            | CatalogError::Rule { .. }
            | CatalogError::Invalid { .. } => ErrorKind::Usage,
        }
    }
}

/// The digest a checksum file uses (defined with the digests themselves).
pub use crate::verify::digest::DigestAlgorithm;

/// How checksum lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumLineFormat {
    /// `sha256sum` output: `<hex> *<name>` (binary) or `<hex>  <name>` (text).
    Coreutils,
}

/// The per-build checksum file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksumSpec {
    /// File name inside the serial folder: `SHA256SUMS`.
    pub file: String,
    pub algorithm: DigestAlgorithm,
    pub line_format: ChecksumLineFormat,
}

/// How a signature over the checksum file is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFormat {
    /// An ASCII-armored detached OpenPGP signature beside the checksum file.
    DetachedArmored,
}

/// Whether and how the checksum file is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    Published {
        /// File name inside the serial folder: `SHA256SUMS.gpg`.
        file: String,
        format: SignatureFormat,
    },
    /// The source publishes no signature (Debian): integrity rests on HTTPS and the digests.
    NotPublished,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    published: bool,
    file: Option<String>,
    format: Option<SignatureFormat>,
}

/// A public key the source signs with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub name: String,
    /// 40 hexadecimal digits (v4 fingerprint), upper case.
    pub fingerprint: String,
    /// The ASCII-armored public key block.
    pub armored: String,
}

/// An architecture as the source names it, and as Glance names it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    /// The source's name, used in file names: `amd64`.
    pub name: String,
    /// Glance's `architecture` property: `x86_64`.
    pub glance: String,
}

/// Where a stream publishes simplestreams metadata.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimplestreamsSpec {
    /// The stream root, relative to the mirror: `releases/`. Item paths are relative to it.
    pub root: String,
    /// The index, relative to the stream root: `streams/v1/index.json`.
    pub index: String,
    /// The index entry to use: `image-downloads`.
    pub datatype: String,
}

/// A release the catalog declares, for sites whose listings do not describe their releases.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Lower-case code name, also the folder name: `bookworm`.
    pub codename: String,
    /// What file names call it: `12`, `sid`.
    pub version: String,
    /// Shown by `list`; the version when absent.
    pub title: Option<String>,
    /// Streams that carry it (`sid` only has daily builds); every stream when absent.
    pub streams: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub supported: bool,
    /// End of support, `YYYY-MM-DD`, when known.
    pub eol: Option<String>,
    /// Other names accepted (`unstable`), lower case.
    #[serde(default)]
    pub aliases: Vec<String>,
}

fn yes() -> bool {
    true
}

impl ReleaseSpec {
    /// Whether the stream named `stream` carries this release.
    pub fn in_stream(&self, stream: &str) -> bool {
        self.streams
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == stream))
    }
}

/// One stream: where its releases, serials and files live.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub title: String,
    /// Folder listing the releases (its Description column names them), relative to the mirror;
    /// empty for the top page.
    pub releases_dir: String,
    /// Folder listing the serials of one release, relative to the mirror.
    pub release_dir: String,
    /// One build's folder, relative to `release_dir`.
    pub serial_dir: String,
    /// The moving alias of the newest build, relative to `release_dir` (not a serial).
    pub alias_dir: Option<String>,
    /// File-name prefix shared by every file of one arch; the kind's suffix follows
    /// (`{codename}-server-cloudimg-{arch}`). Either this or `file_name`.
    pub file_prefix: Option<String>,
    /// A whole file name but for the kind's suffix, for sites that put the build and the image
    /// variant in it (`debian-{version}-{variant}-{arch}-{serial}`). Either this or
    /// `file_prefix`.
    pub file_name: Option<String>,
    pub simplestreams: Option<SimplestreamsSpec>,
}

impl StreamSpec {
    /// The pattern a kind's suffix is appended to (validated: exactly one of the two is set).
    pub fn name_pattern(&self) -> &str {
        self.file_prefix
            .as_deref()
            .or(self.file_name.as_deref())
            .unwrap_or_default()
    }
}

/// What a file kind is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileRole {
    /// A bootable disk image (possibly wrapped).
    Disk,
    /// A root file system (tarball or squashfs), not bootable as is.
    Rootfs,
    Kernel,
    Initrd,
    /// Manifests, LXD metadata and the like.
    Metadata,
}

/// An archive wrapping the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveKind {
    #[serde(rename = "tar.gz")]
    TarGz,
    #[serde(rename = "tar.xz")]
    TarXz,
}

/// One era of a kind's file-name suffix. Bounds are inclusive release versions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuffixEra {
    pub suffix: String,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl SuffixEra {
    fn covers(&self, version: &str) -> bool {
        let after_start = self
            .since
            .as_deref()
            .is_none_or(|since| compare_versions(version, since).is_ge());
        let before_end = self
            .until
            .as_deref()
            .is_none_or(|until| compare_versions(version, until).is_le());
        after_start && before_end
    }
}

/// A kind of published file (a simplestreams `ftype`) and what its bytes are.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKind {
    /// The simplestreams `ftype`: `disk1.img`.
    pub ftype: String,
    pub role: FileRole,
    /// Glance `disk_format` of the payload once unwrapped (`qcow2` for `disk1.img`).
    pub disk_format: Option<String>,
    /// Glance `container_format` (`bare`, `ova`).
    pub container_format: Option<String>,
    /// The archive the payload comes in, if any.
    pub archive: Option<ArchiveKind>,
    /// Sub-folder of the serial folder (`unpacked/`); such files are not in the checksum file.
    pub dir: Option<String>,
    /// The image variant, for streams whose `file_name` has `{variant}`: `genericcloud`.
    pub variant: Option<String>,
    /// Suffix eras; the first covering the release's version wins.
    pub suffixes: Vec<SuffixEra>,
}

impl FileKind {
    /// The suffix used for a release `version`; `None` when no era covers it.
    pub fn suffix_for(&self, version: Option<&str>) -> Option<&str> {
        self.suffixes
            .iter()
            .find(|era| version.is_none_or(|v| era.covers(v)))
            .map(|era| era.suffix.as_str())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    name: String,
    title: String,
    base_url: String,
    serial_separator: String,
    default_kind: Option<String>,
    checksums: ChecksumSpec,
    signature: RawSignature,
    #[serde(default)]
    keys: Vec<SigningKey>,
    arches: Vec<Arch>,
    #[serde(default)]
    releases: Vec<ReleaseSpec>,
    streams: BTreeMap<String, StreamSpec>,
    kinds: Vec<FileKind>,
    #[serde(default)]
    glance: GlanceSpec,
}

/// A validated catalog.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub name: String,
    pub title: String,
    /// The default mirror; always ends with `/`.
    pub base_url: Url,
    /// Between the `YYYYMMDD` date and the respin/build counter of a serial: `.` or `-`.
    pub serial_separator: char,
    /// The kind `fetch` takes when none is named (`disk1.img`, `genericcloud.qcow2`).
    pub default_kind: Option<String>,
    pub checksums: ChecksumSpec,
    pub signature: Signature,
    pub keys: Vec<SigningKey>,
    pub arches: Vec<Arch>,
    /// Declared releases, oldest first; empty when the listings describe them (Ubuntu).
    pub releases: Vec<ReleaseSpec>,
    /// Keyed by stream name (one of [`STREAM_NAMES`]).
    pub streams: BTreeMap<String, StreamSpec>,
    pub kinds: Vec<FileKind>,
    /// Glance properties and presets for prepared artifacts.
    pub glance: GlanceSpec,
}

impl Catalog {
    /// Names of the catalogs compiled into the binary.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(name, _)| *name).collect()
    }

    /// A catalog compiled into the binary.
    pub fn builtin(name: &str) -> Result<Catalog, CatalogError> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .ok_or_else(|| CatalogError::UnknownBuiltin {
                name: name.to_owned(),
                known: Catalog::builtin_names().join(", "),
            })?;
        Catalog::from_toml_str(text, &format!("built-in catalog {name}"))
    }

    /// What `--catalog` names: a built-in catalog by name (`debian`, any case), else a file.
    /// A file that happens to share a built-in's name is reached as `./debian`.
    pub fn load(name_or_path: &Path) -> Result<Catalog, CatalogError> {
        let builtin = name_or_path.to_str().filter(|name| {
            BUILTIN
                .iter()
                .any(|(known, _)| known.eq_ignore_ascii_case(name))
        });
        match builtin {
            Some(name) => Catalog::builtin(name),
            None => Catalog::from_path(name_or_path),
        }
    }

    /// A user catalog file.
    pub fn from_path(path: &Path) -> Result<Catalog, CatalogError> {
        let read_error = |source| CatalogError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        // Read at most one byte past the limit, so an endless file cannot exhaust memory.
        let mut text = String::new();
        file.take(MAX_CATALOG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        let size = text.len() as u64;
        if size > MAX_CATALOG_BYTES {
            return Err(CatalogError::TooLarge {
                path: path.to_owned(),
                size,
                limit: MAX_CATALOG_BYTES,
            });
        }
        Catalog::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates catalog text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|source| CatalogError::Parse {
            origin: origin.to_owned(),
            source,
        })?;
        validate::validate(raw).map_err(|source| CatalogError::Rule {
            origin: origin.to_owned(),
            source,
        })
    }

    /// A stream by name.
    pub fn stream(&self, name: &str) -> Option<&StreamSpec> {
        self.streams.get(name)
    }

    /// An architecture by the source's name or its Glance name, case-insensitively
    /// (`amd64` or `x86_64`).
    pub fn arch(&self, name: &str) -> Option<&Arch> {
        self.arches
            .iter()
            .find(|arch| arch.name.eq_ignore_ascii_case(name))
            .or_else(|| {
                self.arches
                    .iter()
                    .find(|arch| arch.glance.eq_ignore_ascii_case(name))
            })
    }

    /// A file kind by simplestreams `ftype`.
    pub fn kind(&self, ftype: &str) -> Option<&FileKind> {
        self.kinds.iter().find(|kind| kind.ftype == ftype)
    }

    /// The kind of a serial-folder file whose name is `prefix + remainder`, for a release
    /// `version`: the remainder must equal the kind's suffix for that version exactly.
    pub fn kind_for_remainder(&self, remainder: &str, version: Option<&str>) -> Option<&FileKind> {
        self.kinds
            .iter()
            .filter(|kind| kind.dir.is_none())
            .find(|kind| kind.suffix_for(version) == Some(remainder))
    }

    /// The name of a file of `kind` (without its `dir`), e.g.
    /// `ubuntu-24.04-server-cloudimg-amd64.img`, `debian-12-nocloud-arm64-20240717-1811.raw`.
    /// `None` when no suffix era covers the release. The kind supplies `{variant}`.
    pub fn file_name(
        &self,
        stream: &StreamSpec,
        kind: &FileKind,
        vars: &Vars<'_>,
    ) -> Result<Option<String>, PatternError> {
        let Some(suffix) = kind.suffix_for(vars.version) else {
            return Ok(None);
        };
        let vars = Vars {
            variant: kind.variant.as_deref(),
            ..*vars
        };
        let mut name = pattern::expand(stream.name_pattern(), &vars)?;
        name.push_str(suffix);
        Ok(Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ubuntu() -> Catalog {
        Catalog::builtin("ubuntu").unwrap()
    }

    #[test]
    fn builtin_ubuntu_loads_with_all_streams() {
        let catalog = ubuntu();
        assert_eq!(
            catalog.base_url.as_str(),
            "https://cloud-images.ubuntu.com/"
        );
        assert_eq!(
            catalog
                .streams
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["daily", "minimal", "minimal-daily", "released"]
        );
        assert_eq!(catalog.checksums.algorithm, DigestAlgorithm::Sha256);
        assert_eq!(
            catalog.signature,
            Signature::Published {
                file: "SHA256SUMS.gpg".into(),
                format: SignatureFormat::DetachedArmored
            }
        );
        assert_eq!(catalog.keys.len(), 2);
        assert_eq!(catalog.serial_separator, '.');
    }

    #[test]
    fn unknown_builtin_lists_known_ones() {
        let error = Catalog::builtin("gentoo").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Usage);
        assert!(error.to_string().contains("ubuntu"), "{error}");
    }

    #[test]
    fn arches_map_to_glance_names_both_ways() {
        let catalog = ubuntu();
        let pairs: Vec<_> = catalog
            .arches
            .iter()
            .map(|a| (a.name.as_str(), a.glance.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("amd64", "x86_64"),
                ("arm64", "aarch64"),
                ("armhf", "armv7l"),
                ("ppc64el", "ppc64le"),
                ("riscv64", "riscv64"),
                ("s390x", "s390x")
            ]
        );
        assert_eq!(catalog.arch("X86_64").unwrap().name, "amd64");
        assert_eq!(catalog.arch("arm64").unwrap().glance, "aarch64");
        assert!(catalog.arch("i386").is_none());
    }

    #[test]
    fn disk1_img_is_qcow2_and_suffix_changes_after_xenial() {
        let catalog = ubuntu();
        let disk = catalog.kind("disk1.img").unwrap();
        assert_eq!(disk.disk_format.as_deref(), Some("qcow2"));
        assert_eq!(disk.container_format.as_deref(), Some("bare"));
        assert_eq!(disk.archive, None);
        assert_eq!(disk.suffix_for(Some("14.04")), Some("-disk1.img"));
        assert_eq!(disk.suffix_for(Some("16.04")), Some("-disk1.img"));
        assert_eq!(disk.suffix_for(Some("17.04")), Some(".img"));
        assert_eq!(disk.suffix_for(Some("24.04")), Some(".img"));
    }

    #[test]
    fn wrapped_kinds_say_what_is_inside() {
        let catalog = ubuntu();
        let vhd = catalog.kind("vhd.tar.gz").unwrap();
        assert_eq!(vhd.disk_format.as_deref(), Some("vhd"));
        assert_eq!(vhd.archive, Some(ArchiveKind::TarGz));
        let ova = catalog.kind("ova").unwrap();
        assert_eq!(ova.container_format.as_deref(), Some("ova"));
        let tar = catalog.kind("tar.gz").unwrap();
        assert_eq!(tar.disk_format.as_deref(), Some("raw"));
        assert_eq!(
            catalog.kind("vmlinuz").unwrap().dir.as_deref(),
            Some("unpacked/")
        );
    }

    #[test]
    fn file_names_follow_stream_and_era() {
        let catalog = ubuntu();
        let disk = catalog.kind("disk1.img").unwrap();
        let vars = |version, codename| Vars {
            version: Some(version),
            codename: Some(codename),
            arch: Some("amd64"),
            serial: None,
            variant: None,
        };
        let released = catalog.stream("released").unwrap();
        let daily = catalog.stream("daily").unwrap();
        let minimal = catalog.stream("minimal").unwrap();
        let name = |stream, v| catalog.file_name(stream, disk, &v).unwrap().unwrap();
        assert_eq!(
            name(released, vars("24.04", "noble")),
            "ubuntu-24.04-server-cloudimg-amd64.img"
        );
        assert_eq!(
            name(released, vars("16.04", "xenial")),
            "ubuntu-16.04-server-cloudimg-amd64-disk1.img"
        );
        assert_eq!(
            name(daily, vars("24.04", "noble")),
            "noble-server-cloudimg-amd64.img"
        );
        assert_eq!(
            name(minimal, vars("24.04", "noble")),
            "ubuntu-24.04-minimal-cloudimg-amd64.img"
        );
    }

    #[test]
    fn remainder_picks_the_exact_kind() {
        let catalog = ubuntu();
        let kind = |rest| {
            catalog
                .kind_for_remainder(rest, Some("24.04"))
                .map(|k| k.ftype.as_str())
        };
        assert_eq!(kind(".img"), Some("disk1.img"));
        assert_eq!(kind(".squashfs.manifest"), Some("squashfs.manifest"));
        assert_eq!(kind(".manifest"), Some("manifest"));
        assert_eq!(kind("-azure.vhd.tar.gz"), Some("vhd.tar.gz"));
        assert_eq!(kind(".daily.20250425.20250430.image_changelog.json"), None);
        // Files under unpacked/ are never matched in the serial folder itself.
        assert_eq!(kind("-vmlinuz-generic"), None);
    }

    #[test]
    fn builtin_debian_is_sha512_unsigned_and_dated() {
        let catalog = Catalog::builtin("debian").unwrap();
        assert_eq!(
            catalog.base_url.as_str(),
            "https://cloud.debian.org/images/cloud/"
        );
        assert_eq!(catalog.checksums.file, "SHA512SUMS");
        assert_eq!(catalog.checksums.algorithm, DigestAlgorithm::Sha512);
        assert_eq!(catalog.signature, Signature::NotPublished);
        assert!(catalog.keys.is_empty());
        assert_eq!(catalog.serial_separator, '-');
        assert_eq!(catalog.default_kind.as_deref(), Some("genericcloud.qcow2"));
        assert_eq!(catalog.arch("ppc64le").unwrap().name, "ppc64el");
        assert_eq!(catalog.arch("aarch64").unwrap().name, "arm64");
        let releases: Vec<(&str, &str)> = catalog
            .releases
            .iter()
            .map(|r| (r.codename.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(
            releases,
            [
                ("bullseye", "11"),
                ("bookworm", "12"),
                ("trixie", "13"),
                ("forky", "14"),
                ("sid", "sid")
            ]
        );
        let sid = catalog
            .releases
            .iter()
            .find(|r| r.codename == "sid")
            .unwrap();
        assert!(sid.in_stream("daily") && !sid.in_stream("released"));
    }

    #[test]
    fn debian_file_names_carry_variant_arch_and_build() {
        let catalog = Catalog::builtin("debian").unwrap();
        let vars = Vars {
            version: Some("12"),
            codename: Some("bookworm"),
            arch: Some("amd64"),
            serial: Some("20240717-1811"),
            variant: None,
        };
        let name = |stream: &str, ftype: &str| {
            catalog
                .file_name(
                    catalog.stream(stream).unwrap(),
                    catalog.kind(ftype).unwrap(),
                    &vars,
                )
                .unwrap()
                .unwrap()
        };
        assert_eq!(
            name("released", "genericcloud.qcow2"),
            "debian-12-genericcloud-amd64-20240717-1811.qcow2"
        );
        assert_eq!(
            name("daily", "nocloud.tar.xz"),
            "debian-12-nocloud-amd64-daily-20240717-1811.tar.xz"
        );
        assert_eq!(
            name("released", "ec2.json"),
            "debian-12-ec2-amd64-20240717-1811.json"
        );
        let tar = catalog.kind("generic.tar.xz").unwrap();
        assert_eq!(tar.archive, Some(ArchiveKind::TarXz));
        assert_eq!(tar.disk_format.as_deref(), Some("raw"));
        assert_eq!(catalog.kind("gce.json").unwrap().role, FileRole::Metadata);
        assert!(catalog.kind("ec2.qcow2").is_none());
    }

    #[test]
    fn load_takes_a_builtin_name_or_a_file() {
        assert_eq!(Catalog::load(Path::new("DEBIAN")).unwrap().name, "debian");
        assert_eq!(Catalog::load(Path::new("ubuntu")).unwrap().name, "ubuntu");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("debian");
        std::fs::write(
            &path,
            MINIMAL.replace("title = \"Debian\"", "title = \"Mine\""),
        )
        .unwrap();
        assert_eq!(Catalog::load(&path).unwrap().title, "Mine");
        // Neither a built-in nor a file: the error is about the file.
        let missing = Catalog::load(Path::new("debain")).unwrap_err();
        assert!(matches!(missing, CatalogError::Read { .. }), "{missing}");
    }

    const MINIMAL: &str = r#"
        name = "debian"
        title = "Debian"
        base_url = "https://cloud.debian.org/images/cloud/"
        serial_separator = "-"
        [checksums]
        file = "SHA512SUMS"
        algorithm = "sha512"
        line_format = "coreutils"
        [signature]
        published = false
        [[arches]]
        name = "amd64"
        glance = "x86_64"
        [streams.daily]
        title = "daily"
        releases_dir = ""
        release_dir = "{codename}/daily/"
        serial_dir = "{serial}/"
        file_prefix = "debian-{version}-genericcloud-{arch}"
        [[kinds]]
        ftype = "qcow2"
        role = "disk"
        disk_format = "qcow2"
        suffixes = [{ suffix = ".qcow2" }]
    "#;

    #[test]
    fn an_unsigned_source_fits_the_format() {
        let catalog = Catalog::from_toml_str(MINIMAL, "test").unwrap();
        assert_eq!(catalog.signature, Signature::NotPublished);
        assert_eq!(catalog.checksums.algorithm.hex_len(), 128);
        assert_eq!(catalog.serial_separator, '-');
    }

    fn invalid(text: &str) -> String {
        match Catalog::from_toml_str(text, "test") {
            Err(CatalogError::Rule { source, .. }) => source.to_string(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_refusal_names_the_entry_the_field_and_the_value() {
        let text = MINIMAL.replace("images/cloud/\"", "images/cloud\"");
        let Err(CatalogError::Rule { origin, source }) = Catalog::from_toml_str(&text, "test")
        else {
            panic!("expected a rule refusal");
        };
        assert_eq!(origin, "test");
        assert_eq!(
            (
                source.entry.as_str(),
                source.field.as_str(),
                source.value.as_str()
            ),
            (
                "catalog",
                "base_url",
                "https://cloud.debian.org/images/cloud"
            )
        );
        assert!(source.rule.contains("ending with '/'"), "{source}");
        let message = crate::error::chain(&CatalogError::Rule { origin, source });
        assert!(
            message.starts_with("test: invalid catalog: catalog: base_url"),
            "{message}"
        );
    }

    #[test]
    fn serial_placeholder_in_file_prefix_is_rejected() {
        let text = MINIMAL.replace("genericcloud-{arch}", "genericcloud-{arch}-{serial}");
        assert!(invalid(&text).contains("{serial}"));
    }

    #[test]
    fn published_signature_without_keys_is_rejected() {
        let text = MINIMAL.replace(
            "published = false",
            "published = true\nfile = \"SHA512SUMS.sign\"\nformat = \"detached-armored\"",
        );
        assert!(invalid(&text).contains("key"));
    }

    #[test]
    fn unknown_stream_name_is_rejected() {
        let text = MINIMAL.replace("[streams.daily]", "[streams.weekly]");
        assert!(invalid(&text).contains("weekly"));
    }

    #[test]
    fn escaping_folder_is_rejected() {
        let text = MINIMAL.replace("{codename}/daily/", "../{codename}/");
        assert!(invalid(&text).contains("release_dir"));
    }

    #[test]
    fn unknown_field_is_a_parse_error() {
        let text = MINIMAL.replace("title = \"Debian\"", "title = \"Debian\"\nmirror = 1");
        let error = Catalog::from_toml_str(&text, "test").unwrap_err();
        assert!(matches!(error, CatalogError::Parse { .. }));
        assert_eq!(error.kind(), ErrorKind::Usage);
    }

    /// MINIMAL with Debian's real naming: a whole file name with {variant} and {serial}.
    fn with_file_name(text: &str) -> String {
        text.replace(
            "file_prefix = \"debian-{version}-genericcloud-{arch}\"",
            "file_name = \"debian-{version}-{variant}-{arch}-{serial}\"",
        )
        .replace(
            "ftype = \"qcow2\"",
            "ftype = \"genericcloud.qcow2\"\nvariant = \"genericcloud\"",
        )
    }

    #[test]
    fn file_name_with_variant_and_serial_is_accepted() {
        let catalog = Catalog::from_toml_str(&with_file_name(MINIMAL), "test").unwrap();
        let stream = catalog.stream("daily").unwrap();
        assert_eq!(
            stream.name_pattern(),
            "debian-{version}-{variant}-{arch}-{serial}"
        );
    }

    #[test]
    fn file_prefix_and_file_name_together_are_rejected() {
        let text = with_file_name(MINIMAL).replace(
            "file_name = ",
            "file_prefix = \"debian-{arch}\"\nfile_name = ",
        );
        assert!(invalid(&text).contains("exactly one of file_prefix and file_name"));
    }

    #[test]
    fn kind_without_variant_under_a_variant_pattern_is_rejected() {
        let text = with_file_name(MINIMAL).replace("variant = \"genericcloud\"\n", "");
        assert!(invalid(&text).contains("needs a variant"));
    }

    #[test]
    fn file_name_without_arch_or_with_a_slash_is_rejected() {
        let text = with_file_name(MINIMAL).replace("-{arch}-{serial}", "-{serial}");
        assert!(invalid(&text).contains("{arch}"));
        let text = with_file_name(MINIMAL).replace("debian-{version}", "x/debian-{version}");
        assert!(invalid(&text).contains("without '/'"));
    }

    #[test]
    fn default_kind_must_be_a_kind() {
        let text = MINIMAL.replace(
            "serial_separator = \"-\"",
            "serial_separator = \"-\"\ndefault_kind = \"qcow3\"",
        );
        assert!(invalid(&text).contains("default_kind"));
        let text = MINIMAL.replace(
            "serial_separator = \"-\"",
            "serial_separator = \"-\"\ndefault_kind = \"qcow2\"",
        );
        let catalog = Catalog::from_toml_str(&text, "test").unwrap();
        assert_eq!(catalog.default_kind.as_deref(), Some("qcow2"));
    }

    const RELEASES: &str = r#"
        [[releases]]
        codename = "bookworm"
        version = "12"
        [[releases]]
        codename = "sid"
        version = "sid"
        streams = ["daily"]
    "#;

    #[test]
    fn declared_releases_load_and_are_checked() {
        let catalog = Catalog::from_toml_str(&format!("{MINIMAL}{RELEASES}"), "test").unwrap();
        assert_eq!(catalog.releases.len(), 2);
        assert!(catalog.releases[0].supported);
        assert_eq!(catalog.releases[0].title, None);
        let twice = format!("{MINIMAL}{RELEASES}").replace("version = \"sid\"", "version = \"12\"");
        assert!(invalid(&twice).contains("listed twice"));
        let no_stream = format!("{MINIMAL}{RELEASES}")
            .replace("streams = [\"daily\"]", "streams = [\"released\"]");
        assert!(invalid(&no_stream).contains("no \"released\" stream"));
        let upper = format!("{MINIMAL}{RELEASES}").replace("\"bookworm\"", "\"Bookworm\"");
        assert!(invalid(&upper).contains("lower-case"));
    }

    #[test]
    fn user_catalog_loads_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("debian.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        assert_eq!(Catalog::from_path(&path).unwrap().name, "debian");
        let missing = Catalog::from_path(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(missing, CatalogError::Read { .. }));
        let huge = dir.path().join("huge.toml");
        std::fs::write(&huge, vec![b'#'; MAX_CATALOG_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            Catalog::from_path(&huge),
            Err(CatalogError::TooLarge { .. })
        ));
    }
}
