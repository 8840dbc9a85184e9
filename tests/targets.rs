//! Several Glance targets at once, against two real Glance API servers (`CLOUDIMG_TEST_GLANCE`
//! and `CLOUDIMG_TEST_GLANCE_B`, both started by `.ci/run` from `../shared/glance`): each target
//! independent, one stopped half way fails its own row (exit 5) while the other publishes and
//! retires, and a rerun catches up only what that one missed; and the whole of publication in
//! one `sync`: two Glance clouds and a real OCI registry (Debian's docker-registry).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::glance::{get, images_named, images_tagged, unique, Cleanup};
use crate::common::mirror::{Knobs, Stream};
use crate::common::registry::Registry;
use crate::common::site::{build_site, json, outcome, run, stderr, summary, Site};
use crate::{require_glance, require_tools};

const NEWEST: &str = "20241004.1";
const NEXT: &str = "20250101";
const THIRD: &str = "20250202";
/// Exit status when some targets (or entries) failed and the others were done.
const SOME_FAILED: i32 = 5;

/// The second test Glance: its URL and how to stop and start it.
struct SecondGlance {
    url: String,
    dir: String,
    port: String,
    script: PathBuf,
}

impl SecondGlance {
    /// `None` (after saying why) unless `CLOUDIMG_TEST_GLANCE_B` and `_B_DIR` are set; under
    /// `CLOUDIMG_REQUIRE_TOOLS` their absence fails the test.
    fn from_env() -> Option<SecondGlance> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        match (
            var("CLOUDIMG_TEST_GLANCE_B"),
            var("CLOUDIMG_TEST_GLANCE_B_DIR"),
        ) {
            (Some(url), Some(dir)) => {
                let port = url.rsplit(':').next().unwrap_or_default().to_owned();
                let shared = var("CLOUDIMG_SHARED")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
                Some(SecondGlance {
                    url: url.trim_end_matches('/').to_owned(),
                    dir,
                    port,
                    script: shared.join("glance/glance-ci.sh"),
                })
            }
            _ => {
                if std::env::var_os("CLOUDIMG_REQUIRE_TOOLS").is_some() {
                    panic!("CLOUDIMG_TEST_GLANCE_B(_DIR) unset but tools are required: start a second Glance as .ci/run does");
                }
                eprintln!(
                    "SKIPPED: CLOUDIMG_TEST_GLANCE_B and CLOUDIMG_TEST_GLANCE_B_DIR are not set; \
                     start a second Glance with ../shared/glance/glance-ci.sh (GLANCE_DIR, \
                     GLANCE_PORT) to run this test"
                );
                None
            }
        }
    }

    fn script(&self, action: &str) {
        let status = Command::new("bash")
            .arg(&self.script)
            .arg(action)
            .env("GLANCE_DIR", &self.dir)
            .env("GLANCE_PORT", &self.port)
            .status()
            .expect("run glance-ci.sh");
        assert!(status.success(), "glance-ci.sh {action}");
    }

    /// Stops the server until the guard is dropped (even when the test fails).
    fn stopped(&self) -> Restart<'_> {
        self.script("stop");
        Restart(self)
    }
}

struct Restart<'a>(&'a SecondGlance);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        self.0.script("start");
    }
}

/// A user catalog in `dir` with one entry and the two Glance targets `a` and `b`.
fn two_target_catalog(dir: &Path, name: &str, a: &str, b: &str) -> PathBuf {
    let text = format!(
        "output = \"root\"\nkeep = 1\n\n[[image]]\nname = \"{name}\"\nrelease = \"noble\"\n\n\
         [[glance]]\nname = \"a\"\nurl = \"{a}\"\nretire = \"hide\"\n\n\
         [[glance]]\nname = \"b\"\nurl = \"{b}\"\nretire = \"delete\"\n"
    );
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sync(site: &Site, catalog: &Path) -> Output {
    run(site, &["--json", "sync", catalog.to_str().unwrap()])
}

/// The row of `target` in an entry's `targets`.
fn row<'a>(entry: &'a Value, target: &str) -> &'a Value {
    entry["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("targets in {entry}"))
        .iter()
        .find(|row| row["target"] == target)
        .unwrap_or_else(|| panic!("{target} in {entry}"))
}

