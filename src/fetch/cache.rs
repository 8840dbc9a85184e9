//! The on-disk document cache: per URL, the last body and its validators.
//!
//! Layout: `<cache_dir>/<sha256(url) hex>` holds the body and `<…>.json` the [`Entry`]. Files are
//! written to a temporary name and renamed, so a reader sees a whole file or none; the entry is
//! removed before the body is replaced and written after, so it never vouches for another body.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::debug;
use url::Url;

use super::client::Validators;
use super::FetchError;

/// What is stored beside a cached body.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// The full URL, to rule out (astronomically unlikely) name collisions and to help humans.
    url: String,
    #[serde(flatten)]
    validators: Validators,
}

/// Parses an entry file; `None` when it is not ours or not for `url`.
fn parse_entry(text: &[u8], url: &Url) -> Option<Validators> {
    let entry: Entry = serde_json::from_slice(text).ok()?;
    (entry.url == url.as_str() && !entry.validators.is_empty()).then_some(entry.validators)
}

/// The file name of a URL's cached body.
fn key(url: &Url) -> String {
    hex::encode(Sha256::digest(url.as_str().as_bytes()))
}

pub(crate) struct DocumentCache {
    dir: PathBuf,
}

impl DocumentCache {
    pub(crate) fn new(dir: &Path) -> DocumentCache {
        DocumentCache {
            dir: dir.to_owned(),
        }
    }

    fn body_path(&self, url: &Url) -> PathBuf {
        self.dir.join(key(url))
    }

    fn entry_path(&self, url: &Url) -> PathBuf {
        self.dir.join(format!("{}.json", key(url)))
    }

    /// The validators of a usable cached copy, if there is one. A missing or damaged cache is
    /// just a miss.
    pub(crate) async fn validators(&self, url: &Url) -> Option<Validators> {
        let text = tokio::fs::read(self.entry_path(url)).await.ok()?;
        let validators = parse_entry(&text, url)?;
        let body = tokio::fs::metadata(self.body_path(url)).await.ok()?;
        body.is_file().then_some(validators)
    }

    /// The cached body, refusing one over `limit` bytes.
    pub(crate) async fn body(&self, url: &Url, limit: u64) -> Result<Bytes, FetchError> {
        let path = self.body_path(url);
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|source| FetchError::io(&path, source))?
            .len();
        if size > limit {
            return Err(FetchError::TooLarge {
                url: url.clone(),
                limit,
                size,
            });
        }
        let body = tokio::fs::read(&path)
            .await
            .map_err(|source| FetchError::io(&path, source))?;
        Ok(Bytes::from(body))
    }

    /// Keeps `body` for `url`, or forgets the URL when the server gave no validators to
    /// revalidate it with.
    pub(crate) async fn store(
        &self,
        url: &Url,
        validators: &Validators,
        body: &[u8],
    ) -> Result<(), FetchError> {
        let entry_path = self.entry_path(url);
        match tokio::fs::remove_file(&entry_path).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(FetchError::io(&entry_path, source)),
        }
        if validators.is_empty() {
            return Ok(());
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|source| FetchError::io(&self.dir, source))?;
        write_atomically(&self.body_path(url), body).await?;
        let entry = Entry {
            url: url.as_str().to_owned(),
            validators: validators.clone(),
        };
        let text = serde_json::to_vec(&entry).map_err(|source| {
            FetchError::io(&entry_path, std::io::Error::other(source.to_string()))
        })?;
        write_atomically(&entry_path, &text).await?;
        debug!(url = %url, path = %entry_path.display(), "cached document");
        Ok(())
    }
}

/// Publishes `bytes` at `path` through [`crate::io::publish`], off the async runtime.
pub(crate) async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let (owned_path, owned_bytes) = (path.to_owned(), bytes.to_vec());
    tokio::task::spawn_blocking(move || crate::io::publish::write(&owned_path, &owned_bytes))
        .await
        .map_err(|join| FetchError::io(path, std::io::Error::other(join.to_string())))?
        .map_err(|source| FetchError::io(path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://cloud-images.ubuntu.com/noble/current/SHA256SUMS").unwrap()
    }

    #[test]
    fn key_is_sha256_of_the_url() {
        assert_eq!(key(&url()).len(), 64);
        let other = Url::parse("https://cloud-images.ubuntu.com/noble/").unwrap();
        assert_ne!(key(&url()), key(&other));
    }

    #[test]
    fn entry_round_trips() {
        let validators = Validators {
            etag: Some("\"5-6\"".into()),
            last_modified: None,
        };
        let entry = Entry {
            url: url().to_string(),
            validators: validators.clone(),
        };
        let text = serde_json::to_vec(&entry).unwrap();
        assert_eq!(parse_entry(&text, &url()), Some(validators));
    }

    #[test]
    fn entry_for_another_url_is_a_miss() {
        let text = br#"{"url":"https://example.com/x","etag":"\"1\"","last_modified":null}"#;
        assert_eq!(parse_entry(text, &url()), None);
    }

    #[test]
    fn entry_without_validators_is_a_miss() {
        let text = format!(r#"{{"url":"{}","etag":null,"last_modified":null}}"#, url());
        assert_eq!(parse_entry(text.as_bytes(), &url()), None);
    }

    #[test]
    fn damaged_entry_is_a_miss() {
        let text = format!(r#"{{"url":"{}","etag":"\"1\""#, url());
        assert_eq!(parse_entry(text.as_bytes(), &url()), None);
    }
}
