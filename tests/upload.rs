//! `cloudimg upload` against a real Glance (see `common/glance.rs`), read back with curl.
//!
//! Tests run in parallel against one Glance: every image name is unique to its test and run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cloudimg::container::glance::ImageMetadata;
use cloudimg::container::manifest::ManifestHash;
use cloudimg::container::ova;
use cloudimg::container::ovf::OvfSpec;
use cloudimg::upload::{self, Glance, GlanceTarget, ImageFilter, Retire, UploadOptions};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::Value;
use tempfile::TempDir;

use crate::common::glance::{get, images_named, unique, Cleanup};
use crate::common::tools::oracles;
use crate::require_glance;

fn cloudimg(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloudimg"));
    command
        .args(["--stall-timeout", "10"])
        .args(args)
        .env("NO_COLOR", "1");
    // Credentials of the developer's shell must not leak into these runs.
    for key in [
        "OS_CLOUD",
        "OS_AUTH_URL",
        "OS_TOKEN",
        "OS_IMAGE_URL",
        "OS_USERNAME",
        "OS_PASSWORD",
    ] {
        command.env_remove(key);
    }
    command
}

fn upload(glance: &str, target: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--retries", "2", "--json", "upload", "--glance", glance];
    args.extend_from_slice(extra);
    cloudimg(&args)
        .arg(target)
        .output()
        .expect("run cloudimg upload")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `--json` list of a successful upload.
fn uploaded(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "upload failed ({:?}): {}",
        output.status.code(),
        stderr(output)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .expect("JSON on stdout")
        .as_array()
        .expect("a list")
        .clone()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// A qcow2 holding `data_len` random bytes, made by `cloudimg convert` from a raw file.
fn qcow2_with_data(dir: &Path, file: &str, data_len: usize) -> PathBuf {
    let raw = dir.join(format!("{file}.raw-source"));
    std::fs::write(&raw, random_bytes(data_len, 7)).unwrap();
    let qcow2 = dir.join(file);
    let output = cloudimg(&["convert", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .output()
        .unwrap();
    assert!(output.status.success(), "convert: {}", stderr(&output));
    std::fs::remove_file(raw).unwrap();
    qcow2
}

/// Writes `<artifact>.glance.json` with the library, as `prepare` does.
fn describe(
    artifact: &Path,
    name: &str,
    disk_format: &str,
    container_format: &str,
    edit: impl FnOnce(&mut ImageMetadata),
) -> PathBuf {
    let mut metadata = ImageMetadata::for_file(
        artifact,
        name,
        disk_format.parse().unwrap(),
        container_format.parse().unwrap(),
        64 << 20,
    )
    .unwrap();
    metadata.set_property("os_distro", "ubuntu");
    edit(&mut metadata);
    metadata.write_beside(artifact).unwrap()
}

fn image(glance: &str, id: &str) -> Value {
    get(glance, &format!("/v2/images/{id}")).unwrap_or_else(|| panic!("image {id} not found"))
}

/// Glance says the image is active with exactly the digests of the metadata.
fn assert_stored(glance: &str, id: &str, metadata: &Path) {
    let expected = ImageMetadata::read(metadata).unwrap().digests;
    let image = image(glance, id);
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["size"], expected.size, "{image}");
    assert_eq!(image["checksum"], expected.md5.as_str(), "{image}");
    assert_eq!(image["os_hash_algo"], "sha512", "{image}");
    assert_eq!(image["os_hash_value"], expected.sha512.as_str(), "{image}");
}

#[test]
fn qcow2_upload_is_active_with_our_digests_and_a_second_run_sends_nothing() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("qcow2");
    // Several 1 MiB chunks, so the stream and the hashes span reads.
    let qcow2 = qcow2_with_data(dir.path(), "disk.qcow2", 3 << 20);
    let metadata = describe(&qcow2, &name, "qcow2", "bare", |m| {
        m.tags = vec!["cloudimg-test".into()];
        m.min_ram = 512;
    });

    let cleanup = Cleanup::new(&glance);
    let first = uploaded(&upload(&glance, &metadata, &[]));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["outcome"], "uploaded");
    assert_eq!(first[0]["name"], name.as_str());
    let id = cleanup.track(first[0]["id"].as_str().unwrap());
    assert_stored(&glance, &id, &metadata);
    let stored = image(&glance, &id);
    assert_eq!(stored["disk_format"], "qcow2");
    assert_eq!(stored["os_distro"], "ubuntu");
    assert_eq!(stored["min_disk"], 1);
    assert_eq!(stored["min_ram"], 512);
    assert_eq!(stored["visibility"], "private");
    assert_eq!(stored["tags"], serde_json::json!(["cloudimg-test"]));
    assert_eq!(first[0]["os_hash_value"], stored["os_hash_value"]);

    // Through the directory this time: the same image is found, nothing is created.
    let second = uploaded(&upload(&glance, dir.path(), &[]));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["outcome"], "already-present");
    assert_eq!(second[0]["id"], id.as_str());
    assert_eq!(images_named(&glance, &name).len(), 1);
}