#[test]
fn sync_publishes_to_two_glances_and_one_stopped_half_way_catches_up() {
    require_tools!("qemu-img", "curl");
    require_glance!(a);
    let Some(b) = SecondGlance::from_env() else {
        return;
    };
    let (clean_a, clean_b) = (Cleanup::new(&a), Cleanup::new(&b.url));
    let mut site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let name = unique("targets");
    let catalog = two_target_catalog(dir.path(), &name, &a, &b.url);

    let first = sync(&site, &catalog);
    assert!(first.status.success(), "{}", stderr(&first));
    let entry = outcome(&summary(&first), &name).clone();
    let first_a = clean_a.track(row(&entry, "a")["ids"][0].as_str().unwrap());
    let first_b = clean_b.track(row(&entry, "b")["ids"][0].as_str().unwrap());
    for (url, id) in [(&a, &first_a), (&b.url, &first_b)] {
        let image = get(url, &format!("/v2/images/{id}")).unwrap();
        assert_eq!(image["name"], format!("{name}-{NEWEST}"));
        assert_eq!(image["status"], "active");
    }

    // Nothing new: nothing sent anywhere.
    let again = sync(&site, &catalog);
    assert!(again.status.success(), "{}", stderr(&again));
    let entry = outcome(&summary(&again), &name).clone();
    assert_eq!(entry["outcome"], "up-to-date");
    for (url, target) in [(&a, "a"), (&b.url, "b")] {
        assert_eq!(row(&entry, target)["status"], "ok");
        assert_eq!(images_named(url, &format!("{name}-{NEWEST}")).len(), 1);
    }

    // A new serial while b is down: a publishes and retires, b's row fails, exit 5.
    site.mirror.add_serial(Stream::Released, NEXT).unwrap();
    let newer = {
        let _down = b.stopped();
        sync(&site, &catalog)
    };
    assert_eq!(newer.status.code(), Some(SOME_FAILED), "{}", stderr(&newer));
    let entry = outcome(&summary(&newer), &name).clone();
    assert_eq!(entry["outcome"], "published");
    let second_a = clean_a.track(row(&entry, "a")["ids"][0].as_str().unwrap());
    assert_eq!(row(&entry, "a")["retired"], serde_json::json!([first_a]));
    assert_eq!(row(&entry, "b")["status"], "failed");
    assert!(row(&entry, "b")["error"]
        .as_str()
        .unwrap()
        .contains(&b.url[7..]));
    assert_eq!(
        get(&a, &format!("/v2/images/{first_a}")).unwrap()["os_hidden"],
        true
    );
    assert_eq!(
        get(&a, &format!("/v2/images/{second_a}")).unwrap()["cloudimg_serial"],
        NEXT
    );
    assert_eq!(
        get(&b.url, &format!("/v2/images/{first_b}")).unwrap()["status"],
        "active",
        "b kept its image while down"
    );

    // b is back: the rerun catches b up (upload, then delete the old serial there); a has
    // nothing to do.
    let caught_up = sync(&site, &catalog);
    assert!(caught_up.status.success(), "{}", stderr(&caught_up));
    let entry = outcome(&summary(&caught_up), &name).clone();
    assert_eq!(entry["outcome"], "up-to-date");
    let second_b = clean_b.track(row(&entry, "b")["ids"][0].as_str().unwrap());
    assert_eq!(row(&entry, "b")["retired"], serde_json::json!([first_b]));
    assert!(
        get(&b.url, &format!("/v2/images/{first_b}")).is_none(),
        "deleted in b"
    );
    assert_eq!(
        get(&b.url, &format!("/v2/images/{second_b}")).unwrap()["status"],
        "active"
    );
    assert_eq!(row(&entry, "a")["ids"], serde_json::json!([second_a]));
    assert!(row(&entry, "a").get("retired").is_none());
    assert_eq!(images_named(&a, &format!("{name}-{NEXT}")).len(), 1);
}

