//! What the commands do, end to end: discover → verify SHA256SUMS → download → verify the file
//! (→ convert). The CLI only parses, reports and maps [`Error::kind`] to an exit status.

use std::path::{Path, PathBuf};

use url::Url;

use crate::catalog::{Catalog, CatalogError, Signature};
use crate::container::ContainerError;
use crate::fetch::{Client, Download, FetchError};
use crate::formats::{self, DiskFormat, FormatError, Options};
use crate::index::sums::{self, SumsError};
use crate::index::{Discovery, FileEntry, IndexError, Listing, Query};
use crate::io::progress::Reporter;
use crate::upload::UploadError;
use crate::verify::digest::Sha256Digest;
use crate::verify::openpgp::{Keyring, KeyringError, VerifyError};
use crate::ErrorKind;

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
    /// Boxed: its variants carry several strings each, which would double every `Result`.
    #[error(transparent)]
    Upload(Box<UploadError>),
    #[error("{url}: malformed checksum file")]
    Sums {
        url: Url,
        #[source]
        source: SumsError,
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
    #[error("{0}")]
    Usage(String),
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
            Error::Upload(e) => e.kind(),
            Error::Sums { .. }
            | Error::SignatureMissing { .. }
            | Error::NotInSums { .. }
            | Error::SourcesDisagree { .. } => ErrorKind::Integrity,
            Error::Usage(_) => ErrorKind::Usage,
            Error::Io { .. } => ErrorKind::Other,
        }
    }
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

/// What `fetch` did, as printed with `--json`.
#[derive(Debug, serde::Serialize)]
pub struct Fetched {
    pub release: String,
    pub serial: String,
    pub kind: String,
    pub url: String,
    pub path: PathBuf,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub up_to_date: bool,
    pub transferred: u64,
    pub resumed_from: u64,
    /// Fingerprint of the key that signed SHA256SUMS; `None` when the check was skipped.
    pub signed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted: Option<PathBuf>,
}

pub async fn fetch(
    client: &Client,
    catalog: &Catalog,
    mirror: &Url,
    request: FetchRequest<'_>,
    reporter: &dyn Reporter,
) -> Result<Fetched, Error> {
    let discovery = Discovery::new(client, catalog, mirror.clone());
    let listing = discovery
        .listing(&request.query, request.serial.as_deref())
        .await?;
    let file = listing.file(&request.kind)?;
    let (expected, signed_by) =
        expected_digest(client, catalog, &listing, file, &request.signature).await?;
    std::fs::create_dir_all(&request.output_dir).map_err(|source| Error::Io {
        path: request.output_dir.clone(),
        source,
    })?;
    let dest = request.output_dir.join(&file.name);
    let downloaded = client
        .download(
            &Download {
                url: file.url.clone(),
                dest: dest.clone(),
                expected_sha256: Some(expected),
                expected_size: file.size.filter(|_| file.size_exact),
            },
            reporter,
        )
        .await?;
    if downloaded.up_to_date {
        tracing::info!(path = %dest.display(), "already up to date; nothing transferred");
    } else {
        tracing::info!(path = %dest.display(), sha256 = %downloaded.sha256, "verified");
    }
    let converted = match request.convert {
        Some((format, options)) => Some(convert_download(&dest, format, options, reporter).await?),
        None => None,
    };
    Ok(Fetched {
        release: listing.release.codename.clone(),
        serial: listing.serial.clone(),
        kind: request.kind,
        url: file.url.to_string(),
        path: dest,
        sha256: downloaded.sha256,
        size: downloaded.size,
        up_to_date: downloaded.up_to_date,
        transferred: downloaded.transferred,
        resumed_from: downloaded.resumed_from,
        signed_by,
        converted,
    })
}

/// The digest the file must have: from the (signature-checked) SHA256SUMS, cross-checked with
/// simplestreams when that was the source.
async fn expected_digest(
    client: &Client,
    catalog: &Catalog,
    listing: &Listing,
    file: &FileEntry,
    policy: &SignaturePolicy<'_>,
) -> Result<(Sha256Digest, Option<String>), Error> {
    let sums_text = client.get_document(&listing.sums_url).await?;
    let signed_by = match policy {
        _ if catalog.signature == Signature::NotPublished => {
            tracing::warn!(source = %catalog.name, "no signature is published by this source; relying on HTTPS and the checksums");
            None
        }
        SignaturePolicy::Skip => {
            tracing::warn!(url = %listing.sums_url, "signature check of SHA256SUMS skipped (--no-verify-signature)");
            None
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
            let good = keyring.verify_detached(&sums_text, &signature)?;
            tracing::info!(url = %listing.sums_url, key = %good.fingerprint, "SHA256SUMS signature verified");
            Some(good.fingerprint)
        }
    };
    let entries =
        sums::parse(&sums_text, catalog.checksums.algorithm).map_err(|source| Error::Sums {
            url: listing.sums_url.clone(),
            source,
        })?;
    let entry = entries
        .iter()
        .find(|e| e.name == file.name)
        .ok_or_else(|| Error::NotInSums {
            url: listing.sums_url.clone(),
            name: file.name.clone(),
        })?;
    let from_sums = entry.sha256().ok_or_else(|| {
        Error::Usage(format!(
            "{}: only SHA-256 checksum files can verify downloads so far",
            listing.sums_url
        ))
    })?;
    if let Some(from_streams) = file.sha256 {
        if from_streams != from_sums {
            return Err(Error::SourcesDisagree {
                name: file.name.clone(),
                sums: from_sums,
                streams: from_streams,
            });
        }
    }
    Ok((from_sums, signed_by))
}

/// Converts a verified download beside itself (`x.img` → `x.qcow2`), on a blocking thread.
async fn convert_download(
    source: &Path,
    format: DiskFormat,
    options: Options,
    reporter: &dyn Reporter,
) -> Result<PathBuf, Error> {
    let destination = source.with_extension(format.extension());
    if destination == source {
        return Err(Error::Usage(format!(
            "{} already has the .{} extension; nothing to convert to",
            source.display(),
            format.extension()
        )));
    }
    // The copy loop is synchronous; it runs here on the runtime's blocking-capable thread via
    // block_in_place so the reporter can be borrowed.
    tokio::task::block_in_place(|| {
        formats::convert::convert_file(source, None, &destination, format, &options, reporter)
    })?;
    Ok(destination)
}