#[test]
fn a_second_image_of_the_same_name_with_other_content_is_refused_unless_duplicates_are_allowed() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("taken");
    let cleanup = Cleanup::new(&glance);
    let first_dir = dir.path().join("first");
    let second_dir = dir.path().join("second");
    for (folder, seed) in [(&first_dir, 21), (&second_dir, 22)] {
        std::fs::create_dir(folder).unwrap();
        let raw = folder.join("disk.raw");
        std::fs::write(&raw, random_bytes(1 << 20, seed)).unwrap();
        describe(&raw, &name, "raw", "bare", |_| {});
    }
    let first = uploaded(&upload(&glance, &first_dir, &[]));
    let first_id = cleanup.track(first[0]["id"].as_str().unwrap());

    // Other bytes under the same name: refused before anything is created, exit 7, and the
    // --json error object says why.
    let refused = upload(&glance, &second_dir, &[]);
    assert_eq!(refused.status.code(), Some(7), "{}", stderr(&refused));
    let error: Value = serde_json::from_slice(&refused.stdout).expect("JSON error object");
    assert_eq!(error["error"]["kind"], "name-taken", "{error}");
    assert_eq!(error["error"]["exit_status"], 7, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(&first_id), "{message}");
    assert!(message.contains("--allow-duplicates"), "{message}");
    let named = images_named(&glance, &name);
    assert_eq!(named.len(), 1, "{named:?}");

    // The same bytes again are still "already present", not refused.
    let again = uploaded(&upload(&glance, &first_dir, &[]));
    assert_eq!(again[0]["outcome"], "already-present");

    // Asked for: the second image is created beside the first.
    let second = uploaded(&upload(&glance, &second_dir, &["--allow-duplicates"]));
    let second_id = cleanup.track(second[0]["id"].as_str().unwrap());
    assert_ne!(second_id, first_id);
    assert_stored(
        &glance,
        &second_id,
        &second_dir.join("disk.raw.glance.json"),
    );
    assert_eq!(images_named(&glance, &name).len(), 2);
}

#[test]
fn seed_iso_from_cloudimg_seed_uploads_with_a_plain_line_of_name_id_and_status() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("seed");
    std::fs::write(dir.path().join("user-data"), "#cloud-config\n").unwrap();
    let iso = format!("{name}.iso");
    let made = cloudimg(&[
        "seed",
        "--user-data",
        "user-data",
        "-o",
        &iso,
        "--name",
        &name,
    ])
    .current_dir(dir.path())
    .output()
    .unwrap();
    assert!(made.status.success(), "seed: {}", stderr(&made));
    let metadata = dir.path().join(format!("{iso}.glance.json"));
    // Glance inspects iso uploads: this also shows our ISO passes for one.
    let output = cloudimg(&["upload", "--glance", &glance])
        .arg(&metadata)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{text}");
    let cleanup = Cleanup::new(&glance);
    cleanup.track(words[1]);
    assert_eq!(words[0], name);
    assert_eq!(words[2], "active");
    assert_stored(&glance, words[1], &metadata);
    assert_eq!(image(&glance, words[1])["disk_format"], "iso");
}

