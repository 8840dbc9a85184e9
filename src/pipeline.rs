//! What the commands do, end to end: discover → verify SHA256SUMS → download → verify the file
//! (→ convert). The CLI only parses, reports and maps [`Error::kind`] to an exit status.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use url::Url;

use crate::bake::BakeError;
use crate::catalog::{Catalog, CatalogError, Signature};
use crate::container::ContainerError;
use crate::fetch::{Client, Download, FetchError};
use crate::formats::{self, DiskFormat, FormatError, Options};
use crate::index::sums::{self, SumsError};
use crate::index::{Discovery, FileEntry, IndexError, Listing, Query};
use crate::io::blocking::{self, TaskFailed};
use crate::io::progress::Reporter;
use crate::upload::UploadError;
use crate::verify::digest::{FileDigest, Sha256Digest, Sha512Digest};
use crate::verify::openpgp::{Keyring, KeyringError, VerifyError};
use crate::ErrorKind;

mod bake;
mod prepare;
mod preview;

pub use bake::{
    BakeReport, BakeStep, BAKED_PROPERTY, BOOT_TESTED_PROPERTY, RECIPE_DIGEST_PROPERTY,
};

pub(crate) use prepare::unpacked_file;
pub use prepare::{
    prepare, prepare_listing, upstream_kind, Artifact, ImageSettings, MachineSettings,
    PrepareRequest, Prepared,
};
pub use preview::{preview, PlannedArtifact, PlannedFetch, PreparePreview};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Boxed: it carries the console's last lines.
    #[error(transparent)]
    Bake(Box<BakeError>),
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    /// Boxed: its variants carry several strings each, which would double every `Result`.
    #[error(transparent)]
    Upload(Box<UploadError>),
    #[error("{url}: malformed checksum file")]
    Sums {
        url: Url,
        // Boxed: a parse error carries its line, and every Result in the pipeline pays for the
        // largest variant.
        #[source]
        source: Box<SumsError>,
    },
    #[error("{url}: no signature published at this address; pass --no-verify-signature to accept unsigned checksums")]
    SignatureMissing { url: Url },
    #[error("{url} does not list {name}: its checksum cannot be verified")]
    NotInSums { url: Url, name: String },
    #[error("{name}: SHA256SUMS says {sums} but simplestreams says {streams}")]
    SourcesDisagree {
        name: String,
        sums: Sha256Digest,
        streams: Sha256Digest,
    },
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A command-line mistake the CLI found (the library's own refusals are [`Refusal`]).
    #[error(transparent)]
    Usage(#[from] Usage),
    /// A `--ca-file` (or `clouds.yaml` `cacert`) that cannot be read as PEM certificates.
    #[error(transparent)]
    Tls(#[from] crate::fetch::TlsError),
    #[error("cannot encode the result as JSON")]
    Json(#[source] serde_json::Error),
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

impl From<BakeError> for Error {
    fn from(error: BakeError) -> Error {
        Error::Bake(Box::new(error))
    }
}

impl From<UploadError> for Error {
    fn from(error: UploadError) -> Error {
        Error::Upload(Box::new(error))
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Catalog(e) => e.kind(),
            Error::Index(e) => e.kind(),
            Error::Fetch(e) => e.kind(),
            Error::Verify(e) => e.kind(),
            Error::Keyring(e) => e.kind(),
            Error::Format(e) => e.kind(),
            Error::Container(e) => e.kind(),
            Error::Bake(e) => e.kind(),
            Error::Oci(e) => e.kind(),
            Error::Upload(e) => e.kind(),
            Error::Sums { .. }
            | Error::SignatureMissing { .. }
            | Error::NotInSums { .. }
            | Error::SourcesDisagree { .. } => ErrorKind::Integrity,
            Error::Tls(e) => e.kind(),
            Error::Usage(_) | Error::Refused(_) => ErrorKind::Usage,
            Error::Io { .. } | Error::Task(_) | Error::Json(_) => ErrorKind::Other,
        }
    }
}

/// Glance's visibility words.
pub const VISIBILITIES: [&str; 4] = ["private", "shared", "community", "public"];

/// A request the pipeline refuses before doing anything (exit status 2), with what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "disk format iso: prepare builds disks from upstream images; make a cloud-init seed \
         with `cloudimg seed`"
    )]
    SeedIsNotADisk,
    #[error(
        "disk format {format}: Glance knows it but cloudimg does not write it; pick raw, qcow2, \
         vmdk, vhd, vhdx or vdi"
    )]
    NotWritten { format: crate::glance::DiskFormat },
    #[error("disk format {format}: not writable")]
    NotWritable { format: crate::glance::DiskFormat },
    #[error("visibility {value:?}: expected one of {}", VISIBILITIES.join(", "))]
    Visibility { value: String },
    #[error(
        "--file does not apply to {format}: the kernel and ramdisk come from the build's \
         unpacked/ folder"
    )]
    FileForKernelOrRamdisk { format: crate::glance::DiskFormat },
    #[error("catalog {catalog} names no default file kind; pass --file")]
    NoDefaultKind { catalog: String },
    /// A user-catalog entry without `file` whose source catalog has no default kind.
    #[error("{entry}: catalog {catalog} has no default file kind; set `file`")]
    EntryWithoutKind { entry: String, catalog: String },
    #[error(
        "vmdk subformat monolithicFlat: Glance refuses VMDKs with flat extents (\"failed \
         safety checks\"); use streamOptimized or monolithicSparse"
    )]
    FlatVmdk,
    #[error("preset {name:?} is not in catalog {catalog}; it has: {known}")]
    UnknownPreset {
        name: String,
        catalog: String,
        known: String,
    },
    #[error("{path}: not a UTF-8 file name")]
    NotUtf8 { path: PathBuf },
    #[error(
        "--bake makes a disk image; disk format {format} is a kernel, ramdisk or machine image \
         set (bake a qcow2, raw, vmdk, vhd, vhdx or vdi)"
    )]
    BakeNeedsADisk { format: crate::glance::DiskFormat },
    #[error("bake boots amd64 and arm64 guests, not {arch}")]
    BakeArch { arch: String },
    #[error("{path} already has the .{extension} extension; nothing to convert to")]
    NothingToConvert {
        path: PathBuf,
        extension: &'static str,
    },
}

