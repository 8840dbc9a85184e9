//! Requests to Keystone and Glance: retries by the fetch policy, bounded JSON bodies, and one
//! streamed file upload that hashes the bytes as they leave.

use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use md5::Md5;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response};
use sha2::{Digest, Sha512};
use tokio::io::AsyncReadExt;
use tracing::debug;
use url::Url;

use super::UploadError;
use crate::fetch::retry::{self, Retry};
use crate::fetch::ClientConfig;
use crate::io::progress::Reporter;

/// Largest JSON body read from Keystone or Glance. A service catalog or an image list page is
/// well under a MiB; more is a wrong URL or a hostile server.
pub(crate) const JSON_LIMIT: u64 = 16 << 20;

/// Longest server message kept in an error (HTML error pages can be long).
const MESSAGE_LIMIT: usize = 600;

/// Size of the chunks read from the artifact and sent.
const CHUNK: usize = 1 << 20;

/// How long the server may take to answer once the last byte of an upload is sent: Glance
/// finishes writing to its store and hashing before it replies.
const ANSWER_AFTER_BODY: Duration = Duration::from_secs(300);

/// A credential that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A complete response to a small request.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &Method,
        url: &Url,
    ) -> Result<T, UploadError> {
        serde_json::from_slice(&self.body).map_err(|e| UploadError::BadResponse {
            method: method.clone(),
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
}

/// What the streamed bytes hashed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Streamed {
    pub(crate) size: u64,
    pub(crate) md5: String,
    pub(crate) sha512: String,
}

/// The HTTP client and network settings shared by the Keystone and Glance calls.
pub(crate) struct Http {
    client: reqwest::Client,
    config: ClientConfig,
}

/// A failed attempt and whether another one may succeed.
struct Failure {
    error: UploadError,
    /// Safe to resend whatever the method: the request never reached the server.
    not_sent: bool,
    transient: bool,
    retry_after: Option<Duration>,
}

impl Http {
    pub(crate) fn new(config: &ClientConfig) -> Result<Http, UploadError> {
        // No overall timeout (an upload of several GiB takes minutes); stalls are bounded per
        // request and per chunk instead.
        let client = crate::fetch::http_builder(config)
            .build()
            .map_err(|source| UploadError::Setup { source })?;
        Ok(Http {
            client,
            config: config.clone(),
        })
    }

    /// One request with a small body, retried on transient failures: connection failures
    /// always (nothing was sent), timeouts, 408, 429 and 5xx only when `idempotent`. A non-2xx
    /// final answer is [`UploadError::Status`] with the server's message.
    pub(crate) async fn call(
        &self,
        method: Method,
        url: &Url,
        token: Option<&Secret>,
        body: Option<(&'static str, Bytes)>,
        idempotent: bool,
    ) -> Result<Reply, UploadError> {
        let mut retry = Retry::new(&self.config);
        loop {
            let failure = match self.attempt(&method, url, token, body.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            if !(failure.not_sent || (idempotent && failure.transient)) {
                return Err(failure.error);
            }
            let Some(delay) = retry.next_delay(failure.retry_after) else {
                return Err(UploadError::GaveUp {
                    method,
                    url: url.to_string(),
                    attempts: retry.attempts(),
                    last: Box::new(failure.error),
                });
            };
            debug!(%method, url = %url, delay_ms = delay.as_millis() as u64,
                error = %failure.error, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        token: Option<&Secret>,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Reply, Failure> {
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .header(header::ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.header("X-Auth-Token", auth_value(token));
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        debug!(%method, url = %url, "request");
        let limit = self.config.connect_timeout + self.config.stall_timeout;
        let mut response = match tokio::time::timeout(limit, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(source)) => return Err(transport_failure(method, url, source)),
            Err(_) => {
                return Err(Failure {
                    error: UploadError::Timeout {
                        method: method.clone(),
                        url: url.to_string(),
                        timeout: limit,
                    },
                    not_sent: false,
                    transient: true,
                    retry_after: None,
                })
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = self
            .read_capped(method, url, &mut response)
            .await
            .map_err(|error| Failure {
                transient: matches!(error, UploadError::Timeout { .. }),
                error,
                not_sent: false,
                retry_after: None,
            })?;
        if status.is_success() {
            return Ok(Reply { headers, body });
        }
        Err(Failure {
            error: UploadError::Status {
                method: method.clone(),
                url: url.to_string(),
                status: status.as_u16(),
                message: server_message(&body),
            },
            not_sent: false,
            transient: retry::status_is_transient(status.as_u16()),
            retry_after: headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now())),
        })
    }

    /// Reads a whole body of at most [`JSON_LIMIT`] bytes, each chunk within the stall timeout.
    async fn read_capped(
        &self,
        method: &Method,
        url: &Url,
        response: &mut Response,
    ) -> Result<Bytes, UploadError> {
        let too_large = || UploadError::TooLarge {
            method: method.clone(),
            url: url.to_string(),
            limit: JSON_LIMIT,
        };
        if response.content_length().is_some_and(|n| n > JSON_LIMIT) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        loop {
            let chunk = tokio::time::timeout(self.config.stall_timeout, response.chunk()).await;
            match chunk {
                Ok(Ok(Some(chunk))) => {
                    if body.len() as u64 + chunk.len() as u64 > JSON_LIMIT {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(Ok(None)) => return Ok(body.freeze()),
                Ok(Err(source)) => {
                    return Err(UploadError::Network {
                        method: method.clone(),
                        url: url.to_string(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(UploadError::Timeout {
                        method: method.clone(),
                        url: url.to_string(),
                        timeout: self.config.stall_timeout,
                    })
                }
            }
        }
    }

    /// `PUT`s `path` (exactly `size` bytes) as `application/octet-stream`, streamed from the
    /// file, hashing MD5 and SHA-512 as the bytes go and reporting them to `reporter`. Not
    /// retried: the body cannot be replayed, and Glance accepts data once per image.
    ///
    /// A non-2xx answer is [`UploadError::Status`] with the server's message, even when the
    /// server answers before reading everything (Glance's format inspection does).
    pub(crate) async fn put_file(
        &self,
        url: &Url,
        token: Option<&Secret>,
        path: &Path,
        size: u64,
        reporter: &dyn Reporter,
    ) -> Result<Streamed, UploadError> {
        let method = Method::PUT;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| UploadError::io(path, "open", source))?;
        // A small queue: the file is read ahead a few chunks, never loaded whole.
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let mut request = self
            .client
            .put(url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(token) = token {
            request = request.header("X-Auth-Token", auth_value(token));
        }
        debug!(url = %url, size, "streaming upload");
        let mut send = pin!(request.send());
        let mut pump = pin!(pump(
            file,
            path,
            sender,
            reporter,
            self.config.stall_timeout
        ));
        let mut body = BodyState::Sending;
        // Armed once the body is sent (or dropped); until then the per-chunk stall timeout
        // bounds the wait.
        let mut deadline = pin!(tokio::time::sleep(ANSWER_AFTER_BODY));
        let sent = loop {
            tokio::select! {
                result = &mut send => break result,
                result = &mut pump, if matches!(body, BodyState::Sending) => match result {
                    Ok(done) => {
                        body = BodyState::Sent(done);
                        deadline.as_mut().reset(tokio::time::Instant::now() + ANSWER_AFTER_BODY);
                    }
                    Err(PumpError::Local(error)) => return Err(error),
                    // The request dropped its body: its own result says why, soon.
                    Err(PumpError::Closed) => {
                        body = BodyState::Abandoned;
                        deadline.as_mut().reset(tokio::time::Instant::now() + ANSWER_AFTER_BODY);
                    }
                    Err(PumpError::Stalled(received)) => return Err(UploadError::Stalled {
                        url: url.to_string(), timeout: self.config.stall_timeout, received,
                    }),
                },
                () = &mut deadline, if !matches!(body, BodyState::Sending) => {
                    return Err(UploadError::Timeout {
                        method, url: url.to_string(), timeout: ANSWER_AFTER_BODY,
                    })
                }
            }
        };
        let mut response = sent.map_err(|source| UploadError::Network {
            method: method.clone(),
            url: url.to_string(),
            source,
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = self
                .read_capped(&method, url, &mut response)
                .await
                .unwrap_or_default();
            return Err(UploadError::Status {
                method,
                url: url.to_string(),
                status: status.as_u16(),
                message: server_message(&body),
            });
        }
        match body {
            BodyState::Sent(done) if done.size == size => Ok(done),
            _ => Err(UploadError::BadResponse {
                method,
                url: url.to_string(),
                reason: format!("HTTP {status} before the whole file was sent"),
            }),
        }
    }
}

/// Where the streamed request body stands.
enum BodyState {
    Sending,
    Sent(Streamed),
    /// The request stopped taking bytes (an early answer or a broken connection).
    Abandoned,
}

fn auth_value(token: &Secret) -> HeaderValue {
    // A token with bytes not allowed in a header cannot authenticate anything; sending an
    // empty one lets the server say so.
    let mut value = HeaderValue::from_str(token.expose()).unwrap_or(HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

fn transport_failure(method: &Method, url: &Url, source: reqwest::Error) -> Failure {
    let not_sent = source.is_connect();
    let transient = !(source.is_builder() || source.is_redirect());
    Failure {
        error: UploadError::Network {
            method: method.clone(),
            url: url.to_string(),
            source,
        },
        not_sent,
        transient,
        retry_after: None,
    }
}

enum PumpError {
    Local(UploadError),
    /// The request body was dropped: the server answered or the connection failed.
    Closed,
    /// The server stopped reading; bytes sent so far.
    Stalled(u64),
}

/// Feeds the request body from the file: read a chunk, queue it, hash it (on blocking threads,
/// MD5 and SHA-512 side by side, while the network sends), report it.
async fn pump(
    mut file: tokio::fs::File,
    path: &Path,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    reporter: &dyn Reporter,
    stall: Duration,
) -> Result<Streamed, PumpError> {
    let (mut md5, mut sha512) = (Md5::new(), Sha512::new());
    let mut size = 0u64;
    loop {
        let mut buffer = BytesMut::with_capacity(CHUNK);
        while buffer.len() < CHUNK {
            let n = file
                .read_buf(&mut buffer)
                .await
                .map_err(|e| PumpError::Local(UploadError::io(path, "read", e)))?;
            if n == 0 {
                break;
            }
        }
        if buffer.is_empty() {
            break;
        }
        let chunk = buffer.freeze();
        match tokio::time::timeout(stall, sender.send(Ok(chunk.clone()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(PumpError::Closed),
            Err(_) => return Err(PumpError::Stalled(size)),
        }
        let (for_md5, for_sha) = (chunk.clone(), chunk.clone());
        let (a, b) = tokio::join!(
            tokio::task::spawn_blocking(move || {
                md5.update(&for_md5);
                md5
            }),
            tokio::task::spawn_blocking(move || {
                sha512.update(&for_sha);
                sha512
            }),
        );
        let hashing_failed =
            |e: tokio::task::JoinError| PumpError::Local(UploadError::io(path, "hash", e.into()));
        md5 = a.map_err(hashing_failed)?;
        sha512 = b.map_err(hashing_failed)?;
        size += chunk.len() as u64;
        reporter.advance(chunk.len() as u64);
    }
    Ok(Streamed {
        size,
        md5: hex::encode(md5.finalize()),
        sha512: hex::encode(sha512.finalize()),
    })
}

/// The human part of an OpenStack error body: the `message` of a JSON error (Glance, webob),
/// `error.message` (Keystone), else the text of an HTML page; whitespace collapsed, bounded.
pub(crate) fn server_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => value
            .get("message")
            .or_else(|| value.get("error").and_then(|e| e.get("message")))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let mut plain = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => {
                in_tag = true;
                plain.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let mut words = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !words.is_char_boundary(end) {
            end -= 1;
        }
        words.truncate(end);
        words.push('…');
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_message_takes_the_json_message_without_markup() {
        let body = br#"{"message": "The request media type application/octet-stream is not supported by this server.\n<br /><br />\nImage disk_format qcow2 does not match stream data raw", "code": "415 Unsupported Media Type", "title": "Unsupported Media Type"}"#;
        assert_eq!(
            server_message(body),
            "The request media type application/octet-stream is not supported by this server. \
             Image disk_format qcow2 does not match stream data raw"
        );
    }

    #[test]
    fn server_message_reads_keystone_errors_and_html_pages() {
        let keystone = br#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#;
        assert_eq!(
            server_message(keystone),
            "The request you have made requires authentication."
        );
        let html = b"<html>\n <head><title>415 Unsupported</title></head>\n <body>\n  Image failed safety checks\n </body></html>";
        assert_eq!(
            server_message(html),
            "415 Unsupported Image failed safety checks"
        );
    }

    #[test]
    fn server_message_is_bounded() {
        let long = "x".repeat(10_000);
        let message = server_message(long.as_bytes());
        assert!(message.len() <= MESSAGE_LIMIT + '…'.len_utf8());
    }

    type Heads = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

    /// A loopback server answering every request with `status`; returns its URL and the
    /// heads of the requests it answered.
    fn always(status: u16) -> (Url, Heads) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!(
            "http://{}/v2/images",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let heads = Heads::default();
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                seen.lock().unwrap().push(head);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (url, heads)
    }

    fn count(heads: &Heads) -> usize {
        heads.lock().unwrap().len()
    }

    fn quick_retries(retries: u32) -> Http {
        Http::new(&ClientConfig {
            retries,
            backoff_base: Duration::from_millis(1),
            ..ClientConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn server_errors_are_retried_only_for_idempotent_requests() {
        let (url, heads) = always(503);
        let http = quick_retries(2);
        let error = http
            .call(Method::GET, &url, None, None, true)
            .await
            .unwrap_err();
        assert!(
            matches!(error, UploadError::GaveUp { attempts: 3, .. }),
            "{error:?}"
        );
        assert_eq!(error.status(), Some(503));
        assert_eq!(count(&heads), 3);

        let (url, heads) = always(503);
        let body = Some(("application/json", Bytes::from_static(b"{}")));
        let error = http
            .call(Method::POST, &url, None, body, false)
            .await
            .unwrap_err();
        assert!(
            matches!(error, UploadError::Status { status: 503, .. }),
            "{error:?}"
        );
        assert_eq!(count(&heads), 1);
    }

    #[tokio::test]
    async fn client_errors_are_final_at_once() {
        let (url, heads) = always(404);
        let error = quick_retries(3)
            .call(Method::GET, &url, None, None, true)
            .await
            .unwrap_err();
        assert!(
            matches!(error, UploadError::Status { status: 404, .. }),
            "{error:?}"
        );
        assert_eq!(count(&heads), 1);
    }

    #[tokio::test]
    async fn a_token_goes_in_x_auth_token_and_json_is_asked_for() {
        let (url, heads) = always(404);
        let http = quick_retries(0);
        let token = Secret::new("tok-123");
        let _ = http.call(Method::GET, &url, Some(&token), None, true).await;
        let _ = http.call(Method::GET, &url, None, None, true).await;
        let heads = heads.lock().unwrap().clone();
        let lower: Vec<String> = heads.iter().map(|h| h.to_ascii_lowercase()).collect();
        assert!(
            lower[0].contains("x-auth-token: tok-123\r\n"),
            "{}",
            heads[0]
        );
        assert!(!lower[1].contains("x-auth-token"), "{}", heads[1]);
        assert!(lower.iter().all(|h| h.contains("accept: application/json")));
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_even_for_a_post() {
        // Nothing listens on a port that was just free: each attempt is refused before any
        // byte is sent, so even a POST may try again.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/v2/images")).unwrap();
        let error = quick_retries(2)
            .call(Method::POST, &url, None, None, false)
            .await
            .unwrap_err();
        assert!(
            matches!(error, UploadError::GaveUp { attempts: 3, .. }),
            "{error:?}"
        );
        assert_eq!(error.kind(), crate::ErrorKind::Network);
    }

    #[tokio::test]
    async fn an_upload_to_a_server_that_stops_reading_fails_as_stalled() {
        use std::io::{BufRead, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!(
            "http://{}/v2/images/x/file",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            // Reads the head, then neither reads nor answers while the client waits.
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            std::thread::sleep(Duration::from_secs(20));
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.raw");
        // Sparse: more than loopback socket buffers hold, at no disk cost.
        let size = 256u64 << 20;
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        let http = Http::new(&ClientConfig {
            stall_timeout: Duration::from_secs(1),
            ..ClientConfig::default()
        })
        .unwrap();
        let started = std::time::Instant::now();
        let error = http
            .put_file(&url, None, &path, size, &crate::io::progress::Silent)
            .await
            .unwrap_err();
        assert!(matches!(error, UploadError::Stalled { .. }), "{error:?}");
        assert!(error.is_transient());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