#[test]
fn raw_bytes_labelled_qcow2_are_refused_with_glances_reason_and_no_image_is_left() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("refused");
    let fake = dir.path().join("fake.qcow2");
    std::fs::write(&fake, random_bytes(3 << 20, 11)).unwrap();
    let metadata = describe(&fake, &name, "qcow2", "bare", |_| {});
    let started = Instant::now();
    let output = upload(&glance, &metadata, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("Glance refused the image data"),
        "{message}"
    );
    assert!(
        message.contains("does not match stream data raw"),
        "{message}"
    );
    assert!(
        message.contains("deleted the image left by the failed upload"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        images_named(&glance, &name).is_empty(),
        "a refused image was left behind"
    );
}

#[test]
fn qcow2_with_a_backing_file_fails_glances_safety_checks_and_is_deleted() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("backing");
    let base = dir.path().join("base.qcow2");
    let overlay = dir.path().join("overlay.qcow2");
    let (base_path, overlay_path) = (base.to_str().unwrap(), overlay.to_str().unwrap());
    qemu.run(["create", "-q", "-f", "qcow2", base_path, "16M"]);
    qemu.run([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        base_path,
        overlay_path,
    ]);
    let metadata = describe(&overlay, &name, "qcow2", "bare", |_| {});
    let output = upload(&glance, &metadata, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("failed safety checks"), "{message}");
    assert!(images_named(&glance, &name).is_empty());
}

#[test]
fn failed_glance_direct_import_is_reported_not_awaited() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("import-fails");
    // Staging accepts anything; the import task's inspection then fails the image.
    let fake = dir.path().join("fake.qcow2");
    std::fs::write(&fake, random_bytes(1 << 20, 13)).unwrap();
    let metadata = describe(&fake, &name, "qcow2", "bare", |_| {});
    let started = Instant::now();
    let output = upload(&glance, &metadata, &["--import", "--import-timeout", "120"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert!(message.contains("import failed"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}: the failure was waited out, not noticed",
        started.elapsed()
    );
    assert!(images_named(&glance, &name).is_empty());
}

#[test]
fn glance_direct_import_of_a_valid_qcow2_ends_active() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("import");
    let qcow2 = qcow2_with_data(dir.path(), "disk.qcow2", 1 << 20);
    let metadata = describe(&qcow2, &name, "qcow2", "bare", |_| {});
    let done = uploaded(&upload(&glance, &metadata, &["--import"]));
    let cleanup = Cleanup::new(&glance);
    cleanup.track(done[0]["id"].as_str().unwrap());
    assert_eq!(done[0]["outcome"], "uploaded");
    assert_stored(&glance, done[0]["id"].as_str().unwrap(), &metadata);
}

#[test]
fn a_file_changed_since_its_metadata_is_an_integrity_error_and_leaves_no_image() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("changed");
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, random_bytes(1 << 20, 17)).unwrap();
    let metadata = describe(&raw, &name, "raw", "bare", |_| {});
    // Same size, one byte different: only the hashes can tell.
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[12345] ^= 0xff;
    std::fs::write(&raw, bytes).unwrap();
    let output = upload(&glance, &metadata, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(message.contains("changed since its metadata"), "{message}");
    assert!(images_named(&glance, &name).is_empty());
}

