//! `cloudimg mirror`: the loopback upstream copied into a directory, that directory served by a
//! second server, and cloudimg (list, fetch, sync) pointed at it as `--mirror`.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::bin::cloudimg_in;
use crate::common::mirror::{Knobs, Stream};
use crate::common::pgp;
use crate::common::server::{Fault, Server, Times};
use crate::common::site::{
    build_site, build_site_for, outcome, run, sha256_file, stderr, summary, Site, DAILY, RELEASED,
};
use crate::require_tools;

const IMAGE: &str = "ubuntu-24.04-server-cloudimg-amd64.img";
const NOBLE: &str = "name = \"noble\"\nrelease = \"noble\"";
const NOBLE_DAILY: &str = "name = \"noble-daily\"\nrelease = \"noble\"\nstream = \"daily\"";

/// A user catalog in `dir` with `images` as `[[image]]` bodies.
fn write_catalog(dir: &Path, keep: usize, images: &[&str]) -> PathBuf {
    let mut text = format!("output = \"published\"\nkeep = {keep}\n");
    for image in images {
        text.push_str("\n[[image]]\n");
        text.push_str(image);
        text.push('\n');
    }
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `cloudimg --json mirror CATALOG DIR` against the site's server as upstream.
fn mirror(site: &Site, catalog: &Path, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--json",
        "mirror",
        catalog.to_str().unwrap(),
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(site, &args)
}

/// cloudimg reading `mirror` (the served tree), trusting the test key.
fn against(site: &Site, mirror: &Server, args: &[&str]) -> Output {
    cloudimg_in(site._dir.path())
        .arg("--mirror")
        .arg(mirror.url().as_str())
        .arg("--keyring")
        .arg(&site.keyring)
        .args(["--retries", "1", "--stall-timeout", "2", "--json"])
        .args(args)
        .env_remove("CLOUDIMG_MIRROR")
        .env_remove("CLOUDIMG_KEYRING")
        .env("NO_COLOR", "1")
        .output()
        .expect("run cloudimg")
}

fn ok_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "cloudimg failed: {}",
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// `list RELEASE` serials on a server, by one source.
fn serials(site: &Site, server: &Server, release: &str, extra: &[&str]) -> Value {
    let mut args = vec!["list", release];
    args.extend_from_slice(extra);
    ok_json(&against(site, server, &args))["serials"].clone()
}

/// Image bytes the server sent.
fn image_bytes_sent(server: &Server) -> u64 {
    server
        .log()
        .iter()
        .filter(|e| {
            e.path.ends_with(".img") || e.path.ends_with(".tar.gz") || e.path.ends_with("-generic")
        })
        .map(|e| e.bytes_sent)
        .sum()
}

/// Files under `dir` (relative, sorted), symlinks not followed, hidden work area left out.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".cloudimg-mirror") {
                continue;
            }
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every file of `tree` with its modification time.
fn stamps(dir: &Path) -> Vec<(String, std::time::SystemTime)> {
    tree(dir)
        .into_iter()
        .map(|rel| {
            let modified = std::fs::symlink_metadata(dir.join(&rel))
                .unwrap()
                .modified()
                .unwrap();
            (rel, modified)
        })
        .collect()
}

