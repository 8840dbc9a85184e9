//! `cloudimg sync` on the loopback mirror: publish, no-op reruns, new serials and retention,
//! kill -9, concurrent runs, a failing entry, a full disk, rollback protection — and in every
//! case nothing half-published.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::glance::{get, images_named, unique, Cleanup};
use crate::common::mirror::{Knobs, Stream};
use crate::common::server::{Fault, Times};
use crate::common::site::{
    build_site, cloudimg, file_url_path, names, outcome, run, shared_site, stderr, summary, Site,
};
use crate::{require_glance, require_tools};

const NEWEST: &str = "20241004.1";
const ARTIFACT: &str = "ubuntu-24.04-server-cloudimg-amd64.qcow2";

/// A user catalog in `dir` publishing to `dir/root`, with `images` as TOML `[[image]]` bodies.
fn write_catalog(dir: &Path, keep: usize, images: &[&str]) -> PathBuf {
    let mut text = format!(
        "output = \"root\"\nkeep = {keep}\nhook = \"echo $CLOUDIMG_IMAGE $CLOUDIMG_SERIAL >> \
         $CLOUDIMG_ROOT/hook.log\"\n"
    );
    for image in images {
        text.push_str("\n[[image]]\n");
        text.push_str(image);
        text.push('\n');
    }
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const NOBLE: &str = "name = \"noble\"\nrelease = \"noble\"\nfile = \"disk1.img\"\n\
                     disk_format = \"qcow2\"\ncontainer_format = \"bare\"";

fn sync(site: &Site, catalog: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--json", "sync", catalog.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(site, &args)
}

fn current(root: &Path, name: &str) -> Option<String> {
    std::fs::read_link(root.join(name).join("current"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Image bytes the server sent (anything but listings, JSON and checksum files).
fn image_bytes_sent(site: &Site) -> u64 {
    site.server
        .log()
        .iter()
        .filter(|e| e.path.ends_with(".img") || e.path.ends_with(".tar.gz"))
        .map(|e| e.bytes_sent)
        .sum()
}

/// Only complete serials are visible: every folder under `<root>/<name>/` holds artifacts with
/// their metadata, and `current` points at one of them.
fn assert_only_whole_serials(root: &Path, name: &str) {
    for serial in names(&root.join(name)) {
        if serial == "current" {
            continue;
        }
        assert!(!serial.starts_with('.'), "{serial} visible in {name}/");
        let files = names(&root.join(name).join(&serial));
        assert!(
            files.contains(&ARTIFACT.to_owned())
                && files.contains(&format!("{ARTIFACT}.glance.json")),
            "{serial}: {files:?}"
        );
    }
    if let Some(serial) = current(root, name) {
        assert!(root.join(name).join(serial).is_dir());
    }
}

/// A site whose newest image download stalls for `pause` after 64 KiB, once; and that image's
/// URL path.
fn site_with_stalled_image(pause: Duration) -> (Site, String) {
    let site = build_site(Knobs::default());
    let image = file_url_path(&site, "disk1.img");
    site.server.inject(
        &image,
        Fault::StallAfter {
            bytes: 64 * 1024,
            pause,
        },
        Times::Once,
    );
    (site, image)
}

#[test]
fn first_sync_publishes_and_the_second_transfers_no_image_bytes() {
    require_tools!("qemu-img");
    let site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let catalog = write_catalog(dir.path(), 2, &[NOBLE]);
    let root = dir.path().join("root");
    let first = sync(&site, &catalog, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let report = summary(&first);
    assert_eq!(outcome(&report, "noble")["outcome"], "published");
    assert_eq!(current(&root, "noble").as_deref(), Some(NEWEST));
    assert_only_whole_serials(&root, "noble");
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join(format!("noble/{NEWEST}/{ARTIFACT}.glance.json")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["name"], format!("noble-{NEWEST}"));
    assert_eq!(meta["properties"]["cloudimg_image"], "noble");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(".cloudimg-state.json")).unwrap())
            .unwrap();
    let record = &state["images"]["noble"]["serials"][NEWEST];
    assert_eq!(state["images"]["noble"]["current"], NEWEST);
    assert_eq!(record["artifacts"][0]["sha256"], meta["digests"]["sha256"]);
    assert!(record["upstream"][0]["url"]
        .as_str()
        .unwrap()
        .ends_with(".img"));
    assert_eq!(
        std::fs::read_to_string(root.join("hook.log")).unwrap(),
        format!("noble {NEWEST}\n")
    );

    site.server.clear_log();
    let second = sync(&site, &catalog, &[]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(outcome(&summary(&second), "noble")["outcome"], "up-to-date");
    assert_eq!(image_bytes_sent(&site), 0, "{:?}", site.server.log());
    assert_eq!(
        std::fs::read_to_string(root.join("hook.log"))
            .unwrap()
            .lines()
            .count(),
        1,
        "no hook without a new serial"
    );
}

#[test]
fn new_upstream_serial_is_published_and_old_ones_pruned() {
    require_tools!("qemu-img");
    let mut site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let catalog = write_catalog(dir.path(), 1, &[NOBLE]);
    let root = dir.path().join("root");
    assert!(sync(&site, &catalog, &[]).status.success());
    site.mirror
        .add_serial(Stream::Released, "20250101")
        .unwrap();
    let dry = sync(&site, &catalog, &["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let planned = outcome(&summary(&dry), "noble").clone();
    assert_eq!(planned["outcome"], "would-publish");
    assert_eq!(planned["would_prune"], serde_json::json!([NEWEST]));
    assert_eq!(current(&root, "noble").as_deref(), Some(NEWEST), "dry run");

    let output = sync(&site, &catalog, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let entry = outcome(&summary(&output), "noble").clone();
    assert_eq!(entry["serial"], "20250101");
    assert_eq!(entry["previous"], NEWEST);
    assert_eq!(entry["pruned"], serde_json::json!([NEWEST]));
    assert_eq!(current(&root, "noble").as_deref(), Some("20250101"));
    assert_eq!(names(&root.join("noble")), ["20250101", "current"]);
    assert_only_whole_serials(&root, "noble");
}

#[test]
fn killed_sync_leaves_nothing_visible_and_the_rerun_resumes_and_finishes() {
    require_tools!("qemu-img");
    let (site, image) = site_with_stalled_image(Duration::from_secs(60));
    let dir = TempDir::new().unwrap();
    let catalog = write_catalog(dir.path(), 2, &[NOBLE]);
    let root = dir.path().join("root");
    let mut child = cloudimg(&site, &["sync", catalog.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The run's download cache holds one folder per upstream build.
    let part = || {
        let folders = std::fs::read_dir(root.join(".downloads")).ok()?;
        folders
            .flatten()
            .map(|f| f.path().join("ubuntu-24.04-server-cloudimg-amd64.img.part"))
            .find(|p| p.exists())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while part()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
        < 64 * 1024
    {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Meanwhile a second sync of the same root refuses at once.
    let started = Instant::now();
    let second = run(&site, &["sync", catalog.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(6), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another sync"),
        "{}",
        stderr(&second)
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!root.join("noble").exists(), "{:?}", names(&root));

    site.server.clear_faults();
    site.server.clear_log();
    let rerun = sync(&site, &catalog, &[]);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert_eq!(current(&root, "noble").as_deref(), Some(NEWEST));
    assert_only_whole_serials(&root, "noble");
    let resumed = site
        .server
        .requests_for(&image)
        .into_iter()
        .any(|e| e.range.is_some() && e.status == 206);
    assert!(resumed, "{:?}", site.server.log());
    assert!(
        !root.join(".downloads/noble").exists(),
        "download cache cleared"
    );
}

#[test]
fn a_waiting_sync_runs_after_the_first_one() {
    require_tools!("qemu-img");
    let (site, image) = site_with_stalled_image(Duration::from_secs(2));
    let dir = TempDir::new().unwrap();
    let catalog = write_catalog(dir.path(), 2, &[NOBLE]);
    let first = cloudimg(&site, &["sync", catalog.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = dir.path().join("root/.cloudimg-sync.lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while site.server.requests_for(&image).is_empty() {
        assert!(Instant::now() < deadline, "the first sync never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lock.exists());
    let second = sync(&site, &catalog, &["--wait"]);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        outcome(&summary(&second), "noble")["outcome"],
        "up-to-date",
        "the waiting run found the first run's work done"
    );
}

#[test]
fn a_failing_entry_does_not_stop_the_others() {
    require_tools!("qemu-img");
    let site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let missing = "name = \"gone\"\nrelease = \"noble\"\nfile = \"vhd.tar.gz\"";
    let catalog = write_catalog(dir.path(), 2, &[missing, NOBLE]);
    let root = dir.path().join("root");
    let output = run(
        &site,
        &[
            "--json",
            "--log-format",
            "json",
            "sync",
            catalog.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    // Logs for machines: one JSON object per line, the failure among them with its entry.
    let logs: Vec<Value> = stderr(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "ERROR" && l["fields"]["image"] == "gone"),
        "{logs:?}"
    );
    let report = summary(&output);
    let failed = outcome(&report, "gone");
    assert_eq!(failed["outcome"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("vhd.tar.gz"),
        "{failed}"
    );
    assert_eq!(outcome(&report, "noble")["outcome"], "published");
    assert!(!root.join("gone").exists());
    assert_only_whole_serials(&root, "noble");
}

#[test]
fn a_corrupted_download_fails_its_entry_and_publishes_nothing() {
    require_tools!("qemu-img");
    let site = build_site(Knobs::default());
    let image = file_url_path(&site, "disk1.img");
    site.server
        .inject(&image, Fault::CorruptByte(1000), Times::Always);
    let dir = TempDir::new().unwrap();
    let catalog = write_catalog(dir.path(), 2, &[NOBLE]);
    let root = dir.path().join("root");
    let output = sync(&site, &catalog, &[]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let report = summary(&output);
    assert!(outcome(&report, "noble")["error"]
        .as_str()
        .unwrap()
        .contains("sha256"));
    assert!(!root.join("noble").exists());
    assert!(names(&root.join(".staging")).is_empty());
}

#[test]
fn an_older_serial_than_the_published_one_is_refused_unless_allowed() {
    require_tools!("qemu-img");
    let site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let catalog = write_catalog(dir.path(), 3, &[NOBLE]);
    let root = dir.path().join("root");
    assert!(sync(&site, &catalog, &[]).status.success());
    // As if an earlier run had published a serial the mirror no longer offers: a replayed or
    // stale mirror now looks older than what users have.
    std::fs::rename(
        root.join(format!("noble/{NEWEST}")),
        root.join("noble/20301231"),
    )
    .unwrap();
    std::os::unix::fs::symlink("20301231", root.join("noble/current.new")).unwrap();
    std::fs::rename(root.join("noble/current.new"), root.join("noble/current")).unwrap();
    let refused = sync(&site, &catalog, &[]);
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(outcome(&summary(&refused), "noble")["error"]
        .as_str()
        .unwrap()
        .contains("older than the published 20301231"));
    assert_eq!(current(&root, "noble").as_deref(), Some("20301231"));
    let allowed = sync(&site, &catalog, &["--allow-downgrade"]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert_eq!(current(&root, "noble").as_deref(), Some(NEWEST));
}

#[test]
fn a_full_disk_fails_cleanly_with_nothing_half_published() {
    require_tools!("qemu-img", "unshare");
    let site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let catalog = write_catalog(dir.path(), 2, &[NOBLE]);
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // A 4 MiB filesystem of its own, mounted in a private mount namespace (no root needed).
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs '{root}' || exit 99; \"$@\"; status=$?; \
         echo \"left in root: $(ls -A '{root}' | tr '\\n' ' ')\" >&2; exit $status",
        root = root.display()
    );
    let mut command = Command::new("unshare");
    command.args(["-rm", "sh", "-c", &script, "sh"]);
    let inner = cloudimg(&site, &["--json", "sync", catalog.to_str().unwrap()]);
    command.arg(inner.get_program()).args(inner.get_args());
    // The inner run's environment too: its own cache, no colours.
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let report = summary(&output);
    assert!(outcome(&report, "noble")["error"]
        .as_str()
        .unwrap()
        .contains("bytes free"));
    let left = stderr(&output);
    let left = left
        .lines()
        .find_map(|line| line.strip_prefix("left in root: "))
        .expect("the listing of the full filesystem");
    assert!(
        left.split_whitespace()
            .all(|name| name.starts_with(".cloudimg")),
        "only the lock and state files: {left}"
    );
}

#[test]
fn sync_uploads_new_serials_and_hides_the_pruned_ones_in_glance() {
    require_tools!("qemu-img", "curl");
    require_glance!(glance);
    let cleanup = Cleanup::new(&glance);
    let mut site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let name = unique("sync");
    let entry = format!("name = \"{name}\"\nrelease = \"noble\"");
    let catalog = write_catalog(dir.path(), 1, &[&entry]);
    let mut text = std::fs::read_to_string(&catalog).unwrap();
    // Top-level keys must precede the tables: put [glance] last.
    text.push_str(&format!(
        "\n[glance]\nurl = \"{glance}\"\nretire = \"hide\"\n"
    ));
    std::fs::write(&catalog, text).unwrap();

    let first = sync(&site, &catalog, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let first_ids = outcome(&summary(&first), &name)["glance_ids"].clone();
    let first_id = cleanup.track(first_ids[0].as_str().expect("an image id"));
    let image = get(&glance, &format!("/v2/images/{first_id}")).unwrap();
    assert_eq!(image["name"], format!("{name}-{NEWEST}"));
    assert_eq!(image["status"], "active");
    assert!(image["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from(format!("cloudimg:{name}"))));

    // Nothing new upstream: nothing new in Glance.
    let again = sync(&site, &catalog, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(outcome(&summary(&again), &name)["outcome"], "up-to-date");
    assert_eq!(images_named(&glance, &format!("{name}-{NEWEST}")).len(), 1);

    site.mirror
        .add_serial(Stream::Released, "20250101")
        .unwrap();
    let newer = sync(&site, &catalog, &[]);
    assert!(newer.status.success(), "{}", stderr(&newer));
    let entry = outcome(&summary(&newer), &name).clone();
    let second_id = cleanup.track(entry["glance_ids"][0].as_str().unwrap());
    assert_eq!(entry["retired"], serde_json::json!([first_id]));
    let old = get(&glance, &format!("/v2/images/{first_id}")).unwrap();
    assert_eq!(
        old["os_hidden"], true,
        "the pruned serial's image is hidden"
    );
    let new = get(&glance, &format!("/v2/images/{second_id}")).unwrap();
    assert_eq!(new["os_hidden"], false);
    assert_eq!(new["cloudimg_serial"], "20250101");
}

/// Two entries, the first of which blocks in its hook until the second is published (or gives
/// up after `WAIT_TENTHS` tenths of a second); returns what the hook saw.
fn first_entry_waits_for_the_second(site: &Site, jobs: &str, wait_tenths: &str) -> String {
    let dir = TempDir::new().unwrap();
    let waits = r#"name = "first"
release = "noble"
hook = 'i=0; until [ -e "$CLOUDIMG_ROOT/second/current" ]; do i=$((i+1)); if [ $i -gt "$WAIT_TENTHS" ]; then echo alone > "$CLOUDIMG_ROOT/order"; exit 0; fi; sleep 0.1; done; echo overlapped > "$CLOUDIMG_ROOT/order"'"#;
    let second = "name = \"second\"\nrelease = \"noble\"\nstream = \"daily\"";
    let catalog = write_catalog(dir.path(), 1, &[waits, second]);
    let output = cloudimg(
        site,
        &["--json", "sync", catalog.to_str().unwrap(), "--jobs", jobs],
    )
    .env("WAIT_TENTHS", wait_tenths)
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report = summary(&output);
    for name in ["first", "second"] {
        assert_eq!(outcome(&report, name)["outcome"], "published", "{report}");
    }
    std::fs::read_to_string(dir.path().join("root/order"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn two_jobs_work_on_two_entries_at_once_and_one_job_in_turn() {
    require_tools!("qemu-img");
    let site = build_site(Knobs::default());
    // Blocking work of one entry (its hook here, a conversion elsewhere) does not hold back the
    // other: the second entry is discovered, downloaded, converted and published meanwhile.
    assert_eq!(
        first_entry_waits_for_the_second(&site, "2", "600"),
        "overlapped"
    );
    // With one job the second entry starts only once the first is done.
    assert_eq!(first_entry_waits_for_the_second(&site, "1", "10"), "alone");
}

#[test]
fn entries_built_from_one_upstream_file_download_it_once_and_keep_it_while_current() {
    require_tools!("qemu-img");
    let site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let vmdk = "name = \"noble-vmdk\"\nrelease = \"noble\"\ndisk_format = \"vmdk\"";
    let catalog = write_catalog(dir.path(), 2, &[NOBLE, vmdk]);
    let root = dir.path().join("root");
    let upstream = site.released_image("amd64", NEWEST);
    let size = std::fs::metadata(&upstream).unwrap().len();
    for jobs in ["1", "2"] {
        let _ = std::fs::remove_dir_all(&root);
        site.server.clear_log();
        let output = sync(&site, &catalog, &["--jobs", jobs]);
        assert!(output.status.success(), "{}", stderr(&output));
        let report = summary(&output);
        for name in ["noble", "noble-vmdk"] {
            assert_eq!(outcome(&report, name)["outcome"], "published", "{report}");
        }
        assert_eq!(image_bytes_sent(&site), size, "--jobs {jobs}: one download");
    }
    // The verified download stays while the serial it built is current: rebuilding a lost
    // serial transfers nothing.
    let cached = names(&root.join(".downloads"));
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(names(&root.join(".downloads").join(&cached[0]))
        .contains(&"ubuntu-24.04-server-cloudimg-amd64.img".to_owned()));
    std::fs::remove_dir_all(root.join("noble-vmdk")).unwrap();
    site.server.clear_log();
    let rebuilt = sync(&site, &catalog, &[]);
    assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
    assert_eq!(
        outcome(&summary(&rebuilt), "noble-vmdk")["outcome"],
        "published"
    );
    assert_eq!(image_bytes_sent(&site), 0);
}

#[test]
fn a_kill_between_the_rename_and_the_current_switch_is_finished_by_the_rerun() {
    require_tools!("qemu-img");
    let mut site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let catalog = write_catalog(dir.path(), 2, &[NOBLE]);
    let root = dir.path().join("root");
    assert!(sync(&site, &catalog, &[]).status.success());
    site.mirror
        .add_serial(Stream::Released, "20250101")
        .unwrap();
    // What a run killed right after renaming the new serial into place leaves: the folder is
    // there, `current` and the state file still name the previous serial.
    let elsewhere = TempDir::new().unwrap();
    let other = write_catalog(elsewhere.path(), 2, &[NOBLE]);
    assert!(sync(&site, &other, &[]).status.success());
    std::fs::rename(
        elsewhere.path().join("root/noble/20250101"),
        root.join("noble/20250101"),
    )
    .unwrap();
    assert_eq!(current(&root, "noble").as_deref(), Some(NEWEST));

    site.server.clear_log();
    let rerun = sync(&site, &catalog, &[]);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    let entry = outcome(&summary(&rerun), "noble").clone();
    assert_eq!(entry["outcome"], "published", "{entry}");
    assert_eq!(entry["serial"], "20250101");
    assert_eq!(entry["previous"], NEWEST);
    assert_eq!(current(&root, "noble").as_deref(), Some("20250101"));
    assert_eq!(
        image_bytes_sent(&site),
        0,
        "the published serial is adopted, not rebuilt"
    );
    assert_only_whole_serials(&root, "noble");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(".cloudimg-state.json")).unwrap())
            .unwrap();
    assert_eq!(state["images"]["noble"]["current"], "20250101");
    let hooks = std::fs::read_to_string(root.join("hook.log")).unwrap();
    assert!(hooks.contains("noble 20250101"), "{hooks}");
}

/// The README's example catalog, its `output` moved into `dir`.
fn example_catalog(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("catalogs/examples/lab.toml"),
    )
    .unwrap();
    let root = dir.join("published");
    let text = text.replace(
        "output = \"/srv/cloudimg\"",
        &format!("output = {:?}", root.to_str().unwrap()),
    );
    assert!(
        text.contains(root.to_str().unwrap()),
        "lab.toml has no output line"
    );
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What lab.toml and the README promise: against a mirror that lacks a stream the example
/// uses (the test mirror has no `minimal-daily`, and no 22.04), the entries it cannot serve
/// fail clearly, naming what is missing, the others are done (exit 5), and `--only` of the
/// others succeeds.
#[test]
fn the_example_catalog_against_a_mirror_lacking_a_stream_fails_only_those_entries() {
    require_tools!("qemu-img", "mkfs.ext4");
    let site = shared_site();
    let work = TempDir::new().unwrap();
    let catalog = example_catalog(work.path());
    let output = sync(site, &catalog, &["--dry-run"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let report = summary(&output);
    for (name, missing) in [
        ("noble-arm64-minimal-daily", "minimal/daily/"),
        ("jammy-amd64-prealloc", "22.04"),
    ] {
        let entry = outcome(&report, name);
        assert_eq!(entry["outcome"], "failed", "{report}");
        let error = entry["error"].as_str().unwrap();
        assert!(
            error.contains(missing),
            "{name}: the error names {missing}: {error}"
        );
    }
    for name in ["noble-amd64", "noble-amd64-ova"] {
        assert_eq!(
            outcome(&report, name)["outcome"],
            "would-publish",
            "{name}: {report}"
        );
    }
    let mut args = vec!["--dry-run"];
    args.extend(["--only", "noble-amd64", "--only", "noble-amd64-ova"]);
    let output = sync(site, &catalog, &args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        !work.path().join("published").exists(),
        "a dry run published"
    );
}