#[test]
fn glance_down_is_a_network_error_after_the_retries() {
    let dir = TempDir::new().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, b"data").unwrap();
    let metadata = describe(&raw, &unique("down"), "raw", "bare", |_| {});
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let output = cloudimg(&["--retries", "0", "upload", "--glance"])
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(&metadata)
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert!(message.contains("gave up after 1 attempt"), "{message}");
    assert!(message.contains("Connection refused"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn kernel_and_ramdisk_ids_are_set_on_the_ami() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let base = unique("ami");
    let mut ids = Vec::new();
    for (file, format, seed) in [("vmlinuz", "aki", 1), ("initrd", "ari", 2)] {
        let path = dir.path().join(file);
        std::fs::write(&path, random_bytes(64 << 10, seed)).unwrap();
        describe(&path, &format!("{base}-{file}"), format, format, |_| {});
        ids.push(file);
    }
    let root = dir.path().join("root.img");
    std::fs::write(&root, random_bytes(1 << 20, 3)).unwrap();
    describe(&root, &format!("{base}-root"), "ami", "ami", |m| {
        m.kernel = Some("vmlinuz".into());
        m.ramdisk = Some("initrd".into());
    });

    let done = uploaded(&upload(&glance, dir.path(), &[]));
    let cleanup = Cleanup::new(&glance);
    for image in &done {
        cleanup.track(image["id"].as_str().unwrap());
    }
    let id_of = |suffix: &str| {
        done.iter()
            .find(|i| i["name"] == format!("{base}-{suffix}").as_str())
            .unwrap_or_else(|| panic!("{suffix} not uploaded: {done:?}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let order: Vec<&str> = done.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(
        order,
        [
            format!("{base}-vmlinuz"),
            format!("{base}-initrd"),
            format!("{base}-root")
        ]
    );
    let ami = image(&glance, &id_of("root"));
    assert_eq!(ami["kernel_id"], id_of("vmlinuz").as_str(), "{ami}");
    assert_eq!(ami["ramdisk_id"], id_of("initrd").as_str(), "{ami}");
    assert_eq!(image(&glance, &id_of("vmlinuz"))["disk_format"], "aki");
}

#[test]
fn ova_and_ovf_container_formats_upload() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let qcow2 = qcow2_with_data(dir.path(), "disk.qcow2", 1 << 20);
    let vmdk = dir.path().join("disk.vmdk");
    let output = cloudimg(&["convert", "-O", "vmdk", "-o", "subformat=streamOptimized"])
        .arg(&qcow2)
        .arg(&vmdk)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let vmdk_size = std::fs::metadata(&vmdk).unwrap().len();
    let ova_path = dir.path().join("appliance.ova");
    let spec = OvfSpec::new("appliance", "disk.vmdk", vmdk_size, 64 << 20);
    ova::write_ova_package(&ova_path, &spec, &vmdk, ManifestHash::Sha256, None).unwrap();
    let ova_name = unique("ova");
    let ovf_name = unique("ovf");
    describe(&ova_path, &ova_name, "vmdk", "ova", |_| {});
    describe(&vmdk, &ovf_name, "vmdk", "ovf", |_| {});
    std::fs::remove_file(&qcow2).unwrap();

    let done = uploaded(&upload(&glance, dir.path(), &[]));
    let cleanup = Cleanup::new(&glance);
    for image in &done {
        cleanup.track(image["id"].as_str().unwrap());
    }
    assert_eq!(done.len(), 2);
    for (name, container) in [(&ova_name, "ova"), (&ovf_name, "ovf")] {
        let entry = done
            .iter()
            .find(|i| i["name"] == name.as_str())
            .expect("uploaded");
        let stored = image(&glance, entry["id"].as_str().unwrap());
        assert_eq!(stored["container_format"], container, "{stored}");
        assert_eq!(stored["status"], "active", "{stored}");
        assert_eq!(stored["checksum"], entry["checksum"]);
    }
}

/// What a reporter was told: the operations started (label, total), bytes advanced, finishes.
type Events = (Vec<(String, Option<u64>)>, u64, u32);

#[derive(Default)]
struct Recorder {
    events: std::sync::Mutex<Events>,
}

impl cloudimg::io::progress::Reporter for Recorder {
    fn start(&self, label: &str, total: Option<u64>, _already: u64) {
        self.events
            .lock()
            .unwrap()
            .0
            .push((label.to_owned(), total));
    }
    fn advance(&self, bytes: u64) {
        self.events.lock().unwrap().1 += bytes;
    }
    fn finish(&self) {
        self.events.lock().unwrap().2 += 1;
    }
}

/// The library calls `sync` will make: find by name and tag, hide, deactivate, delete.
#[test]
fn library_finds_by_name_and_tag_then_hides_deactivates_and_deletes() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("retire");
    let tag = unique("tag");
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, random_bytes(256 << 10, 5)).unwrap();
    let metadata = describe(&raw, &name, "raw", "bare", |m| m.tags = vec![tag.clone()]);
    // Two more images with the tag, to read the list over several pages.
    let mut others = Vec::new();
    for n in 0..2 {
        let path = dir.path().join(format!("other{n}.raw"));
        std::fs::write(&path, random_bytes(4096, 40 + n)).unwrap();
        let other = unique(&format!("retire-other{n}"));
        others.push(describe(&path, &other, "raw", "bare", |m| {
            m.tags = vec![tag.clone()]
        }));
    }
    let cleanup = Cleanup::new(&glance);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let target = GlanceTarget::unauthenticated(url::Url::parse(&glance).unwrap());
        let options = UploadOptions::default();
        let recorder = Recorder::default();
        let done = upload::upload_artifacts(
            &target,
            std::slice::from_ref(&metadata),
            &options,
            &recorder,
        )
        .await
        .unwrap();
        let id = done[0].id.clone();
        // Progress: one operation, every byte, finished.
        let (starts, advanced, finishes) = recorder.events.lock().unwrap().clone();
        assert_eq!(starts, [(name.clone(), Some(256 << 10))]);
        assert_eq!((advanced, finishes), (256 << 10, 1));
        let session = Glance::connect(&target, &options.client).await.unwrap();

        let more =
            upload::upload_artifacts(&target, &others, &options, &cloudimg::io::progress::Silent)
                .await
                .unwrap();
        let mut expected: Vec<String> = more.iter().map(|u| cleanup.track(&u.id)).collect();
        expected.push(id.clone());
        expected.sort();
        // One image per page: three requests, every image once.
        let mut by_tag: Vec<String> = session
            .images(&ImageFilter {
                tags: vec![tag.clone()],
                page_size: Some(1),
                ..ImageFilter::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        by_tag.sort();
        assert_eq!(by_tag, expected);
        let by_name = session
            .images(&ImageFilter {
                name: Some(name.clone()),
                ..ImageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(by_name.iter().map(|i| &i.id).collect::<Vec<_>>(), [&id]);

        session.retire(&id, Retire::Hide).await.unwrap();
        assert_eq!(image(&glance, &id)["os_hidden"], true);
        let visible = session
            .images(&ImageFilter {
                name: Some(name.clone()),
                ..ImageFilter::default()
            })
            .await
            .unwrap();
        assert!(visible.is_empty(), "hidden image still listed: {visible:?}");
        let hidden = session
            .images(&ImageFilter {
                name: Some(name.clone()),
                hidden: true,
                ..ImageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(hidden.len(), 1);

        session.retire(&id, Retire::Deactivate).await.unwrap();
        assert_eq!(image(&glance, &id)["status"], "deactivated");

        session.retire(&id, Retire::Delete).await.unwrap();
        assert!(get(&glance, &format!("/v2/images/{id}")).is_none());
        // Deleting what is gone already is not an error.
        session.retire(&id, Retire::Delete).await.unwrap();
    });
}

#[test]
fn token_and_endpoint_from_the_environment_or_clouds_yaml_reach_glance() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, random_bytes(8192, 19)).unwrap();
    let metadata = describe(&raw, &unique("env"), "raw", "bare", |_| {});

    // OS_TOKEN + OS_IMAGE_URL: no --glance, no Keystone.
    let output = cloudimg(&["--json", "upload"])
        .arg(&metadata)
        .env("OS_TOKEN", "test-token")
        .env("OS_IMAGE_URL", &glance)
        .output()
        .unwrap();
    let first = uploaded(&output);
    let cleanup = Cleanup::new(&glance);
    cleanup.track(first[0]["id"].as_str().unwrap());
    assert_eq!(first[0]["outcome"], "uploaded");

    // OS_CLOUD naming a clouds.yaml entry in the current directory.
    std::fs::write(
        dir.path().join("clouds.yaml"),
        format!(
            "clouds:\n  ci:\n    auth:\n      token: test-token\n    \
             image_endpoint_override: {glance}\n"
        ),
    )
    .unwrap();
    let output = cloudimg(&["--json", "upload"])
        .arg(&metadata)
        .current_dir(dir.path())
        .env("OS_CLOUD", "ci")
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("OS_CLIENT_CONFIG_FILE")
        .output()
        .unwrap();
    let second = uploaded(&output);
    assert_eq!(second[0]["outcome"], "already-present");
    assert_eq!(second[0]["id"], first[0]["id"]);
}

#[test]
fn no_endpoint_and_no_credentials_is_a_usage_error() {
    let dir = TempDir::new().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, b"data").unwrap();
    let metadata = describe(&raw, &unique("nowhere"), "raw", "bare", |_| {});
    let output = cloudimg(&["upload"])
        .arg(&metadata)
        .current_dir(dir.path())
        .env_remove("OS_CLIENT_CONFIG_FILE")
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("--glance"), "{message}");
}