#[test]
fn the_mirrored_tree_serves_list_fetch_and_sync_like_upstream() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let work = TempDir::new().unwrap();
    let catalog = write_catalog(
        work.path(),
        2,
        &[NOBLE, &format!("{NOBLE_DAILY}\nkeep = 1")],
    );
    let dir = work.path().join("tree");
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = summary(&output);
    assert_eq!(
        outcome(&report, "noble")["serials"],
        serde_json::json!([RELEASED[1], RELEASED[0]])
    );
    assert_eq!(
        outcome(&report, "noble-daily")["serials"],
        serde_json::json!(DAILY)
    );

    // Checksum files and signatures are upstream's bytes, where upstream has them.
    let upstream = site.mirror.root();
    for serial in RELEASED {
        for name in ["SHA256SUMS", "SHA256SUMS.gpg", "MD5SUMS", "MD5SUMS.gpg"] {
            let rel = format!("releases/24.04/release-{serial}/{name}");
            assert_eq!(
                std::fs::read(dir.join(&rel)).unwrap(),
                std::fs::read(upstream.join(&rel)).unwrap(),
                "{rel}"
            );
        }
        let rel = format!("releases/24.04/release-{serial}/{IMAGE}");
        assert_eq!(
            sha256_file(&dir.join(&rel)),
            sha256_file(&upstream.join(&rel))
        );
    }
    // Only what the catalog asked for: no manifests, no unpacked/ for a qcow2 entry.
    let files = tree(&dir);
    assert!(!files.iter().any(|f| f.ends_with(".manifest")), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("unpacked")), "{files:?}");

    let served = Server::start(&dir);
    let upstream_server = &site.server;
    for source in ["streams", "html"] {
        assert_eq!(
            serials(&site, &served, "noble", &["--source", source]),
            serials(&site, upstream_server, "noble", &["--source", source]),
            "{source}"
        );
        assert_eq!(
            serials(
                &site,
                &served,
                "noble",
                &["--source", source, "--stream", "daily"]
            ),
            serde_json::json!(DAILY),
            "{source}"
        );
        let releases = ok_json(&against(&site, &served, &["list", "--source", source]));
        assert_eq!(releases[0]["codename"], "noble", "{source}: {releases}");
        assert_eq!(releases[0]["version"], "24.04", "{source}: {releases}");

        let out = TempDir::new().unwrap();
        let fetched = ok_json(&against(
            &site,
            &served,
            &[
                "fetch",
                "noble",
                "--source",
                source,
                "-o",
                out.path().to_str().unwrap(),
            ],
        ));
        assert_eq!(fetched["serial"], RELEASED[1]);
        assert_eq!(fetched["signed_by"], pgp::signing_key().fingerprint());
        assert_eq!(
            fetched["sha256"],
            sha256_file(&upstream.join(format!("releases/24.04/release-{}/{IMAGE}", RELEASED[1])))
        );
    }
    // The aliases point at the newest serials.
    assert_eq!(
        std::fs::read_link(dir.join("releases/24.04/release")).unwrap(),
        PathBuf::from(format!("release-{}", RELEASED[1]))
    );
    assert_eq!(
        std::fs::read_link(dir.join("noble/current")).unwrap(),
        PathBuf::from(DAILY[0])
    );

    // sync, the air-gapped lab's consumer, publishes from the mirror without upstream.
    upstream_server.clear_log();
    let output = against(
        &site,
        &served,
        &["sync", catalog.to_str().unwrap(), "--only", "noble"],
    );
    let report = ok_json(&output);
    assert_eq!(outcome(&report, "noble")["outcome"], "published");
    assert_eq!(outcome(&report, "noble")["serial"], RELEASED[1]);
    assert_eq!(upstream_server.log(), []);
}

#[test]
fn a_rerun_transfers_no_image_bytes_and_changes_nothing() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let work = TempDir::new().unwrap();
    let catalog = write_catalog(work.path(), 2, &[NOBLE]);
    let dir = work.path().join("tree");
    let first = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(image_bytes_sent(&site.server) > 0);
    let before = stamps(&dir);
    site.server.clear_log();
    let second = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(image_bytes_sent(&site.server), 0);
    let report = summary(&second);
    let files = outcome(&report, "noble")["files"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f["up_to_date"] == true), "{files:?}");
    // Not even rewritten: a copy of the tree to the lab side has nothing to do.
    assert_eq!(stamps(&dir), before);
}

