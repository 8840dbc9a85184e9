//! HTTPS servers whose certificate a private CA signed (made by the test with openssl): the
//! mirror behind a TLS proxy, and the test Glance behind one. Trusting the CA through
//! `SSL_CERT_FILE`, `--cacert`, `OS_CACERT` or clouds.yaml `cacert` works; trusting nothing
//! fails with the certificate named as the reason; `--insecure` and `verify: false` work and
//! say loudly that nothing was verified.

use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::common::mirror::Knobs;
use crate::common::site::{build_site, stderr, Site};
use crate::common::tls::{TestCa, TlsProxy};
use crate::{require_glance, require_tools};

/// The binary against `mirror` with its own cache, trusting only what the test says: the
/// inherited SSL_CERT_FILE / SSL_CERT_DIR (this machine points them at the system store) are
/// removed unless set again.
fn cloudimg(site: &Site, mirror: &url::Url, cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloudimg"));
    command
        .arg("--mirror")
        .arg(mirror.as_str())
        .arg("--keyring")
        .arg(&site.keyring)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--retries", "0", "--stall-timeout", "5"])
        .env_remove("CLOUDIMG_MIRROR")
        .env_remove("CLOUDIMG_CACERT")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("NO_COLOR", "1");
    command
}

fn listed_noble(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        stderr(output)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("noble"));
}

#[test]
fn mirror_behind_a_private_ca() {
    require_tools!("openssl");
    let site = build_site(Knobs::default());
    let certs = TempDir::new().unwrap();
    let ca = TestCa::create(certs.path());
    let proxy = TlsProxy::start(&ca, &site.server.url());
    let https = proxy.url();
    let cache = TempDir::new().unwrap();
    let run = |extra: &[&str], env: &[(&str, &Path)]| {
        let mut command = cloudimg(&site, &https, cache.path());
        command.args(extra).arg("list");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    };

    // Nothing trusts the CA: a network failure that says why.
    let refused = run(&[], &[]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("certificate"),
        "{}",
        stderr(&refused)
    );
    // SSL_CERT_FILE, as curl and OpenSSL read it.
    listed_noble(&run(&[], &[("SSL_CERT_FILE", &ca.ca_cert)]));
    // SSL_CERT_DIR: a folder holding the CA.
    listed_noble(&run(&[], &[("SSL_CERT_DIR", certs.path())]));
    // --cacert FILE, and its environment variable.
    let cacert = ca.ca_cert.to_str().unwrap();
    listed_noble(&run(&["--cacert", cacert], &[]));
    listed_noble(&run(&[], &[("CLOUDIMG_CACERT", &ca.ca_cert)]));
    // --insecure works and says so.
    let insecure = run(&["--insecure"], &[]);
    listed_noble(&insecure);
    assert!(
        stderr(&insecure).contains("verification is OFF"),
        "{}",
        stderr(&insecure)
    );
    // A --cacert that holds no certificate is the user's mistake, named.
    let junk = certs.path().join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    let bad = run(&["--cacert", junk.to_str().unwrap()], &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("junk.pem"), "{}", stderr(&bad));
}

/// `cloudimg upload` of a small raw image to `glance` (an https URL) with the given environment
/// and working folder; the credentials of the developer's shell are removed.
fn upload(metadata: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloudimg"));
    command
        .args(["--retries", "0", "--json"])
        .args(args)
        .arg(metadata)
        .current_dir(dir)
        .env("HOME", dir)
        .env("NO_COLOR", "1");
    for key in [
        "OS_CLOUD",
        "OS_AUTH_URL",
        "OS_TOKEN",
        "OS_IMAGE_URL",
        "OS_USERNAME",
        "OS_PASSWORD",
        "OS_CACERT",
        "OS_CLIENT_CONFIG_FILE",
        "XDG_CONFIG_HOME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CLOUDIMG_CACERT",
    ] {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn uploaded_id(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        stderr(output)
    );
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    list[0]["id"].as_str().unwrap().to_owned()
}

#[test]
fn glance_behind_a_private_ca() {
    require_tools!("openssl");
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let ca = TestCa::create(dir.path());
    let proxy = TlsProxy::start(&ca, &url::Url::parse(&glance).unwrap());
    let https = proxy.url().to_string();
    let https = https.trim_end_matches('/');
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0x5a; 4096]).unwrap();
    let name = crate::common::glance::unique("tls");
    let metadata = cloudimg::container::glance::ImageMetadata::for_file(
        &raw,
        &name,
        cloudimg::glance::DiskFormat::Raw,
        cloudimg::glance::ContainerFormat::Bare,
        4096,
    )
    .unwrap()
    .write_beside(&raw)
    .unwrap();
    let cleanup = crate::common::glance::Cleanup::new(&glance);
    let token = [("OS_TOKEN", "test-token"), ("OS_IMAGE_URL", https)];

    // Not trusted: refused before anything is sent.
    let refused = upload(&metadata, dir.path(), &["upload"], &token);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    // OS_CACERT, as the OpenStack client reads it.
    let cacert = ca.ca_cert.to_str().unwrap();
    let mut env = token.to_vec();
    env.push(("OS_CACERT", cacert));
    let id = uploaded_id(&upload(&metadata, dir.path(), &["upload"], &env));
    cleanup.track(&id);
    // clouds.yaml `cacert`, and `verify: false` (warned) with secure.yaml holding the token.
    for (tls_line, warned) in [
        (format!("cacert: {cacert}"), false),
        ("verify: false".into(), true),
    ] {
        std::fs::write(
            dir.path().join("clouds.yaml"),
            format!("clouds:\n  ci:\n    image_endpoint_override: {https}\n    {tls_line}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("secure.yaml"),
            "clouds:\n  ci:\n    auth:\n      token: test-token\n",
        )
        .unwrap();
        let output = upload(&metadata, dir.path(), &["upload"], &[("OS_CLOUD", "ci")]);
        assert_eq!(uploaded_id(&output), id, "the same image, found again");
        assert_eq!(
            stderr(&output).contains("verification is OFF"),
            warned,
            "{}",
            stderr(&output)
        );
    }
}
