//! KubeVirt containerDisks: `prepare --container-format containerdisk` writes an OCI layout,
//! `push` sends it to a real registry (Debian's docker-registry on 127.0.0.1), and skopeo, an
//! independent client, judges the result: the tags, the platform, and a pull whose layer holds
//! `disk/<name>.qcow2` owned by 107:107 with mode 0440 and the upstream bytes exactly; a
//! catalog entry naming two architectures becomes one image index with a manifest per platform.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::registry::Registry;
use crate::common::site::{cloudimg, json, run, sha256_file, shared_site, stderr, Site};
use crate::require_tools;

const STEM: &str = "ubuntu-24.04-server-cloudimg-amd64";
const NEWEST: &str = "20241004.1";
const OLDER: &str = "20240821";

/// `prepare noble --container-format containerdisk -o <dir>/<serial>` and its JSON report.
fn prepare_containerdisk(site: &Site, dir: &Path, serial: &str) -> (PathBuf, Value) {
    let out = dir.join(serial);
    let report = json(&run(
        site,
        &[
            "--json",
            "prepare",
            "noble",
            "--serial",
            serial,
            "--container-format",
            "containerdisk",
            "-o",
            out.to_str().unwrap(),
        ],
    ));
    (out, report)
}

fn push(site: &Site, layout: &Path, args: &[&str], auth_file: Option<&Path>) -> Output {
    let mut full = vec![
        "--json",
        "push",
        layout.to_str().unwrap(),
        "--insecure-registry",
    ];
    full.extend_from_slice(args);
    let mut command = cloudimg(site, &full);
    // Never the developer's own credentials.
    command.env_remove("XDG_RUNTIME_DIR").env("HOME", layout);
    match auth_file {
        Some(file) => command.env("REGISTRY_AUTH_FILE", file),
        None => command.env("REGISTRY_AUTH_FILE", layout.join("no-auth.json")),
    };
    command.output().expect("run cloudimg push")
}

/// The layer of a `skopeo copy … dir:` pull, listed and unpacked by GNU tar.
fn unpack_layer(pulled: &Path) -> (String, PathBuf) {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(pulled.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    let digest = layers[0]["digest"].as_str().unwrap();
    let blob = pulled.join(digest.strip_prefix("sha256:").unwrap());
    assert_eq!(format!("sha256:{}", sha256_file(&blob)), digest);
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&blob)
        .output()
        .unwrap();
    assert!(listing.status.success());
    let unpacked = pulled.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&blob)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    (
        String::from_utf8_lossy(&listing.stdout).into_owned(),
        unpacked,
    )
}

/// The verified upstream file a prepare report names.
fn upstream(report: &Value) -> PathBuf {
    PathBuf::from(
        report["sources"][0]["path"]
            .as_str()
            .expect("a source path"),
    )
}

#[test]
fn containerdisk_pushed_without_auth_pulls_back_byte_for_byte() {
    require_tools!("docker-registry", "skopeo", "tar");
    let site = shared_site();
    let dir = TempDir::new().unwrap();
    let (layout, report) = prepare_containerdisk(site, dir.path(), NEWEST);
    let written = &report["containerdisk"];
    assert_eq!(written["ref_name"], format!("noble-{NEWEST}"));
    assert!(report["artifacts"].as_array().unwrap().is_empty());
    // skopeo reads the layout as is.
    let local = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    let local: Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(local["Architecture"], "amd64");
    assert_eq!(local["Os"], "linux");

    let registry = Registry::start(false);
    let destination = registry.reference("lab/noble");
    let output = push(site, &layout, &[&destination], None);
    let pushed = json(&output);
    let pushed = &pushed[0];
    assert_eq!(pushed["digest"], written["digest"]);
    assert_eq!(pushed["blobs_uploaded"], 2);
    assert_eq!(
        pushed["tags_set"],
        serde_json::json!([format!("noble-{NEWEST}"), "noble", "latest"])
    );

    let inspected = registry.inspect("lab/noble:latest", false).expect("latest");
    assert_eq!(inspected["Digest"], written["digest"]);
    assert_eq!(inspected["Architecture"], "amd64");
    let labels = registry
        .inspect("lab/noble:noble", true)
        .expect("raw manifest");
    assert_eq!(labels["annotations"]["io.cloudimg.serial"], NEWEST);
    assert!(labels["annotations"]["io.cloudimg.source.url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{STEM}.img")));

    let pulled = dir.path().join("pulled");
    registry.pull(&format!("lab/noble:noble-{NEWEST}"), &pulled);
    let (listing, unpacked) = unpack_layer(&pulled);
    let line = listing
        .lines()
        .find(|line| line.ends_with(&format!("disk/{STEM}.qcow2")))
        .unwrap_or_else(|| panic!("disk in the layer: {listing}"));
    assert!(line.starts_with("-r--r----- 107/107 "), "{line}");
    assert_eq!(
        sha256_file(&unpacked.join(format!("disk/{STEM}.qcow2"))),
        sha256_file(&upstream(&report))
    );

    // A second push sends nothing and moves no tag.
    let again = json(&push(site, &layout, &[&destination], None));
    assert_eq!(again[0]["blobs_uploaded"], 0);
    assert_eq!(again[0]["blobs_present"], 2);
    assert_eq!(again[0]["tags_set"], serde_json::json!([]));
}

