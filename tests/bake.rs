//! `cloudimg bake` with a real guest under QEMU (TCG), read back offline with debugfs.
//!
//! The guest is the bootable Debian image of `../shared/fixtures/make-bootable-guest.sh`, built
//! once per machine by `.ci/bootable-guest`; `.ci/run` passes its path in
//! `CLOUDIMG_TEST_GUEST`. Each boot costs about 50 s of emulation, so the suite boots four
//! times in all: a bake and its boot test (every assertion about a good result), a failing
//! recipe command, and a guest stopped by a short timeout. Guests get restricted user
//! networking: a NIC with DHCP, nothing in or out.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::Digest as _;
use tempfile::TempDir;

use crate::require_tools;

/// Exit statuses documented in README and `--help`.
const EXIT_USAGE: i32 = 2;
const EXIT_RECIPE: i32 = 10;
const EXIT_TIMEOUT: i32 = 12;
const EXIT_QEMU_MISSING: i32 = 14;

/// Sector size of the guest's GPT.
const SECTOR: u64 = 512;

/// The bootable guest, or `None` (skipped loudly; a failure when tools are required).
/// What the test guest's GRUB prints on the serial console as it boots its entry.
const GRUB_BOOTING: &str = "Booting `Debian GNU/Linux'";

fn guest() -> Option<PathBuf> {
    match std::env::var_os("CLOUDIMG_TEST_GUEST").map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        other => {
            let why = format!(
                "CLOUDIMG_TEST_GUEST is {other:?}; .ci/bootable-guest builds the guest and \
                 .ci/run sets it"
            );
            if std::env::var_os("CLOUDIMG_REQUIRE_TOOLS").is_some() {
                panic!("the bootable guest is required: {why}");
            }
            eprintln!("SKIPPED: no bootable guest: {why}");
            None
        }
    }
}

/// One guest at a time: emulated CPUs starved by parallel guests boot slower than serial ones.
static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `cloudimg bake GUEST -o OUTPUT` with the test's machine settings and `args`.
/// Its cache (locks, documents) is a folder of its own, outside `dir`, which the tests expect
/// to hold only the bake's files.
fn bake(dir: &Path, guest: &Path, output: &Path, args: &[&str]) -> Output {
    let _turn = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let cache = TempDir::new().unwrap();
    crate::common::bin::cloudimg_in(cache.path())
        .current_dir(dir)
        .arg("bake")
        .arg(guest)
        .arg("-o")
        .arg(output)
        .args(["--accel", "tcg", "--restrict-network", "--cpus", "1"])
        .args(["--memory", "1024"])
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Nothing of the bake is left in `dir` but `keep`: no output, no working folder, no temporary.
fn assert_only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

/// Whether a process still has `path` on its command line (a guest that was not killed).
fn process_mentions(path: &Path) -> bool {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").unwrap().any(|entry| {
        let cmdline = entry.unwrap().path().join("cmdline");
        std::fs::read(cmdline)
            .map(|bytes| String::from_utf8_lossy(&bytes).contains(&needle))
            .unwrap_or(false)
    })
}

/// The root file system of a baked disk, read with debugfs at the partition's offset.
struct RootFs {
    raw: PathBuf,
    offset: u64,
}

impl RootFs {
    /// qemu-img (the oracle) makes a raw copy; sfdisk finds the `cloudimg-rootfs` partition.
    fn open(image: &Path, dir: &Path) -> RootFs {
        let raw = dir.join("check.raw");
        let status = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(image)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(status.success(), "qemu-img convert failed");
        let table = Command::new("sfdisk").arg("-J").arg(&raw).output().unwrap();
        assert!(table.status.success(), "sfdisk -J failed");
        let table: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
        let root = table["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cloudimg-rootfs")
            .expect("no cloudimg-rootfs partition");
        RootFs {
            raw,
            offset: root["start"].as_u64().unwrap() * SECTOR,
        }
    }

