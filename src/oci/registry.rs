//! The OCI distribution API, as much as a push needs: blob existence (`HEAD`), upload sessions
//! (with cross-repository mounts), monolithic and chunked uploads streamed from a file,
//! manifests, the tag list and manifest deletion.
//!
//! Small requests are retried on transient failures (connection refused, timeouts, 408, 429,
//! 5xx) by the crate's retry policy and answer one `401` by authenticating (basic, or a bearer
//! token fetched from the challenge's realm) and trying again. Streamed bodies are never
//! replayed here: the caller restarts a failed blob from a new session.

use std::path::Path;
use std::pin::pin;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::debug;
use url::Url;

use super::auth::{AuthError, Challenge, Credentials};
use crate::fetch::retry::{self, Retry};
use crate::fetch::ClientConfig;
use crate::io::progress::Reporter;
use crate::upload::Secret;
use crate::ErrorKind;

/// Largest JSON or error body read from a registry (tag lists, token answers, errors).
const BODY_LIMIT: u64 = 8 << 20;
/// Size of the reads from the blob file, queued to the request body.
const CHUNK: usize = 1 << 20;
/// Chunks read ahead of the network.
const QUEUE: usize = 4;
/// How long a registry may take to answer once a blob's last byte is sent (it verifies the
/// digest and moves the upload into place).
const ANSWER_AFTER_BODY: Duration = Duration::from_secs(300);
/// Tags asked for per page of the tag list.
const TAG_PAGE: usize = 1000;
/// Most tag-list pages followed.
const MAX_TAG_PAGES: usize = 100;
/// Longest registry message kept in an error.
const MESSAGE_LIMIT: usize = 400;