#[test]
fn basic_auth_comes_from_the_containers_auth_file() {
    require_tools!("docker-registry", "skopeo", "htpasswd");
    let site = shared_site();
    let dir = TempDir::new().unwrap();
    let (layout, report) = prepare_containerdisk(site, dir.path(), NEWEST);
    let registry = Registry::start(true);
    let first = registry.reference("lab/noble:v1");

    let refused = push(site, &layout, &[&first], None);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("credentials"),
        "{}",
        stderr(&refused)
    );
    let wrong = dir.path().join("wrong.json");
    // bGFiOndyb25n = lab:wrong
    std::fs::write(
        &wrong,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "bGFiOndyb25n"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let refused = push(site, &layout, &[&first], Some(&wrong));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));

    // Chunked uploads into the first repository; the second mounts the blobs from it.
    let second = registry.reference("mirror/noble:v1");
    let output = push(
        site,
        &layout,
        &[&first, &second, "--chunk-size", "64K"],
        registry.auth_file.as_deref(),
    );
    let pushed = json(&output);
    assert_eq!(pushed[0]["blobs_uploaded"], 2);
    assert_eq!(pushed[1]["blobs_uploaded"], 0);
    assert_eq!(pushed[1]["blobs_mounted"], 2);
    for path in ["lab/noble:v1", "mirror/noble:v1"] {
        let inspected = registry.inspect(path, false).expect(path);
        assert_eq!(inspected["Digest"], report["containerdisk"]["digest"]);
    }
    let pulled = dir.path().join("pulled");
    registry.pull("mirror/noble:v1", &pulled);
    let (_, unpacked) = unpack_layer(&pulled);
    assert_eq!(
        sha256_file(&unpacked.join(format!("disk/{STEM}.qcow2"))),
        sha256_file(&upstream(&report))
    );
}

#[test]
fn a_new_serial_retires_old_serial_tags_beyond_keep() {
    require_tools!("docker-registry", "skopeo");
    let site = shared_site();
    let dir = TempDir::new().unwrap();
    let (older, _) = prepare_containerdisk(site, dir.path(), OLDER);
    let (newer, report) = prepare_containerdisk(site, dir.path(), NEWEST);
    let registry = Registry::start(false);
    let destination = registry.reference("lab/noble");
    json(&push(site, &older, &[&destination, "--keep", "1"], None));
    assert!(registry
        .inspect(&format!("lab/noble:noble-{OLDER}"), false)
        .is_some());
    let pushed = json(&push(site, &newer, &[&destination, "--keep", "1"], None));
    assert_eq!(
        pushed[0]["retired"],
        serde_json::json!([format!("noble-{OLDER}")])
    );
    assert!(registry
        .inspect(&format!("lab/noble:noble-{OLDER}"), false)
        .is_none());
    let latest = registry.inspect("lab/noble:latest", false).expect("latest");
    assert_eq!(latest["Digest"], report["containerdisk"]["digest"]);
    assert!(registry
        .inspect(&format!("lab/noble:noble-{NEWEST}"), false)
        .is_some());
}

