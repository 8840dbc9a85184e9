//! Resumable, verified downloads.
//!
//! Bytes go to `<dest>.part`; `<dest>.part.meta` records the URL and the validator (ETag or
//! Last-Modified) of the response that started the part, so a later run can ask for the rest
//! with `Range` + `If-Range`. The digest (SHA-256, or SHA-512 when that is what the source
//! publishes) is computed as bytes arrive, on a blocking thread that also writes the file, fed
//! from a small buffer pool (`sink.rs`) so hashing overlaps the network transfer and memory
//! stays flat. On success the part is fsynced and renamed over `dest`; on a digest
//! mismatch it is deleted; on a network error or an interruption it stays, to be resumed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use reqwest::header;
use reqwest::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::debug;
use url::Url;

use super::cache::write_atomically;
use super::client::{status_failure, Validators};
use super::lock::DestLock;
use super::retry::{Failure, Retry};
use super::sink::Sink;
use super::{Client, Download, Downloaded, FetchError};
use crate::io::hashing::{self, ContentHasher};
use crate::io::progress::Reporter;
use crate::verify::digest::DigestAlgorithm;

/// A parsed `Content-Range: bytes first-last/total` (RFC 9110 §14.4).
#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    first: u64,
    last: u64,
    /// `None` for `*` (length unknown).
    total: Option<u64>,
}

impl ContentRange {
    fn len(&self) -> u64 {
        self.last - self.first + 1
    }
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let spec = value.trim().strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse::<u64>().ok()?),
    };
    let consistent = first <= last && total.is_none_or(|total| last < total);
    consistent.then_some(ContentRange { first, last, total })
}

/// The length in a 416's `Content-Range: bytes */length`.
fn parse_unsatisfied_range(value: &str) -> Option<u64> {
    value.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

fn header_text(response: &Response, name: header::HeaderName) -> Option<String> {
    let value = response.headers().get(name)?.to_str().ok()?;
    Some(value.to_owned())
}

/// What is stored in `<dest>.part.meta`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    #[serde(flatten)]
    validators: Validators,
}

/// The validators of a part that can be resumed from `url`, if the meta file says so.
fn parse_part_meta(text: &[u8], url: &Url) -> Option<Validators> {
    let meta: PartMeta = serde_json::from_slice(text).ok()?;
    (meta.url == url.as_str() && meta.validators.if_range().is_some()).then_some(meta.validators)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> Result<(), FetchError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FetchError::io(path, source)),
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, FetchError> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| FetchError::io(path, std::io::Error::other(join.to_string())))?
}

/// The digest state and length of a whole file, streamed.
fn hash_file(path: &Path, algorithm: DigestAlgorithm) -> Result<(ContentHasher, u64), FetchError> {
    let mut file = File::open(path).map_err(|source| FetchError::io(path, source))?;
    let mut hasher = ContentHasher::new(algorithm);
    let size = hashing::hash_reader(&mut file, &mut hasher)
        .map_err(|source| FetchError::io(path, source))?;
    Ok((hasher, size))
}

/// `<dest>.part` as far as this run knows it: its length, the hash of those bytes, and the
/// validators of the response they came from.
struct Part {
    len: u64,
    hasher: ContentHasher,
    validators: Validators,
}

impl Part {
    fn empty(algorithm: DigestAlgorithm) -> Part {
        Part {
            len: 0,
            hasher: ContentHasher::new(algorithm),
            validators: Validators::default(),
        }
    }
}

/// The algorithm a download hashes with: the expected digest's, else SHA-256.
fn algorithm_of(request: &Download) -> DigestAlgorithm {
    request
        .expected_digest
        .map_or(DigestAlgorithm::Sha256, |digest| digest.algorithm())
}

struct Paths {
    dest: PathBuf,
    part: PathBuf,
    meta: PathBuf,
}

/// Calls `finish` on the reporter however the download ends.
struct FinishGuard<'a>(&'a dyn Reporter);

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// One download in progress.
struct Transfer<'a> {
    /// Held until the transfer is dropped (and by the writer thread while it runs).
    lock: DestLock,
    client: &'a Client,
    request: &'a Download,
    reporter: &'a dyn Reporter,
    label: String,
    paths: Paths,
    part: Part,
    transferred: u64,
    resumed_from: u64,
}

/// How an attempt ended when it did not fail.
enum Step {
    /// The body is complete in the part.
    Complete,
    /// The server refused the range; the part was reset, go again at once.
    Restart,
}

