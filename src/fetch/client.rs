//! The reqwest client, one request attempt with timeouts, and small-document fetching.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use url::Url;

use super::cache::DocumentCache;
use super::retry::{self, Failure, Retry};
use super::{Client, ClientConfig, FetchError};

/// Largest document `get_document` accepts. Listings, SHA256SUMS, signatures and simplestreams
/// JSON are at most a few MiB; anything bigger is a wrong URL or a hostile server.
pub(crate) const DOCUMENT_LIMIT: u64 = 64 << 20;

/// Sent with every request so mirror operators can tell who is calling.
pub(crate) const USER_AGENT: &str = concat!("cloudimg/", env!("CARGO_PKG_VERSION"));

pub(crate) fn build_http(config: &ClientConfig) -> Result<reqwest::Client, FetchError> {
    // No overall timeout: a multi-GiB download may legitimately take an hour. Stalls are caught
    // per chunk instead. The environment proxy settings stay enabled (reqwest's default).
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(config.connect_timeout)
        .build()
        .map_err(|source| FetchError::Setup { source })
}

/// What identifies a version of a resource: the values to send back in conditional requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Validators {
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
}

impl Validators {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Validators {
        let text = |name| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        Validators {
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// The value for `If-Range`: a strong ETag, else Last-Modified. Weak ETags (`W/"…"`) are not
    /// allowed there (RFC 9110 §13.1.5).
    pub(crate) fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(etag) if !etag.starts_with("W/") => Some(etag),
            _ => self.last_modified.as_deref(),
        }
    }

    /// Adds `If-None-Match` / `If-Modified-Since` for a cache revalidation.
    pub(crate) fn conditional(&self, request: RequestBuilder) -> RequestBuilder {
        let mut request = request;
        if let Some(etag) = &self.etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &self.last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, date);
        }
        request
    }
}

/// The server's `Retry-After`, if any and parseable.
pub(crate) fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    retry::parse_retry_after(value, SystemTime::now())
}

/// An error status as a failure carrying the server's `Retry-After`.
pub(crate) fn status_failure(url: &Url, response: &Response) -> Failure {
    Failure {
        error: FetchError::Status {
            url: url.clone(),
            status: response.status().as_u16(),
        },
        retry_after: retry_after(response),
    }
}

impl Client {
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub(crate) fn get(&self, url: &Url) -> RequestBuilder {
        self.http.get(url.clone())
    }

    /// Sends one request and waits for the response head, bounded by connect + stall timeouts.
    pub(crate) async fn send(
        &self,
        url: &Url,
        request: RequestBuilder,
    ) -> Result<Response, FetchError> {
        let limit = self.config.connect_timeout + self.config.stall_timeout;
        match tokio::time::timeout(limit, request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => Err(FetchError::Network {
                url: url.clone(),
                source,
            }),
            Err(_) => Err(FetchError::Stalled {
                url: url.clone(),
                timeout: limit,
                received: 0,
            }),
        }
    }

    /// The next body chunk, or a `Stalled` error when none arrives within the stall timeout.
    pub(crate) async fn next_chunk(
        &self,
        url: &Url,
        response: &mut Response,
        received: u64,
    ) -> Result<Option<Bytes>, FetchError> {
        let timeout = self.config.stall_timeout;
        match tokio::time::timeout(timeout, response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(source)) => Err(FetchError::Network {
                url: url.clone(),
                source,
            }),
            Err(_) => Err(FetchError::Stalled {
                url: url.clone(),
                timeout,
                received,
            }),
        }
    }

    /// A document with retries; `None` for 404.
    pub(crate) async fn fetch_document(&self, url: &Url) -> Result<Option<Bytes>, FetchError> {
        let cache = self.config.cache_dir.as_deref().map(DocumentCache::new);
        let cached = match &cache {
            Some(cache) => cache.validators(url).await,
            None => None,
        };
        let mut retry = Retry::new(&self.config);
        loop {
            match self
                .document_attempt(url, cache.as_ref(), cached.as_ref())
                .await
            {
                Ok(document) => return Ok(document),
                Err(failure) => retry.wait_or_give_up(url, failure).await?,
            }
        }
    }

    async fn document_attempt(
        &self,
        url: &Url,
        cache: Option<&DocumentCache>,
        cached: Option<&Validators>,
    ) -> Result<Option<Bytes>, Failure> {
        let mut request = self.get(url);
        if let Some(validators) = cached {
            request = validators.conditional(request);
        }
        debug!(url = %url, conditional = cached.is_some(), "fetching document");
        let mut response = self.send(url, request).await?;
        let status = response.status();
        match (status, cache) {
            (StatusCode::NOT_MODIFIED, Some(cache)) if cached.is_some() => {
                debug!(url = %url, "not modified; using the cached copy");
                return Ok(Some(cache.body(url, DOCUMENT_LIMIT).await?));
            }
            (StatusCode::NOT_FOUND, _) => return Ok(None),
            _ if status.is_success() => {}
            _ => return Err(status_failure(url, &response)),
        }
        let validators = Validators::from_headers(response.headers());
        let body = self.read_capped(url, &mut response, DOCUMENT_LIMIT).await?;
        if let Some(cache) = cache {
            // The document is good even if the cache cannot keep it.
            if let Err(error) = cache.store(url, &validators, &body).await {
                warn!(url = %url, error = %error, "cannot cache document");
            }
        }
        Ok(Some(body))
    }

    /// Reads a whole body of at most `limit` bytes, checking it against Content-Length.
    async fn read_capped(
        &self,
        url: &Url,
        response: &mut Response,
        limit: u64,
    ) -> Result<Bytes, FetchError> {
        let announced = response.content_length();
        if let Some(size) = announced.filter(|&size| size > limit) {
            return Err(FetchError::TooLarge {
                url: url.clone(),
                limit,
                size,
            });
        }
        // Bounded by `limit` just above.
        let capacity = usize::try_from(announced.unwrap_or(0)).unwrap_or(0);
        let mut body = BytesMut::with_capacity(capacity);
        while let Some(chunk) = self.next_chunk(url, response, body.len() as u64).await? {
            let size = body.len() as u64 + chunk.len() as u64;
            if size > limit {
                return Err(FetchError::TooLarge {
                    url: url.clone(),
                    limit,
                    size,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let actual = body.len() as u64;
        match announced {
            Some(expected) if expected != actual => Err(FetchError::Truncated {
                url: url.clone(),
                expected,
                actual,
            }),
            _ => Ok(body.freeze()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_range_prefers_a_strong_etag() {
        let validators = Validators {
            etag: Some("\"abc\"".into()),
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
        };
        assert_eq!(validators.if_range(), Some("\"abc\""));
    }

    #[test]
    fn if_range_falls_back_to_last_modified_for_a_weak_etag() {
        let validators = Validators {
            etag: Some("W/\"abc\"".into()),
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
        };
        assert_eq!(validators.if_range(), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        let weak_only = Validators {
            etag: Some("W/\"abc\"".into()),
            last_modified: None,
        };
        assert_eq!(weak_only.if_range(), None);
    }

    #[test]
    fn validators_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, "\"1-2\"".parse().unwrap());
        let validators = Validators::from_headers(&headers);
        assert_eq!(validators.etag.as_deref(), Some("\"1-2\""));
        assert_eq!(validators.last_modified, None);
        assert!(!validators.is_empty());
        assert!(Validators::from_headers(&HeaderMap::new()).is_empty());
    }
}