/// A command-line mistake the CLI found (exit status 2), with what was given.
#[derive(Debug, thiserror::Error)]
pub enum Usage {
    /// An option's value that does not parse.
    #[error("{option} {value:?}: expected {expected}")]
    BadValue {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("unknown disk format {name:?}; expected {expected}")]
    UnknownFormat {
        name: String,
        /// The formats the command takes.
        expected: &'static str,
    },
    #[error("invalid {what} URL {value:?}")]
    BadUrl {
        what: &'static str,
        value: String,
        #[source]
        source: url::ParseError,
    },
    /// Something a command or option needs and was not given.
    #[error("{needed_by} needs {what}")]
    Missing {
        needed_by: &'static str,
        what: &'static str,
    },
    /// Two options, or an option and a value, that do not go together, and why.
    #[error("{option} does not go with {other}: {why}")]
    Conflict {
        option: String,
        other: String,
        why: String,
    },
    /// `--target NAME` that the user catalog does not define.
    #[error(
        "--target {name:?}: {} names {}",
        catalog.display(),
        if known.is_empty() { "no [[glance]] targets".to_owned() } else { known.join(", ") }
    )]
    UnknownTarget {
        name: String,
        catalog: PathBuf,
        known: Vec<String>,
    },
    /// A source that is neither a file nor, without a default file kind, a build to fetch.
    #[error("{image} is not a file, and catalog {catalog} names no default file kind to fetch")]
    NotAFile { image: String, catalog: String },
    /// A cloud-init file that cloud-init would reject at boot.
    #[error("{}", path.display())]
    InvalidSeed {
        path: PathBuf,
        #[source]
        source: crate::bake::validate::ValidationError,
    },
}

