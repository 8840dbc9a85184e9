//! Small documents from hostile or broken servers: a slow drip meets the document deadline, an
//! oversized or endless body is refused while it arrives (one exit status whatever its size),
//! and a source that offers no releases at all is blamed (exit 4, its URL named), not the user.
//! Peak memory on these cases is measured by `scripts/bench documents`, not here.

use std::process::Output;
use std::time::{Duration, Instant};

use cloudimg::fetch::{Client, ClientConfig, Download, DOCUMENT_LIMIT};
use cloudimg::io::progress::Silent;
use cloudimg::verify::digest::{FileDigest, Sha256Digest};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::common::mirror::Knobs;
use crate::common::server::{Fault, Generated, Server, Times};
use crate::common::site::{build_site, cloudimg, stderr, Site};

/// The released stream's listing of releases (Ubuntu catalog, `releases_dir`).
const RELEASES_PAGE: &str = "/releases/";
/// The released stream's simplestreams products file on the generated mirror.
const PRODUCTS: &str = "/releases/streams/v1/com.ubuntu.cloud:released:download.json";

/// Runs `cloudimg` against the site with its own cache folder.
fn run(site: &Site, cache: &TempDir, args: &[&str]) -> Output {
    cloudimg(site, &["--cache-dir", cache.path().to_str().unwrap()])
        .args(args)
        .output()
        .expect("run cloudimg")
}

fn assert_source_failure(output: &Output, url_path: &str) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert!(message.contains(url_path), "URL not named: {message}");
    assert!(
        output.stdout.is_empty(),
        "printed a result: {:?}",
        output.stdout
    );
}

#[test]
fn slow_drip_listing_meets_the_document_deadline() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    site.server.inject(
        RELEASES_PAGE,
        Fault::Drip(Duration::from_millis(500)),
        Times::Always,
    );
    let cache = TempDir::new().unwrap();
    let started = Instant::now();
    let output = run(
        &site,
        &cache,
        &["--document-timeout", "2", "list", "--source", "html"],
    );
    assert_source_failure(&output, RELEASES_PAGE);
    assert!(stderr(&output).contains("deadline"), "{}", stderr(&output));
    // 2 s deadline, whatever the retries and the 2 s stall timeout would allow.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn document_deadline_is_read_from_the_environment() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    site.server.inject(
        PRODUCTS,
        Fault::Drip(Duration::from_millis(500)),
        Times::Always,
    );
    let cache = TempDir::new().unwrap();
    let started = Instant::now();
    let output = cloudimg(&site, &["--cache-dir", cache.path().to_str().unwrap()])
        .args(["list", "--source", "streams"])
        .env("CLOUDIMG_DOCUMENT_TIMEOUT", "1")
        .output()
        .unwrap();
    assert_source_failure(&output, "released:download.json");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn image_transfers_have_no_document_deadline() {
    let mirror = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let bytes = vec![7u8; 40];
    std::fs::write(mirror.path().join("image.img"), &bytes).unwrap();
    let server = Server::start(mirror.path());
    // 40 bytes 50 ms apart: 2 s, twice the document deadline, never a stall.
    server.inject(
        "image.img",
        Fault::Drip(Duration::from_millis(50)),
        Times::Always,
    );
    let client = Client::new(ClientConfig {
        document_timeout: Duration::from_secs(1),
        stall_timeout: Duration::from_secs(1),
        retries: 0,
        ..ClientConfig::default()
    })
    .unwrap();
    let request = Download {
        url: server.url_for("image.img"),
        dest: out.path().join("image.img"),
        expected_digest: Some(FileDigest::Sha256(Sha256Digest(
            Sha256::digest(&bytes).into(),
        ))),
        expected_size: Some(bytes.len() as u64),
    };
    let started = Instant::now();
    let done = client.download(&request, &Silent).await.unwrap();
    assert!(started.elapsed() > Duration::from_secs(1));
    assert_eq!(done.size, 40);
}

