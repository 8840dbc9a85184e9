//! The generated mirror is signed, digested and listed like the real site, and its signatures
//! verify through `cloudimg::verify::openpgp::Keyring`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cloudimg::verify::openpgp::{Keyring, VerifyError};
use cloudimg::ErrorKind;
use sha2::{Digest, Sha256};

use crate::common::mirror::{Knobs, Mirror, MirrorBuilder, Release, Stream};
use crate::common::pgp::{attacker_key, signing_key};
use crate::common::tools::{oracles, qemu_img_check, qemu_img_info};

/// One release, one arch, one serial per stream: the smallest mirror that has every kind of page.
fn small_mirror(dir: &Path, knobs: Knobs) -> Mirror {
    MirrorBuilder::new(dir)
        .releases(&[Release::NOBLE])
        .arches(&["amd64"])
        .released_serials(&["20240821"])
        .daily_serials(&["20241010"])
        .knobs(knobs)
        .build()
        .unwrap()
}

fn trusted_ring() -> Keyring {
    Keyring::from_armored_texts(&[signing_key().public_key_armored()]).unwrap()
}

fn released_dir(mirror: &Mirror, serial: &str) -> PathBuf {
    mirror.root().join(Mirror::serial_dir(
        Stream::Released,
        &Release::NOBLE,
        serial,
    ))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `name -> digest` from a SHA256SUMS text (`<hex> *<name>` lines).
fn sums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let (digest, name) = line.split_once(" *").unwrap();
            (name.to_owned(), digest.to_owned())
        })
        .collect()
}

/// The hrefs of a listing's rows, without sort links and the absolute parent link.
fn listed_hrefs(html: &str) -> BTreeSet<String> {
    let page = scraper::Html::parse_document(html);
    let links = scraper::Selector::parse("pre a").unwrap();
    page.select(&links)
        .filter_map(|a| a.value().attr("href"))
        .filter(|href| !href.starts_with('?') && !href.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn mirror_sums_verify_with_the_test_signing_key() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mirror = small_mirror(dir.path(), Knobs::default());
    let ring = trusted_ring();
    for folder in [
        Mirror::serial_dir(Stream::Released, &Release::NOBLE, "20240821"),
        Mirror::serial_dir(Stream::Daily, &Release::NOBLE, "20241010"),
    ] {
        let folder = mirror.root().join(folder);
        for sums in ["SHA256SUMS", "MD5SUMS"] {
            let data = fs::read(folder.join(sums)).unwrap();
            let signature = fs::read(folder.join(format!("{sums}.gpg"))).unwrap();
            assert!(signature.starts_with(b"-----BEGIN PGP SIGNATURE-----"));
            let good = ring.verify_detached(&data, &signature).unwrap();
            assert_eq!(good.fingerprint, signing_key().fingerprint());
        }
    }
}

#[test]
fn keyring_file_written_for_the_cli_verifies_the_mirror() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mirror = small_mirror(&dir.path().join("mirror"), Knobs::default());
    let keyring = dir.path().join("test-key.asc");
    signing_key().write_public_key(&keyring).unwrap();
    let ring = Keyring::from_file(&keyring).unwrap();
    let folder = released_dir(&mirror, "20240821");
    let data = fs::read(folder.join("SHA256SUMS")).unwrap();
    let signature = fs::read(folder.join("SHA256SUMS.gpg")).unwrap();
    assert!(ring.verify_detached(&data, &signature).is_ok());
}

#[test]
fn attacker_signed_mirror_is_unknown_key() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let knobs = Knobs {
        attacker_signs: true,
        ..Knobs::default()
    };
    let mirror = small_mirror(dir.path(), knobs);
    let folder = released_dir(&mirror, "20240821");
    let data = fs::read(folder.join("SHA256SUMS")).unwrap();
    let signature = fs::read(folder.join("SHA256SUMS.gpg")).unwrap();
    let error = trusted_ring()
        .verify_detached(&data, &signature)
        .unwrap_err();
    assert!(
        matches!(&error, VerifyError::UnknownKey { issuer } if issuer == attacker_key().fingerprint()),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Integrity);
    // Trusting the attacker would accept it: the fault is the key, not the signature.
    let attacker_ring =
        Keyring::from_armored_texts(&[attacker_key().public_key_armored()]).unwrap();
    assert!(attacker_ring.verify_detached(&data, &signature).is_ok());
}

#[test]
fn edited_sums_fail_the_mirror_signature() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mirror = small_mirror(dir.path(), Knobs::default());
    let folder = released_dir(&mirror, "20240821");
    let mut data = fs::read(folder.join("SHA256SUMS")).unwrap();
    data[0] = if data[0] == b'0' { b'1' } else { b'0' };
    let signature = fs::read(folder.join("SHA256SUMS.gpg")).unwrap();
    let error = trusted_ring()
        .verify_detached(&data, &signature)
        .unwrap_err();
    assert!(
        matches!(error, VerifyError::BadSignature { .. }),
        "{error:?}"
    );
}