    fn debugfs(&self, request: &str) -> String {
        let output = Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(format!("{}?offset={}", self.raw.display(), self.offset))
            .output()
            .unwrap();
        assert!(output.status.success(), "debugfs {request:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn cat(&self, path: &str) -> String {
        self.debugfs(&format!("cat {path}"))
    }

    /// Names in a directory (`ls -p` prints `/inode/mode/uid/gid/name/size/`).
    fn names(&self, dir: &str) -> Vec<String> {
        self.debugfs(&format!("ls -p {dir}"))
            .lines()
            .filter_map(|line| line.split('/').nth(5).map(str::to_owned))
            .filter(|name| !name.is_empty() && name != "." && name != "..")
            .collect()
    }

    /// `Size:` and `Mode:` of an inode.
    fn size_and_mode(&self, path: &str) -> (u64, String) {
        let stat = self.debugfs(&format!("stat {path}"));
        let field = |name: &str| {
            stat.split(name)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {name} in {stat}"))
                .to_owned()
        };
        (field("Size:").parse().unwrap(), field("Mode:"))
    }
}

#[test]
fn bake_applies_the_recipe_generalises_and_passes_the_boot_test() {
    require_tools!(
        "qemu-system-x86_64",
        "qemu-img",
        "debugfs",
        "sfdisk",
        "ssh-keygen"
    );
    let Some(guest) = guest() else { return };
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let key = d.join("lab");
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "lab@cloudimg-test",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public_key = std::fs::read_to_string(d.join("lab.pub")).unwrap();
    std::fs::write(d.join("motd"), "baked by cloudimg\n").unwrap();
    std::fs::write(
        d.join("user-data"),
        "#cloud-config\nwrite_files:\n  - path: /etc/from-user-data\n    content: \"user data\\n\"\n",
    )
    .unwrap();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    let output_path = out.join("golden.qcow2");
    let output = bake(
        d,
        &guest,
        &output_path,
        &[
            "--json",
            "--user-data",
            "user-data",
            "--user",
            "lab",
            "--ssh-authorized-key",
            "lab.pub",
            "--write-file",
            "motd:/etc/motd-cloudimg:0640",
            "--run",
            "echo step1 > /var/lib/cloudimg-test",
            "--run",
            "grep -q step1 /var/lib/cloudimg-test && echo step2 >> /var/lib/cloudimg-test",
            "--timeout",
            "15m",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["boot_tested"], true, "{report}");
    assert_eq!(report["accel"], "tcg");
    assert!(report["timings"]["boot_test"].as_f64().unwrap() > 0.0);
    // The output and its console log, nothing else: the working folder is gone.
    assert_only(&out, &["golden.qcow2", "golden.qcow2.bake.log"]);
    let log = std::fs::read_to_string(out.join("golden.qcow2.bake.log")).unwrap();
    assert!(
        log.contains("===== cloudimg: boot test ====="),
        "no boot test in the log"
    );
    assert_eq!(
        log.matches(":result:ok").count(),
        2,
        "two verdicts expected"
    );
    // The bake boot loaded the image's kernel directly; the boot test went through the
    // firmware and GRUB, as a cloud boots the image.
    let direct = report["timings"]["direct_kernel"]
        .as_str()
        .unwrap_or_default();
    assert!(direct.contains("/boot/vmlinuz-"), "{report}");
    let (bake_boot, boot_test) = log.split_once("===== cloudimg: boot test =====").unwrap();
    assert!(
        !bake_boot.contains(GRUB_BOOTING),
        "GRUB ran in the bake boot"
    );
    assert!(boot_test.contains(GRUB_BOOTING), "no GRUB in the boot test");

    // qemu-img agrees the image is sound, and a plain qemu-img convert is no smaller.
    let check = Command::new("qemu-img")
        .arg("check")
        .arg(&output_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let reference = d.join("reference.qcow2");
    let status = Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&output_path)
        .arg(&reference)
        .status()
        .unwrap();
    assert!(status.success());
    let ours = std::fs::metadata(&output_path).unwrap().len();
    let theirs = std::fs::metadata(&reference).unwrap().len();
    assert!(ours <= theirs, "cloudimg {ours} bytes, qemu-img {theirs}");

    let root = RootFs::open(&output_path, d);
    // The recipe is in the image.
    assert_eq!(
        root.cat("/home/lab/.ssh/authorized_keys").trim(),
        public_key.trim()
    );
    assert_eq!(root.cat("/etc/motd-cloudimg"), "baked by cloudimg\n");
    assert_eq!(root.size_and_mode("/etc/motd-cloudimg").1, "0640");
    assert_eq!(root.cat("/etc/from-user-data"), "user data\n");
    assert_eq!(root.cat("/var/lib/cloudimg-test"), "step1\nstep2\n");
    assert!(root.cat("/etc/passwd").contains("\nlab:"), "no user lab");
    // Generalised: no identity of the bake boot is left.
    assert_eq!(
        root.size_and_mode("/etc/machine-id").0,
        0,
        "machine-id not empty"
    );
    let host_keys: Vec<String> = root
        .names("/etc/ssh")
        .into_iter()
        .filter(|name| name.starts_with("ssh_host_"))
        .collect();
    assert!(host_keys.is_empty(), "SSH host keys left: {host_keys:?}");
    let cloud = root.names("/var/lib/cloud");
    assert!(cloud.is_empty(), "cloud-init instance data left: {cloud:?}");
    if root
        .names("/var/log")
        .iter()
        .any(|name| name == "cloud-init.log")
    {
        assert_eq!(
            root.size_and_mode("/var/log/cloud-init.log").0,
            0,
            "log not emptied"
        );
    }
}

#[test]
fn a_failing_run_command_exits_with_its_status_and_publishes_nothing() {
    require_tools!("qemu-system-x86_64");
    let Some(guest) = guest() else { return };
    let dir = TempDir::new().unwrap();
    let output = bake(
        dir.path(),
        &guest,
        &dir.path().join("golden.qcow2"),
        &[
            "--run",
            "true",
            "--run",
            "echo failing on purpose; exit 7",
            "--run",
            "touch /must-not-run",
            "--timeout",
            "15m",
            "--no-direct-kernel",
        ],
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_RECIPE), "{text}");
    assert!(
        text.contains(
            "recipe command 2 (\"echo failing on purpose; exit 7\") failed with exit status 7"
        ),
        "{text}"
    );
    // The console's tail and the log's place are in the error.
    assert!(text.contains("last lines of the guest's console"), "{text}");
    assert!(text.contains("golden.qcow2.bake.log"), "{text}");
    assert!(
        text.contains("failing on purpose"),
        "the command's output is in the tail: {text}"
    );
    assert_only(dir.path(), &["golden.qcow2.bake.log"]);
    // --no-direct-kernel: the bake boot went through GRUB.
    let log = std::fs::read_to_string(dir.path().join("golden.qcow2.bake.log")).unwrap();
    assert!(log.contains(GRUB_BOOTING), "no GRUB in the log");
}

#[test]
fn a_guest_that_never_powers_off_is_stopped_at_the_timeout() {
    require_tools!("qemu-system-x86_64");
    let Some(guest) = guest() else { return };
    let dir = TempDir::new().unwrap();
    let output = bake(
        dir.path(),
        &guest,
        &dir.path().join("golden.qcow2"),
        &["--run", "sleep 100000", "--timeout", "20s"],
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_TIMEOUT), "{text}");
    assert!(text.contains("did not power off within 20 s"), "{text}");
    assert_only(dir.path(), &["golden.qcow2.bake.log"]);
    assert!(
        !process_mentions(dir.path()),
        "a process still uses the bake's folder: the guest was not killed"
    );
}