#[test]
fn containerdisk_refuses_formats_kubevirt_cannot_boot() {
    require_tools!("qemu-img", "mkfs.ext4");
    let dir = TempDir::new().unwrap();
    let output = run(
        shared_site(),
        &[
            "prepare",
            "noble",
            "--container-format",
            "containerdisk",
            "--disk-format",
            "vmdk",
            "-o",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("qcow2 or raw"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn push_of_a_folder_that_is_not_a_layout_is_a_usage_error() {
    require_tools!("qemu-img", "mkfs.ext4");
    let dir = TempDir::new().unwrap();
    let output = push(
        shared_site(),
        dir.path(),
        &["docker://127.0.0.1:1/x/y:z"],
        None,
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn sync_pushes_containerdisk_entries_to_catalog_registries() {
    use crate::common::mirror::{Knobs, Stream};
    use crate::common::site::{build_site, outcome, summary};
    require_tools!("docker-registry", "skopeo");
    let mut site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let registry = Registry::start(false);
    let catalog = dir.path().join("lab.toml");
    let text = format!(
        "output = \"root\"\nkeep = 1\n\n[[image]]\nname = \"noble-cd\"\nrelease = \"noble\"\n\
         container_format = \"containerdisk\"\n\n[[registry]]\nname = \"lab\"\n\
         url = \"{}\"\ninsecure = true\n\n[[registry]]\nname = \"down\"\n\
         url = \"docker://127.0.0.1:1/vm\"\ninsecure = true\n",
        registry.reference("vm")
    );
    std::fs::write(&catalog, text).unwrap();
    let sync = |site: &Site| {
        let mut command = cloudimg(site, &["--json", "sync", catalog.to_str().unwrap()]);
        command
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOME", dir.path())
            .env("REGISTRY_AUTH_FILE", dir.path().join("no-auth.json"));
        command.output().unwrap()
    };
    let row = |entry: &Value, target: &str| -> Value {
        entry["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["target"] == target)
            .unwrap_or_else(|| panic!("{target} in {entry}"))
            .clone()
    };

    // One registry up, one down: the first gets the image, the entry's row for the other
    // fails, exit 5.
    let first = sync(&site);
    assert_eq!(first.status.code(), Some(5), "{}", stderr(&first));
    let entry = outcome(&summary(&first), "noble-cd").clone();
    assert_eq!(entry["outcome"], "published");
    assert_eq!(row(&entry, "lab")["status"], "ok");
    assert_eq!(row(&entry, "down")["status"], "failed");
    let digest = row(&entry, "lab")["ids"][0].clone();
    let inspected = registry
        .inspect("vm/noble-cd:latest", false)
        .expect("latest");
    assert_eq!(inspected["Digest"], digest);

    // Nothing new: the serial verifies, nothing is rebuilt or re-tagged.
    std::fs::write(
        &catalog,
        std::fs::read_to_string(&catalog)
            .unwrap()
            .split("\n\n[[registry]]\nname = \"down\"")
            .next()
            .unwrap(),
    )
    .unwrap();
    let again = sync(&site);
    assert!(again.status.success(), "{}", stderr(&again));
    let entry = outcome(&summary(&again), "noble-cd").clone();
    assert_eq!(entry["outcome"], "up-to-date");
    assert_eq!(row(&entry, "lab")["ids"][0], digest);

    // A new serial: pushed, the old serial tag retired beyond keep = 1.
    site.mirror
        .add_serial(Stream::Released, "20250101")
        .unwrap();
    let newer = sync(&site);
    assert!(newer.status.success(), "{}", stderr(&newer));
    let entry = outcome(&summary(&newer), "noble-cd").clone();
    assert_eq!(
        row(&entry, "lab")["retired"],
        serde_json::json!([format!("noble-{NEWEST}")])
    );
    assert!(registry
        .inspect("vm/noble-cd:noble-20250101", false)
        .is_some());
    assert!(registry
        .inspect(&format!("vm/noble-cd:noble-{NEWEST}"), false)
        .is_none());
}

/// A site whose mirror offers noble for amd64 and arm64.
fn two_arch_site() -> Site {
    crate::common::site::build_site_for(Default::default(), &["amd64", "arm64"], &[])
}

/// `dir/lab.toml`: one containerDisk entry of noble for `arches` (a TOML list), pushed to
/// `registry`'s `vm` repository.
fn containerdisk_catalog(dir: &Path, registry: &Registry, arches: &str) -> PathBuf {
    let catalog = dir.join("lab.toml");
    std::fs::write(
        &catalog,
        format!(
            "output = \"root\"\nkeep = 1\n\n[[image]]\nname = \"noble-cd\"\nrelease = \"noble\"\n\
             arch = {arches}\ncontainer_format = \"containerdisk\"\n\n\
             [[registry]]\nname = \"lab\"\nurl = \"{}\"\ninsecure = true\n",
            registry.reference("vm")
        ),
    )
    .unwrap();
    catalog
}

/// `cloudimg --json sync CATALOG` with no registry credentials but the test's.
fn registry_sync(site: &Site, home: &Path, catalog: &Path) -> Output {
    let mut command = cloudimg(site, &["--json", "sync", catalog.to_str().unwrap()]);
    command
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", home)
        .env("REGISTRY_AUTH_FILE", home.join("no-auth.json"));
    command.output().unwrap()
}

#[test]
fn an_entry_naming_two_architectures_is_pushed_as_an_image_index() {
    use crate::common::site::{outcome, summary};
    require_tools!("docker-registry", "skopeo", "tar");
    let site = two_arch_site();
    let dir = TempDir::new().unwrap();
    let registry = Registry::start(false);
    let catalog = containerdisk_catalog(dir.path(), &registry, "[\"amd64\", \"arm64\"]");
    let sync = || registry_sync(&site, dir.path(), &catalog);

    let first = sync();
    assert!(first.status.success(), "{}", stderr(&first));
    let entry = outcome(&summary(&first), "noble-cd").clone();
    assert_eq!(entry["outcome"], "published");
    let row = &entry["targets"][0];
    assert_eq!(row["status"], "ok", "{entry}");
    let digest = row["ids"][0].as_str().unwrap().to_owned();

    // skopeo's view of the tag: an OCI image index, one manifest per platform.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(registry.reference("vm/noble-cd:latest"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw.stdout))
        ),
        digest,
        "the tag names the bytes the summary reports"
    );
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    let platforms: Vec<(&str, &str, Option<&str>)> = manifests
        .iter()
        .map(|m| {
            assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
            let p = &m["platform"];
            (
                p["architecture"].as_str().unwrap(),
                p["os"].as_str().unwrap(),
                p["variant"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        [("amd64", "linux", None), ("arm64", "linux", Some("v8"))]
    );

    // Each platform pulls back its own architecture's upstream disk, byte for byte.
    for arch in ["amd64", "arm64"] {
        let pulled = dir.path().join(format!("pulled-{arch}"));
        registry.pull_platform("vm/noble-cd:latest", Some(arch), &pulled);
        let config: Value = {
            let manifest: Value =
                serde_json::from_slice(&std::fs::read(pulled.join("manifest.json")).unwrap())
                    .unwrap();
            let hex = manifest["config"]["digest"].as_str().unwrap()[7..].to_owned();
            serde_json::from_slice(&std::fs::read(pulled.join(hex)).unwrap()).unwrap()
        };
        assert_eq!(config["architecture"], arch);
        let (listing, unpacked) = unpack_layer(&pulled);
        let disk = format!("disk/ubuntu-24.04-server-cloudimg-{arch}.qcow2");
        assert!(listing.contains(&disk), "{listing}");
        let upstream = site.released_image(arch, NEWEST);
        assert_eq!(
            sha256_file(&unpacked.join(&disk)),
            sha256_file(&upstream),
            "{arch}"
        );
    }

    // Nothing new: the published index verifies and nothing is sent.
    let again = sync();
    assert!(again.status.success(), "{}", stderr(&again));
    let entry = outcome(&summary(&again), "noble-cd").clone();
    assert_eq!(entry["outcome"], "up-to-date");
    assert_eq!(entry["targets"][0]["bytes_sent"], 0);
    assert_eq!(entry["targets"][0]["ids"][0], digest);
}

#[test]
fn an_architecture_added_to_a_published_entry_builds_its_serial_again() {
    use crate::common::site::{outcome, summary};
    require_tools!("docker-registry", "skopeo", "tar");
    let site = two_arch_site();
    let dir = TempDir::new().unwrap();
    let registry = Registry::start(false);
    let catalog = dir.path().join("lab.toml");
    let sync = || {
        let output = registry_sync(&site, dir.path(), &catalog);
        assert!(output.status.success(), "{}", stderr(&output));
        outcome(&summary(&output), "noble-cd").clone()
    };
    let manifests = || {
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(registry.reference("vm/noble-cd:latest"))
            .output()
            .unwrap();
        let top: Value = serde_json::from_slice(&raw.stdout).unwrap();
        top["manifests"].as_array().map_or(1, Vec::len)
    };

    containerdisk_catalog(dir.path(), &registry, "[\"amd64\"]");
    assert_eq!(sync()["outcome"], "published");
    assert_eq!(manifests(), 1, "one architecture: a plain manifest");
    // The same serial, now wanted for arm64 too: built again, pushed as an index.
    containerdisk_catalog(dir.path(), &registry, "[\"amd64\", \"arm64\"]");
    let entry = sync();
    assert_eq!(entry["outcome"], "published", "{entry}");
    assert_eq!(entry["serial"], NEWEST);
    assert_eq!(manifests(), 2);
    assert_eq!(sync()["outcome"], "up-to-date");
}

#[test]
fn several_architectures_are_refused_for_a_glance_entry() {
    require_tools!("qemu-img", "mkfs.ext4");
    let dir = TempDir::new().unwrap();
    let catalog = dir.path().join("lab.toml");
    std::fs::write(
        &catalog,
        "output = \"root\"\n[[image]]\nname = \"n\"\nrelease = \"noble\"\narch = [\"amd64\", \"arm64\"]\n",
    )
    .unwrap();
    let output = run(shared_site(), &["sync", catalog.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("containerdisk"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn token_auth_follows_the_bearer_challenge_to_a_real_token_server() {
    use crate::common::registry::Auth;
    use crate::common::token::SERVICE;
    require_tools!("docker-registry", "skopeo", "openssl");
    let site = shared_site();
    let dir = TempDir::new().unwrap();
    let (older, _) = prepare_containerdisk(site, dir.path(), OLDER);
    let (newer, report) = prepare_containerdisk(site, dir.path(), NEWEST);
    let registry = Registry::start_with(Auth::Token);
    let tokens = registry.token_server.as_ref().expect("a token server");
    let destination = registry.reference("lab/noble");

    // No credentials: the challenge leads to the token server, which refuses; exit 2.
    let refused = push(site, &newer, &[&destination], None);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("credentials"),
        "{}",
        stderr(&refused)
    );
    let asked = tokens.requests();
    assert!(!asked.is_empty(), "the client never asked the realm");
    assert!(asked.iter().all(|r| !r.granted));

    // The right credentials: tokens for the challenged scopes, then a push and a retirement
    // (which needs the `delete` action the registry challenges for).
    let auth = registry.auth_file.as_deref();
    json(&push(site, &older, &[&destination, "--keep", "1"], auth));
    let pushed = json(&push(site, &newer, &[&destination, "--keep", "1"], auth));
    assert_eq!(pushed[0]["blobs_uploaded"], 2);
    assert_eq!(
        pushed[0]["retired"],
        serde_json::json!([format!("noble-{OLDER}")])
    );
    let granted: Vec<_> = tokens
        .requests()
        .into_iter()
        .filter(|r| r.granted)
        .collect();
    assert!(!granted.is_empty());
    for request in &granted {
        assert_eq!(request.service.as_deref(), Some(SERVICE), "{request:?}");
    }
    let scopes: Vec<&String> = granted.iter().flat_map(|r| &r.scopes).collect();
    assert!(
        scopes
            .iter()
            .any(|s| *s == "repository:lab/noble:pull,push"),
        "{scopes:?}"
    );
    assert!(
        scopes.iter().any(|s| *s == "repository:lab/noble:delete"),
        "{scopes:?}"
    );

    // skopeo, doing its own token dance, sees the result.
    let latest = registry.inspect("lab/noble:latest", false).expect("latest");
    assert_eq!(latest["Digest"], report["containerdisk"]["digest"]);
    assert_eq!(
        registry.tags("lab/noble"),
        ["latest", "noble", &format!("noble-{NEWEST}")]
    );
}