/// How the checksum file's signature is treated.
pub enum SignaturePolicy<'a> {
    Require(&'a Keyring),
    /// `--no-verify-signature`: logged, checksums still verified.
    Skip,
}

/// One `fetch` request.
pub struct FetchRequest<'a> {
    pub query: Query,
    pub serial: Option<String>,
    /// simplestreams ftype word (`disk1.img`, `vmdk`, …).
    pub kind: String,
    pub output_dir: PathBuf,
    pub signature: SignaturePolicy<'a>,
    /// Convert after verification.
    pub convert: Option<(DiskFormat, Options)>,
}

/// What became of the checksum file's signature, as `--json` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SignatureStatus {
    /// Checked with a trusted key (`signed_by` names it).
    #[serde(rename = "verified")]
    Verified,
    /// `--no-verify-signature`.
    #[serde(rename = "skipped")]
    Skipped,
    /// The source signs nothing (Debian); integrity rests on HTTPS and the digests.
    #[serde(rename = "not published by source")]
    NotPublished,
}

/// What `fetch` did, as printed with `--json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fetched {
    pub release: String,
    pub serial: String,
    pub kind: String,
    pub url: String,
    pub path: PathBuf,
    /// The verified digest, in the algorithm the source publishes.
    #[serde(skip)]
    pub digest: FileDigest,
    /// Present when the source publishes SHA-256 (Ubuntu).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    /// Present when the source publishes SHA-512 (Debian).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha512: Option<Sha512Digest>,
    pub size: u64,
    pub up_to_date: bool,
    pub transferred: u64,
    pub resumed_from: u64,
    /// Fingerprint of the key that signed the checksum file; `None` when the check was skipped
    /// or the source signs nothing.
    pub signed_by: Option<String>,
    pub signature: SignatureStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted: Option<PathBuf>,
}

pub async fn fetch(
    client: &Client,
    catalog: &Catalog,
    mirror: &Url,
    request: FetchRequest<'_>,
    reporter: Arc<dyn Reporter>,
) -> Result<Fetched, Error> {
    let discovery = Discovery::new(client, catalog, mirror.clone());
    let listing = discovery
        .listing(&request.query, request.serial.as_deref())
        .await?;
    let file = listing.file(&request.kind)?;
    let mut fetched = fetch_entry(
        client,
        catalog,
        &listing,
        file,
        &request.output_dir,
        &request.signature,
        reporter.as_ref(),
    )
    .await?;
    fetched.kind = request.kind;
    if let Some((format, options)) = request.convert {
        fetched.converted = Some(convert_download(&fetched.path, format, options, reporter).await?);
    }
    Ok(fetched)
}