/// Accepts one HTTP request on 127.0.0.1, answers it 401 (as Keystone answers bad
/// credentials), and hands back the request body: what cloudimg asked Keystone for.
fn one_refused_request() -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v3", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let reply = "{\"error\": {\"code\": 401, \"message\": \"refused\"}}";
        write!(
            reader.get_mut(),
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
        String::from_utf8(body).unwrap()
    });
    (url, handle)
}

#[test]
fn os_project_name_scopes_the_keystone_token_instead_of_the_clouds_project() {
    let dir = TempDir::new().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, b"data").unwrap();
    let metadata = describe(&raw, &unique("project"), "raw", "bare", |_| {});
    let (auth_url, request) = one_refused_request();
    let clouds = dir.path().join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  lab:\n    auth:\n      auth_url: {auth_url}\n      username: u\n      \
             password: pw\n      project_id: cloud-project-id\n"
        ),
    )
    .unwrap();
    let output = cloudimg(&["--retries", "0", "upload", "--os-cloud", "lab"])
        .args(["--os-project-name", "other-project"])
        .arg(&metadata)
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env_remove("OS_PROJECT_ID")
        .output()
        .unwrap();
    let body: Value = serde_json::from_str(&request.join().unwrap()).unwrap();
    let project = &body["auth"]["scope"]["project"];
    assert_eq!(project["name"], "other-project", "{body}");
    assert!(project.get("id").is_none(), "{body}");
    // Keystone refused: the lab's target fails its row, exit 5.
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
}