#[test]
fn upload_to_named_targets_reports_each_and_exits_5_when_one_is_down() {
    require_tools!("qemu-img", "curl");
    require_glance!(a);
    let clean = Cleanup::new(&a);
    let site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let name = unique("upload-targets");
    let out = dir.path().join("out");
    json(&run(
        &site,
        &[
            "--json",
            "prepare",
            "noble",
            "--name",
            &name,
            "-o",
            out.to_str().unwrap(),
        ],
    ));
    // Nothing listens on a port that was just free: the target is down.
    let down = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let clouds = dir.path().join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  lab-a:\n    auth_type: none\n    image_endpoint_override: {a}\n  \
             lab-down:\n    auth_type: none\n    image_endpoint_override: {down}\n"
        ),
    )
    .unwrap();
    let mut command = crate::common::site::cloudimg(
        &site,
        &[
            "--json",
            "upload",
            out.to_str().unwrap(),
            "--os-cloud",
            "lab-a",
            "--os-cloud",
            "lab-down",
        ],
    );
    let output = command
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env_remove("OS_CLOUD")
        .env_remove("OS_IMAGE_URL")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(SOME_FAILED),
        "{}",
        stderr(&output)
    );
    let rows: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows[0]["target"], "lab-a");
    assert_eq!(rows[0]["status"], "ok");
    let id = clean.track(rows[0]["images"][0]["id"].as_str().unwrap());
    assert_eq!(
        get(&a, &format!("/v2/images/{id}")).unwrap()["status"],
        "active"
    );
    assert_eq!(rows[1]["target"], "lab-down");
    assert_eq!(rows[1]["status"], "failed");

    // The same through a user catalog's [[glance]] tables: a is already done, down still fails.
    let catalog = two_target_catalog(dir.path(), "unused", &a, &down);
    let mut command = crate::common::site::cloudimg(
        &site,
        &[
            "--json",
            "upload",
            out.to_str().unwrap(),
            "--user-catalog",
            catalog.to_str().unwrap(),
            "--target",
            "a",
            "--target",
            "b",
        ],
    );
    let output = command.env_remove("OS_CLOUD").output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(SOME_FAILED),
        "{}",
        stderr(&output)
    );
    let rows: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows[0]["images"][0]["outcome"], "already-present");
    assert_eq!(rows[1]["status"], "failed");

    let unknown = crate::common::site::cloudimg(
        &site,
        &[
            "upload",
            out.to_str().unwrap(),
            "--user-catalog",
            catalog.to_str().unwrap(),
            "--target",
            "nowhere",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
}

/// A catalog in `dir` naming two Glance clouds of `clouds.yaml` (`dev` hides retired images,
/// `prod` deletes them) and one registry, with an entry for each kind: `name` (qcow2, to the
/// Glances) and `noble-cd` (a containerDisk, to the registry).
fn everywhere_catalog(dir: &Path, name: &str, dev: &str, prod: &str, registry: &str) -> PathBuf {
    std::fs::write(
        dir.join("clouds.yaml"),
        format!(
            "clouds:\n  lab-dev:\n    auth_type: none\n    image_endpoint_override: {dev}\n  \
             lab-prod:\n    auth_type: none\n    image_endpoint_override: {prod}\n"
        ),
    )
    .unwrap();
    let text = format!(
        "output = \"root\"\nkeep = 1\n\n\
         [[image]]\nname = \"{name}\"\nrelease = \"noble\"\n\n\
         [[image]]\nname = \"noble-cd\"\nrelease = \"noble\"\ncontainer_format = \"containerdisk\"\n\n\
         [[glance]]\nname = \"dev\"\ncloud = \"lab-dev\"\nretire = \"hide\"\n\n\
         [[glance]]\nname = \"prod\"\ncloud = \"lab-prod\"\nretire = \"delete\"\n\n\
         [[registry]]\nname = \"kubevirt\"\nurl = \"{registry}\"\ninsecure = true\n"
    );
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `sync --json` of the everywhere catalog: clouds from its `clouds.yaml`, no registry
/// credentials, nothing from the developer's environment.
fn sync_everywhere(site: &Site, dir: &Path, catalog: &Path) -> Output {
    let mut command =
        crate::common::site::cloudimg(site, &["--json", "sync", catalog.to_str().unwrap()]);
    command
        .env("OS_CLIENT_CONFIG_FILE", dir.join("clouds.yaml"))
        .env_remove("OS_CLOUD")
        .env_remove("OS_IMAGE_URL")
        .env_remove("OS_AUTH_URL")
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", dir)
        .env("REGISTRY_AUTH_FILE", dir.join("no-auth.json"));
    command.output().expect("run cloudimg sync")
}

/// The `bytes_sent` of a row.
fn sent(entry: &Value, target: &str) -> u64 {
    row(entry, target)["bytes_sent"]
        .as_u64()
        .unwrap_or_else(|| panic!("bytes_sent of {target} in {entry}"))
}

/// The "done means": ONE `sync` over two Glance clouds and one registry publishes
/// everywhere; a second run sends nothing anywhere; a new serial publishes and retires
/// everywhere; with one Glance stopped the others still publish and the run exits 5; back up,
/// the rerun catches up that one only. Judged by the summary and by the servers themselves
/// (Glance's API read with curl, the registry with skopeo and its storage).
#[test]
fn one_sync_publishes_to_two_glance_clouds_and_a_registry_and_retires_everywhere() {
    require_tools!("qemu-img", "curl", "docker-registry", "skopeo");
    require_glance!(dev);
    let Some(prod) = SecondGlance::from_env() else {
        return;
    };
    let (clean_dev, clean_prod) = (Cleanup::new(&dev), Cleanup::new(&prod.url));
    let registry = Registry::start(false);
    let mut site = build_site(Knobs::default());
    let dir = TempDir::new().unwrap();
    let name = unique("everywhere");
    let catalog = everywhere_catalog(
        dir.path(),
        &name,
        &dev,
        &prod.url,
        &registry.reference("vm"),
    );
    let sync = |site: &Site| sync_everywhere(site, dir.path(), &catalog);
    let tagged = |url: &str| images_tagged(url, &format!("cloudimg:{name}"));

    // First run: everything everywhere.
    let first = sync(&site);
    assert!(first.status.success(), "{}", stderr(&first));
    let summary_1 = summary(&first);
    let (vm, cd) = (outcome(&summary_1, &name), outcome(&summary_1, "noble-cd"));
    assert_eq!(vm["outcome"], "published");
    assert_eq!(cd["outcome"], "published");
    let dev_1 = clean_dev.track(row(vm, "dev")["ids"][0].as_str().unwrap());
    let prod_1 = clean_prod.track(row(vm, "prod")["ids"][0].as_str().unwrap());
    let digest_1 = row(cd, "kubevirt")["ids"][0].as_str().unwrap().to_owned();
    for (url, id, target) in [(&dev, &dev_1, "dev"), (&prod.url, &prod_1, "prod")] {
        let image = get(url, &format!("/v2/images/{id}")).unwrap();
        assert_eq!(image["status"], "active");
        assert_eq!(image["cloudimg_serial"], NEWEST);
        assert_eq!(sent(vm, target), image["size"].as_u64().unwrap());
    }
    assert!(sent(cd, "kubevirt") > 0);
    assert_eq!(
        registry.tags("vm/noble-cd"),
        ["latest", "noble", &format!("noble-{NEWEST}")]
    );
    assert_eq!(
        registry.inspect("vm/noble-cd:latest", false).unwrap()["Digest"],
        digest_1
    );

    // Second run: nothing new, nothing sent anywhere, nothing changed on any server.
    let glance_before = [tagged(&dev), tagged(&prod.url)];
    assert_eq!(glance_before[0].len(), 1, "{glance_before:?}");
    assert_eq!(glance_before[1].len(), 1, "{glance_before:?}");
    let blobs_before = registry.stored_blobs();
    let again = sync(&site);
    assert!(again.status.success(), "{}", stderr(&again));
    let summary_2 = summary(&again);
    let (vm, cd) = (outcome(&summary_2, &name), outcome(&summary_2, "noble-cd"));
    assert_eq!(vm["outcome"], "up-to-date");
    assert_eq!(cd["outcome"], "up-to-date");
    for (entry, target) in [(vm, "dev"), (vm, "prod"), (cd, "kubevirt")] {
        assert_eq!(row(entry, target)["status"], "ok", "{target}");
        assert_eq!(sent(entry, target), 0, "{target}: {entry}");
        assert!(row(entry, target).get("retired").is_none(), "{target}");
    }
    assert_eq!(row(vm, "dev")["ids"], serde_json::json!([dev_1]));
    assert_eq!(row(cd, "kubevirt")["ids"], serde_json::json!([digest_1]));
    assert_eq!([tagged(&dev), tagged(&prod.url)], glance_before);
    assert_eq!(registry.stored_blobs(), blobs_before);
    assert_eq!(
        registry.inspect("vm/noble-cd:latest", false).unwrap()["Digest"],
        digest_1
    );

    // A new serial: published everywhere, the old one retired everywhere as each target says.
    site.mirror.add_serial(Stream::Released, NEXT).unwrap();
    let newer = sync(&site);
    assert!(newer.status.success(), "{}", stderr(&newer));
    let summary_3 = summary(&newer);
    let (vm, cd) = (outcome(&summary_3, &name), outcome(&summary_3, "noble-cd"));
    assert_eq!(vm["outcome"], "published");
    assert_eq!(cd["outcome"], "published");
    let dev_2 = clean_dev.track(row(vm, "dev")["ids"][0].as_str().unwrap());
    let prod_2 = clean_prod.track(row(vm, "prod")["ids"][0].as_str().unwrap());
    assert_eq!(row(vm, "dev")["retired"], serde_json::json!([dev_1]));
    assert_eq!(row(vm, "prod")["retired"], serde_json::json!([prod_1]));
    assert_eq!(
        row(cd, "kubevirt")["retired"],
        serde_json::json!([format!("noble-{NEWEST}")])
    );
    assert_eq!(
        get(&dev, &format!("/v2/images/{dev_1}")).unwrap()["os_hidden"],
        true
    );
    assert!(get(&prod.url, &format!("/v2/images/{prod_1}")).is_none());
    for (url, id) in [(&dev, &dev_2), (&prod.url, &prod_2)] {
        let image = get(url, &format!("/v2/images/{id}")).unwrap();
        assert_eq!(image["cloudimg_serial"], NEXT);
        assert_eq!(image["status"], "active");
    }
    let digest_2 = row(cd, "kubevirt")["ids"][0].as_str().unwrap().to_owned();
    assert_ne!(digest_2, digest_1);
    assert_eq!(
        registry.tags("vm/noble-cd"),
        ["latest", "noble", &format!("noble-{NEXT}")]
    );
    assert_eq!(
        registry.inspect("vm/noble-cd:latest", false).unwrap()["Digest"],
        digest_2
    );

    // prod stopped: dev and the registry publish and retire, prod's row fails, exit 5, and
    // prod keeps what it had.
    site.mirror.add_serial(Stream::Released, THIRD).unwrap();
    let partial = {
        let _down = prod.stopped();
        sync(&site)
    };
    assert_eq!(
        partial.status.code(),
        Some(SOME_FAILED),
        "{}",
        stderr(&partial)
    );
    let summary_4 = summary(&partial);
    let (vm, cd) = (outcome(&summary_4, &name), outcome(&summary_4, "noble-cd"));
    assert_eq!(vm["outcome"], "published");
    assert_eq!(row(vm, "dev")["status"], "ok");
    let dev_3 = clean_dev.track(row(vm, "dev")["ids"][0].as_str().unwrap());
    assert_eq!(row(vm, "dev")["retired"], serde_json::json!([dev_2]));
    assert_eq!(row(vm, "prod")["status"], "failed");
    assert_eq!(row(cd, "kubevirt")["status"], "ok");
    assert_eq!(
        row(cd, "kubevirt")["retired"],
        serde_json::json!([format!("noble-{NEXT}")])
    );
    assert_eq!(
        registry.tags("vm/noble-cd"),
        ["latest", "noble", &format!("noble-{THIRD}")]
    );
    assert_eq!(
        get(&prod.url, &format!("/v2/images/{prod_2}")).unwrap()["status"],
        "active",
        "prod kept its image while down"
    );

    // prod is back: only prod gets bytes (and retires there); dev and the registry send nothing.
    let caught_up = sync(&site);
    assert!(caught_up.status.success(), "{}", stderr(&caught_up));
    let summary_5 = summary(&caught_up);
    let (vm, cd) = (outcome(&summary_5, &name), outcome(&summary_5, "noble-cd"));
    let prod_3 = clean_prod.track(row(vm, "prod")["ids"][0].as_str().unwrap());
    assert_eq!(row(vm, "prod")["retired"], serde_json::json!([prod_2]));
    assert!(sent(vm, "prod") > 0);
    assert_eq!(sent(vm, "dev"), 0);
    assert_eq!(sent(cd, "kubevirt"), 0);
    assert_eq!(row(vm, "dev")["ids"], serde_json::json!([dev_3]));
    assert_eq!(
        get(&prod.url, &format!("/v2/images/{prod_3}")).unwrap()["cloudimg_serial"],
        THIRD
    );
}
