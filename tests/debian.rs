//! The `cloudimg` binary with `--catalog debian` against a loopback mirror laid out like
//! cloud.debian.org: declared releases over table listings, dated builds ordered by counter,
//! SHA-512 verification, the unpublished signature said plainly, `latest`, tar.xz → convert.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::bin::cloudimg_in;
use crate::common::debian_mirror::{
    sha512_file, Build, DebianMirror, DebianMirrorBuilder, Release, Stream,
};
use crate::common::server::Server;
use crate::common::tools::{names, oracles, qemu_img_compare, qemu_img_info};
use crate::require_tools;

/// Same day twice: the counter, not the text, says which is newer (`1000` after `999`).
const BOOKWORM_BUILDS: [&str; 3] = ["20240612-950", "20240717-999", "20240717-1000"];
const NEWEST: &str = "20240717-1000";

struct Site {
    _dir: TempDir,
    mirror: DebianMirror,
    server: Server,
}

fn build_site(builder: impl FnOnce(DebianMirrorBuilder) -> DebianMirrorBuilder) -> Site {
    let dir = crate::common::scratch::tempdir();
    let mirror = builder(DebianMirrorBuilder::new(dir.path().join("mirror")))
        .build()
        .expect("debian mirror");
    let server = Server::start(mirror.root());
    Site {
        _dir: dir,
        mirror,
        server,
    }
}

/// bookworm (three release builds, one daily), trixie (one release build), sid (daily only);
/// amd64 and arm64; genericcloud, nocloud and ec2.
fn shared_site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        build_site(|mut builder| {
            for serial in BOOKWORM_BUILDS {
                builder = builder.build_of(Release::BOOKWORM, Stream::Released, serial);
            }
            builder
                .build_of(Release::BOOKWORM, Stream::Daily, "20240720-1815")
                .build_of(Release::TRIXIE, Stream::Released, "20250811-2185")
                .build_of(Release::SID, Stream::Daily, "20250812-2190")
                .arches(&["amd64", "arm64"])
                .variants(&["genericcloud", "nocloud", "ec2"])
        })
    })
}

/// The binary on the site's mirror, the source chosen by `CLOUDIMG_CATALOG` (see
/// [`cloudimg`] for the option).
fn cloudimg_from_env(site: &Site, catalog: &str, args: &[&str]) -> Command {
    let mut command = cloudimg_in(site._dir.path());
    command
        .arg("--mirror")
        .arg(site.server.url().as_str())
        .args(["--retries", "1", "--stall-timeout", "2"])
        .args(args)
        .env_remove("CLOUDIMG_MIRROR")
        .env_remove("CLOUDIMG_KEYRING")
        .env("CLOUDIMG_CATALOG", catalog)
        .env("NO_COLOR", "1");
    command
}

fn cloudimg(site: &Site, args: &[&str]) -> Command {
    let mut command = cloudimg_in(site._dir.path());
    command
        .args(["--catalog", "debian", "--mirror"])
        .arg(site.server.url().as_str())
        .args(["--retries", "1", "--stall-timeout", "2"])
        .args(args)
        .env_remove("CLOUDIMG_MIRROR")
        .env_remove("CLOUDIMG_KEYRING")
        .env_remove("CLOUDIMG_CATALOG")
        .env("NO_COLOR", "1");
    command
}