#[test]
fn dry_run_says_what_would_be_uploaded_and_creates_nothing() {
    require_glance!(glance);
    let dir = TempDir::new().unwrap();
    let name = unique("dry");
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, random_bytes(1 << 20, 31)).unwrap();
    let metadata = describe(&raw, &name, "raw", "bare", |_| {});
    let cleanup = Cleanup::new(&glance);

    let planned = uploaded(&upload(&glance, &metadata, &["--dry-run"]));
    assert_eq!(planned.len(), 1, "{planned:?}");
    let images = &planned[0]["images"];
    assert_eq!(images[0]["name"], name.as_str());
    assert_eq!(images[0]["outcome"], "would-upload");
    assert!(
        images_named(&glance, &name).is_empty(),
        "a dry run created an image"
    );

    let first = uploaded(&upload(&glance, &metadata, &[]));
    let id = cleanup.track(first[0]["id"].as_str().unwrap());
    let again = uploaded(&upload(&glance, &metadata, &["--dry-run"]));
    assert_eq!(again[0]["images"][0]["outcome"], "already-present");
    assert_eq!(again[0]["images"][0]["id"], id.as_str());

    // Other bytes under the name: the refusal the upload would meet, and still nothing made.
    std::fs::write(&raw, random_bytes(1 << 20, 32)).unwrap();
    let metadata = describe(&raw, &name, "raw", "bare", |_| {});
    let refused = upload(&glance, &metadata, &["--dry-run"]);
    assert_eq!(refused.status.code(), Some(7), "{}", stderr(&refused));
    assert_eq!(images_named(&glance, &name).len(), 1);
}