/// Manifest media types accepted when asking what a tag points to.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot set up the HTTP client")]
    Setup {
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: network error")]
    Network {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    #[error("{url}: the registry stopped reading after {sent} bytes")]
    Stalled { url: String, sent: u64 },
    /// An error status, with the registry's error code (`BLOB_UNKNOWN`, `DENIED`, …).
    #[error("{method} {url}: HTTP {status} {code}: {message}")]
    Status {
        method: Method,
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{method} {url}: gave up after {attempts} attempts")]
    GaveUp {
        method: Method,
        url: String,
        attempts: u32,
        #[source]
        last: Box<RegistryError>,
    },
    #[error("{method} {url}: unexpected answer: {reason}")]
    BadResponse {
        method: Method,
        url: String,
        reason: String,
    },
    /// The registry stored bytes whose digest is not the one pushed.
    #[error("{url}: the registry says {actual}, expected {expected}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: cannot {action}")]
    Io {
        path: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl RegistryError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::Setup { .. } | RegistryError::Io { .. } => ErrorKind::Other,
            RegistryError::Network { .. }
            | RegistryError::Timeout { .. }
            | RegistryError::Stalled { .. }
            | RegistryError::GaveUp { .. }
            | RegistryError::BadResponse { .. } => ErrorKind::Network,
            RegistryError::Status { status, code, .. } => match (*status, code.as_str()) {
                (_, "DIGEST_INVALID" | "SIZE_INVALID") => ErrorKind::Integrity,
                (401 | 403, _) => ErrorKind::Usage,
                (500.., _) => ErrorKind::Network,
                _ => ErrorKind::Other,
            },
            RegistryError::DigestMismatch { .. } => ErrorKind::Integrity,
            RegistryError::Auth(error) => error.kind(),
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Network { source, .. } => !(source.is_builder() || source.is_redirect()),
            RegistryError::Timeout { .. } | RegistryError::Stalled { .. } => true,
            RegistryError::Status { status, .. } => retry::status_is_transient(*status),
            _ => false,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A complete answer to a small request.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How an upload session started.
#[derive(Debug)]
pub enum Started {
    /// The registry mounted the blob from another repository: nothing to send.
    Mounted,
    /// Send the blob to this URL.
    Session(Url),
}

/// One registry, with the credentials for it and the authorization currently in use.
pub struct Registry {
    http: reqwest::Client,
    config: ClientConfig,
    base: Url,
    name: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that last worked.
    authorization: Mutex<Option<Secret>>,
    /// Repositories this client works on, asked for together in token requests.
    repositories: Mutex<Vec<String>>,
}

impl Registry {
    /// A client of `registry` (`host[:port]`) over HTTPS, or plain HTTP when `insecure`.
    pub fn new(
        registry: &str,
        insecure: bool,
        credentials: Option<Credentials>,
        config: &ClientConfig,
    ) -> Result<Registry, RegistryError> {
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{registry}/")).map_err(|e| {
            RegistryError::BadResponse {
                method: Method::GET,
                url: registry.to_owned(),
                reason: e.to_string(),
            }
        })?;
        // No overall timeout: a multi-GiB blob takes minutes. Stalls are bounded per chunk.
        let http = crate::fetch::http_builder(config)
            .build()
            .map_err(|source| RegistryError::Setup { source })?;
        Ok(Registry {
            http,
            config: config.clone(),
            base,
            name: registry.to_owned(),
            credentials,
            authorization: Mutex::new(None),
            repositories: Mutex::new(Vec::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self, path: &str) -> Url {
        // Joining a path of validated repository components and digests cannot fail.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn note_repository(&self, repository: &str) {
        let mut repositories = self.repositories.lock().unwrap_or_else(|p| p.into_inner());
        if !repositories.iter().any(|r| r == repository) {
            repositories.push(repository.to_owned());
        }
    }

    fn current_authorization(&self) -> Option<Secret> {
        self.authorization
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One small request, retried when transient, authenticating on a `401`. Statuses in
    /// `accept` are answers; any other non-2xx is an error.
    pub async fn call(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Option<Bytes>,
        accept: &[StatusCode],
    ) -> Result<Reply, RegistryError> {
        let mut retry = Retry::new(&self.config);
        let mut authenticated = false;
        loop {
            let result = self
                .attempt(&method, url, headers.clone(), body.clone(), accept)
                .await;
            let error = match result {
                Ok(reply) if reply.status == StatusCode::UNAUTHORIZED && !authenticated => {
                    authenticated = true;
                    self.answer_challenge(&reply).await?;
                    continue;
                }
                Ok(reply) if reply.status == StatusCode::UNAUTHORIZED => {
                    return Err(self.refused());
                }
                Ok(reply) => return Ok(reply),
                Err(error) => error,
            };
            if !error.is_transient() {
                return Err(error);
            }
            let Some(delay) = retry.next_delay(None) else {
                return Err(RegistryError::GaveUp {
                    method,
                    url: url.to_string(),
                    attempts: retry.attempts(),
                    last: Box::new(error),
                });
            };
            debug!(%method, url = %url, delay_ms = delay.as_millis() as u64, error = %error,
                "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn refused(&self) -> RegistryError {
        match &self.credentials {
            Some(credentials) => AuthError::Refused {
                registry: self.name.clone(),
                source_file: credentials.origin.display().to_string(),
            },
            None => AuthError::NoCredentials {
                registry: self.name.clone(),
            },
        }
        .into()
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        headers: HeaderMap,
        body: Option<Bytes>,
        accept: &[StatusCode],
    ) -> Result<Reply, RegistryError> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .headers(headers);
        if let Some(authorization) = self.current_authorization() {
            request = request.header(header::AUTHORIZATION, sensitive(&authorization));
        }
        request = match body {
            Some(body) => request.body(body),
            None if *method == Method::PUT || *method == Method::POST => {
                request.header(header::CONTENT_LENGTH, 0)
            }
            None => request,
        };
        debug!(%method, url = %url, "registry request");
        let limit = self.config.connect_timeout + self.config.stall_timeout;
        let response = match tokio::time::timeout(limit, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(source)) => {
                return Err(RegistryError::Network {
                    method: method.clone(),
                    url: url.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(RegistryError::Timeout {
                    method: method.clone(),
                    url: url.to_string(),
                    timeout: limit,
                })
            }
        };
        let reply = self.read_reply(method, url, response).await?;
        if reply.status.is_success()
            || reply.status == StatusCode::UNAUTHORIZED
            || accept.contains(&reply.status)
        {
            return Ok(reply);
        }
        Err(status_error(method, url, &reply))
    }

    async fn read_reply(
        &self,
        method: &Method,
        url: &Url,
        mut response: reqwest::Response,
    ) -> Result<Reply, RegistryError> {
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = BytesMut::new();
        if *method != Method::HEAD {
            loop {
                let chunk = tokio::time::timeout(self.config.stall_timeout, response.chunk()).await;
                match chunk {
                    Ok(Ok(Some(chunk))) => {
                        if body.len() as u64 + chunk.len() as u64 > BODY_LIMIT {
                            return Err(RegistryError::BadResponse {
                                method: method.clone(),
                                url: url.to_string(),
                                reason: format!("a body larger than {BODY_LIMIT} bytes"),
                            });
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(Ok(None)) => break,
                    Ok(Err(source)) => {
                        return Err(RegistryError::Network {
                            method: method.clone(),
                            url: url.to_string(),
                            source,
                        })
                    }
                    Err(_) => {
                        return Err(RegistryError::Timeout {
                            method: method.clone(),
                            url: url.to_string(),
                            timeout: self.config.stall_timeout,
                        })
                    }
                }
            }
        }
        Ok(Reply {
            status,
            headers,
            body: body.freeze(),
        })
    }

    /// Sets the authorization a `401` asks for: basic credentials, or a bearer token.
    async fn answer_challenge(&self, reply: &Reply) -> Result<(), RegistryError> {
        let header = reply
            .header("www-authenticate")
            .unwrap_or_default()
            .to_owned();
        let challenge = Challenge::parse(&header).ok_or_else(|| AuthError::BadChallenge {
            registry: self.name.clone(),
            header: header.clone(),
        })?;
        let authorization = match challenge {
            Challenge::Basic => match &self.credentials {
                Some(credentials) => credentials.basic(),
                None => return Err(self.refused()),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                self.token(&realm, service.as_deref(), scope.as_deref())
                    .await?
            }
        };
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(authorization);
        Ok(())
    }

    /// A bearer token from `realm` for the challenge's scope and push access to every
    /// repository of this client.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Secret, RegistryError> {
        let bad_challenge = || AuthError::BadChallenge {
            registry: self.name.clone(),
            header: format!("Bearer realm={realm:?}"),
        };
        let mut url = Url::parse(realm).map_err(|_| bad_challenge())?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(bad_challenge().into());
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            if let Some(scope) = scope {
                query.append_pair("scope", scope);
            }
            let repositories = self.repositories.lock().unwrap_or_else(|p| p.into_inner());
            for repository in repositories.iter() {
                let wanted = format!("repository:{repository}:pull,push");
                if scope != Some(wanted.as_str()) {
                    query.append_pair("scope", &wanted);
                }
            }
        }
        let mut request = self.http.get(url.clone());
        if let Some(credentials) = &self.credentials {
            request = request.header(header::AUTHORIZATION, sensitive(&credentials.basic()));
        }
        debug!(url = %url, "token request");
        let response = request
            .send()
            .await
            .map_err(|source| RegistryError::Network {
                method: Method::GET,
                url: url.to_string(),
                source,
            })?;
        let reply = self.read_reply(&Method::GET, &url, response).await?;
        if reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::FORBIDDEN {
            return Err(self.refused());
        }
        if !reply.status.is_success() {
            return Err(status_error(&Method::GET, &url, &reply));
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenReply =
            serde_json::from_slice(&reply.body).map_err(|e| RegistryError::BadResponse {
                method: Method::GET,
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let token =
            parsed
                .token
                .or(parsed.access_token)
                .ok_or_else(|| RegistryError::BadResponse {
                    method: Method::GET,
                    url: url.to_string(),
                    reason: "no token in the answer".into(),
                })?;
        Ok(Secret::new(format!("Bearer {token}")))
    }

    /// Whether `repository` holds the blob `digest`.
    pub async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        self.note_repository(repository);
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let reply = self
            .call(
                Method::HEAD,
                &url,
                HeaderMap::new(),
                None,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        Ok(reply.status.is_success())
    }

    /// Opens an upload session, or mounts `digest` from the repository `from` when given and
    /// the registry allows it.
    pub async fn start_upload(
        &self,
        repository: &str,
        mount: Option<(&str, &str)>,
    ) -> Result<Started, RegistryError> {
        self.note_repository(repository);
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"));
        if let Some((digest, from)) = mount {
            self.note_repository(from);
            url.query_pairs_mut()
                .append_pair("mount", digest)
                .append_pair("from", from);
        }
        let reply = self
            .call(Method::POST, &url, HeaderMap::new(), None, &[])
            .await?;
        if mount.is_some() && reply.status == StatusCode::CREATED {
            return Ok(Started::Mounted);
        }
        self.location(&Method::POST, &url, &reply)
            .map(Started::Session)
    }

    fn location(&self, method: &Method, url: &Url, reply: &Reply) -> Result<Url, RegistryError> {
        let location = reply
            .header("location")
            .ok_or_else(|| RegistryError::BadResponse {
                method: method.clone(),
                url: url.to_string(),
                reason: format!("HTTP {} without a Location", reply.status),
            })?;
        url.join(location).map_err(|e| RegistryError::BadResponse {
            method: method.clone(),
            url: url.to_string(),
            reason: format!("Location {location:?}: {e}"),
        })
    }

    /// Sends the whole blob in the session's closing `PUT`.
    pub async fn upload_monolithic(
        &self,
        session: Url,
        file: &Path,
        digest: &str,
        size: u64,
        reporter: &dyn Reporter,
    ) -> Result<(), RegistryError> {
        let mut url = session;
        url.query_pairs_mut().append_pair("digest", digest);
        let reply = self
            .stream(Method::PUT, &url, file, 0, size, HeaderMap::new(), reporter)
            .await?;
        self.check_digest(&url, &reply, digest)
    }

    /// Sends the blob in `PATCH`es of `chunk` bytes, then closes the session with a `PUT`.
    pub async fn upload_chunked(
        &self,
        session: Url,
        file: &Path,
        digest: &str,
        size: u64,
        chunk: u64,
        reporter: &dyn Reporter,
    ) -> Result<(), RegistryError> {
        let mut url = session;
        let mut offset = 0u64;
        while offset < size {
            let length = chunk.min(size - offset);
            let mut headers = HeaderMap::new();
            let range = format!("{}-{}", offset, offset + length - 1);
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&range).unwrap_or(HeaderValue::from_static("0-0")),
            );
            let reply = self
                .stream(Method::PATCH, &url, file, offset, length, headers, reporter)
                .await?;
            url = self.location(&Method::PATCH, &url, &reply)?;
            offset += length;
        }
        url.query_pairs_mut().append_pair("digest", digest);
        let reply = self
            .call(Method::PUT, &url, HeaderMap::new(), None, &[])
            .await?;
        self.check_digest(&url, &reply, digest)
    }

    fn check_digest(&self, url: &Url, reply: &Reply, expected: &str) -> Result<(), RegistryError> {
        match reply.header("docker-content-digest") {
            Some(actual) if actual != expected => Err(RegistryError::DigestMismatch {
                url: url.to_string(),
                expected: expected.to_owned(),
                actual: actual.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// One request whose body is `length` bytes of `file` from `offset`, read ahead a few
    /// chunks at a time. A `401` here is final: the caller starts the blob over.
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        method: Method,
        url: &Url,
        file: &Path,
        offset: u64,
        length: u64,
        headers: HeaderMap,
        reporter: &dyn Reporter,
    ) -> Result<Reply, RegistryError> {
        let io = |action| {
            let path = file.display().to_string();
            move |source| RegistryError::Io {
                path,
                action,
                source,
            }
        };
        let mut source = tokio::fs::File::open(file).await.map_err(io("open"))?;
        source
            .seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(io("seek"))?;
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUE);
        let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .headers(headers)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(authorization) = self.current_authorization() {
            request = request.header(header::AUTHORIZATION, sensitive(&authorization));
        }
        debug!(%method, url = %url, offset, length, "streaming blob");
        let stall = self.config.stall_timeout;
        let mut send = pin!(request.send());
        let mut pump = pin!(pump(source.take(length), sender, reporter, stall));
        let mut sending = true;
        let mut deadline = pin!(tokio::time::sleep(ANSWER_AFTER_BODY));
        let sent = loop {
            tokio::select! {
                result = &mut send => break result,
                result = &mut pump, if sending => {
                    match result {
                        Ok(_) | Err(PumpError::Closed) => {}
                        Err(PumpError::Read(source)) => return Err(io("read")(source)),
                        Err(PumpError::Stalled(sent)) => {
                            return Err(RegistryError::Stalled { url: url.to_string(), sent })
                        }
                    }
                    sending = false;
                    deadline.as_mut().reset(tokio::time::Instant::now() + ANSWER_AFTER_BODY);
                }
                () = &mut deadline, if !sending => {
                    return Err(RegistryError::Timeout {
                        method, url: url.to_string(), timeout: ANSWER_AFTER_BODY,
                    })
                }
            }
        };
        let response = sent.map_err(|source| RegistryError::Network {
            method: method.clone(),
            url: url.to_string(),
            source,
        })?;
        let reply = self.read_reply(&method, url, response).await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            return Err(self.refused());
        }
        if !reply.status.is_success() {
            return Err(status_error(&method, url, &reply));
        }
        Ok(reply)
    }

    /// The digest `reference` (a tag or digest) points to in `repository`, if any.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        self.note_repository(repository);
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_TYPES));
        let reply = self
            .call(Method::HEAD, &url, headers, None, &[StatusCode::NOT_FOUND])
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(reply.header("docker-content-digest").map(str::to_owned))
    }

    /// Stores a manifest or index under `reference` (a tag, or its own digest).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(), RegistryError> {
        self.note_repository(repository);
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        let content_type =
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::BadResponse {
                method: Method::PUT,
                url: url.to_string(),
                reason: format!("media type {media_type:?} is not a header value"),
            })?;
        headers.insert(header::CONTENT_TYPE, content_type);
        let reply = self
            .call(
                Method::PUT,
                &url,
                headers,
                Some(Bytes::copy_from_slice(bytes)),
                &[],
            )
            .await?;
        self.check_digest(&url, &reply, digest)
    }

    /// Every tag of `repository` (none when the repository does not exist yet).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        self.note_repository(repository);
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let mut url = self.url(&format!("v2/{repository}/tags/list"));
        url.query_pairs_mut()
            .append_pair("n", &TAG_PAGE.to_string());
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let reply = self
                .call(
                    Method::GET,
                    &url,
                    HeaderMap::new(),
                    None,
                    &[StatusCode::NOT_FOUND],
                )
                .await?;
            if reply.status == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            let page: TagList =
                serde_json::from_slice(&reply.body).map_err(|e| RegistryError::BadResponse {
                    method: Method::GET,
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
            tags.extend(page.tags.unwrap_or_default());
            match reply.header("link").and_then(next_link) {
                Some(next) => {
                    url = url.join(&next).map_err(|e| RegistryError::BadResponse {
                        method: Method::GET,
                        url: url.to_string(),
                        reason: format!("Link {next:?}: {e}"),
                    })?
                }
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// Deletes the manifest `digest` (and with it every tag pointing at it).
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<(), RegistryError> {
        self.note_repository(repository);
        let url = self.url(&format!("v2/{repository}/manifests/{digest}"));
        let result = self
            .call(Method::DELETE, &url, HeaderMap::new(), None, &[])
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.status() == Some(404) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

fn sensitive(secret: &Secret) -> HeaderValue {
    let mut value = HeaderValue::from_str(secret.expose()).unwrap_or(HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// The target of `Link: <…>; rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

fn status_error(method: &Method, url: &Url, reply: &Reply) -> RegistryError {
    let (code, message) = registry_message(&reply.body);
    RegistryError::Status {
        method: method.clone(),
        url: url.to_string(),
        status: reply.status.as_u16(),
        code,
        message,
    }
}

/// The first `errors[].code` and `message` of a distribution error body, bounded.
fn registry_message(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    let (code, mut message) = match serde_json::from_slice::<Errors>(body) {
        Ok(Errors { errors }) if !errors.is_empty() => (
            errors[0].code.clone().unwrap_or_default(),
            errors[0].message.clone().unwrap_or_default(),
        ),
        _ => (
            String::new(),
            String::from_utf8_lossy(body).trim().to_owned(),
        ),
    };
    if message.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    (code, message)
}

enum PumpError {
    Read(std::io::Error),
    /// The request dropped its body (the server answered, or the connection failed).
    Closed,
    /// The server stopped reading; bytes sent so far.
    Stalled(u64),
}

/// Feeds a request body from `source`, a chunk at a time, reporting what was queued.
async fn pump(
    mut source: tokio::io::Take<tokio::fs::File>,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    reporter: &dyn Reporter,
    stall: Duration,
) -> Result<u64, PumpError> {
    let mut sent = 0u64;
    loop {
        let mut buffer = BytesMut::with_capacity(CHUNK);
        while buffer.len() < CHUNK {
            let n = source
                .read_buf(&mut buffer)
                .await
                .map_err(PumpError::Read)?;
            if n == 0 {
                break;
            }
        }
        if buffer.is_empty() {
            return Ok(sent);
        }
        let length = buffer.len() as u64;
        match tokio::time::timeout(stall, sender.send(Ok(buffer.freeze()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(PumpError::Closed),
            Err(_) => return Err(PumpError::Stalled(sent)),
        }
        sent += length;
        reporter.advance(length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_errors_give_code_and_message() {
        let body = br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content","detail":{}}]}"#;
        let (code, message) = registry_message(body);
        assert_eq!(code, "DIGEST_INVALID");
        assert_eq!(message, "provided digest did not match uploaded content");
        let (code, message) = registry_message(b"<html>bad gateway</html>");
        assert_eq!(code, "");
        assert_eq!(message, "<html>bad gateway</html>");
    }

    #[test]
    fn digest_errors_are_integrity_and_auth_errors_usage() {
        let status = |status, code: &str| RegistryError::Status {
            method: Method::PUT,
            url: "u".into(),
            status,
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(status(400, "DIGEST_INVALID").kind(), ErrorKind::Integrity);
        assert_eq!(status(401, "UNAUTHORIZED").kind(), ErrorKind::Usage);
        assert_eq!(status(503, "").kind(), ErrorKind::Network);
        assert!(status(503, "").is_transient());
        assert!(!status(404, "BLOB_UNKNOWN").is_transient());
    }

    #[test]
    fn next_link_is_read_from_the_link_header() {
        assert_eq!(
            next_link(r#"</v2/lab/noble/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/lab/noble/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }
}