#[test]
fn a_new_upstream_serial_with_keep_one_replaces_the_old_everywhere() {
    require_tools!("qemu-img", "mkfs.ext4");
    let mut site = build_site(Knobs::default());
    let work = TempDir::new().unwrap();
    let catalog = write_catalog(work.path(), 1, &[NOBLE]);
    let dir = work.path().join("tree");
    let first = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(dir
        .join(format!("releases/24.04/release-{}", RELEASED[1]))
        .is_dir());
    assert!(!dir
        .join(format!("releases/24.04/release-{}", RELEASED[0]))
        .exists());

    site.mirror
        .add_serial(Stream::Released, "20241105")
        .unwrap();
    let second = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let report = summary(&second);
    assert_eq!(
        outcome(&report, "noble")["serials"],
        serde_json::json!(["20241105"])
    );
    assert_eq!(
        outcome(&report, "noble")["pruned"],
        serde_json::json!([RELEASED[1]])
    );
    assert!(!dir
        .join(format!("releases/24.04/release-{}", RELEASED[1]))
        .exists());
    assert_eq!(
        std::fs::read_link(dir.join("releases/24.04/release")).unwrap(),
        PathBuf::from("release-20241105")
    );
    let products = std::fs::read_to_string(
        dir.join("releases/streams/v1/com.ubuntu.cloud:released:download.json"),
    )
    .unwrap();
    assert!(!products.contains(RELEASED[1]), "{products}");
    assert!(!products.contains("manifest"), "{products}");

    let served = Server::start(&dir);
    for source in ["streams", "html"] {
        assert_eq!(
            serials(&site, &served, "noble", &["--source", source]),
            serde_json::json!(["20241105"]),
            "{source}"
        );
    }
    let page = std::fs::read_to_string(dir.join("releases/24.04/index.html")).unwrap();
    assert!(!page.contains(RELEASED[1]), "{page}");
}

#[test]
fn ami_entries_carry_the_tarball_and_the_signed_unpacked_folder() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs {
        tarballs: true,
        ..Knobs::default()
    });
    let work = TempDir::new().unwrap();
    let ami = "name = \"noble-ami\"\nrelease = \"noble\"\ndisk_format = \"ami\"\n\
               container_format = \"ami\"";
    let catalog = write_catalog(work.path(), 1, &[ami]);
    let dir = work.path().join("tree");
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let serial = format!("releases/24.04/release-{}", RELEASED[1]);
    for rel in [
        "ubuntu-24.04-server-cloudimg-amd64.tar.gz",
        "unpacked/ubuntu-24.04-server-cloudimg-amd64-vmlinuz-generic",
        "unpacked/ubuntu-24.04-server-cloudimg-amd64-initrd-generic",
        "unpacked/SHA256SUMS",
        "unpacked/SHA256SUMS.gpg",
    ] {
        let rel = format!("{serial}/{rel}");
        assert_eq!(
            std::fs::read(dir.join(&rel)).unwrap(),
            std::fs::read(site.mirror.root().join(&rel)).unwrap(),
            "{rel}"
        );
    }
    // prepare can build the aki/ari/ami set from the mirror alone.
    let served = Server::start(&dir);
    let out = TempDir::new().unwrap();
    let prepared = against(
        &site,
        &served,
        &[
            "prepare",
            "noble",
            "--disk-format",
            "ami",
            "--container-format",
            "ami",
            "-o",
            out.path().to_str().unwrap(),
        ],
    );
    assert!(prepared.status.success(), "{}", stderr(&prepared));
}

#[test]
fn a_bad_signature_leaves_nothing_in_the_tree_and_other_entries_go_on() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs {
        attacker_signs: true,
        ..Knobs::default()
    });
    let work = TempDir::new().unwrap();
    let unknown = "name = \"plucky\"\nrelease = \"plucky\"";
    let catalog = write_catalog(work.path(), 1, &[NOBLE, unknown]);
    let dir = work.path().join("tree");
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let report = summary(&output);
    assert_eq!(outcome(&report, "noble")["outcome"], "failed");
    assert_eq!(outcome(&report, "plucky")["outcome"], "failed");
    let files = tree(&dir);
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with(".img") || f.contains("SHA256SUMS")),
        "{files:?}"
    );
    // With the check skipped the bytes come in, signature included, for clients to judge.
    let output = mirror(
        &site,
        &catalog,
        &dir,
        &["--only", "noble", "--no-verify-signature"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(dir
        .join(format!(
            "releases/24.04/release-{}/SHA256SUMS.gpg",
            RELEASED[1]
        ))
        .is_file());
}

#[test]
fn a_corrupt_older_serial_fails_the_entry_but_the_newest_is_served() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let work = TempDir::new().unwrap();
    let catalog = write_catalog(work.path(), 2, &[NOBLE]);
    let dir = work.path().join("tree");
    let older = format!(
        "/releases/server/releases/noble/release-{}/{IMAGE}",
        RELEASED[0]
    );
    site.server
        .inject(&older, Fault::CorruptByte(4096), Times::Always);
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert_eq!(outcome(&summary(&output), "noble")["outcome"], "failed");
    assert!(!dir
        .join(format!("releases/24.04/release-{}", RELEASED[0]))
        .exists());
    let served = Server::start(&dir);
    for source in ["streams", "html"] {
        assert_eq!(
            serials(&site, &served, "noble", &["--source", source]),
            serde_json::json!([RELEASED[1]]),
            "{source}"
        );
    }
    // Once upstream serves good bytes again, the next run completes the set.
    site.server.clear_faults();
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        serials(&site, &served, "noble", &["--source", "streams"]),
        serde_json::json!([RELEASED[1], RELEASED[0]])
    );
}

