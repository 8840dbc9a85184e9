//! The `cloudimg` binary end to end against a loopback mirror: discovery from both sources,
//! verified fetches, every integrity failure, resume after SIGKILL, exit codes.

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::bin::{cloudimg_in, CACHE_DIR};
use crate::common::mirror::{Knobs, Stream};
use crate::common::pgp;
use crate::common::server::{Fault, Times};
use crate::common::tools::{oracles, qemu_img_info};
use crate::require_tools;

use crate::common::site::{
    build_site, cloudimg, file_url_path, json, names, run, sha256_file, shared_site, stderr, Site,
};

const IMAGE: &str = "ubuntu-24.04-server-cloudimg-amd64.img";

/// URL path of the newest released image as discovery resolves it.
fn image_url_path(site: &Site) -> String {
    file_url_path(site, "disk1.img")
}

#[test]
fn help_documents_exit_codes() {
    let output = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for line in [
        "3  integrity failure",
        "4  network or server failure",
        "2  usage error",
    ] {
        assert!(text.contains(line), "--help lacks {line:?}:\n{text}");
    }
}

#[test]
fn list_shows_releases_with_support() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = shared_site();
    let releases = json(&run(site, &["--json", "list"]));
    let noble = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["codename"] == "noble")
        .expect("noble listed");
    assert_eq!(noble["version"], "24.04");
    assert_eq!(noble["supported"], true);
}

#[test]
fn html_and_streams_give_the_same_serials_and_files() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = shared_site();
    for stream in ["released", "daily"] {
        let via = |source: &str| {
            let output = run(
                site,
                &[
                    "--json", "list", "noble", "--stream", stream, "--source", source,
                ],
            );
            let value = json(&output);
            let mut files: Vec<(String, String, Option<String>)> = value["listing"]["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap().to_owned(),
                        f["ftype"].as_str().unwrap_or("").to_owned(),
                        f["sha256"].as_str().map(str::to_owned),
                    )
                })
                .collect();
            files.sort();
            (
                value["serials"].clone(),
                value["listing"]["serial"].clone(),
                files,
            )
        };
        let html = via("html");
        let streams = via("streams");
        assert_eq!(html.0, streams.0, "{stream}: serials differ");
        assert_eq!(html.1, streams.1, "{stream}: newest serial differs");
        let names = |files: &[(String, String, Option<String>)]| {
            files
                .iter()
                .map(|(n, t, _)| (n.clone(), t.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&html.2), names(&streams.2), "{stream}: files differ");
        assert!(!html.2.is_empty());
    }
    let serials = json(&run(site, &["--json", "list", "24.04"]))["serials"].clone();
    assert_eq!(
        serials,
        serde_json::json!(["20241004.1", "20240821"]),
        "newest first"
    );
}