#[test]
fn unsigned_mirror_has_no_signature_files() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let knobs = Knobs {
        omit_signatures: true,
        ..Knobs::default()
    };
    let mirror = small_mirror(dir.path(), knobs);
    let folder = released_dir(&mirror, "20240821");
    assert!(folder.join("SHA256SUMS").is_file());
    assert!(!folder.join("SHA256SUMS.gpg").exists());
    assert!(!folder.join("MD5SUMS.gpg").exists());
    let listing = fs::read_to_string(folder.join("index.html")).unwrap();
    assert!(!listed_hrefs(&listing).contains("SHA256SUMS.gpg"));
}

#[test]
fn published_digests_match_the_files() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mirror = small_mirror(dir.path(), Knobs::default());
    let folder = released_dir(&mirror, "20240821");
    let listed = sums(&fs::read_to_string(folder.join("SHA256SUMS")).unwrap());
    let names: Vec<&str> = listed.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ubuntu-24.04-server-cloudimg-amd64.img",
            "ubuntu-24.04-server-cloudimg-amd64.manifest"
        ]
    );
    for (name, digest) in &listed {
        assert_eq!(
            &sha256_hex(&fs::read(folder.join(name)).unwrap()),
            digest,
            "{name}"
        );
    }
}

#[test]
fn wrong_digest_knob_lies_in_sums_and_streams_under_a_good_signature() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let knobs = Knobs {
        wrong_sha256_for: Some("amd64.img".to_owned()),
        ..Knobs::default()
    };
    let mirror = small_mirror(dir.path(), knobs);
    let folder = released_dir(&mirror, "20240821");
    let text = fs::read_to_string(folder.join("SHA256SUMS")).unwrap();
    let image = "ubuntu-24.04-server-cloudimg-amd64.img";
    for (name, digest) in sums(&text) {
        let actual = sha256_hex(&fs::read(folder.join(&name)).unwrap());
        assert_eq!(digest == actual, name != image, "{name}");
    }
    let actual = sha256_hex(&fs::read(folder.join(image)).unwrap());
    let signature = fs::read(folder.join("SHA256SUMS.gpg")).unwrap();
    assert!(trusted_ring()
        .verify_detached(text.as_bytes(), &signature)
        .is_ok());
    let item = &released_products(&mirror)["com.ubuntu.cloud:server:24.04:amd64"]["versions"]
        ["20240821"]["items"]["disk1.img"];
    assert_ne!(item["sha256"].as_str().unwrap(), actual);
}

fn released_products(mirror: &Mirror) -> serde_json::Value {
    let path = mirror
        .root()
        .join("releases/streams/v1/com.ubuntu.cloud:released:download.json");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    json["products"].clone()
}