#[test]
fn a_file_another_entry_keeps_survives_retention_until_that_entry_is_gone() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let work = TempDir::new().unwrap();
    // Both entries keep the same upstream disk1.img; only the OVA one keeps two serials.
    let ova = "name = \"noble-ova\"\nrelease = \"lts\"\ndisk_format = \"vmdk\"\n\
               container_format = \"ova\"\nkeep = 2";
    let catalog = write_catalog(work.path(), 1, &[NOBLE, ova]);
    let dir = work.path().join("tree");
    let older = dir.join(format!("releases/24.04/release-{}/{IMAGE}", RELEASED[0]));
    for extra in [&[][..], &["--only", "noble"][..]] {
        let output = mirror(&site, &catalog, &dir, extra);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(
            outcome(&summary(&output), "noble")["pruned"],
            serde_json::json!([]),
            "{extra:?}"
        );
        assert!(older.is_file(), "{extra:?}");
    }
    // Without the OVA entry nothing keeps the older serial.
    let catalog = write_catalog(work.path(), 1, &[NOBLE]);
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!older.exists());
    assert!(!dir
        .join(format!("releases/24.04/release-{}", RELEASED[0]))
        .exists());
    let served = Server::start(&dir);
    for source in ["streams", "html"] {
        assert_eq!(
            serials(&site, &served, "noble", &["--source", source]),
            serde_json::json!([RELEASED[1]]),
            "{source}"
        );
    }
}