#[test]
fn fetch_verifies_and_publishes_only_the_final_file() {
    let Some([qemu, _mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let output = run(
        site,
        &[
            "--json",
            "fetch",
            "noble",
            "-o",
            out.path().to_str().unwrap(),
        ],
    );
    let result = json(&output);
    let path = out.path().join(IMAGE);
    assert_eq!(result["serial"], "20241004.1");
    assert_eq!(result["sha256"], sha256_file(&path));
    assert_eq!(result["signed_by"], pgp::signing_key().fingerprint());
    // Only the image: its lock is in the cache, not in the output folder.
    assert_eq!(names(out.path()), [IMAGE]);
    // The bytes are a real qcow2 image.
    assert_eq!(qemu_img_info(&qemu, &path, None)["format"], "qcow2");
}

#[test]
fn fetch_by_version_serial_and_daily_stream() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let dir = out.path().to_str().unwrap();
    let old = json(&run(
        site,
        &[
            "--json", "fetch", "24.04", "--serial", "20240821", "-o", dir,
        ],
    ));
    assert_eq!(old["serial"], "20240821");
    // The newest released serial's file has the same name: replacing the older one is said.
    let newest = run(site, &["--json", "fetch", "24.04", "-o", dir]);
    assert_eq!(json(&newest)["serial"], "20241004.1");
    assert!(
        stderr(&newest).contains("replaced a file of the same name"),
        "{}",
        stderr(&newest)
    );
    let output = run(
        site,
        &["--json", "fetch", "noble", "--stream", "daily", "-o", dir],
    );
    assert!(!stderr(&output).contains("replaced"), "{}", stderr(&output));
    let daily = json(&output);
    assert_eq!(daily["serial"], "20241010");
    assert!(out.path().join("noble-server-cloudimg-amd64.img").exists());
}

#[test]
fn second_fetch_transfers_no_image_bytes() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let out = TempDir::new().unwrap();
    let dir = out.path().to_str().unwrap();
    assert!(run(&site, &["fetch", "noble", "-o", dir]).status.success());
    site.server.clear_log();
    let again = run(&site, &["fetch", "noble", "-o", dir]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    let image_requests: Vec<_> = site
        .server
        .log()
        .into_iter()
        .filter(|e| e.path.ends_with(IMAGE))
        .collect();
    assert!(
        image_requests.is_empty(),
        "image requested again: {image_requests:?}"
    );
}

#[test]
fn wrong_checksum_exits_3_names_everything_and_publishes_nothing() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs {
        wrong_sha256_for: Some("amd64.img".into()),
        ..Knobs::default()
    });
    let out = TempDir::new().unwrap();
    // HTML discovery takes the digest from SHA256SUMS alone.
    let output = run(
        &site,
        &[
            "fetch",
            "noble",
            "--source",
            "html",
            "-o",
            out.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let message = stderr(&output);
    for fact in [IMAGE, "http://", "expected", "got"] {
        assert!(message.contains(fact), "message lacks {fact:?}: {message}");
    }
    let left = names(out.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn byte_corrupted_in_transit_exits_3() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let path = image_url_path(&site);
    site.server
        .inject(&path, Fault::CorruptByte(1000), Times::Always);
    let out = TempDir::new().unwrap();
    let output = run(
        &site,
        &["fetch", "noble", "-o", out.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(!out.path().join(IMAGE).exists());
}

#[test]
fn signature_by_unknown_key_exits_3() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs {
        attacker_signs: true,
        ..Knobs::default()
    });
    let out = TempDir::new().unwrap();
    let output = run(
        &site,
        &["fetch", "noble", "-o", out.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains(pgp::attacker_key().fingerprint()));
    assert!(!out.path().join(IMAGE).exists());
}

#[test]
fn missing_signature_exits_3_unless_explicitly_skipped() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs {
        omit_signatures: true,
        ..Knobs::default()
    });
    let out = TempDir::new().unwrap();
    let dir = out.path().to_str().unwrap();
    let refused = run(&site, &["fetch", "noble", "-o", dir]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(!out.path().join(IMAGE).exists());
    let skipped = run(
        &site,
        &["fetch", "noble", "--no-verify-signature", "-o", dir],
    );
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert!(
        stderr(&skipped).contains("--no-verify-signature"),
        "the opt-out is logged"
    );
    assert!(out.path().join(IMAGE).exists());
}

#[test]
fn built_in_keys_reject_a_mirror_signed_by_another_key() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let output = cloudimg_in(out.path())
        .args(["--mirror", site.server.url().as_str(), "--retries", "0"])
        .args(["fetch", "noble", "-o", out.path().to_str().unwrap()])
        .env_remove("CLOUDIMG_KEYRING")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}

#[test]
fn unknown_release_arch_or_kind_is_a_usage_error() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let dir = out.path().to_str().unwrap();
    for args in [
        vec!["fetch", "warty", "-o", dir],
        vec!["fetch", "noble", "--arch", "sparc", "-o", dir],
        vec!["fetch", "noble", "--file", "floppy.img", "-o", dir],
        vec!["fetch", "noble", "--serial", "19990101", "-o", dir],
        vec!["fetch", "noble", "--stream", "weekly"],
    ] {
        let output = run(site, &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn unreachable_mirror_exits_4_after_retries() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new().unwrap();
    let output = cloudimg_in(dir.path())
        .args([
            "--mirror",
            &format!("http://127.0.0.1:{port}"),
            "--retries",
            "1",
        ])
        .args(["list", "noble"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
}

#[test]
fn server_errors_exit_4_after_retries() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let path = image_url_path(&site);
    site.server.inject(
        &path,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Times::Always,
    );
    let out = TempDir::new().unwrap();
    let output = run(
        &site,
        &["fetch", "noble", "-o", out.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert_eq!(
        site.server.requests_for(&path).len(),
        3,
        "first try + 2 retries"
    );
}

#[test]
fn sigkill_mid_download_then_rerun_resumes_with_range() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let path = image_url_path(&site);
    site.server.inject(
        &path,
        Fault::StallAfter {
            bytes: 64 * 1024,
            pause: Duration::from_secs(60),
        },
        Times::Once,
    );
    let out = TempDir::new().unwrap();
    let dir = out.path().to_str().unwrap();
    let mut child = cloudimg(&site, &["fetch", "noble", "-o", dir])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = out.path().join(format!("{IMAGE}.part"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 64 * 1024 {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // kill -9: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.path().join(IMAGE).exists(),
        "nothing published by the killed run"
    );
    site.server.clear_faults();
    site.server.clear_log();
    let rerun = run(&site, &["--json", "fetch", "noble", "-o", dir]);
    let result = json(&rerun);
    let ranged: Vec<_> = site
        .server
        .requests_for(&path)
        .into_iter()
        .filter(|e| e.range.is_some())
        .collect();
    assert!(
        !ranged.is_empty(),
        "the rerun did not resume: {:?}",
        site.server.log()
    );
    assert_eq!(ranged[0].status, 206);
    assert!(result["resumed_from"].as_u64().unwrap() >= 64 * 1024);
    assert_eq!(result["sha256"], sha256_file(&out.path().join(IMAGE)));
    assert!(!part.exists());
}

#[test]
fn concurrent_fetches_into_one_directory_both_succeed() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let dir = out.path().to_str().unwrap();
    // The lock on a destination lives in the cache (<cache>/locks): both runs share one, as
    // one user's runs do.
    let cache = TempDir::new().unwrap();
    let cache = cache.path().to_str().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let args = [
                "--cache-dir",
                cache,
                "fetch",
                "noble",
                "--serial",
                "20240821",
            ];
            cloudimg(site, &args)
                .args(["-o", dir])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let list = json(&run(
        site,
        &["--json", "list", "noble", "--serial", "20240821"],
    ));
    let expected = list["listing"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == IMAGE)
        .unwrap()["sha256"]
        .clone();
    assert_eq!(expected, sha256_file(&out.path().join(IMAGE)));
}

#[test]
fn new_upstream_serial_is_picked_up() {
    require_tools!("qemu-img", "mkfs.ext4");
    let mut site = build_site(Knobs::default());
    site.mirror
        .add_serial(Stream::Released, "20250101")
        .unwrap();
    let out = TempDir::new().unwrap();
    let result = json(&run(
        &site,
        &[
            "--json",
            "fetch",
            "noble",
            "-o",
            out.path().to_str().unwrap(),
        ],
    ));
    assert_eq!(result["serial"], "20250101");
}

#[test]
fn fetch_with_convert_leaves_a_verified_download_and_an_identical_conversion() {
    let Some([qemu, _mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let dir = out.path().to_str().unwrap();
    // `-O` is the old spelling of --convert-options: still accepted, with a warning.
    let output = run(
        site,
        &[
            "--json",
            "fetch",
            "noble",
            "--convert",
            "vmdk",
            "-O",
            "subformat=streamOptimized",
            "-o",
            dir,
        ],
    );
    assert!(
        stderr(&output).contains("-O OPTIONS is deprecated"),
        "{}",
        stderr(&output)
    );
    let result = json(&output);
    let converted = out.path().join("ubuntu-24.04-server-cloudimg-amd64.vmdk");
    assert_eq!(result["converted"], converted.to_str().unwrap());
    let download = out.path().join(IMAGE);
    qemu.run([
        OsStr::new("compare"),
        OsStr::new("-f"),
        OsStr::new("qcow2"),
        OsStr::new("-F"),
        OsStr::new("vmdk"),
        download.as_os_str(),
        converted.as_os_str(),
    ]);
    let info = qemu_img_info(&qemu, &converted, Some("vmdk"));
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
}

#[test]
fn index_documents_are_revalidated_from_the_cache() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let cache = TempDir::new().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    assert!(run(&site, &["--cache-dir", cache_dir, "list", "noble"])
        .status
        .success());
    site.server.clear_log();
    let again = run(&site, &["--cache-dir", cache_dir, "list", "noble"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let log = site.server.log();
    let index: Vec<_> = log
        .iter()
        .filter(|e| e.path.ends_with("index.json"))
        .collect();
    assert!(!index.is_empty());
    assert!(
        index
            .iter()
            .all(|e| e.status == 304 && e.if_none_match.is_some()),
        "not revalidated: {index:?}"
    );
}

#[test]
fn list_prints_bytes_to_a_pipe_and_human_sizes_to_a_terminal() {
    require_tools!("qemu-img", "mkfs.ext4", "script");
    let site = shared_site();
    let file_rows = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|line| !line.starts_with("files of"))
            .skip(1)
            .map(|line| {
                line.split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let piped = run(site, &["list", "noble"]);
    assert!(piped.status.success(), "{}", stderr(&piped));
    let sizes = file_rows(&String::from_utf8_lossy(&piped.stdout));
    assert!(!sizes.is_empty());
    for size in &sizes {
        let digits = size.trim_start_matches('~');
        assert!(
            digits.parse::<u64>().is_ok(),
            "not bytes for a pipe: {size:?}"
        );
    }

    // The same command with stdout on a pseudo-terminal (script(1) makes one).
    let command = format!(
        "{} --mirror {} --keyring {} list noble",
        env!("CARGO_BIN_EXE_cloudimg"),
        site.server.url(),
        site.keyring.display()
    );
    let cache = TempDir::new().unwrap();
    let tty = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("NO_COLOR", "1")
        .env(CACHE_DIR, cache.path())
        .output()
        .unwrap();
    assert!(tty.status.success(), "{}", stderr(&tty));
    let text = String::from_utf8_lossy(&tty.stdout).replace('\r', "");
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("files of"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), sizes.len(), "{text}");
    assert!(
        rows.iter()
            .all(|row| row.contains("iB ") || row.contains(" B ")),
        "not human sizes at a terminal:\n{text}"
    );
}
