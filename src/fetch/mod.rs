//! HTTP: documents through a conditional-request cache, and resumable, verified downloads.
//!
//! - [`Client::get_document`]: small bodies (listings, SHA256SUMS, signatures, JSON), size-capped,
//!   retried, revalidated against an on-disk cache (`cache.rs`) with ETag / Last-Modified.
//! - [`Client::download`]: one streaming pass into `<dest>.part` with SHA-256 computed beside the
//!   transfer, resume by `Range` + `If-Range` (`download.rs`), fsync and atomic rename, one lock
//!   per destination (`lock.rs`).
//!
//! Every request retries transient failures with capped exponential backoff (`retry.rs`).

mod cache;
pub(crate) mod client;
mod download;
mod lock;
pub(crate) mod retry;
mod sink;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use url::Url;

use crate::io::progress::Reporter;
use crate::verify::digest::FileDigest;
use crate::ErrorKind;

/// The default total deadline for one small document: far more than a listing or a products
/// file needs on a slow link, far less than a server dripping one byte a second would take.
pub const DEFAULT_DOCUMENT_TIMEOUT: Duration = Duration::from_secs(120);

pub use client::DOCUMENT_LIMIT;
pub use tls::{http_builder, TlsConfig, TlsError};

/// Network behaviour, from the CLI's global options.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Attempts after the first one, for each request.
    pub retries: u32,
    /// A transfer that receives nothing for this long is abandoned and retried.
    pub stall_timeout: Duration,
    /// The whole of a small document (listing, checksum file, signature, simplestreams JSON),
    /// retries included, must arrive within this; image downloads have no total deadline.
    pub document_timeout: Duration,
    pub connect_timeout: Duration,
    /// First retry delay; doubled each time.
    pub backoff_base: Duration,
    /// Where documents and their validators (ETag, Last-Modified) are cached.
    pub cache_dir: Option<PathBuf>,
    /// Which certificates are trusted (see [`tls`]).
    pub tls: TlsConfig,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            retries: 5,
            stall_timeout: Duration::from_secs(30),
            document_timeout: DEFAULT_DOCUMENT_TIMEOUT,
            connect_timeout: Duration::from_secs(15),
            backoff_base: Duration::from_millis(500),
            cache_dir: None,
            tls: TlsConfig::default(),
        }
    }
}

/// One file to download.
#[derive(Clone, Debug)]
pub struct Download {
    pub url: Url,
    /// Final path; bytes go to `<dest>.part` first.
    pub dest: PathBuf,
    /// The digest the bytes must have; its algorithm is the one computed while downloading
    /// (SHA-256 when `None`).
    pub expected_digest: Option<FileDigest>,
    pub expected_size: Option<u64>,
}

/// What a download did.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    /// In the expected digest's algorithm (SHA-256 when none was expected).
    pub digest: FileDigest,
    pub size: u64,
    /// Bytes received over the network in this run.
    pub transferred: u64,
    /// Bytes reused from an earlier `.part`.
    pub resumed_from: u64,
    /// The destination already held the right bytes; nothing was transferred.
    pub up_to_date: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP {status}")]
    Status { url: Url, status: u16 },
    #[error("{url}: request failed")]
    Network {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: cannot reach the proxy {proxy} (set by HTTP_PROXY, HTTPS_PROXY or ALL_PROXY)")]
    Proxy {
        url: Url,
        /// Scheme, host and port only: never the credentials.
        proxy: Box<str>,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: no data received for {timeout:?} (after {received} bytes)")]
    Stalled {
        url: Url,
        timeout: Duration,
        received: u64,
    },
    #[error("{url}: body ended after {actual} of {expected} announced bytes")]
    Truncated {
        url: Url,
        expected: u64,
        actual: u64,
    },
    #[error("{url}: document not received within {timeout:?} (the document deadline)")]
    DocumentDeadline { url: Url, timeout: Duration },
    #[error("{url}: document larger than the {limit}-byte limit (at least {size} bytes)")]
    TooLarge { url: Url, limit: u64, size: u64 },
    #[error(
        "{url}: asked for bytes from {expected_start}, server sent Content-Range {content_range:?}"
    )]
    BadContentRange {
        url: Url,
        expected_start: u64,
        content_range: String,
    },
    #[error("{url}: gave up after {attempts} attempts")]
    GaveUp {
        url: Url,
        attempts: u32,
        #[source]
        last: Box<FetchError>,
    },
    #[error("cannot set up the HTTP client")]
    Setup {
        #[source]
        source: reqwest::Error,
    },
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checksum mismatch for {path} from {url}: expected {} {expected}, got {actual}", expected.algorithm())]
    DigestMismatch {
        path: PathBuf,
        /// Boxed, like `SizeMismatch`'s, to keep the error small enough to return by value.
        url: Box<Url>,
        /// Boxed: a SHA-512 pair alone would pass the size limit.
        expected: Box<FileDigest>,
        actual: Box<FileDigest>,
    },
    #[error("size mismatch for {path} from {url}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        path: PathBuf,
        url: Box<Url>,
        expected: u64,
        actual: u64,
    },
}

