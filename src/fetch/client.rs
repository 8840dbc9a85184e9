//! The reqwest client, one request attempt with timeouts, and small-document fetching.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use url::Url;

use super::cache::DocumentCache;
use super::retry::{self, Failure, Retry};
use super::{Client, ClientConfig, FetchError};

/// Largest document `get_document` accepts, checked against Content-Length and again while
/// receiving, so a bigger or endless body is cut off at this many bytes whatever its size.
/// Real listings are tens of KiB, SHA256SUMS a few KiB, Ubuntu's released products file about
/// 0.5 MiB; 8 MiB leaves room for growth while keeping the process under 32 MiB whatever a
/// server sends (the parsers are bounded too, see `index::html`).
pub const DOCUMENT_LIMIT: u64 = 8 << 20;

/// Sent with every request so mirror operators can tell who is calling.
pub(crate) const USER_AGENT: &str = concat!("cloudimg/", env!("CARGO_PKG_VERSION"));

pub(crate) fn build_http(config: &ClientConfig) -> Result<reqwest::Client, FetchError> {
    super::tls::http_builder(config)
        .build()
        .map_err(|source| FetchError::Setup { source })
}

/// A failed request as an error that names the URL once (reqwest's own message repeats it), and
/// that names the proxy when the connection that failed was the one to the proxy.
fn network_error(url: &Url, source: reqwest::Error) -> FetchError {
    let source = source.without_url();
    if source.is_connect() {
        if let Some(proxy) = proxy_for(url) {
            return FetchError::Proxy {
                url: url.clone(),
                proxy: proxy.into(),
                source,
            };
        }
    }
    FetchError::Network {
        url: url.clone(),
        source,
    }
}

/// The proxy the environment sets for `url`, decided by the same rules reqwest applies
/// (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY` and their lowercase forms), as
/// `scheme://host:port` without credentials.
pub(crate) fn proxy_for(url: &Url) -> Option<String> {
    let uri: http::Uri = url.as_str().parse().ok()?;
    let intercept = hyper_util::client::proxy::matcher::Matcher::from_env().intercept(&uri)?;
    let proxy = intercept.uri();
    let host_port = proxy.authority()?.as_str().rsplit('@').next()?.to_owned();
    Some(format!(
        "{}://{host_port}",
        proxy.scheme_str().unwrap_or("http")
    ))
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
            Ok(Err(source)) => Err(network_error(url, source)),
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
            Ok(Err(source)) => Err(network_error(url, source)),
            Err(_) => Err(FetchError::Stalled {
                url: url.clone(),
                timeout,
                received,
            }),
        }
    }

    /// A document with retries, all within the document deadline; `None` for 404.
    pub(crate) async fn fetch_document(&self, url: &Url) -> Result<Option<Bytes>, FetchError> {
        let timeout = self.config.document_timeout;
        match tokio::time::timeout(timeout, self.fetch_document_retrying(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::DocumentDeadline {
                url: url.clone(),
                timeout,
            }),
        }
    }

    async fn fetch_document_retrying(&self, url: &Url) -> Result<Option<Bytes>, FetchError> {
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

    /// Reads a whole body of at most `limit` bytes, checking it against Content-Length. The
    /// buffer grows by at most doubling and never past `limit`, so an endless body costs at
    /// most `limit` bytes (plus one chunk) before it is refused.
    async fn read_capped(
        &self,
        url: &Url,
        response: &mut Response,
        limit: u64,
    ) -> Result<Bytes, FetchError> {
        let too_large = |size| FetchError::TooLarge {
            url: url.clone(),
            limit,
            size,
        };
        let announced = response.content_length();
        if let Some(size) = announced.filter(|&size| size > limit) {
            return Err(too_large(size));
        }
        // Bounded by `limit` just above.
        let capacity = usize::try_from(announced.unwrap_or(0)).unwrap_or(0);
        let mut body = Vec::with_capacity(capacity);
        while let Some(chunk) = self.next_chunk(url, response, body.len() as u64).await? {
            let size = body.len() as u64 + chunk.len() as u64;
            if size > limit {
                return Err(too_large(size));
            }
            reserve_bounded(&mut body, chunk.len(), limit);
            body.extend_from_slice(&chunk);
        }
        let actual = body.len() as u64;
        match announced {
            Some(expected) if expected != actual => Err(FetchError::Truncated {
                url: url.clone(),
                expected,
                actual,
            }),
            _ => Ok(Bytes::from(body)),
        }
    }
}

/// Makes room for `more` bytes: doubling, but never beyond `limit` (which the caller has
/// checked `len + more` against), so the buffer of a document at the limit is the limit.
fn reserve_bounded(body: &mut Vec<u8>, more: usize, limit: u64) {
    let needed = body.len() + more;
    if needed <= body.capacity() {
        return;
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let target = (body.capacity() * 2).clamp(needed, cap.max(needed));
    body.reserve_exact(target - body.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_growth_doubles_but_stops_at_the_limit() {
        let mut body = Vec::new();
        reserve_bounded(&mut body, 10, 100);
        assert!(body.capacity() >= 10);
        body.extend_from_slice(&[0; 10]);
        reserve_bounded(&mut body, 60, 100);
        body.extend_from_slice(&[0; 60]);
        assert!(body.capacity() >= 70 && body.capacity() <= 100);
        reserve_bounded(&mut body, 30, 100);
        assert_eq!(body.capacity(), 100);
    }

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