#[test]
fn invalid_cloud_config_is_refused_before_booting_and_by_seed() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    // One character off: the flow list is never closed.
    std::fs::write(d.join("user-data"), "#cloud-config\nruncmd: [echo hi\n").unwrap();
    std::fs::write(d.join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    // An empty PATH: had the bake gone as far as looking for QEMU, it would exit 14.
    let output = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .current_dir(d)
        .env("PATH", "")
        .args([
            "bake",
            "disk.img",
            "-o",
            "golden.qcow2",
            "--user-data",
            "user-data",
        ])
        .output()
        .unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_USAGE), "{text}");
    assert!(text.contains("not valid YAML"), "{text}");

    let output = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .current_dir(d)
        .args(["seed", "--user-data", "user-data", "-o", "seed.iso"])
        .output()
        .unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_USAGE), "{text}");
    assert!(text.contains("not valid YAML"), "{text}");
    assert_only(d, &["disk.img", "user-data"]);
}

#[test]
fn a_missing_qemu_is_named_with_its_package() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::write(d.join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .current_dir(d)
        .env("PATH", "")
        .args(["bake", "disk.img", "-o", "golden.qcow2", "--run", "true"])
        .output()
        .unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_QEMU_MISSING), "{text}");
    assert!(text.contains("apt install qemu-system-x86"), "{text}");
    assert_only(d, &["disk.img"]);
}

