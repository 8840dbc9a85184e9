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

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::ErrorKind;

pub use glance::{GlancePreset, GlanceSpec};
pub use pattern::{compare_versions, PatternError, Placeholder, Vars};

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
        validate(raw).map_err(|reason| CatalogError::Invalid {
            origin: origin.to_owned(),
            reason,
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

/// Checks that every pattern uses only the placeholders it can be given.
fn check_pattern(field: &str, text: &str, allowed: &[Placeholder]) -> Result<(), String> {
    let used = pattern::placeholders(text).map_err(|e| format!("{field}: {e}"))?;
    match used.iter().find(|p| !allowed.contains(p)) {
        Some(bad) => Err(format!("{field}: {bad} is not available in {text:?}")),
        None => Ok(()),
    }
}

/// A relative folder path: empty or ending with `/`, no `..`, no leading `/`, no scheme.
fn check_dir(field: &str, text: &str) -> Result<(), String> {
    let relative =
        !text.starts_with('/') && !text.contains("://") && !text.split('/').any(|s| s == "..");
    if relative && (text.is_empty() || text.ends_with('/')) {
        Ok(())
    } else {
        Err(format!(
            "{field}: {text:?} must be a relative folder ending with '/'"
        ))
    }
}

fn validate(raw: RawCatalog) -> Result<Catalog, String> {
    use Placeholder::{Arch as A, Codename as C, Serial as S, Variant as W, Version as V};

    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!("name {:?}: letters, digits and '-' only", raw.name));
    }
    let base_url = Url::parse(&raw.base_url).map_err(|e| format!("base_url: {e}"))?;
    if !matches!(base_url.scheme(), "https" | "http") || !raw.base_url.ends_with('/') {
        return Err(format!(
            "base_url {:?}: must be an http(s) URL ending with '/'",
            raw.base_url
        ));
    }
    let mut separator = raw.serial_separator.chars();
    let serial_separator = match (separator.next(), separator.next()) {
        (Some(c), None) if c.is_ascii_punctuation() => c,
        _ => {
            return Err(format!(
                "serial_separator {:?}: one punctuation character",
                raw.serial_separator
            ))
        }
    };
    if raw.checksums.file.is_empty() || raw.checksums.file.contains('/') {
        return Err(format!(
            "checksums.file {:?}: a plain file name",
            raw.checksums.file
        ));
    }
    raw.glance.validate()?;
    let signature = match raw.signature {
        RawSignature {
            published: false,
            file: None,
            format: None,
        } => Signature::NotPublished,
        RawSignature {
            published: false, ..
        } => return Err("signature: an unpublished signature has no file or format".into()),
        RawSignature {
            published: true,
            file: Some(file),
            format: Some(format),
        } if !file.is_empty() && !file.contains('/') => Signature::Published { file, format },
        RawSignature {
            published: true, ..
        } => {
            return Err(
                "signature: a published signature needs a plain file name and a format".into(),
            )
        }
    };
    if matches!(signature, Signature::Published { .. }) && raw.keys.is_empty() {
        return Err("keys: a published signature needs at least one key".into());
    }
    for key in &raw.keys {
        let fingerprint_ok =
            key.fingerprint.len() == 40 && key.fingerprint.chars().all(|c| c.is_ascii_hexdigit());
        if !fingerprint_ok {
            return Err(format!(
                "key {:?}: fingerprint {:?} is not 40 hex digits",
                key.name, key.fingerprint
            ));
        }
        if !key
            .armored
            .trim_start()
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        {
            return Err(format!(
                "key {:?}: not an armored public key block",
                key.name
            ));
        }
    }
    if raw.arches.is_empty() {
        return Err("arches: at least one architecture".into());
    }
    for (index, arch) in raw.arches.iter().enumerate() {
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !plain(&arch.name) || !plain(&arch.glance) {
            return Err(format!("arch {:?}: names must be plain words", arch.name));
        }
        if raw.arches[..index].iter().any(|a| a.name == arch.name) {
            return Err(format!("arch {:?}: listed twice", arch.name));
        }
    }
    if raw.streams.is_empty() {
        return Err("streams: at least one stream".into());
    }
    for (name, stream) in &raw.streams {
        if !STREAM_NAMES.contains(&name.as_str()) {
            return Err(format!(
                "stream {name:?}: not one of {}",
                STREAM_NAMES.join(", ")
            ));
        }
        let field = |f: &str| format!("streams.{name}.{f}");
        check_dir(&field("releases_dir"), &stream.releases_dir)?;
        check_pattern(&field("releases_dir"), &stream.releases_dir, &[])?;
        check_dir(&field("release_dir"), &stream.release_dir)?;
        check_pattern(&field("release_dir"), &stream.release_dir, &[V, C])?;
        check_dir(&field("serial_dir"), &stream.serial_dir)?;
        check_pattern(&field("serial_dir"), &stream.serial_dir, &[S])?;
        if !pattern::placeholders(&stream.serial_dir).is_ok_and(|p| p == [S]) {
            return Err(format!(
                "{}: must contain {{serial}} once",
                field("serial_dir")
            ));
        }
        if let Some(alias) = &stream.alias_dir {
            check_dir(&field("alias_dir"), alias)?;
            check_pattern(&field("alias_dir"), alias, &[])?;
        }
        let (names, allowed): (_, &[Placeholder]) = match (&stream.file_prefix, &stream.file_name) {
            (Some(prefix), None) => (("file_prefix", prefix), &[V, C, A]),
            (None, Some(name)) => (("file_name", name), &[V, C, A, S, W]),
            _ => {
                return Err(format!(
                    "streams.{name}: exactly one of file_prefix and file_name"
                ))
            }
        };
        let (key, text) = names;
        check_pattern(&field(key), text, allowed)?;
        let used = pattern::placeholders(text).unwrap_or_default();
        if !used.contains(&A) {
            return Err(format!("{}: must contain {{arch}}", field(key)));
        }
        if text.contains('/') {
            return Err(format!("{}: a file name, without '/'", field(key)));
        }
        if used.contains(&W) {
            let plain = raw
                .kinds
                .iter()
                .find(|k| k.dir.is_none() && k.variant.is_none());
            if let Some(kind) = plain {
                return Err(format!(
                    "kind {:?}: {} needs a variant",
                    kind.ftype,
                    field(key)
                ));
            }
        }
        if let Some(streams) = &stream.simplestreams {
            check_dir(&field("simplestreams.root"), &streams.root)?;
            let index_ok = !streams.index.is_empty()
                && !streams.index.starts_with('/')
                && !streams.index.split('/').any(|s| s == "..");
            if !index_ok || streams.datatype.is_empty() {
                return Err(format!(
                    "{}: a relative index path and a datatype",
                    field("simplestreams")
                ));
            }
        }
    }
    for (index, kind) in raw.kinds.iter().enumerate() {
        if kind.ftype.is_empty() || raw.kinds[..index].iter().any(|k| k.ftype == kind.ftype) {
            return Err(format!("kind {:?}: empty or listed twice", kind.ftype));
        }
        if kind.suffixes.is_empty() {
            return Err(format!("kind {:?}: at least one suffix", kind.ftype));
        }
        if kind
            .suffixes
            .iter()
            .any(|era| era.suffix.is_empty() || era.suffix.contains('/'))
        {
            return Err(format!(
                "kind {:?}: suffixes are non-empty, without '/'",
                kind.ftype
            ));
        }
        if let Some(dir) = &kind.dir {
            check_dir(&format!("kind {:?} dir", kind.ftype), dir)?;
        }
        if kind.role == FileRole::Disk && kind.disk_format.is_none() {
            return Err(format!("kind {:?}: a disk needs a disk_format", kind.ftype));
        }
        let variant_ok = kind.variant.as_deref().is_none_or(|v| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !variant_ok {
            return Err(format!(
                "kind {:?}: variant must be a plain word",
                kind.ftype
            ));
        }
    }
    if let Some(default) = &raw.default_kind {
        if !raw.kinds.iter().any(|k| &k.ftype == default) {
            return Err(format!("default_kind {default:?}: not one of the kinds"));
        }
    }
    for (index, release) in raw.releases.iter().enumerate() {
        let word = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        };
        let lower = release
            .codename
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !word(&release.codename) || !lower || !word(&release.version) {
            return Err(format!(
                "release {:?}: a lower-case code name and a plain version",
                release.codename
            ));
        }
        let earlier = &raw.releases[..index];
        if earlier
            .iter()
            .any(|r| r.codename == release.codename || r.version == release.version)
        {
            return Err(format!("release {:?}: listed twice", release.codename));
        }
        for stream in release.streams.iter().flatten() {
            if !raw.streams.contains_key(stream) {
                return Err(format!(
                    "release {:?}: the catalog has no {stream:?} stream",
                    release.codename
                ));
            }
        }
    }
    Ok(Catalog {
        name: raw.name,
        title: raw.title,
        base_url,
        serial_separator,
        default_kind: raw.default_kind,
        checksums: raw.checksums,
        signature,
        keys: raw.keys,
        arches: raw.arches,
        releases: raw.releases,
        streams: raw.streams,
        kinds: raw.kinds,
        glance: raw.glance,
    })
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
            Err(CatalogError::Invalid { reason, .. }) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
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
