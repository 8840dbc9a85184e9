//! HTTP: documents through a conditional-request cache, and resumable, verified downloads.
//!
//! (Interface fixed by the skeleton; the implementation lands with the fetch work.)

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use url::Url;

use crate::io::progress::Reporter;
use crate::verify::digest::Sha256Digest;
use crate::ErrorKind;

/// Network behaviour, from the CLI's global options.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Attempts after the first one, for each request.
    pub retries: u32,
    /// A transfer that receives nothing for this long is abandoned and retried.
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    /// First retry delay; doubled each time.
    pub backoff_base: Duration,
    /// Where documents and their validators (ETag, Last-Modified) are cached.
    pub cache_dir: Option<PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            retries: 5,
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            backoff_base: Duration::from_millis(500),
            cache_dir: None,
        }
    }
}

/// One file to download.
#[derive(Clone, Debug)]
pub struct Download {
    pub url: Url,
    /// Final path; bytes go to `<dest>.part` first.
    pub dest: PathBuf,
    pub expected_sha256: Option<Sha256Digest>,
    pub expected_size: Option<u64>,
}

/// What a download did.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    pub sha256: Sha256Digest,
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
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checksum mismatch for {path} from {url}: expected sha256 {expected}, got {actual}")]
    DigestMismatch {
        path: PathBuf,
        url: Url,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
}

impl FetchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Status { .. } | FetchError::Network { .. } => ErrorKind::Network,
            FetchError::DigestMismatch { .. } => ErrorKind::Integrity,
            FetchError::Io { .. } => ErrorKind::Other,
        }
    }
}

/// The HTTP client shared by discovery and downloads.
pub struct Client {
    _config: ClientConfig,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, FetchError> {
        Ok(Client { _config: config })
    }

    /// A small document (listing, SHA256SUMS, signature, JSON), size-bounded, with retries and,
    /// when a cache directory is set, a conditional request.
    pub async fn get_document(&self, url: &Url) -> Result<Bytes, FetchError> {
        Err(FetchError::Status {
            url: url.clone(),
            status: 501,
        })
    }

    /// Like [`Client::get_document`], but a 404 is `Ok(None)` (an unpublished signature).
    pub async fn get_optional_document(&self, url: &Url) -> Result<Option<Bytes>, FetchError> {
        self.get_document(url).await.map(Some)
    }

    /// Downloads one file: resume, retries, SHA-256 as bytes arrive, fsync and atomic rename.
    pub async fn download(
        &self,
        request: &Download,
        _reporter: &dyn Reporter,
    ) -> Result<Downloaded, FetchError> {
        Err(FetchError::Status {
            url: request.url.clone(),
            status: 501,
        })
    }
}