#[test]
fn help_documents_the_exit_statuses() {
    let output = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .args(["bake", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "10 a --run command failed",
        "12 timeout",
        "14 QEMU missing",
        "CLOUDIMG_ACCEL",
    ] {
        assert!(help.contains(needle), "{needle:?} not in:\n{help}");
    }
}

/// A server of the test on the host that answers one HTTP request with `body`; returns the
/// request it received. The restricted guest reaches it only through a `guestfwd` rule, whose
/// `tcp:` target QEMU connects when it starts.
fn one_request_server(body: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20 * 60)))
            .unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            request.push(byte[0]);
        }
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
        String::from_utf8_lossy(&request).into_owned()
    });
    (port, handle)
}

/// `prepare --bake` on the loopback mirror serving the bootable guest as noble's disk, in one
/// boot (no boot test): the verified download is baked, then described with its provenance;
/// the restricted guest reached the test's server through its guestfwd rule and nothing else.
#[test]
fn prepare_bakes_the_verified_download_and_records_its_provenance() {
    use crate::common::mirror::Knobs;
    use crate::common::site::{build_site, json, run};
    require_tools!("qemu-system-x86_64", "qemu-img", "debugfs", "sfdisk");
    let Some(guest) = guest() else { return };
    let site = build_site(Knobs {
        amd64_image: Some(guest.clone()),
        ..Knobs::default()
    });
    let (port, server) = one_request_server("from the host\n");
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::write(d.join("motd"), "baked by prepare\n").unwrap();
    let mirror_port = site.server.url().port().unwrap();
    // python3 is there (cloud-init's own interpreter); curl and wget may not be.
    let fetch = "python3 -c \"import urllib.request as u; \
                 open('/var/lib/from-host', 'wb').write(u.urlopen('http://10.0.2.100/x', \
                 timeout=120).read())\"";
    let escape = format!(
        "if python3 -c \"import urllib.request as u; u.urlopen('http://10.0.2.2:{mirror_port}/', \
         timeout=5)\"; then echo reached > /var/lib/outside; else echo blocked > \
         /var/lib/outside; fi"
    );
    let recipe = format!(
        "# the test's recipe\n\
         run = [{fetch:?}, {escape:?}]\n\
         write_files = [\"motd:/etc/motd-cloudimg:0644\"]\n\
         boot_test = false\n\
         network = \"restricted\"\n\
         guestfwd = [\"tcp:10.0.2.100:80-tcp:127.0.0.1:{port}\"]\n\
         cpus = 1\n\
         memory = 1024\n\
         timeout = \"15m\"\n"
    );
    std::fs::write(d.join("recipe.toml"), recipe).unwrap();
    let out = d.join("out");
    let output = {
        let _turn = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
        run(
            &site,
            &[
                "--json",
                "prepare",
                "noble",
                "-o",
                out.to_str().unwrap(),
                "--bake",
                d.join("recipe.toml").to_str().unwrap(),
                "--accel",
                "tcg",
            ],
        )
    };
    let report = json(&output);
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /x HTTP/1.1\r\n"), "{request:?}");

    // One artifact, its metadata and the console log; no hidden bake folder left.
    let artifact = out.join("ubuntu-24.04-server-cloudimg-amd64.qcow2");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ubuntu-24.04-server-cloudimg-amd64.qcow2",
            "ubuntu-24.04-server-cloudimg-amd64.qcow2.bake.log",
            "ubuntu-24.04-server-cloudimg-amd64.qcow2.glance.json",
        ]
    );
    let bake = &report["bake"];
    assert_eq!(bake["boot_tested"], false, "{report}");
    assert_eq!(bake["accel"], "tcg");
    let digest = bake["recipe_digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);

    // Provenance: upstream URL, serial and digest as for any artifact, plus the recipe's.
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("ubuntu-24.04-server-cloudimg-amd64.qcow2.glance.json"))
            .unwrap(),
    )
    .unwrap();
    let properties = &meta["properties"];
    assert_eq!(properties["cloudimg_baked"], "true", "{meta}");
    assert_eq!(properties["cloudimg_recipe_sha256"], digest);
    assert_eq!(properties["cloudimg_boot_tested"], "false");
    assert_eq!(
        properties["cloudimg_serial"],
        crate::common::site::RELEASED[1]
    );
    let upstream = hex::encode(sha2::Sha256::digest(std::fs::read(&guest).unwrap()));
    assert_eq!(properties["cloudimg_source_sha256"], upstream.as_str());
    assert!(
        properties["cloudimg_source_url"]
            .as_str()
            .unwrap()
            .starts_with(site.server.url().as_str()),
        "{meta}"
    );
    // The artifact is the baked disk, not the download.
    assert_ne!(meta["digests"]["sha256"], upstream.as_str());

    let root = RootFs::open(&artifact, d);
    assert_eq!(root.cat("/etc/motd-cloudimg"), "baked by prepare\n");
    assert_eq!(root.cat("/var/lib/from-host"), "from the host\n");
    assert_eq!(
        root.cat("/var/lib/outside"),
        "blocked\n",
        "the restricted guest reached the host alias"
    );
    assert_eq!(root.size_and_mode("/etc/machine-id").0, 0);
}