pub(crate) async fn run(
    client: &Client,
    request: &Download,
    reporter: &dyn Reporter,
) -> Result<Downloaded, FetchError> {
    let dest = request.dest.clone();
    if let Some(parent) = dest
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| FetchError::io(parent, source))?;
    }
    let lock = DestLock::acquire(&dest, client.config().cache_dir.as_deref()).await?;
    if let Some(done) = up_to_date(request).await? {
        debug!(path = %dest.display(), "already up to date");
        return Ok(done);
    }
    let paths = Paths {
        part: with_suffix(&dest, ".part"),
        meta: with_suffix(&dest, ".part.meta"),
        dest,
    };
    let part = recover_part(&paths, request).await?;
    let label = paths
        .dest
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| request.url.to_string());
    reporter.start(&label, request.expected_size, part.len);
    let _finish = FinishGuard(reporter);
    let mut transfer = Transfer {
        lock,
        client,
        request,
        reporter,
        label,
        resumed_from: part.len,
        paths,
        part,
        transferred: 0,
    };
    transfer.fetch().await?;
    transfer.finalize().await
}

/// The destination, if it already holds the expected bytes.
async fn up_to_date(request: &Download) -> Result<Option<Downloaded>, FetchError> {
    let Some(expected) = request.expected_digest else {
        return Ok(None);
    };
    let dest = request.dest.clone();
    let size = match tokio::fs::metadata(&dest).await {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        Ok(_) => return Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(FetchError::io(&dest, source)),
    };
    if request
        .expected_size
        .is_some_and(|expected| expected != size)
    {
        return Ok(None);
    }
    let path = dest.clone();
    let algorithm = expected.algorithm();
    let (hasher, size) = blocking(&dest, move || hash_file(&path, algorithm)).await?;
    let digest = hashing::finish(hasher);
    Ok((digest == expected).then_some(Downloaded {
        path: dest,
        digest,
        size,
        transferred: 0,
        resumed_from: 0,
        up_to_date: true,
    }))
}

