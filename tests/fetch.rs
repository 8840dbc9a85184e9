//! `cloudimg::fetch` against the loopback server: verified downloads, resume, retries, stalls,
//! the document cache and per-destination locks.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cloudimg::fetch::{Client, ClientConfig, Download, Downloaded, FetchError};
use cloudimg::io::progress::{Reporter, Silent};
use cloudimg::verify::digest::{FileDigest, Sha256Digest, Sha512Digest};
use cloudimg::ErrorKind;
use sha2::{Digest, Sha256, Sha512};
use tempfile::TempDir;

use crate::common::server::{Fault, Server, Times};

const MIB: usize = 1 << 20;

/// Short timeouts so fault tests take milliseconds, not minutes.
fn config() -> ClientConfig {
    ClientConfig {
        retries: 3,
        stall_timeout: Duration::from_millis(300),
        document_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(2),
        backoff_base: Duration::from_millis(10),
        cache_dir: None,
        tls: Default::default(),
    }
}

fn client() -> Client {
    Client::new(config()).unwrap()
}

/// Bytes that differ everywhere (xorshift), so a misplaced or flipped byte changes the digest.
fn payload(size: usize, seed: u64) -> Vec<u8> {
    // Odd and distinct per seed (xorshift must not start at zero).
    let mut state = seed.wrapping_mul(2).wrapping_add(1);
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> FileDigest {
    FileDigest::Sha256(Sha256Digest(Sha256::digest(bytes).into()))
}

fn sha512(bytes: &[u8]) -> FileDigest {
    FileDigest::Sha512(Sha512Digest(Sha512::digest(bytes).into()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A mirror directory served on loopback and an empty download directory.
struct Fixture {
    mirror: TempDir,
    out: TempDir,
    server: Server,
}

impl Fixture {
    fn new() -> Fixture {
        let mirror = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let server = Server::start(mirror.path());
        Fixture {
            mirror,
            out,
            server,
        }
    }

    fn publish(&self, name: &str, bytes: &[u8]) {
        let path = self.mirror.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn dest(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    /// A download of `name` expecting exactly `bytes`.
    fn request(&self, name: &str, bytes: &[u8]) -> Download {
        Download {
            url: self.server.url_for(name),
            dest: self.dest(name),
            expected_digest: Some(sha256(bytes)),
            expected_size: Some(bytes.len() as u64),
        }
    }

    fn assert_delivered(&self, name: &str, bytes: &[u8], done: &Downloaded) {
        let dest = self.dest(name);
        assert_eq!(done.path, dest);
        assert_eq!(done.digest, sha256(bytes));
        assert_eq!(done.size, bytes.len() as u64);
        assert!(std::fs::read(&dest).unwrap() == bytes, "content differs");
        assert!(!with_suffix(&dest, ".part").exists(), ".part left behind");
        assert!(
            !with_suffix(&dest, ".part.meta").exists(),
            ".part.meta left behind"
        );
    }
}

/// Records what the download reports, and whether the destination existed mid-transfer.
struct Recorder {
    dest: PathBuf,
    events: Mutex<Vec<String>>,
    advanced: Mutex<u64>,
    dest_seen_early: Mutex<bool>,
}

impl Recorder {
    fn new(dest: PathBuf) -> Recorder {
        Recorder {
            dest,
            events: Mutex::new(Vec::new()),
            advanced: Mutex::new(0),
            dest_seen_early: Mutex::new(false),
        }
    }
}

impl Reporter for Recorder {
    fn start(&self, _label: &str, total: Option<u64>, already: u64) {
        self.events
            .lock()
            .unwrap()
            .push(format!("start {total:?} {already}"));
    }

    fn advance(&self, bytes: u64) {
        *self.advanced.lock().unwrap() += bytes;
        if self.dest.exists() {
            *self.dest_seen_early.lock().unwrap() = true;
        }
    }

    fn finish(&self) {
        self.events.lock().unwrap().push("finish".into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_verifies_and_renames_atomically() {
    let fixture = Fixture::new();
    let bytes = payload(3 * MIB + 17, 1);
    fixture.publish("noble/disk.img", &bytes);
    let recorder = Recorder::new(fixture.dest("noble/disk.img"));

    let done = client()
        .download(&fixture.request("noble/disk.img", &bytes), &recorder)
        .await
        .unwrap();

    fixture.assert_delivered("noble/disk.img", &bytes, &done);
    assert_eq!(done.transferred, bytes.len() as u64);
    assert_eq!(done.resumed_from, 0);
    assert!(!done.up_to_date);
    assert!(
        !*recorder.dest_seen_early.lock().unwrap(),
        "destination appeared before the transfer ended"
    );
    assert_eq!(*recorder.advanced.lock().unwrap(), bytes.len() as u64);
    let events = recorder.events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            format!("start Some({}) 0", bytes.len()),
            "finish".to_owned()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_deletes_part_and_is_integrity_error() {
    let fixture = Fixture::new();
    let bytes = payload(2 * MIB, 2);
    fixture.publish("disk.img", &bytes);
    fixture
        .server
        .inject("disk.img", Fault::CorruptByte(123_457), Times::Always);

    let error = client()
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Integrity);
    match &error {
        FetchError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(**expected, sha256(&bytes));
            let mut corrupt = bytes.clone();
            corrupt[123_457] ^= 0xff;
            assert_eq!(**actual, sha256(&corrupt));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    let dest = fixture.dest("disk.img");
    assert!(!dest.exists());
    assert!(!with_suffix(&dest, ".part").exists());
    assert!(!with_suffix(&dest, ".part.meta").exists());
    // Corruption is not a network problem: one request, no retries.
    assert_eq!(fixture.server.requests_for("disk.img").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_resumes_with_range_and_if_range() {
    let fixture = Fixture::new();
    let bytes = payload(3 * MIB, 3);
    fixture.publish("disk.img", &bytes);
    fixture
        .server
        .inject("disk.img", Fault::DropAfter(MIB as u64), Times::Once);

    let done = client()
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap();

    fixture.assert_delivered("disk.img", &bytes, &done);
    let log = fixture.server.requests_for("disk.img");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].status, 200);
    assert_eq!(log[0].range, None);
    assert_eq!(log[1].range.as_deref(), Some("bytes=1048576-"));
    assert!(log[1]
        .if_range
        .as_deref()
        .is_some_and(|v| v.starts_with('"')));
    assert_eq!(log[1].status, 206);
    // The first MiB was not fetched twice.
    assert_eq!(done.transferred, bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_download_keeps_part_and_next_run_resumes() {
    let fixture = Fixture::new();
    let bytes = payload(3 * MIB, 4);
    fixture.publish("disk.img", &bytes);
    fixture
        .server
        .inject("disk.img", Fault::DropAfter(MIB as u64), Times::Once);
    let no_retries = Client::new(ClientConfig {
        retries: 0,
        ..config()
    })
    .unwrap();

    let error = no_retries
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Network);
    let part = with_suffix(&fixture.dest("disk.img"), ".part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), MIB as u64);
    assert!(with_suffix(&fixture.dest("disk.img"), ".part.meta").exists());

    let recorder = Recorder::new(fixture.dest("disk.img"));
    let done = client()
        .download(&fixture.request("disk.img", &bytes), &recorder)
        .await
        .unwrap();

    fixture.assert_delivered("disk.img", &bytes, &done);
    assert_eq!(done.resumed_from, MIB as u64);
    assert_eq!(done.transferred, (bytes.len() - MIB) as u64);
    assert_eq!(
        recorder.events.lock().unwrap()[0],
        format!("start Some({}) {}", bytes.len(), MIB)
    );
    let log = fixture.server.requests_for("disk.img");
    assert_eq!(log[1].range.as_deref(), Some("bytes=1048576-"));
    assert_eq!(log[1].status, 206);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ignoring_range_restarts_from_zero() {
    let fixture = Fixture::new();
    let bytes = payload(3 * MIB, 5);
    fixture.publish("disk.img", &bytes);
    fixture
        .server
        .inject("disk.img", Fault::IgnoreRange, Times::Always);
    fixture
        .server
        .inject("disk.img", Fault::DropAfter(MIB as u64), Times::Once);

    let done = client()
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap();

    // Appending the whole file to the first MiB would have broken the digest.
    fixture.assert_delivered("disk.img", &bytes, &done);
    let log = fixture.server.requests_for("disk.img");
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].range.is_some());
    assert_eq!(log[1].status, 200);
    assert_eq!(done.transferred, (MIB + bytes.len()) as u64);
    assert_eq!(done.resumed_from, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_file_upstream_restarts() {
    let fixture = Fixture::new();
    let old = payload(3 * MIB, 6);
    fixture.publish("disk.img", &old);
    fixture
        .server
        .inject("disk.img", Fault::DropAfter(MIB as u64), Times::Once);
    let no_retries = Client::new(ClientConfig {
        retries: 0,
        ..config()
    })
    .unwrap();
    no_retries
        .download(&fixture.request("disk.img", &old), &Silent)
        .await
        .unwrap_err();

    // A new build is published under the same name; its ETag changes.
    let new = payload(3 * MIB + 1, 7);
    fixture.publish("disk.img", &new);
    let done = client()
        .download(&fixture.request("disk.img", &new), &Silent)
        .await
        .unwrap();

    fixture.assert_delivered("disk.img", &new, &done);
    assert_eq!(done.resumed_from, 0);
    let log = fixture.server.requests_for("disk.img");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].range.as_deref(), Some("bytes=1048576-"));
    assert!(log[1].if_range.is_some());
    assert_eq!(
        log[1].status, 200,
        "a stale If-Range must get the whole file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_503_then_succeeds() {
    let fixture = Fixture::new();
    let bytes = payload(MIB, 8);
    fixture.publish("disk.img", &bytes);
    let unavailable = Fault::Status {
        status: 503,
        retry_after: None,
    };
    fixture
        .server
        .inject("disk.img", unavailable, Times::Next(2));

    let done = client()
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap();

    fixture.assert_delivered("disk.img", &bytes, &done);
    let statuses: Vec<u16> = fixture
        .server
        .requests_for("disk.img")
        .iter()
        .map(|entry| entry.status)
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_retry_after_on_429() {
    let fixture = Fixture::new();
    fixture.publish("SHA256SUMS", b"abc *disk.img\n");
    let too_many = Fault::Status {
        status: 429,
        retry_after: Some("1".into()),
    };
    fixture.server.inject("SHA256SUMS", too_many, Times::Once);

    let started = Instant::now();
    let body = client()
        .get_document(&fixture.server.url_for("SHA256SUMS"))
        .await
        .unwrap();

    assert_eq!(&body[..], b"abc *disk.img\n");
    // The backoff alone would have waited ~10 ms.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = fixture
        .server
        .requests_for("SHA256SUMS")
        .iter()
        .map(|entry| entry.status)
        .collect();
    assert_eq!(statuses, [429, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_retries_with_network_kind() {
    let fixture = Fixture::new();
    let bytes = payload(MIB, 9);
    fixture.publish("disk.img", &bytes);
    let unavailable = Fault::Status {
        status: 503,
        retry_after: None,
    };
    fixture
        .server
        .inject("disk.img", unavailable, Times::Always);

    let error = client()
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Network);
    match &error {
        FetchError::GaveUp {
            url,
            attempts,
            last,
        } => {
            assert_eq!(*url, fixture.server.url_for("disk.img"));
            assert_eq!(*attempts, 4);
            assert!(matches!(**last, FetchError::Status { status: 503, .. }));
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert!(error.to_string().contains("disk.img"));
    assert_eq!(fixture.server.requests_for("disk.img").len(), 4);
    assert!(!fixture.dest("disk.img").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_final_and_optional_documents_are_none() {
    let fixture = Fixture::new();
    let client = client();
    let url = fixture.server.url_for("SHA256SUMS.gpg");

    assert!(client.get_optional_document(&url).await.unwrap().is_none());
    let error = client.get_document(&url).await.unwrap_err();
    assert!(matches!(error, FetchError::Status { status: 404, .. }));
    let download = Download {
        url: url.clone(),
        dest: fixture.dest("SHA256SUMS.gpg"),
        expected_digest: None,
        expected_size: None,
    };
    let error = client.download(&download, &Silent).await.unwrap_err();
    assert!(matches!(error, FetchError::Status { status: 404, .. }));
    assert_eq!(error.kind(), ErrorKind::Network);
    // 404 is the server's final answer: one request each, no retries.
    assert_eq!(fixture.server.requests_for("SHA256SUMS.gpg").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_transfer_is_abandoned_and_retried() {
    let fixture = Fixture::new();
    let bytes = payload(2 * MIB, 10);
    fixture.publish("disk.img", &bytes);
    let stall = Fault::StallAfter {
        bytes: 512 * 1024,
        pause: Duration::from_secs(3),
    };
    fixture.server.inject("disk.img", stall, Times::Once);

    let started = Instant::now();
    let done = client()
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap();

    fixture.assert_delivered("disk.img", &bytes, &done);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the stalled server: {:?}",
        started.elapsed()
    );
    let log = fixture.server.requests_for("disk.img");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].range.as_deref(), Some("bytes=524288-"));
    assert_eq!(log[1].status, 206);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_file_with_matching_digest_transfers_nothing() {
    let fixture = Fixture::new();
    let bytes = payload(MIB, 11);
    fixture.publish("disk.img", &bytes);
    std::fs::write(fixture.dest("disk.img"), &bytes).unwrap();

    let done = client()
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap();

    assert!(done.up_to_date);
    assert_eq!(done.transferred, 0);
    assert_eq!(done.digest, sha256(&bytes));
    assert!(fixture.server.requests_for("disk.img").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_file_with_other_digest_is_replaced() {
    let fixture = Fixture::new();
    let bytes = payload(MIB, 12);
    fixture.publish("disk.img", &bytes);
    std::fs::write(fixture.dest("disk.img"), payload(MIB, 13)).unwrap();

    let done = client()
        .download(&fixture.request("disk.img", &bytes), &Silent)
        .await
        .unwrap();

    assert!(!done.up_to_date);
    fixture.assert_delivered("disk.img", &bytes, &done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_cache_uses_conditional_requests() {
    let fixture = Fixture::new();
    let cache = tempfile::tempdir().unwrap();
    let cached_config = || ClientConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..config()
    };
    fixture.publish("noble/SHA256SUMS", b"first\n");
    let url = fixture.server.url_for("noble/SHA256SUMS");

    let first = Client::new(cached_config()).unwrap();
    assert_eq!(&first.get_document(&url).await.unwrap()[..], b"first\n");
    // A new client (a later run) revalidates what the first one cached.
    let second = Client::new(cached_config()).unwrap();
    assert_eq!(&second.get_document(&url).await.unwrap()[..], b"first\n");
    // Published anew: the validators no longer match.
    fixture.publish("noble/SHA256SUMS", b"second, longer\n");
    assert_eq!(
        &second.get_document(&url).await.unwrap()[..],
        b"second, longer\n"
    );

    let log = fixture.server.requests_for("noble/SHA256SUMS");
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0].if_none_match, None);
    assert_eq!(log[0].status, 200);
    assert!(log[1].if_none_match.is_some());
    assert!(log[1].if_modified_since.is_some());
    assert_eq!(log[1].status, 304);
    assert_eq!(
        log[1].bytes_sent, 0,
        "a 304 carries no body: it came from the cache"
    );
    assert_eq!(log[2].status, 200);
}

#[test]
fn concurrent_downloads_of_same_file_do_not_corrupt() {
    let fixture = Fixture::new();
    let bytes = payload(4 * MIB, 14);
    fixture.publish("disk.img", &bytes);
    // Slow the transfer down so the two downloads overlap in time.
    let pause = Fault::StallAfter {
        bytes: MIB as u64,
        pause: Duration::from_millis(150),
    };
    fixture.server.inject("disk.img", pause, Times::Always);
    let request = fixture.request("disk.img", &bytes);

    // Separate threads, runtimes and clients: as close to two processes as a test gets.
    let results: Vec<Downloaded> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let runtime = tokio::runtime::Runtime::new().unwrap();
                    runtime.block_on(client().download(&request, &Silent))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap().unwrap())
            .collect()
    });

    for done in &results {
        fixture.assert_delivered("disk.img", &bytes, done);
    }
    let fresh = results.iter().filter(|done| !done.up_to_date).count();
    assert_eq!(
        fresh, 1,
        "exactly one download transfers, the other finds it done"
    );
    assert_eq!(fixture.server.requests_for("disk.img").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_is_retried() {
    let fixture = Fixture::new();
    let listing = payload(200_000, 15);
    fixture.publish("streams/v1/index.json", &listing);
    fixture
        .server
        .inject("streams/v1/index.json", Fault::DropAfter(1000), Times::Once);

    let body = client()
        .get_document(&fixture.server.url_for("streams/v1/index.json"))
        .await
        .unwrap();

    assert!(body[..] == listing[..], "document differs");
    let log = fixture.server.requests_for("streams/v1/index.json");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].bytes_sent, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_part_is_finished_when_the_server_answers_416() {
    let fixture = Fixture::new();
    let bytes = payload(2 * MIB, 16);
    fixture.publish("disk.img", &bytes);
    fixture
        .server
        .inject("disk.img", Fault::DropAfter(MIB as u64), Times::Once);
    let no_retries = Client::new(ClientConfig {
        retries: 0,
        ..config()
    })
    .unwrap();
    // Size unknown, so the client cannot tell the part is complete without asking.
    let request = Download {
        expected_size: None,
        ..fixture.request("disk.img", &bytes)
    };
    no_retries.download(&request, &Silent).await.unwrap_err();
    // As if killed between the last byte and the rename.
    let part = with_suffix(&fixture.dest("disk.img"), ".part");
    let mut whole = std::fs::read(&part).unwrap();
    whole.extend_from_slice(&bytes[MIB..]);
    std::fs::write(&part, &whole).unwrap();

    let done = client().download(&request, &Silent).await.unwrap();

    fixture.assert_delivered("disk.img", &bytes, &done);
    assert_eq!(done.transferred, 0);
    assert_eq!(done.resumed_from, bytes.len() as u64);
    let log = fixture.server.requests_for("disk.img");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].status, 416);
}

/// The loopback server itself: the parts of HTTP the other tests rely on without exercising.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_server_serves_head_ranges_and_index_html() {
    let fixture = Fixture::new();
    fixture.publish("noble/index.html", b"<html>listing</html>");
    fixture.publish("noble/disk.img", b"0123456789");
    let http = reqwest::Client::new();

    let listing = http
        .get(fixture.server.url_for("noble/"))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    assert_eq!(&listing.bytes().await.unwrap()[..], b"<html>listing</html>");

    let head = http
        .head(fixture.server.url_for("noble/disk.img"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "10");
    assert!(head.headers().contains_key("etag"));
    assert!(head.headers().contains_key("last-modified"));

    let range = http
        .get(fixture.server.url_for("noble/disk.img"))
        .header("range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.headers()["content-range"], "bytes 2-4/10");
    assert_eq!(&range.bytes().await.unwrap()[..], b"234");

    let past_end = http
        .get(fixture.server.url_for("noble/disk.img"))
        .header("range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(past_end.status(), 416);
    assert_eq!(past_end.headers()["content-range"], "bytes */10");

    let missing = http
        .get(fixture.server.url_for("noble/../../etc/passwd"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let log = fixture.server.log();
    assert_eq!(log[1].method, "HEAD");
    assert_eq!(log[1].bytes_sent, 0);
    assert_eq!(log[2].bytes_sent, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_document_is_refused_without_retries() {
    let fixture = Fixture::new();
    // Sparse: 65 MiB announced without writing them.
    let path = fixture.mirror.path().join("huge.json");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();

    let error = client()
        .get_document(&fixture.server.url_for("huge.json"))
        .await
        .unwrap_err();

    assert!(
        matches!(error, FetchError::TooLarge { size, .. } if size == 65 << 20),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Network);
    assert_eq!(fixture.server.requests_for("huge.json").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_gives_up_with_network_kind() {
    // A port that was just free: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/SHA256SUMS")).unwrap();

    let error = client().get_document(&url).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Network);
    match &error {
        FetchError::GaveUp { attempts, last, .. } => {
            assert_eq!(*attempts, 4);
            assert!(matches!(**last, FetchError::Network { .. }), "{last:?}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

/// Debian publishes SHA-512: the same download path must verify with it, across a resume in a
/// later run (the part is re-hashed with SHA-512), and refuse corrupt bytes as strictly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_download_resumes_in_a_later_run_and_verifies() {
    let fixture = Fixture::new();
    let bytes = payload(3 * MIB, 21);
    fixture.publish("disk.qcow2", &bytes);
    fixture
        .server
        .inject("disk.qcow2", Fault::DropAfter(MIB as u64), Times::Once);
    let request = Download {
        expected_digest: Some(sha512(&bytes)),
        ..fixture.request("disk.qcow2", &bytes)
    };
    let no_retries = Client::new(ClientConfig {
        retries: 0,
        ..config()
    })
    .unwrap();
    no_retries.download(&request, &Silent).await.unwrap_err();

    let done = client().download(&request, &Silent).await.unwrap();

    assert_eq!(done.digest, sha512(&bytes));
    assert_eq!(done.resumed_from, MIB as u64);
    assert!(std::fs::read(fixture.dest("disk.qcow2")).unwrap() == bytes);
    // A second run finds the file by its SHA-512 and transfers nothing.
    fixture.server.clear_log();
    let again = client().download(&request, &Silent).await.unwrap();
    assert!(again.up_to_date);
    assert_eq!(again.digest, sha512(&bytes));
    assert!(fixture.server.requests_for("disk.qcow2").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_mismatch_deletes_part_and_names_the_algorithm() {
    let fixture = Fixture::new();
    let bytes = payload(MIB, 22);
    fixture.publish("disk.raw", &bytes);
    fixture
        .server
        .inject("disk.raw", Fault::CorruptByte(4097), Times::Always);
    let request = Download {
        expected_digest: Some(sha512(&bytes)),
        ..fixture.request("disk.raw", &bytes)
    };

    let error = client().download(&request, &Silent).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Integrity);
    let mut corrupt = bytes.clone();
    corrupt[4097] ^= 0xff;
    match &error {
        FetchError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(**expected, sha512(&bytes));
            assert_eq!(**actual, sha512(&corrupt));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("expected sha512 "), "{message}");
    assert!(message.contains(&sha512(&corrupt).to_hex()), "{message}");
    let dest = fixture.dest("disk.raw");
    assert!(!dest.exists());
    assert!(!with_suffix(&dest, ".part").exists());
    assert!(!with_suffix(&dest, ".part.meta").exists());
}