/// `sync` with an `[image.bake]` entry (a recipe file beside the catalog): the first run bakes
/// (one boot, no boot test), the second finds the published serial baked with the same recipe
/// and boots nothing, and an edited recipe bakes the same serial again.
#[test]
fn sync_bakes_an_entry_once_and_again_when_its_recipe_changes() {
    use crate::common::glance::{self, images_named, Cleanup};
    use crate::common::mirror::Knobs;
    use crate::common::site::{build_site, cloudimg, outcome, stderr, summary, RELEASED};
    require_tools!(
        "qemu-system-x86_64",
        "qemu-img",
        "debugfs",
        "sfdisk",
        "curl"
    );
    let Some(guest) = guest() else { return };
    let Some(glance_url) = glance::url() else {
        return;
    };
    let cleanup = Cleanup::new(&glance_url);
    let name = glance::unique("bake");
    let site = build_site(Knobs {
        amd64_image: Some(guest),
        ..Knobs::default()
    });
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let catalog = d.join("lab.toml");
    std::fs::write(
        &catalog,
        format!(
            "output = \"root\"\n\n[[image]]\nname = \"{name}\"\nrelease = \"noble\"\n\
             file = \"disk1.img\"\ndisk_format = \"qcow2\"\n\n[image.bake]\nrecipe = \"golden.toml\"\n\n\
             [glance]\nurl = \"{glance_url}\"\nretire = \"hide\"\n"
        ),
    )
    .unwrap();
    let recipe = |word: &str| {
        let text = format!(
            "run = [\"echo {word} > /var/lib/recipe\"]\nboot_test = false\nnetwork = \"none\"\n\
             cpus = 1\nmemory = 1024\ntimeout = \"15m\"\n"
        );
        std::fs::write(d.join("golden.toml"), text).unwrap();
    };
    let sync = || {
        let _turn = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
        let _glance_turn = glance::turn();
        let output = cloudimg(&site, &["--json", "sync", catalog.to_str().unwrap()])
            .env("CLOUDIMG_ACCEL", "tcg")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        output
    };
    let serial = RELEASED[1];
    let published = d.join("root").join(&name).join(serial);
    let artifact = published.join("ubuntu-24.04-server-cloudimg-amd64.qcow2");
    let metadata = |path: &Path| -> serde_json::Value {
        let mut name = path.as_os_str().to_owned();
        name.push(".glance.json");
        serde_json::from_str(&std::fs::read_to_string(name).unwrap()).unwrap()
    };
    let baked_word = |path: &Path| RootFs::open(path, d).cat("/var/lib/recipe");

    recipe("one");
    let first = sync();
    let entry = outcome(&summary(&first), &name).clone();
    assert_eq!(entry["outcome"], "published", "{entry}");
    assert_eq!(entry["serial"], serial);
    let first_id = cleanup.track(entry["glance_ids"][0].as_str().unwrap());
    let first_meta = metadata(&artifact);
    assert_eq!(first_meta["properties"]["cloudimg_baked"], "true");
    let first_digest = first_meta["properties"]["cloudimg_recipe_sha256"].clone();
    assert!(first_digest.is_string(), "{first_meta}");
    let mut log = artifact.as_os_str().to_owned();
    log.push(".bake.log");
    let log = PathBuf::from(log);
    let log_written = std::fs::metadata(&log).unwrap().modified().unwrap();
    assert_eq!(baked_word(&artifact), "one\n");

    // Nothing changed: no boot, the log and the artifact untouched.
    let second = sync();
    let entry = outcome(&summary(&second), &name).clone();
    assert_eq!(entry["outcome"], "up-to-date", "{entry}");
    assert_eq!(
        std::fs::metadata(&log).unwrap().modified().unwrap(),
        log_written,
        "the second sync booted a guest"
    );
    assert_eq!(metadata(&artifact), first_meta);

    // The recipe changed: the same serial is baked again, with the new recipe's digest.
    recipe("two");
    let third = sync();
    let entry = outcome(&summary(&third), &name).clone();
    assert_eq!(entry["outcome"], "published", "{entry}");
    assert_eq!(entry["serial"], serial);
    let third_id = cleanup.track(entry["glance_ids"][0].as_str().unwrap());
    assert_ne!(third_id, first_id, "the rebaked image was not uploaded");
    // In Glance the image baked with the old recipe is retired (hidden here), though its
    // serial is current: one visible image carries the serial's name.
    let images = images_named(&glance_url, &format!("{name}-{serial}"));
    let visible: Vec<_> = images
        .iter()
        .filter(|i| i["os_hidden"] == false)
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(visible, [third_id.as_str()], "{images:?}");
    assert_eq!(images.len(), 2, "{images:?}");
    let third_meta = metadata(&artifact);
    assert_ne!(
        third_meta["properties"]["cloudimg_recipe_sha256"],
        first_digest
    );
    assert_eq!(baked_word(&artifact), "two\n");
    assert_eq!(
        std::fs::read_link(d.join("root").join(&name).join("current")).unwrap(),
        PathBuf::from(serial)
    );
}

