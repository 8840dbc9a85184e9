//! `cloudimg seed` checked with an independent ISO 9660 reader (isoinfo from genisoimage).

use std::process::Command;

use tempfile::TempDir;

use crate::require_tools;

fn isoinfo(args: &[&str], iso: &std::path::Path) -> Vec<u8> {
    let output = Command::new("isoinfo")
        .args(args)
        .arg("-i")
        .arg(iso)
        .output()
        .unwrap();
    assert!(output.status.success(), "isoinfo {args:?} failed");
    output.stdout
}

#[test]
fn seed_iso_is_a_cidata_volume_that_isoinfo_reads_back() {
    require_tools!("isoinfo");
    let dir = TempDir::new().unwrap();
    let user_data = b"#cloud-config\npassword: ubuntu\nchpasswd: { expire: False }\n";
    let network = b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n";
    std::fs::write(dir.path().join("user-data"), user_data).unwrap();
    std::fs::write(dir.path().join("net.yaml"), network).unwrap();
    let iso = dir.path().join("seed.iso");
    let output = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .current_dir(dir.path())
        .args([
            "--json",
            "seed",
            "--user-data",
            "user-data",
            "--network-config",
            "net.yaml",
        ])
        .args(["-o", "seed.iso"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let descriptor = String::from_utf8_lossy(&isoinfo(&["-d"], &iso)).into_owned();
    assert!(descriptor.contains("Volume id: cidata"), "{descriptor}");
    let listing = String::from_utf8_lossy(&isoinfo(&["-R", "-l"], &iso)).into_owned();
    for name in ["user-data", "meta-data", "network-config"] {
        assert!(listing.contains(name), "{name} missing from:\n{listing}");
    }
    assert_eq!(isoinfo(&["-R", "-x", "/user-data"], &iso), user_data);
    assert_eq!(isoinfo(&["-J", "-x", "/network-config"], &iso), network);
    let meta = String::from_utf8(isoinfo(&["-R", "-x", "/meta-data"], &iso)).unwrap();
    assert!(meta.starts_with("instance-id: iid-"), "{meta}");

    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("seed.iso.glance.json")).unwrap())
            .unwrap();
    assert_eq!(metadata["disk_format"], "iso");
    assert_eq!(metadata["container_format"], "bare");
    let bytes = std::fs::read(&iso).unwrap();
    assert_eq!(metadata["digests"]["size"], bytes.len());
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(metadata["digests"]["sha256"], sha256);
    // Not `seed` for every seed: the name carries the ISO's digest.
    assert_eq!(metadata["name"], format!("seed-{}", &sha256[..12]));
}

#[test]
fn seeds_with_different_user_data_get_different_glance_names_unless_named() {
    let dir = TempDir::new().unwrap();
    let seed = |user_data: &str, extra: &[&str]| {
        std::fs::write(dir.path().join("user-data"), user_data).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
            .current_dir(dir.path())
            .args(["--json", "seed", "--user-data", "user-data"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("seed.iso.glance.json")).unwrap(),
        )
        .unwrap();
        metadata["name"].as_str().unwrap().to_owned()
    };
    let first = seed("#cloud-config\nhostname: one\n", &[]);
    let again = seed("#cloud-config\nhostname: one\n", &[]);
    let second = seed("#cloud-config\nhostname: two\n", &[]);
    assert!(first.starts_with("seed-"), "{first}");
    assert_eq!(first, again, "the same seed keeps its name");
    assert_ne!(first, second, "different seeds share a name");
    assert_eq!(
        seed("#cloud-config\nhostname: two\n", &["--name", "web-seed"]),
        "web-seed"
    );
}