/// Downloads one file of `listing` into `output_dir` and verifies it against the listing's
/// (signature-checked) checksum file; the file keeps its published name.
pub(crate) async fn fetch_entry(
    client: &Client,
    catalog: &Catalog,
    listing: &Listing,
    file: &FileEntry,
    output_dir: &Path,
    signature: &SignaturePolicy<'_>,
    reporter: &dyn Reporter,
) -> Result<Fetched, Error> {
    let (expected, signed_by, signature) =
        expected_digest(client, catalog, listing, file, signature).await?;
    tokio::fs::create_dir_all(output_dir)
        .await
        .map_err(|source| Error::Io {
            path: output_dir.to_owned(),
            source,
        })?;
    let dest = output_dir.join(&file.name);
    // Names carry no serial: a newer serial replaces the older file of the same name.
    let existed = tokio::fs::symlink_metadata(&dest)
        .await
        .is_ok_and(|m| m.is_file());
    let downloaded = client
        .download(
            &Download {
                url: file.url.clone(),
                dest: dest.clone(),
                expected_digest: Some(expected),
                expected_size: file.size.filter(|_| file.size_exact),
            },
            reporter,
        )
        .await?;
    if downloaded.up_to_date {
        tracing::info!(path = %dest.display(), "already up to date; nothing transferred");
    } else {
        if existed {
            tracing::warn!(
                path = %dest.display(),
                serial = %listing.serial,
                "replaced a file of the same name holding other bytes (another serial) with \
                 serial {}; fetch each serial into its own folder (-o DIR/SERIAL) to keep both",
                listing.serial
            );
        }
        tracing::info!(path = %dest.display(), algorithm = %downloaded.digest.algorithm(),
            digest = %downloaded.digest, "verified");
    }
    Ok(Fetched {
        release: listing.release.codename.clone(),
        serial: listing.serial.clone(),
        kind: file.ftype.clone().unwrap_or_default(),
        url: file.url.to_string(),
        path: dest,
        digest: downloaded.digest,
        sha256: downloaded.digest.sha256(),
        sha512: downloaded.digest.sha512(),
        size: downloaded.size,
        up_to_date: downloaded.up_to_date,
        transferred: downloaded.transferred,
        resumed_from: downloaded.resumed_from,
        signed_by,
        signature,
        converted: None,
    })
}

/// The digest the file must have: from the (signature-checked, where the source signs it)
/// checksum file, cross-checked with simplestreams when that was the source.
async fn expected_digest(
    client: &Client,
    catalog: &Catalog,
    listing: &Listing,
    file: &FileEntry,
    policy: &SignaturePolicy<'_>,
) -> Result<(FileDigest, Option<String>, SignatureStatus), Error> {
    let sums = verified_sums(client, catalog, listing, policy).await?;
    let digest = digest_from_sums(catalog, listing, file, &sums.text)?;
    Ok((digest, sums.signed_by, sums.status))
}

/// A folder's checksum file and its detached signature, exactly as fetched, once the policy's
/// signature check passed (a mirror copies these bytes).
pub(crate) struct VerifiedSums {
    pub text: Bytes,
    /// `None` when the source publishes no signature or the check was skipped.
    pub signature: Option<Bytes>,
    pub signed_by: Option<String>,
    pub status: SignatureStatus,
}

/// Fetches the listing's checksum file and, as `policy` says, checks its signature.
pub(crate) async fn verified_sums(
    client: &Client,
    catalog: &Catalog,
    listing: &Listing,
    policy: &SignaturePolicy<'_>,
) -> Result<VerifiedSums, Error> {
    let text = client.get_document(&listing.sums_url).await?;
    let sums_name = &catalog.checksums.file;
    let (signature, signed_by, status) = match policy {
        // Before the policy: there is nothing to check or skip, and no other source's keys
        // may stand in for a signature this one never makes.
        _ if catalog.signature == Signature::NotPublished => {
            tracing::warn!(source = %catalog.name, url = %listing.sums_url,
                "no signature published by this source for {sums_name}; relying on HTTPS and the {} digests",
                catalog.checksums.algorithm);
            (None, None, SignatureStatus::NotPublished)
        }
        SignaturePolicy::Skip => {
            tracing::warn!(url = %listing.sums_url, "signature check of {sums_name} skipped (--no-verify-signature)");
            (None, None, SignatureStatus::Skipped)
        }
        SignaturePolicy::Require(keyring) => {
            let Some(signature_url) = &listing.signature_url else {
                return Err(Error::SignatureMissing {
                    url: listing.sums_url.clone(),
                });
            };
            let Some(signature) = client.get_optional_document(signature_url).await? else {
                return Err(Error::SignatureMissing {
                    url: signature_url.clone(),
                });
            };
            let good = keyring.verify_detached(&text, &signature)?;
            tracing::info!(url = %listing.sums_url, key = %good.fingerprint, "{sums_name} signature verified");
            (
                Some(signature),
                Some(good.fingerprint),
                SignatureStatus::Verified,
            )
        }
    };
    Ok(VerifiedSums {
        text,
        signature,
        signed_by,
        status,
    })
}