/// Two bakes into one output: while another holds the output's lock, a bake is refused at once
/// (exit 1, before any download or boot) and writes nothing; once the lock is released the same
/// command goes on to its next step (here, refusing a broken source image).
#[test]
fn a_bake_into_an_output_another_bake_holds_is_refused_at_once() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let output = d.join("golden.qcow2");
    let source = d.join("broken.qcow2");
    let mut broken = b"QFI\xfb".to_vec();
    broken.resize(512, 0);
    std::fs::write(&source, broken).unwrap();
    let bake = || {
        Command::new(env!("CARGO_BIN_EXE_cloudimg"))
            .arg("--cache-dir")
            .arg(&cache)
            .arg("bake")
            .arg(&source)
            .arg("-o")
            .arg(&output)
            .args(["--no-boot-test", "--accel", "tcg", "--run", "true"])
            .output()
            .unwrap()
    };
    let busy = "another cloudimg bake is writing it";

    let held = cloudimg::bake::lock_output(&output, Some(&cache)).unwrap();
    let refused = bake();
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(text.contains(busy), "{text}");
    assert_eq!(
        std::fs::read_dir(d).unwrap().count(),
        2,
        "the refused bake wrote"
    );

    drop(held);
    let next = bake();
    let text = String::from_utf8_lossy(&next.stderr);
    assert!(!next.status.success(), "{text}");
    assert!(!text.contains(busy), "{text}");
    assert!(text.contains("qcow2"), "{text}");
    assert!(!output.exists());
}