#[test]
fn a_second_run_on_the_same_tree_exits_six_and_touches_nothing() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site(Knobs::default());
    let work = TempDir::new().unwrap();
    let catalog = write_catalog(work.path(), 1, &[NOBLE]);
    let dir = work.path().join("tree");
    std::fs::create_dir_all(&dir).unwrap();
    let held = std::fs::File::create(dir.join(".cloudimg-mirror.lock")).unwrap();
    held.lock().unwrap();
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert_eq!(tree(&dir), Vec::<String>::new());
    drop(held);
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn a_debian_mirror_round_trips_with_sha512_and_no_signature() {
    use crate::common::debian_mirror::{
        sha512_file, Build, DebianMirror, DebianMirrorBuilder, Release, Stream,
    };
    require_tools!("qemu-img", "mkfs.ext4");
    let work = TempDir::new().unwrap();
    let upstream = DebianMirrorBuilder::new(work.path().join("upstream"))
        .build_of(Release::BOOKWORM, Stream::Released, "20240612-950")
        .build_of(Release::BOOKWORM, Stream::Released, "20240717-1000")
        .arches(&["amd64"])
        .variants(&["genericcloud", "nocloud"])
        .build()
        .unwrap();
    let upstream_server = Server::start(upstream.root());
    let catalog = work.path().join("lab.toml");
    std::fs::write(
        &catalog,
        format!(
            "output = \"published\"\nkeep = 1\n\n[mirrors]\ndebian = \"{}\"\n\n[[image]]\n\
             name = \"bookworm\"\nsource = \"debian\"\nrelease = \"12\"\n",
            upstream_server.url()
        ),
    )
    .unwrap();
    let dir = work.path().join("tree");
    let debian = |args: &[&str]| {
        cloudimg_in(work.path())
            .args(["--json", "--retries", "1", "--stall-timeout", "2"])
            .args(args)
            .env_remove("CLOUDIMG_MIRROR")
            .env_remove("CLOUDIMG_CATALOG")
            .env_remove("CLOUDIMG_KEYRING")
            .output()
            .unwrap()
    };
    // The catalog's [mirrors] names the upstream: no --mirror.
    let output = debian(&["mirror", catalog.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let newest = Build {
        release: Release::BOOKWORM,
        stream: Stream::Released,
        serial: "20240717-1000",
    };
    let sums = format!("{}/SHA512SUMS", DebianMirror::build_dir(&newest));
    assert_eq!(
        std::fs::read(dir.join(&sums)).unwrap(),
        std::fs::read(upstream.root().join(&sums)).unwrap()
    );
    let image = DebianMirror::file_path(&newest, "genericcloud", "amd64", "qcow2");
    assert_eq!(
        sha512_file(&dir.join(&image)).unwrap(),
        sha512_file(&upstream.root().join(&image)).unwrap()
    );
    // Only the catalog's default kind.
    let nocloud = DebianMirror::file_path(&newest, "nocloud", "amd64", "qcow2");
    assert!(!dir.join(nocloud).exists());

    let served = Server::start(&dir);
    let url = served.url();
    let listed = ok_json(&debian(&[
        "--catalog",
        "debian",
        "--mirror",
        url.as_str(),
        "list",
        "12",
    ]));
    assert_eq!(listed["serials"], serde_json::json!(["20240717-1000"]));
    let out = TempDir::new().unwrap();
    let fetched = ok_json(&debian(&[
        "--catalog",
        "debian",
        "--mirror",
        url.as_str(),
        "fetch",
        "12",
        "--file",
        "genericcloud.qcow2",
        "-o",
        out.path().to_str().unwrap(),
    ]));
    assert_eq!(
        fetched["sha512"],
        sha512_file(&upstream.root().join(&image)).unwrap()
    );
}

#[test]
fn a_mirror_killed_mid_way_leaves_a_servable_tree() {
    require_tools!("qemu-img", "mkfs.ext4");
    let mut site = build_site(Knobs::default());
    let work = TempDir::new().unwrap();
    let catalog = write_catalog(work.path(), 2, &[NOBLE]);
    let dir = work.path().join("tree");
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let before = tree(&dir);

    // A new upstream serial whose image stalls after 64 KiB: the run is killed meanwhile.
    let newer = "20250101";
    site.mirror.add_serial(Stream::Released, newer).unwrap();
    let image = crate::common::site::file_url_path(&site, "disk1.img");
    assert!(image.contains(newer), "{image}");
    site.server.inject(
        &image,
        Fault::StallAfter {
            bytes: 64 * 1024,
            pause: std::time::Duration::from_secs(60),
        },
        Times::Once,
    );
    let mut args = vec!["mirror", catalog.to_str().unwrap(), dir.to_str().unwrap()];
    args.push("-q");
    let mut child = crate::common::site::cloudimg(&site, &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !site
        .server
        .requests_for(&image)
        .iter()
        .any(|e| e.bytes_sent >= 64 * 1024)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The tree is what it was: nothing partial under a visible name, and it serves the serials
    // it had.
    assert_eq!(tree(&dir), before);
    let served = Server::start(&dir);
    for source in ["streams", "html"] {
        assert_eq!(
            serials(&site, &served, "noble", &["--source", source]),
            serde_json::json!([RELEASED[1], RELEASED[0]]),
            "{source}"
        );
    }
    let out = TempDir::new().unwrap();
    let fetched = ok_json(&against(
        &site,
        &served,
        &["fetch", "noble", "-o", out.path().to_str().unwrap()],
    ));
    assert_eq!(fetched["serial"], RELEASED[1]);

    // The rerun finishes the new serial.
    site.server.clear_faults();
    let output = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        outcome(&summary(&output), "noble")["serials"],
        serde_json::json!([newer, RELEASED[1]])
    );
    assert_eq!(
        serials(&site, &served, "noble", &["--source", "streams"]),
        serde_json::json!([newer, RELEASED[1]])
    );
}

#[test]
fn dry_run_names_serials_fetches_and_prunes_and_writes_nothing() {
    require_tools!("qemu-img", "mkfs.ext4");
    let mut site = build_site(Knobs::default());
    let work = TempDir::new().unwrap();
    let catalog = write_catalog(work.path(), 1, &[NOBLE]);
    let dir = work.path().join("tree");

    let planned = mirror(&site, &catalog, &dir, &["--dry-run"]);
    assert_eq!(planned.status.code(), Some(0), "{}", stderr(&planned));
    let report = summary(&planned);
    let noble = outcome(&report, "noble");
    assert_eq!(noble["outcome"], "would-mirror", "{report}");
    assert_eq!(noble["serials"], serde_json::json!([RELEASED[1]]));
    assert_eq!(noble["present"], 0);
    let fetch = noble["would_fetch"].as_array().unwrap();
    assert_eq!(fetch.len(), 1, "{report}");
    let path = fetch[0]["path"].as_str().unwrap();
    assert!(path.ends_with(IMAGE), "{path}");
    assert!(!dir.exists(), "a dry run made the tree");
    assert_eq!(image_bytes_sent(&site.server), 0);

    // The real run fetches exactly that file.
    let first = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(dir.join(path).is_file(), "{path}");

    site.mirror
        .add_serial(Stream::Released, "20241105")
        .unwrap();
    let before = stamps(&dir);
    site.server.clear_log();
    let planned = mirror(&site, &catalog, &dir, &["--dry-run"]);
    assert_eq!(planned.status.code(), Some(0), "{}", stderr(&planned));
    let report = summary(&planned);
    let noble = outcome(&report, "noble");
    assert_eq!(noble["serials"], serde_json::json!(["20241105"]));
    assert_eq!(noble["would_fetch"].as_array().unwrap().len(), 1);
    assert_eq!(noble["would_prune"], serde_json::json!([RELEASED[1]]));
    assert_eq!(stamps(&dir), before, "a dry run changed the tree");
    assert_eq!(image_bytes_sent(&site.server), 0);
}

#[test]
fn an_entry_naming_two_architectures_mirrors_both() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = build_site_for(Knobs::default(), &["amd64", "arm64"], &DAILY);
    let work = TempDir::new().unwrap();
    let entry = "name = \"noble-cd\"\nrelease = \"noble\"\narch = [\"amd64\", \"arm64\"]\n\
                 container_format = \"containerdisk\"";
    let catalog = write_catalog(work.path(), 1, &[entry]);
    let dir = work.path().join("tree");
    let images = |report: &Value, key: &str| -> Vec<String> {
        let noble = outcome(report, "noble-cd");
        let mut names: Vec<String> = noble[key]
            .as_array()
            .unwrap_or_else(|| panic!("{report}"))
            .iter()
            .map(|f| {
                f["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .filter(|name| name.ends_with(".img"))
            .collect();
        names.sort();
        names
    };
    let both = [
        "ubuntu-24.04-server-cloudimg-amd64.img",
        "ubuntu-24.04-server-cloudimg-arm64.img",
    ];

    let planned = mirror(&site, &catalog, &dir, &["--dry-run"]);
    assert_eq!(planned.status.code(), Some(0), "{}", stderr(&planned));
    assert_eq!(images(&summary(&planned), "would_fetch"), both);

    let done = mirror(&site, &catalog, &dir, &[]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let report = summary(&done);
    assert_eq!(
        outcome(&report, "noble-cd")["outcome"],
        "mirrored",
        "{report}"
    );
    assert_eq!(images(&report, "files"), both);
    for name in both {
        let arch = if name.contains("amd64") {
            "amd64"
        } else {
            "arm64"
        };
        let upstream = site.released_image(arch, RELEASED[1]);
        let copy = dir
            .join("releases/24.04")
            .join(format!("release-{}", RELEASED[1]))
            .join(name);
        assert_eq!(sha256_file(&copy), sha256_file(&upstream), "{name}");
    }
}