fn run(site: &Site, args: &[&str]) -> Output {
    cloudimg(site, args).output().expect("run cloudimg")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "cloudimg failed: {}",
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn bookworm(serial: &'static str) -> Build {
    Build {
        release: Release::BOOKWORM,
        stream: Stream::Released,
        serial,
    }
}

fn codenames(releases: &Value) -> Vec<String> {
    releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["codename"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn list_gives_the_catalogs_releases_that_the_mirror_has() {
    require_tools!("qemu-img", "mkfs.ext4", "tar", "xz");
    let site = shared_site();
    let released = json(&run(site, &["--json", "list"]));
    // bullseye is in the catalog but not on this mirror; sid and forky have no release builds.
    assert_eq!(codenames(&released), ["bookworm", "trixie"]);
    assert_eq!(released[0]["version"], "12");
    assert_eq!(released[0]["title"], "Debian 12 (bookworm)");
    let daily = json(&run(site, &["--json", "list", "--stream", "daily"]));
    assert_eq!(codenames(&daily), ["bookworm", "sid"]);
    let text = run(site, &["list"]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(String::from_utf8_lossy(&text.stdout).contains("trixie"));
}

#[test]
fn list_of_a_release_orders_builds_by_counter_and_names_debian_kinds() {
    require_tools!("qemu-img", "mkfs.ext4", "tar", "xz");
    let site = shared_site();
    let value = json(&run(site, &["--json", "list", "bookworm"]));
    assert_eq!(
        value["serials"],
        serde_json::json!(["20240717-1000", "20240717-999", "20240612-950"]),
        "newest first, latest/ not a serial"
    );
    let listing = &value["listing"];
    assert_eq!(listing["serial"], NEWEST);
    let files = listing["files"].as_array().unwrap();
    let mut kinds: Vec<&str> = files.iter().map(|f| f["ftype"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ec2.json",
            "ec2.tar.xz",
            "genericcloud.json",
            "genericcloud.qcow2",
            "genericcloud.raw",
            "genericcloud.tar.xz",
            "nocloud.json",
            "nocloud.qcow2",
            "nocloud.raw",
            "nocloud.tar.xz",
        ]
    );
    let qcow2 = files
        .iter()
        .find(|f| f["ftype"] == "genericcloud.qcow2")
        .unwrap();
    assert_eq!(
        qcow2["name"],
        format!("debian-12-genericcloud-amd64-{NEWEST}.qcow2")
    );
    let on_disk = site.mirror.root().join(DebianMirror::file_path(
        &bookworm(NEWEST),
        "genericcloud",
        "amd64",
        "qcow2",
    ));
    assert_eq!(qcow2["sha512"], sha512_file(&on_disk).unwrap());
    assert!(qcow2["sha256"].is_null());
    // The listing's rounded size was read from the table.
    assert!(qcow2["size"].as_u64().unwrap() > 0);
    assert!(listing["signature_url"].is_null());
    assert!(listing["sums_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("bookworm/{NEWEST}/SHA512SUMS")));
    // Glance arch names and versions work too.
    let arm = json(&run(site, &["--json", "list", "12", "--arch", "aarch64"]));
    assert!(arm["listing"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["name"].as_str().unwrap().contains("-arm64-")));
}

#[test]
fn fetch_verifies_with_sha512_and_says_no_signature_is_published() {
    let Some([qemu, _mkfs, _tar, _xz]) = oracles(["qemu-img", "mkfs.ext4", "tar", "xz"]) else {
        return;
    };
    let site = shared_site();
    let out = TempDir::new().unwrap();
    // No --file: the catalog's default kind, genericcloud.qcow2.
    let output = run(
        site,
        &[
            "--json",
            "fetch",
            "bookworm",
            "-o",
            out.path().to_str().unwrap(),
        ],
    );
    let result = json(&output);
    let name = format!("debian-12-genericcloud-amd64-{NEWEST}.qcow2");
    let path = out.path().join(&name);
    assert_eq!(result["serial"], NEWEST);
    assert_eq!(result["kind"], "genericcloud.qcow2");
    assert_eq!(result["sha512"], sha512_file(&path).unwrap());
    assert!(result.get("sha256").is_none(), "{result}");
    assert!(result["signed_by"].is_null());
    assert_eq!(result["signature"], "not published by source");
    let log = stderr(&output);
    assert!(
        log.contains("no signature published by this source"),
        "{log}"
    );
    assert_eq!(names(out.path()), [name]);
    assert_eq!(qemu_img_info(&qemu, &path, None)["format"], "qcow2");

    // The human form prints the SHA-512 like sha512sum; --no-verify-signature changes nothing.
    let again = run(
        site,
        &[
            "fetch",
            "bookworm",
            "--no-verify-signature",
            "-o",
            out.path().to_str().unwrap(),
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    let line = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(
        line.starts_with(&format!("{}  ", sha512_file(&path).unwrap())),
        "{line}"
    );
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    assert!(stderr(&again).contains("no signature published"));
}

#[test]
fn corrupted_file_on_the_mirror_exits_3_and_leaves_nothing() {
    require_tools!("qemu-img", "mkfs.ext4", "tar", "xz");
    let site = build_site(|builder| {
        builder.build_of(Release::BOOKWORM, Stream::Released, "20240717-1811")
    });
    let relative =
        DebianMirror::file_path(&bookworm("20240717-1811"), "genericcloud", "amd64", "qcow2");
    // One byte changed after SHA512SUMS was written: what a bad mirror would serve.
    let on_disk = site.mirror.root().join(&relative);
    let mut bytes = std::fs::read(&on_disk).unwrap();
    bytes[70_000] ^= 0x01;
    std::fs::write(&on_disk, &bytes).unwrap();
    let out = TempDir::new().unwrap();

    let output = run(
        &site,
        &[
            "fetch",
            "bookworm",
            "--file",
            "genericcloud.qcow2",
            "-o",
            out.path().to_str().unwrap(),
        ],
    );

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let message = stderr(&output);
    let actual = sha512_file(&on_disk).unwrap();
    for fact in [
        "debian-12-genericcloud-amd64-20240717-1811.qcow2",
        site.server.url_for(&relative).as_str(),
        "expected sha512",
        "got",
        actual.as_str(),
    ] {
        assert!(message.contains(fact), "message lacks {fact:?}: {message}");
    }
    assert!(
        names(out.path()).is_empty(),
        "left behind: {:?}",
        names(out.path())
    );
}

#[test]
fn latest_resolves_to_the_build_the_latest_folder_aliases() {
    require_tools!("qemu-img", "mkfs.ext4", "tar", "xz");
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let result = json(&run(
        site,
        &[
            "--json",
            "fetch",
            "bookworm",
            "--serial",
            "latest",
            "--file",
            "nocloud.raw",
            "-o",
            out.path().to_str().unwrap(),
        ],
    ));
    assert_eq!(result["serial"], NEWEST);
    let fetched = PathBuf::from(result["path"].as_str().unwrap());
    // The mirror's latest/ (a link to the newest build's .latest) holds the same bytes under
    // the unversioned name.
    let alias = site
        .mirror
        .root()
        .join("bookworm/latest/debian-12-nocloud-amd64.raw");
    assert_eq!(sha512_file(&fetched).unwrap(), sha512_file(&alias).unwrap());
    // An older build is still reachable by its serial.
    let old = json(&run(
        site,
        &[
            "--json",
            "fetch",
            "12",
            "--serial",
            "20240717-999",
            "--file",
            "nocloud.json",
            "-o",
            out.path().to_str().unwrap(),
        ],
    ));
    assert_eq!(old["serial"], "20240717-999");
    let description: Value =
        serde_json::from_slice(&std::fs::read(old["path"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(description["kind"], "List");
}

#[test]
fn tar_xz_fetch_converts_the_disk_raw_inside() {
    let Some([qemu, _mkfs, _tar, _xz]) = oracles(["qemu-img", "mkfs.ext4", "tar", "xz"]) else {
        return;
    };
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let result = json(&run(
        site,
        &[
            "--json",
            "fetch",
            "trixie",
            "--file",
            "genericcloud.tar.xz",
            "--convert",
            "qcow2",
            "-o",
            out.path().to_str().unwrap(),
        ],
    ));
    let converted = PathBuf::from(result["converted"].as_str().unwrap());
    assert!(converted.exists());
    let build = Build {
        release: Release::TRIXIE,
        stream: Stream::Released,
        serial: "20250811-2185",
    };
    let raw = site.mirror.root().join(DebianMirror::file_path(
        &build,
        "genericcloud",
        "amd64",
        "raw",
    ));
    qemu_img_compare(&qemu, &raw, &converted, "qcow2");
}

#[test]
fn daily_builds_carry_daily_in_their_names() {
    require_tools!("qemu-img", "mkfs.ext4", "tar", "xz");
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let result = json(&run(
        site,
        &[
            "--json",
            "fetch",
            "unstable",
            "--stream",
            "daily",
            "--file",
            "ec2.tar.xz",
            "-o",
            out.path().to_str().unwrap(),
        ],
    ));
    assert_eq!(result["release"], "sid");
    assert_eq!(result["serial"], "20250812-2190");
    assert_eq!(
        names(out.path()),
        ["debian-sid-ec2-amd64-daily-20250812-2190.tar.xz"]
    );
}

#[test]
fn unknown_kind_and_unreleased_release_are_usage_errors() {
    require_tools!("qemu-img", "mkfs.ext4", "tar", "xz");
    let site = shared_site();
    let out = TempDir::new().unwrap();
    let dir = out.path().to_str().unwrap();
    // Ubuntu's default kind means nothing here; the error names the published ones.
    let output = run(
        site,
        &["fetch", "bookworm", "--file", "disk1.img", "-o", dir],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("genericcloud.qcow2"),
        "{}",
        stderr(&output)
    );
    // sid has no release builds: not offered in the released stream.
    let output = run(site, &["fetch", "sid", "-o", dir]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("bookworm (12)"),
        "{}",
        stderr(&output)
    );
    assert!(names(out.path()).is_empty());
}

#[test]
fn catalog_file_path_works_like_the_built_in_name() {
    require_tools!("qemu-img", "mkfs.ext4", "tar", "xz");
    let site = shared_site();
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("debian.toml");
    std::fs::write(
        &file,
        include_str!("../catalogs/debian.toml").replace(
            "title = \"Debian 12 (bookworm)\"",
            "title = \"Bookworm from a file\"",
        ),
    )
    .unwrap();
    let output = cloudimg_from_env(site, file.to_str().unwrap(), &["--json", "list"])
        .output()
        .unwrap();
    assert_eq!(json(&output)[0]["title"], "Bookworm from a file");
    // The built-in name in the environment works as well, in any case.
    let output = cloudimg_from_env(site, "Debian", &["--json", "list"])
        .output()
        .unwrap();
    assert_eq!(json(&output)[0]["title"], "Debian 12 (bookworm)");
    // A name that is neither built in nor a file is a usage error naming the built-ins.
    let output = cloudimg_from_env(site, "gentoo", &["list"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("gentoo"), "{}", stderr(&output));
}

#[test]
fn sync_keeps_a_debian_image_current_from_its_own_mirror() {
    let Some([qemu, _mkfs, _tar, _xz]) = oracles(["qemu-img", "mkfs.ext4", "tar", "xz"]) else {
        return;
    };
    let site = shared_site();
    let dir = TempDir::new().unwrap();
    let catalog = dir.path().join("lab.toml");
    std::fs::write(
        &catalog,
        format!(
            "output = \"root\"\nkeep = 1\n\n[mirrors]\ndebian = \"{}\"\n\n[[image]]\n\
             name = \"bookworm\"\nsource = \"debian\"\nrelease = \"12\"\n\
             disk_format = \"raw\"\n",
            site.server.url()
        ),
    )
    .unwrap();
    // No --mirror: the catalog's [mirrors] table points the debian source at the site.
    let output = cloudimg_in(dir.path())
        .args(["--json", "--retries", "1", "sync"])
        .arg(&catalog)
        .env_remove("CLOUDIMG_MIRROR")
        .env_remove("CLOUDIMG_CATALOG")
        .output()
        .unwrap();
    let summary = json(&output);
    assert_eq!(summary["entries"][0]["outcome"], "published", "{summary}");
    assert_eq!(summary["entries"][0]["serial"], NEWEST);
    let serial_dir = dir.path().join("root/bookworm").join(NEWEST);
    let stem = DebianMirror::stem(&bookworm(NEWEST), "genericcloud", "amd64");
    let artifact = serial_dir.join(format!("{stem}.raw"));
    let upstream = site.mirror.root().join(DebianMirror::file_path(
        &bookworm(NEWEST),
        "genericcloud",
        "amd64",
        "qcow2",
    ));
    qemu.run([
        OsStr::new("compare"),
        upstream.as_os_str(),
        artifact.as_os_str(),
    ]);
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(serial_dir.join(format!("{stem}.raw.glance.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["properties"]["os_distro"], "debian");
    assert_eq!(meta["properties"]["os_version"], "12");
    assert_eq!(
        meta["properties"]["cloudimg_source_sha512"],
        sha512_file(&upstream).unwrap()
    );
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("root/.cloudimg-state.json")).unwrap(),
    )
    .unwrap();
    let upstream_record = &state["images"]["bookworm"]["serials"][NEWEST]["upstream"][0];
    assert!(upstream_record["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha512:"));
    assert_eq!(
        upstream_record["signed_by"],
        Value::Null,
        "Debian signs nothing"
    );
}