#[tokio::test]
async fn document_fetch_gives_up_at_the_deadline_across_retries() {
    let mirror = TempDir::new().unwrap();
    std::fs::write(mirror.path().join("SHA256SUMS"), [b'x'; 100]).unwrap();
    let server = Server::start(mirror.path());
    server.inject(
        "SHA256SUMS",
        Fault::Drip(Duration::from_millis(100)),
        Times::Always,
    );
    let client = Client::new(ClientConfig {
        document_timeout: Duration::from_millis(700),
        retries: 5,
        ..ClientConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let error = client
        .get_document(&server.url_for("SHA256SUMS"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, cloudimg::fetch::FetchError::DocumentDeadline { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), cloudimg::ErrorKind::Network);
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Every oversized listing is refused the same way, exit 4 naming the URL: just over the limit,
/// 50 MB announced, endless, and one small enough to receive but with 100 000 links.
#[test]
fn oversized_listings_exit_4_whatever_their_size() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let cache = TempDir::new().unwrap();
    let cases = [
        (
            "just over the limit",
            Generated::listing_of_size(DOCUMENT_LIMIT + 1),
        ),
        ("50 MB", Generated::listing_of_size(50_000_000)),
        ("endless", Generated::listing(None)),
        ("100 000 links", Generated::listing(Some(100_000))),
    ];
    for (case, body) in cases {
        site.server.clear_faults();
        site.server
            .inject(RELEASES_PAGE, Fault::Generated(body), Times::Always);
        let output = run(&site, &cache, &["list", "--source", "html"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(4), "{case}: {message}");
        assert!(message.contains(RELEASES_PAGE), "{case}: {message}");
        assert!(output.stdout.is_empty(), "{case}");
    }
}

#[test]
fn oversized_products_file_exits_4() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let cache = TempDir::new().unwrap();
    site.server.inject(
        PRODUCTS,
        Fault::Generated(Generated::listing(None)),
        Times::Always,
    );
    let output = run(&site, &cache, &["list", "--source", "streams"]);
    assert_source_failure(&output, "released:download.json");
}

fn page(text: &str) -> Fault {
    Fault::Generated(Generated {
        head: text.to_owned(),
        row: String::new(),
        rows: Some(0),
        tail: String::new(),
    })
}

#[test]
fn maintenance_page_is_the_sources_fault_not_the_users() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let cache = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let out = out.path().to_str().unwrap();
    for body in [
        "",
        "<html><body><h1>Down for maintenance</h1></body></html>",
    ] {
        site.server.clear_faults();
        site.server.inject(RELEASES_PAGE, page(body), Times::Always);
        for args in [
            &["list", "--source", "html"][..],
            &["list", "noble", "--source", "html"],
            &["fetch", "noble", "--source", "html", "-o", out],
        ] {
            let output = run(&site, &cache, args);
            assert_source_failure(&output, RELEASES_PAGE);
            assert!(
                stderr(&output).contains("no releases"),
                "{}",
                stderr(&output)
            );
        }
    }
}

#[test]
fn empty_products_file_is_the_sources_fault() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let cache = TempDir::new().unwrap();
    let empty = r#"{"content_id": "com.ubuntu.cloud:released:download",
        "datatype": "image-downloads", "format": "products:1.0", "products": {}}"#;
    site.server.inject(PRODUCTS, page(empty), Times::Always);
    for args in [
        &["list", "--source", "streams"][..],
        &["list", "noble", "--source", "streams"],
    ] {
        let output = run(&site, &cache, args);
        assert_source_failure(&output, "released:download.json");
    }
}

// Network feedback: what a user sees while the network misbehaves.

#[test]
fn each_retry_is_said_and_the_final_error_names_the_url_once() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let status = Fault::Status {
        status: 503,
        retry_after: Some("0".into()),
    };
    site.server.inject(RELEASES_PAGE, status, Times::Always);
    let cache = TempDir::new().unwrap();
    // --retries 2 (the site's default arguments): three attempts.
    let output = run(&site, &cache, &["list", "--source", "html"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    for attempt in [
        "attempt 1 of 3 failed (HTTP 503); retrying in",
        "attempt 2 of 3 failed",
    ] {
        assert!(
            message.contains(attempt),
            "no {attempt:?} at the default level: {message}"
        );
    }
    let url = site.server.url_for(RELEASES_PAGE).to_string();
    let last = message.lines().last().unwrap();
    assert!(last.contains("ERROR"), "{message}");
    assert_eq!(last.matches(&url).count(), 1, "{last}");
    assert!(last.contains("gave up after 3 attempts"), "{last}");
    // Not a terminal: every line starts with a timestamp (2026-12-06T04:36:01.693772Z).
    for line in message.lines() {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        assert!(
            stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T'),
            "untimed log line: {line}"
        );
    }
}

#[test]
fn a_dead_proxy_is_named_as_the_proxy() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let cache = TempDir::new().unwrap();
    let output = cloudimg(&site, &["--cache-dir", cache.path().to_str().unwrap()])
        .args(["list", "--source", "html"])
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("NO_PROXY", "")
        .env("no_proxy", "")
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert!(
        message.contains(&format!("cannot reach the proxy {proxy}")),
        "{message}"
    );
}