/// Picks up a `.part` left by an earlier run when it can be resumed (same URL, a validator for
/// `If-Range`, not longer than expected), rehashing its bytes; otherwise discards it.
async fn recover_part(paths: &Paths, request: &Download) -> Result<Part, FetchError> {
    let part_path = paths.part.clone();
    let meta_path = paths.meta.clone();
    let url = request.url.clone();
    let expected_size = request.expected_size;
    let expected_digest = request.expected_digest;
    let algorithm = algorithm_of(request);
    blocking(&paths.part, move || {
        let validators = std::fs::read(&meta_path)
            .ok()
            .and_then(|text| parse_part_meta(&text, &url));
        let present = match std::fs::metadata(&part_path) {
            Ok(metadata) => Some(metadata.len()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(FetchError::io(&part_path, source)),
        };
        let resumable = match (present, &validators) {
            (Some(len), Some(_)) => len > 0 && expected_size.is_none_or(|size| len <= size),
            _ => false,
        };
        if let (true, Some(validators)) = (resumable, validators) {
            let (hasher, len) = hash_file(&part_path, algorithm)?;
            // A part of full length is either the finished file (killed before the rename) or
            // stale bytes of the same size; only the digest tells.
            let complete_but_wrong = expected_size == Some(len)
                && expected_digest.is_some_and(|digest| hashing::finish(hasher.clone()) != digest);
            if !complete_but_wrong {
                debug!(path = %part_path.display(), len, "resuming partial download");
                return Ok(Part {
                    len,
                    hasher,
                    validators,
                });
            }
        }
        remove_if_present(&part_path)?;
        remove_if_present(&meta_path)?;
        Ok(Part::empty(algorithm))
    })
    .await
}

impl Transfer<'_> {
    fn url(&self) -> &Url {
        &self.request.url
    }

    /// Attempts until the part holds the whole body, or gives up.
    async fn fetch(&mut self) -> Result<(), FetchError> {
        if self.part.len > 0 && self.request.expected_size == Some(self.part.len) {
            // Recovered complete (and, when a digest is known, verified) above.
            return Ok(());
        }
        let mut retry = Retry::new(self.client.config());
        loop {
            match self.attempt().await {
                Ok(Step::Complete) => return Ok(()),
                Ok(Step::Restart) => continue,
                Err(failure) => {
                    let url = self.request.url.clone();
                    retry.wait_or_give_up(&url, failure).await?
                }
            }
        }
    }

    /// Forgets the part: empty file, fresh hasher, no validators.
    async fn reset(&mut self) -> Result<(), FetchError> {
        let part = self.paths.part.clone();
        let meta = self.paths.meta.clone();
        blocking(&self.paths.part, move || {
            remove_if_present(&meta)?;
            remove_if_present(&part)
        })
        .await?;
        self.part = Part::empty(algorithm_of(self.request));
        self.resumed_from = 0;
        // The bytes counted so far are void: close the operation and open a new one from zero.
        self.reporter.finish();
        self.reporter
            .start(&self.label, self.request.expected_size, 0);
        Ok(())
    }

    /// Records where the part's bytes come from, before the first of them is written.
    async fn start_part(&mut self, validators: Validators) -> Result<(), FetchError> {
        if validators.if_range().is_some() {
            let meta = PartMeta {
                url: self.url().as_str().to_owned(),
                validators: validators.clone(),
            };
            let text = serde_json::to_vec(&meta).map_err(|source| {
                FetchError::io(&self.paths.meta, std::io::Error::other(source.to_string()))
            })?;
            write_atomically(&self.paths.meta, &text).await?;
        }
        self.part.validators = validators;
        Ok(())
    }

    async fn attempt(&mut self) -> Result<Step, Failure> {
        let url = self.request.url.clone();
        let mut request = self.client.get(&url);
        if self.part.len > 0 {
            match self.part.validators.if_range() {
                Some(validator) => {
                    request = request
                        .header(header::RANGE, format!("bytes={}-", self.part.len))
                        .header(header::IF_RANGE, validator);
                }
                // Bytes from a response that cannot be matched again are not worth resuming.
                None => self.reset().await?,
            }
        }
        let resume_from = self.part.len;
        debug!(url = %url, resume_from, "fetching");
        let mut response = self.client.send(&url, request).await?;
        let status = response.status();
        let body_len = match status {
            StatusCode::PARTIAL_CONTENT => {
                let header = header_text(&response, header::CONTENT_RANGE).unwrap_or_default();
                match parse_content_range(&header) {
                    Some(range) if range.first == resume_from => Some(range.len()),
                    _ => {
                        self.reset().await?;
                        return Err(FetchError::BadContentRange {
                            url,
                            expected_start: resume_from,
                            content_range: header,
                        }
                        .into());
                    }
                }
            }
            StatusCode::OK => {
                if resume_from > 0 {
                    debug!(url = %url, resume_from,
                        "server sent the whole file (range ignored or file changed); restarting");
                    self.reset().await?;
                }
                self.start_part(Validators::from_headers(response.headers()))
                    .await?;
                response.content_length()
            }
            StatusCode::RANGE_NOT_SATISFIABLE if resume_from > 0 => {
                // If-Range is evaluated before Range: a 416 for `bytes */<our length>` means the
                // part already is the whole (unchanged) file.
                let complete = header_text(&response, header::CONTENT_RANGE)
                    .and_then(|value| parse_unsatisfied_range(&value))
                    == Some(resume_from);
                if complete {
                    debug!(url = %url, resume_from, "part already complete");
                    return Ok(Step::Complete);
                }
                debug!(url = %url, resume_from, "range not satisfiable; restarting");
                self.reset().await?;
                return Ok(Step::Restart);
            }
            _ => return Err(status_failure(&url, &response)),
        };
        let received = self.stream(&mut response).await?;
        match body_len {
            Some(expected) if received < expected => Err(FetchError::Truncated {
                url,
                expected,
                actual: received,
            }
            .into()),
            _ => Ok(Step::Complete),
        }
    }

    /// Appends the body to the part through the hashing writer; returns the bytes received.
    /// Whatever arrived before a failure stays in the part and in the hasher.
    async fn stream(&mut self, response: &mut Response) -> Result<u64, FetchError> {
        let path = self.paths.part.clone();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| FetchError::io(&path, source))?;
        let guard = self.lock.share()?;
        let hasher = std::mem::replace(
            &mut self.part.hasher,
            ContentHasher::new(algorithm_of(self.request)),
        );
        let mut sink = Sink::start(file, self.part.len, hasher, guard);
        let mut received = 0u64;
        let outcome = loop {
            match self
                .client
                .next_chunk(&self.request.url, response, received)
                .await
            {
                Ok(Some(chunk)) => {
                    let len = chunk.len() as u64;
                    received += len;
                    self.transferred += len;
                    self.reporter.advance(len);
                    // A stopped writer's error is reported below.
                    if !sink.push(&chunk).await {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        let written = sink
            .finish()
            .await
            .map_err(|join| FetchError::io(&path, std::io::Error::other(join.to_string())))?;
        self.part.hasher = written.hasher;
        self.part.len += written.bytes;
        written
            .result
            .map_err(|source| FetchError::io(&path, source))?;
        outcome.map(|()| received)
    }

    /// Checks the complete part, then makes it the destination durably.
    async fn finalize(self) -> Result<Downloaded, FetchError> {
        let digest = hashing::finish(self.part.hasher);
        let size = self.part.len;
        let url = Box::new(self.request.url.clone());
        let mismatch = if let Some(expected) = self.request.expected_digest.filter(|e| *e != digest)
        {
            Some(FetchError::DigestMismatch {
                path: self.paths.dest.clone(),
                url,
                expected: Box::new(expected),
                actual: Box::new(digest),
            })
        } else if let Some(expected) = self.request.expected_size.filter(|e| *e != size) {
            Some(FetchError::SizeMismatch {
                path: self.paths.dest.clone(),
                url,
                expected,
                actual: size,
            })
        } else {
            None
        };
        let Paths { dest, part, meta } = self.paths;
        if let Some(error) = mismatch {
            // Corrupt bytes are not worth resuming.
            blocking(&part.clone(), move || {
                remove_if_present(&part)?;
                remove_if_present(&meta)
            })
            .await?;
            return Err(error);
        }
        let path = dest.clone();
        // The `.part` is a download's resumable state, not a publication temporary: it keeps
        // its name across runs, and only its last step goes through the publisher.
        blocking(&dest.clone(), move || {
            crate::io::publish::rename_durably(&part, &path)
                .map_err(|source| FetchError::io(&path, source.into()))?;
            remove_if_present(&meta)
        })
        .await?;
        debug!(path = %dest.display(), size, transferred = self.transferred,
            resumed_from = self.resumed_from, "downloaded");
        Ok(Downloaded {
            path: dest,
            digest,
            size,
            transferred: self.transferred,
            resumed_from: self.resumed_from,
            up_to_date: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::digest::{FileDigest, Sha256Digest};
    use sha2::{Digest, Sha256};

    #[test]
    fn content_range_with_total_is_parsed() {
        let range = parse_content_range("bytes 100-199/200").unwrap();
        assert_eq!(
            range,
            ContentRange {
                first: 100,
                last: 199,
                total: Some(200)
            }
        );
        assert_eq!(range.len(), 100);
    }

    #[test]
    fn content_range_with_unknown_total_is_parsed() {
        let range = parse_content_range("bytes 0-0/*").unwrap();
        assert_eq!(range.total, None);
        assert_eq!(range.len(), 1);
    }

    #[test]
    fn malformed_content_ranges_are_rejected() {
        for value in [
            "",
            "bytes */200",       // the unsatisfied-range form carries no range
            "bytes 100-99/200",  // last before first
            "bytes 100-200/200", // last past the end
            "items 0-1/2",       // other unit
            "bytes 0-1",         // no total
            "bytes -1-5/10",     // negative
            "bytes 0-99999999999999999999/*", // overflow
        ] {
            assert_eq!(parse_content_range(value), None, "{value:?}");
        }
    }

    #[test]
    fn unsatisfied_range_gives_the_length() {
        assert_eq!(parse_unsatisfied_range("bytes */1234"), Some(1234));
        assert_eq!(parse_unsatisfied_range("bytes 0-1/1234"), None);
        assert_eq!(parse_unsatisfied_range("bytes */"), None);
        assert_eq!(parse_unsatisfied_range("bytes */-1"), None);
    }

    #[test]
    fn part_meta_needs_the_same_url_and_a_usable_validator() {
        let url = Url::parse("http://127.0.0.1/a.img").unwrap();
        let good = br#"{"url":"http://127.0.0.1/a.img","etag":"\"1-2\"","last_modified":null}"#;
        assert!(parse_part_meta(good, &url).is_some());
        let other = br#"{"url":"http://127.0.0.1/b.img","etag":"\"1-2\"","last_modified":null}"#;
        assert!(parse_part_meta(other, &url).is_none());
        let weak = br#"{"url":"http://127.0.0.1/a.img","etag":"W/\"1\"","last_modified":null}"#;
        assert!(parse_part_meta(weak, &url).is_none());
        assert!(parse_part_meta(b"{", &url).is_none());
    }

    #[test]
    fn hash_file_streams_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let (hasher, size) = hash_file(&path, DigestAlgorithm::Sha256).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            hashing::finish(hasher),
            FileDigest::Sha256(Sha256Digest(Sha256::digest(b"abc").into()))
        );
        let (hasher, _) = hash_file(&path, DigestAlgorithm::Sha512).unwrap();
        assert_eq!(
            hashing::finish(hasher).as_bytes(),
            sha2::Sha512::digest(b"abc").as_slice()
        );
    }
}