/// The digest `sums_text` gives `file`, cross-checked with the listing's own (simplestreams).
pub(crate) fn digest_from_sums(
    catalog: &Catalog,
    listing: &Listing,
    file: &FileEntry,
    sums_text: &[u8],
) -> Result<FileDigest, Error> {
    let entries =
        sums::parse(sums_text, catalog.checksums.algorithm).map_err(|source| Error::Sums {
            url: listing.sums_url.clone(),
            source: Box::new(source),
        })?;
    let entry = entries
        .iter()
        .find(|e| e.name == file.name)
        .ok_or_else(|| Error::NotInSums {
            url: listing.sums_url.clone(),
            name: file.name.clone(),
        })?;
    // The parser accepted only this algorithm's length, so this holds; a mismatch would be a
    // malformed file rather than a reason to panic.
    let from_sums = entry
        .file_digest(catalog.checksums.algorithm)
        .ok_or_else(|| Error::NotInSums {
            url: listing.sums_url.clone(),
            name: file.name.clone(),
        })?;
    if let (Some(from_streams), FileDigest::Sha256(sums)) = (file.sha256, from_sums) {
        if from_streams != sums {
            return Err(Error::SourcesDisagree {
                name: file.name.clone(),
                sums,
                streams: from_streams,
            });
        }
    }
    Ok(from_sums)
}

/// Converts a verified download beside itself (`x.img` → `x.qcow2`), on a blocking thread.
async fn convert_download(
    source: &Path,
    format: DiskFormat,
    options: Options,
    reporter: Arc<dyn Reporter>,
) -> Result<PathBuf, Error> {
    let destination = source.with_extension(format.extension());
    if destination == source {
        return Err(Refusal::NothingToConvert {
            path: source.to_owned(),
            extension: format.extension(),
        }
        .into());
    }
    // The copy loop is synchronous: a blocking thread owns its inputs.
    let (source, output) = (source.to_owned(), destination.clone());
    blocking::run(&destination, move || {
        let output = formats::convert::Output {
            path: &output,
            format,
            options: &options,
        };
        let source = formats::convert::Source::file(&source);
        formats::convert::convert_file(source, output, None, reporter.as_ref()).map_err(Error::from)
    })
    .await?;
    Ok(destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_mistakes_say_what_was_given_and_exit_2() {
        let cases: [(Usage, &str); 4] = [
            (
                Usage::BadValue {
                    option: "--property",
                    value: "=x".into(),
                    expected: "KEY=VALUE",
                },
                "--property \"=x\": expected KEY=VALUE",
            ),
            (
                Usage::Missing {
                    needed_by: "convert",
                    what: "SOURCE and DESTINATION",
                },
                "convert needs SOURCE and DESTINATION",
            ),
            (
                Usage::UnknownTarget {
                    name: "eu".into(),
                    catalog: "sync.toml".into(),
                    known: vec![],
                },
                "--target \"eu\": sync.toml names no [[glance]] targets",
            ),
            (
                Usage::Conflict {
                    option: "--azure".into(),
                    other: "-O qcow2".into(),
                    why: "--azure applies to -O vhd".into(),
                },
                "--azure does not go with -O qcow2: --azure applies to -O vhd",
            ),
        ];
        for (usage, text) in cases {
            let error = Error::from(usage);
            assert_eq!(crate::error::chain(&error), text);
            assert_eq!(error.kind(), ErrorKind::Usage);
        }
    }

    #[test]
    fn a_bad_url_keeps_the_parser_s_reason() {
        let source = Url::parse("ht!tp://x").unwrap_err();
        let error = Error::from(Usage::BadUrl {
            what: "mirror",
            value: "ht!tp://x".into(),
            source,
        });
        assert_eq!(
            crate::error::chain(&error),
            format!("invalid mirror URL \"ht!tp://x\": {source}")
        );
    }
}