#[test]
fn images_are_valid_qcow2_and_differ_between_serials() {
    let Some([qemu, _mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mirror = MirrorBuilder::new(dir.path())
        .releases(&[Release::NOBLE])
        .arches(&["amd64"])
        .released_serials(&["20240821", "20240912"])
        .daily_serials(&[])
        .build()
        .unwrap();
    let first = mirror.root().join(Mirror::image_path(
        Stream::Released,
        &Release::NOBLE,
        "amd64",
        "20240821",
    ));
    let second = mirror.root().join(Mirror::image_path(
        Stream::Released,
        &Release::NOBLE,
        "amd64",
        "20240912",
    ));
    let info = qemu_img_info(&qemu, &first, None);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 8 << 20);
    qemu_img_check(&qemu, &first, "qcow2");
    assert_ne!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
}

#[test]
fn streams_describe_every_serial_and_resolve_under_the_stream_root() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mirror = small_mirror(dir.path(), Knobs::default());
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(mirror.root().join("releases/streams/v1/index.json")).unwrap(),
    )
    .unwrap();
    let entry = &index["index"]["com.ubuntu.cloud:released:download"];
    assert_eq!(
        entry["path"],
        "streams/v1/com.ubuntu.cloud:released:download.json"
    );
    assert_eq!(entry["products"][0], "com.ubuntu.cloud:server:24.04:amd64");
    let product = &released_products(&mirror)["com.ubuntu.cloud:server:24.04:amd64"];
    assert_eq!(product["release"], "noble");
    assert_eq!(product["release_title"], "24.04 LTS");
    assert_eq!(product["release_codename"], "Noble Numbat");
    let item = &product["versions"]["20240821"]["items"]["disk1.img"];
    let path = item["path"].as_str().unwrap();
    assert_eq!(
        path,
        "server/releases/noble/release-20240821/ubuntu-24.04-server-cloudimg-amd64.img"
    );
    let bytes = fs::read(mirror.root().join("releases").join(path)).unwrap();
    assert_eq!(item["size"], bytes.len());
    assert_eq!(item["sha256"].as_str().unwrap(), sha256_hex(&bytes));

    let daily: serde_json::Value = serde_json::from_slice(
        &fs::read(
            mirror
                .root()
                .join("daily/streams/v1/com.ubuntu.cloud:daily:download.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let item = &daily["products"]["com.ubuntu.cloud.daily:server:24.04:amd64"]["versions"]
        ["20241010"]["items"]["disk1.img"];
    let path = item["path"].as_str().unwrap();
    assert_eq!(
        path,
        "server/noble/20241010/noble-server-cloudimg-amd64.img"
    );
    assert!(mirror.root().join("daily").join(path).is_file());
}

#[test]
fn user_facing_aliases_resolve_like_the_real_site() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mirror = small_mirror(dir.path(), Knobs::default());
    let root = mirror.root();
    for path in [
        "releases/24.04/release-20240821/ubuntu-24.04-server-cloudimg-amd64.img",
        "releases/noble/release-20240821/ubuntu-24.04-server-cloudimg-amd64.img",
        "releases/noble/release/ubuntu-24.04-server-cloudimg-amd64.img",
        "server/releases/noble/release-20240821/unpacked/ubuntu-24.04-server-cloudimg-amd64-vmlinuz-generic",
        "noble/20241010/noble-server-cloudimg-amd64.img",
        "noble/current/noble-server-cloudimg-amd64.img",
        "noble/current/unpacked/noble-server-cloudimg-amd64-initrd-generic",
        "noble/current/MD5SUMS",
    ] {
        assert!(root.join(path).is_file(), "{path}");
    }
}

#[test]
fn listings_have_the_real_apache_shape() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mirror = small_mirror(dir.path(), Knobs::default());
    let folder = released_dir(&mirror, "20240821");
    let html = fs::read_to_string(folder.join("index.html")).unwrap();
    let on_disk: BTreeSet<String> = fs::read_dir(&folder)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if entry.path().is_dir() {
                format!("{name}/")
            } else {
                name
            }
        })
        .filter(|name| name != "index.html")
        .collect();
    assert_eq!(listed_hrefs(&html), on_disk);
    assert!(html.contains("<title>Ubuntu 24.04 LTS (Noble Numbat) release [20240821]</title>"));
    assert!(html.contains(r#"<a href="?C=N;O=D">Name</a>"#));
    assert!(html.contains(r#"<a href="/server/releases/noble/">Parent Directory</a>"#));
    let image_row = html
        .lines()
        .find(|line| line.contains(r#"href="ubuntu-24.04-server-cloudimg-amd64.img""#))
        .unwrap();
    assert!(image_row
        .starts_with(r#"<img src="/icons/unknown.gif" alt="[   ]" width="22" height="22"> <a "#));
    assert!(
        image_row.ends_with("QCow2 UEFI/GPT Bootable disk image"),
        "{image_row}"
    );
    // `YYYY-MM-DD HH:MM`, then a four-column rounded size such as `328K`.
    let visible = image_row.rsplit("</a>").next().unwrap().trim_start();
    let (date, rest) = visible.split_at(16);
    assert_eq!(date, "2024-08-21 12:00");
    assert!(
        rest.starts_with("  ") && rest[2..6].trim_start().ends_with('K'),
        "{rest}"
    );

    let daily = fs::read_to_string(mirror.root().join("noble/20241010/index.html")).unwrap();
    assert!(daily.contains("<h1>Ubuntu 24.04 LTS (Noble Numbat) daily [20241010]</h1>"));
    assert!(daily.contains(r#"<a href="/noble/">Parent Directory</a>"#));
    assert!(listed_hrefs(&daily).contains("unpacked/"));
}

#[test]
fn top_and_releases_pages_describe_the_series() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mirror = MirrorBuilder::new(dir.path())
        .arches(&["amd64"])
        .released_serials(&["20240821"])
        .daily_serials(&["20241010"])
        .build()
        .unwrap();
    let top = fs::read_to_string(mirror.root().join("index.html")).unwrap();
    assert_eq!(
        listed_hrefs(&top),
        ["daily/", "jammy/", "noble/", "releases/", "server/"]
            .map(String::from)
            .into()
    );
    assert!(top.contains("Ubuntu Server 24.04 LTS (Noble Numbat) daily builds"));
    assert!(!top.contains("Parent Directory"));
    let releases = fs::read_to_string(mirror.root().join("releases/index.html")).unwrap();
    for href in ["22.04/", "24.04/", "jammy/", "noble/", "streams/"] {
        assert!(listed_hrefs(&releases).contains(href), "{href}");
    }
    assert!(releases.contains("Ubuntu Server 22.04 LTS (Jammy Jellyfish) released builds"));
    let noble = fs::read_to_string(mirror.root().join("releases/noble/index.html")).unwrap();
    assert_eq!(
        listed_hrefs(&noble),
        ["release-20240821/", "release/"].map(String::from).into()
    );
    // Sorted by name as Apache does: `release` sorts before `release-20240821`.
    let alias = noble.find(r#"href="release/""#).unwrap();
    assert!(alias < noble.find(r#"href="release-20240821/""#).unwrap());
}

#[test]
fn adding_a_serial_moves_the_aliases_and_indices() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let mut mirror = small_mirror(dir.path(), Knobs::default());
    mirror.add_serial(Stream::Released, "20241004.1").unwrap();
    mirror.add_serial(Stream::Daily, "20241011").unwrap();
    assert_eq!(mirror.serials(Stream::Released), ["20240821", "20241004.1"]);
    let root = mirror.root();
    assert_eq!(
        fs::read_link(root.join("server/releases/noble/release")).unwrap(),
        Path::new("release-20241004.1")
    );
    assert_eq!(
        fs::read_link(root.join("noble/current")).unwrap(),
        Path::new("20241011")
    );
    let versions = &released_products(&mirror)["com.ubuntu.cloud:server:24.04:amd64"]["versions"];
    assert!(versions["20240821"].is_object() && versions["20241004.1"].is_object());
    let listing = fs::read_to_string(root.join("releases/noble/index.html")).unwrap();
    assert!(listed_hrefs(&listing).contains("release-20241004.1/"));
    // The new serial is signed like the first.
    let folder = released_dir(&mirror, "20241004.1");
    let data = fs::read(folder.join("SHA256SUMS")).unwrap();
    let signature = fs::read(folder.join("SHA256SUMS.gpg")).unwrap();
    assert!(trusted_ring().verify_detached(&data, &signature).is_ok());
}

#[test]
fn tarball_knob_packs_a_raw_disk_named_by_codename() {
    crate::require_tools!("qemu-img", "mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();
    let knobs = Knobs {
        tarballs: true,
        ..Knobs::default()
    };
    let mirror = small_mirror(dir.path(), knobs);
    let tarball =
        released_dir(&mirror, "20240821").join("ubuntu-24.04-server-cloudimg-amd64.tar.gz");
    let gzip = flate2::read::GzDecoder::new(fs::File::open(&tarball).unwrap());
    let mut archive = tar::Archive::new(gzip);
    let entries: Vec<(String, u64)> = archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.path().unwrap().to_string_lossy().into_owned(),
                entry.size(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [("noble-server-cloudimg-amd64.img".to_owned(), 8 << 20)]
    );
    let text = fs::read_to_string(released_dir(&mirror, "20240821").join("SHA256SUMS")).unwrap();
    assert!(text.contains(" *ubuntu-24.04-server-cloudimg-amd64.tar.gz\n"));
}

#[test]
fn test_keys_are_stable_and_distinct() {
    // Fixed seed and creation time: the fingerprint is the same in every run, so a failure
    // message naming it can be compared across runs.
    assert_eq!(
        signing_key().fingerprint(),
        "283A502642092CC97C42AA72BA1E65AD03ABFA38"
    );
    assert_ne!(signing_key().fingerprint(), attacker_key().fingerprint());
    let signature = signing_key().sign(b"data");
    assert!(signature.ends_with("-----END PGP SIGNATURE-----\n"));
}

/// gpgv, the reference verifier, accepts the mirror's signatures: they are what
/// `gpg --armor --detach-sign` makes, not an rPGP dialect. Skipped loudly without gpg.
#[test]
fn gpgv_accepts_the_mirror_signatures() {
    crate::require_tools!("gpg", "gpgv");
    let dir = tempfile::tempdir().unwrap();
    let mirror = small_mirror(&dir.path().join("mirror"), Knobs::default());
    let home = dir.path().join("gnupg");
    fs::create_dir(&home).unwrap();
    let armored = dir.path().join("key.asc");
    let keyring = dir.path().join("key.gpg");
    signing_key().write_public_key(&armored).unwrap();
    let dearmor = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--dearmor", "--output"])
        .arg(&keyring)
        .arg(&armored)
        .output()
        .unwrap();
    assert!(dearmor.status.success(), "{dearmor:?}");
    let folder = released_dir(&mirror, "20240821");
    let gpgv = Command::new("gpgv")
        .env("GNUPGHOME", &home)
        .arg("--keyring")
        .arg(&keyring)
        .arg(folder.join("SHA256SUMS.gpg"))
        .arg(folder.join("SHA256SUMS"))
        .output()
        .unwrap();
    assert!(gpgv.status.success(), "{gpgv:?}");
}