impl FetchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Status { .. }
            | FetchError::Network { .. }
            | FetchError::Proxy { .. }
            | FetchError::Stalled { .. }
            | FetchError::Truncated { .. }
            | FetchError::TooLarge { .. }
            | FetchError::DocumentDeadline { .. }
            | FetchError::BadContentRange { .. }
            | FetchError::GaveUp { .. } => ErrorKind::Network,
            FetchError::DigestMismatch { .. } | FetchError::SizeMismatch { .. } => {
                ErrorKind::Integrity
            }
            FetchError::Setup { .. } | FetchError::Io { .. } => ErrorKind::Other,
        }
    }

    /// Whether another attempt may succeed: connection trouble, timeouts, stalls, short bodies,
    /// 408, 429 and 5xx. Other 4xx, local I/O and integrity failures are final.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => retry::status_is_transient(*status),
            FetchError::Network { source, .. } | FetchError::Proxy { source, .. } => {
                !(source.is_builder() || source.is_redirect())
            }
            FetchError::Stalled { .. }
            | FetchError::Truncated { .. }
            | FetchError::BadContentRange { .. } => true,
            FetchError::TooLarge { .. }
            | FetchError::DocumentDeadline { .. }
            | FetchError::GaveUp { .. }
            | FetchError::Setup { .. }
            | FetchError::Io { .. }
            | FetchError::DigestMismatch { .. }
            | FetchError::SizeMismatch { .. } => false,
        }
    }

    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> FetchError {
        FetchError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The HTTP client shared by discovery and downloads.
pub struct Client {
    config: ClientConfig,
    http: reqwest::Client,
}

impl Client {
    /// Builds the client. Proxies come from the environment (`HTTPS_PROXY`, `NO_PROXY`, …) as
    /// reqwest reads them by default.
    pub fn new(config: ClientConfig) -> Result<Client, FetchError> {
        let http = client::build_http(&config)?;
        Ok(Client { config, http })
    }

    /// A small document (listing, SHA256SUMS, signature, JSON), at most [`DOCUMENT_LIMIT`]
    /// bytes (refused while receiving), within the document deadline (retries included), and,
    /// when a cache directory is set, through a conditional request.
    pub async fn get_document(&self, url: &Url) -> Result<Bytes, FetchError> {
        match self.fetch_document(url).await? {
            Some(body) => Ok(body),
            None => Err(FetchError::Status {
                url: url.clone(),
                status: reqwest::StatusCode::NOT_FOUND.as_u16(),
            }),
        }
    }

    /// Like [`Client::get_document`], but a 404 is `Ok(None)` (an unpublished signature).
    pub async fn get_optional_document(&self, url: &Url) -> Result<Option<Bytes>, FetchError> {
        self.fetch_document(url).await
    }

    /// Downloads one file: resume, retries, the digest (SHA-256 or SHA-512) as bytes arrive,
    /// fsync and atomic rename.
    ///
    /// Holds `<dest>.lock` throughout, so a concurrent download of the same destination waits
    /// and then finds it done. A `dest` that already has `expected_digest` is not fetched again
    /// (without an expected digest it always is). The `dest` directory is created if missing.
    ///
    /// The reporter sees `start` (with the bytes kept from an earlier `.part`), `advance` per
    /// received chunk, and `finish` whatever the outcome; if the server forces a restart from
    /// zero, `finish` then `start` again with `already == 0`.
    pub async fn download(
        &self,
        request: &Download,
        reporter: &dyn Reporter,
    ) -> Result<Downloaded, FetchError> {
        download::run(self, request, reporter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small_enough_to_return_by_value() {
        // Clippy's result_large_err limit.
        assert!(std::mem::size_of::<FetchError>() <= 128);
    }
}
