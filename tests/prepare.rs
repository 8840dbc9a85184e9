//! `cloudimg prepare` end to end on the loopback mirror, each artifact judged by an independent
//! tool: qemu-img for disks, an XML parser for OVF descriptors, tar for OVA order, digests
//! recomputed for manifests and metadata.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use md5::Md5;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use tempfile::TempDir;

use crate::common::glance::{get, unique, Cleanup};
use crate::common::images::qemu_img;
use crate::common::mirror::Knobs;
use crate::common::site::{build_site, json, names, run, stderr, Site};
use crate::{require_glance, require_tools};

const STEM: &str = "ubuntu-24.04-server-cloudimg-amd64";
const NEWEST: &str = "20241004.1";

/// A mirror with `.tar.gz` images too (the ami's source).
fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        build_site(Knobs {
            tarballs: true,
            ..Knobs::default()
        })
    })
}

fn prepare(site: &Site, out: &Path, args: &[&str]) -> Output {
    let mut full = vec!["--json", "prepare", "noble", "-o", out.to_str().unwrap()];
    full.extend_from_slice(args);
    run(site, &full)
}

fn hex_digest<D: Digest>(path: &Path) -> String {
    hex::encode(D::digest(std::fs::read(path).unwrap()))
}

fn metadata(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The metadata's digests are those of the artifact's bytes, as Glance will compute them.
fn assert_digests_match(meta: &Value, artifact: &Path) {
    let digests = &meta["digests"];
    assert_eq!(digests["size"], std::fs::metadata(artifact).unwrap().len());
    assert_eq!(digests["md5"], hex_digest::<Md5>(artifact));
    assert_eq!(digests["sha256"], hex_digest::<Sha256>(artifact));
    assert_eq!(digests["sha512"], hex_digest::<Sha512>(artifact));
    assert_eq!(meta["properties"]["cloudimg_sha256"], digests["sha256"]);
}

fn artifact_paths(report: &Value) -> Vec<(PathBuf, PathBuf)> {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                PathBuf::from(a["path"].as_str().unwrap()),
                PathBuf::from(a["metadata_path"].as_str().unwrap()),
            )
        })
        .collect()
}

/// The verified upstream file a report names, by its file name.
fn source_of(report: &Value, name: &std::ffi::OsStr) -> PathBuf {
    report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| PathBuf::from(source["path"].as_str().unwrap()))
        .find(|path| path.file_name() == Some(name))
        .unwrap_or_else(|| panic!("{name:?} among the sources of {report}"))
}

/// The upstream disk image of a report. It is kept in the cache, never in the output folder,
/// whose only files are the artifacts (no download, no lock).
fn upstream_of(report: &Value, out: &Path) -> PathBuf {
    let name = format!("{STEM}.img");
    let upstream = source_of(report, name.as_ref());
    assert!(!upstream.starts_with(out), "download in the output folder");
    assert!(!out.join(&name).exists(), "download in the output folder");
    let locks: Vec<_> = names(out)
        .into_iter()
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(locks.is_empty(), "locks in the output folder: {locks:?}");
    upstream
}

fn qemu_ok(args: &[&str]) {
    let output = qemu_img(args);
    assert!(
        output.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn qemu_info(path: &Path) -> Value {
    let output = qemu_img(&["info", "--output=json", path.to_str().unwrap()]);
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn bare_qcow2_is_the_verified_image_with_full_glance_metadata() {
    require_tools!("qemu-img");
    let out = TempDir::new().unwrap();
    let report = json(&prepare(site(), out.path(), &[]));
    assert_eq!(report["serial"], NEWEST);
    let [(artifact, meta_path)] = artifact_paths(&report).try_into().unwrap();
    assert_eq!(artifact, out.path().join(format!("{STEM}.qcow2")));
    let upstream = upstream_of(&report, out.path());
    qemu_ok(&["check", artifact.to_str().unwrap()]);
    // Already qcow2: no conversion, the verified bytes themselves.
    assert_eq!(
        hex_digest::<Sha256>(&artifact),
        hex_digest::<Sha256>(&upstream)
    );
    let meta = metadata(&meta_path);
    // The default name carries the disk format (and a container other than bare).
    assert_eq!(meta["name"], format!("{STEM}-{NEWEST}-qcow2"));
    assert_eq!(meta["disk_format"], "qcow2");
    assert_eq!(meta["container_format"], "bare");
    assert_eq!(meta["visibility"], "private");
    let virtual_size = qemu_info(&artifact)["virtual-size"].as_u64().unwrap();
    assert_eq!(meta["min_disk"], virtual_size.div_ceil(1 << 30));
    assert_eq!(meta["min_ram"], 512);
    let properties = &meta["properties"];
    assert_eq!(properties["os_distro"], "ubuntu");
    assert_eq!(properties["os_version"], "24.04");
    assert_eq!(properties["architecture"], "x86_64");
    assert_eq!(properties["hw_firmware_type"], "bios");
    assert_eq!(properties["hw_scsi_model"], "virtio-scsi");
    assert_eq!(properties["cloudimg_serial"], NEWEST);
    assert_eq!(
        properties["cloudimg_source_sha256"],
        hex_digest::<Sha256>(&upstream)
    );
    assert!(properties["cloudimg_source_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{STEM}.img")));
    assert_digests_match(&meta, &artifact);
    let command = meta["openstack_command"].as_str().unwrap();
    assert!(
        command.starts_with("openstack image create --disk-format qcow2 --container-format bare"),
        "{command}"
    );
    assert!(command.contains("--property os_distro=ubuntu"), "{command}");
}

#[test]
fn bare_raw_is_converted_and_reads_like_the_upstream_image() {
    require_tools!("qemu-img");
    let out = TempDir::new().unwrap();
    let report = json(&prepare(
        site(),
        out.path(),
        &[
            "--disk-format",
            "raw",
            "--property",
            "hw_qemu_guest_agent=yes",
            "--tag",
            "lab",
            "--name",
            "noble-golden",
            "--firmware",
            "uefi",
        ],
    ));
    let [(artifact, meta_path)] = artifact_paths(&report).try_into().unwrap();
    assert_eq!(artifact, out.path().join(format!("{STEM}.raw")));
    let upstream = upstream_of(&report, out.path());
    qemu_ok(&[
        "compare",
        upstream.to_str().unwrap(),
        artifact.to_str().unwrap(),
    ]);
    assert_eq!(qemu_info(&artifact)["format"], "raw");
    let meta = metadata(&meta_path);
    assert_eq!(meta["name"], "noble-golden");
    assert_eq!(meta["tags"], serde_json::json!(["lab"]));
    assert_eq!(meta["properties"]["hw_qemu_guest_agent"], "yes");
    assert_eq!(meta["properties"]["hw_firmware_type"], "uefi");
    assert_digests_match(&meta, &artifact);
}

/// `name=hex` pairs of an OVF manifest, checked against the files in `dir`.
fn assert_manifest_matches(manifest: &str, dir: &Path, sha1: bool) {
    let mut seen = Vec::new();
    for line in manifest.lines() {
        let (label, rest) = line.split_once('(').unwrap();
        let (name, digest) = rest.split_once(")= ").unwrap();
        let file = dir.join(name);
        let actual = if sha1 {
            assert_eq!(label, "SHA1");
            hex_digest::<Sha1>(&file)
        } else {
            assert_eq!(label, "SHA256");
            hex_digest::<Sha256>(&file)
        };
        assert_eq!(digest, actual, "{name}");
        seen.push(name.to_owned());
    }
    assert_eq!(seen.len(), 2, "descriptor and disk: {manifest}");
}

/// Checks a descriptor with an XML parser: the referenced file and its size, the disk's
/// capacity and format, the hardware items.
fn assert_descriptor(text: &str, disk: &Path, capacity: u64, cpus: &str) {
    let document = roxmltree::Document::parse(text).expect("well-formed XML");
    const OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
    const RASD: &str =
        "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "Envelope");
    assert_eq!(root.tag_name().namespace(), Some(OVF));
    let file = root
        .descendants()
        .find(|n| n.has_tag_name((OVF, "File")))
        .expect("References/File");
    assert_eq!(
        file.attribute((OVF, "href")),
        disk.file_name().unwrap().to_str()
    );
    let size = std::fs::metadata(disk).unwrap().len().to_string();
    assert_eq!(file.attribute((OVF, "size")), Some(size.as_str()));
    let disk_node = root
        .descendants()
        .find(|n| n.has_tag_name((OVF, "Disk")))
        .expect("DiskSection/Disk");
    assert_eq!(
        disk_node.attribute((OVF, "capacity")),
        Some(capacity.to_string().as_str())
    );
    assert_eq!(
        disk_node.attribute((OVF, "format")),
        Some("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized")
    );
    let resource_types: Vec<String> = root
        .descendants()
        .filter(|n| n.has_tag_name((RASD, "ResourceType")))
        .filter_map(|n| n.text().map(str::to_owned))
        .collect();
    for expected in ["3", "4", "6", "17", "10"] {
        assert!(
            resource_types.iter().any(|t| t == expected),
            "{resource_types:?}"
        );
    }
    let cpu = root
        .descendants()
        .filter(|n| n.has_tag_name((RASD, "ResourceType")) && n.text() == Some("3"))
        .map(|n| n.parent().unwrap())
        .next()
        .unwrap();
    let quantity = cpu
        .children()
        .find(|n| n.has_tag_name((RASD, "VirtualQuantity")))
        .and_then(|n| n.text());
    assert_eq!(quantity, Some(cpus));
}

#[test]
fn ovf_package_holds_descriptor_stream_optimized_disk_and_manifest() {
    require_tools!("qemu-img");
    let out = TempDir::new().unwrap();
    let report = json(&prepare(
        site(),
        out.path(),
        &[
            "--disk-format",
            "vmdk",
            "--container-format",
            "ovf",
            "--cpus",
            "4",
        ],
    ));
    let [(disk, meta_path)] = artifact_paths(&report).try_into().unwrap();
    let package = out.path().join(STEM);
    assert_eq!(disk, package.join(format!("{STEM}.vmdk")));
    assert_eq!(
        names(&package),
        [
            format!("{STEM}.mf"),
            format!("{STEM}.ovf"),
            format!("{STEM}.vmdk"),
            format!("{STEM}.vmdk.glance.json"),
        ]
    );
    let upstream = upstream_of(&report, out.path());
    qemu_ok(&["check", disk.to_str().unwrap()]);
    qemu_ok(&[
        "compare",
        upstream.to_str().unwrap(),
        disk.to_str().unwrap(),
    ]);
    let info = qemu_info(&disk);
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    let capacity = info["virtual-size"].as_u64().unwrap();
    let descriptor = std::fs::read_to_string(package.join(format!("{STEM}.ovf"))).unwrap();
    assert_descriptor(&descriptor, &disk, capacity, "4");
    let manifest = std::fs::read_to_string(package.join(format!("{STEM}.mf"))).unwrap();
    assert_manifest_matches(&manifest, &package, false);
    let meta = metadata(&meta_path);
    assert_eq!(meta["disk_format"], "vmdk");
    assert_eq!(meta["container_format"], "ovf");
    assert_eq!(meta["properties"]["vmware_disktype"], "streamOptimized");
    assert_eq!(meta["properties"]["vmware_adaptertype"], "lsiLogic");
    assert_digests_match(&meta, &disk);
    // No staging folder left behind.
    assert!(!names(out.path()).iter().any(|n| n.starts_with('.')));
}

#[test]
fn ova_is_one_tar_with_descriptor_first_then_manifest_then_disk() {
    require_tools!("qemu-img", "tar");
    let out = TempDir::new().unwrap();
    let report = json(&prepare(
        site(),
        out.path(),
        &[
            "--disk-format",
            "vmdk",
            "--container-format",
            "ova",
            "--manifest-hash",
            "sha1",
        ],
    ));
    let [(ova, meta_path)] = artifact_paths(&report).try_into().unwrap();
    assert_eq!(ova, out.path().join(format!("{STEM}.ova")));
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&ova)
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8(listing.stdout).unwrap();
    let members: Vec<&str> = listing
        .lines()
        .map(|line| line.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        members,
        [
            format!("{STEM}.ovf"),
            format!("{STEM}.mf"),
            format!("{STEM}.vmdk")
        ]
    );
    for line in listing.lines() {
        assert!(line.starts_with("-rw-r--r-- 0/0 "), "{line}");
    }
    let unpacked = TempDir::new().unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&ova)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let manifest = std::fs::read_to_string(unpacked.path().join(format!("{STEM}.mf"))).unwrap();
    assert_manifest_matches(&manifest, unpacked.path(), true);
    let disk = unpacked.path().join(format!("{STEM}.vmdk"));
    let upstream = upstream_of(&report, out.path());
    qemu_ok(&[
        "compare",
        upstream.to_str().unwrap(),
        disk.to_str().unwrap(),
    ]);
    let meta = metadata(&meta_path);
    assert_eq!(meta["disk_format"], "vmdk");
    assert_eq!(meta["container_format"], "ova");
    assert_digests_match(&meta, &ova);
    // The intermediate disk is gone: only the download, the OVA and its metadata remain.
    assert!(!names(out.path()).iter().any(|n| n.starts_with('.')));
}

#[test]
fn ami_set_links_kernel_and_ramdisk_to_the_machine_image() {
    require_tools!("qemu-img");
    let out = TempDir::new().unwrap();
    let report = json(&prepare(
        site(),
        out.path(),
        &[
            "--disk-format",
            "ami",
            "--container-format",
            "ami",
            "--name",
            "noble-ami",
        ],
    ));
    let artifacts = artifact_paths(&report);
    let formats: Vec<Value> = artifacts
        .iter()
        .map(|(_, meta)| metadata(meta)["disk_format"].clone())
        .collect();
    assert_eq!(formats, ["aki", "ari", "ami"]);
    let [(kernel, kernel_meta), (ramdisk, ramdisk_meta), (machine, machine_meta)] =
        artifacts.try_into().unwrap();
    let kernel_meta = metadata(&kernel_meta);
    let ramdisk_meta = metadata(&ramdisk_meta);
    let machine_meta = metadata(&machine_meta);
    assert_eq!(kernel_meta["container_format"], "aki");
    assert_eq!(kernel_meta["name"], "noble-ami-kernel");
    assert_eq!(ramdisk_meta["name"], "noble-ami-ramdisk");
    assert_eq!(machine_meta["name"], "noble-ami");
    // The aki is the verified download under its Glance name.
    assert_eq!(
        std::fs::read(&kernel).unwrap(),
        std::fs::read(source_of(
            &report,
            kernel.with_extension("").file_name().unwrap()
        ))
        .unwrap()
    );
    assert!(std::fs::read_to_string(&kernel)
        .unwrap()
        .starts_with("vmlinuz"));
    assert!(std::fs::read_to_string(&ramdisk)
        .unwrap()
        .starts_with("initrd"));
    assert_eq!(machine_meta["kernel"], kernel_meta["file"]);
    assert_eq!(machine_meta["ramdisk"], ramdisk_meta["file"]);
    for (path, meta) in [
        (&kernel, &kernel_meta),
        (&ramdisk, &ramdisk_meta),
        (&machine, &machine_meta),
    ] {
        assert_digests_match(meta, path);
    }
    // The machine image came out of the .tar.gz as a raw disk: the same disk as the qcow2.
    assert_eq!(machine, out.path().join(format!("{STEM}.ami")));
    let tarball = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "tar.gz")
        .expect("the tar.gz was the source");
    assert!(tarball["path"].as_str().unwrap().ends_with(".tar.gz"));
    let qcow2 = site()
        .mirror
        .root()
        .join(format!("releases/noble/release-{NEWEST}/{STEM}.img"));
    qemu_ok(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        "raw",
        qcow2.to_str().unwrap(),
        machine.to_str().unwrap(),
    ]);
}

#[test]
fn kernel_with_a_wrong_published_digest_publishes_nothing() {
    require_tools!("qemu-img", "mkfs.ext4");
    let dir = TempDir::new().unwrap();
    let bad = build_site(Knobs {
        tarballs: true,
        wrong_sha256_for: Some("vmlinuz-generic".into()),
        ..Knobs::default()
    });
    let out = dir.path().join("out");
    let output = prepare(
        &bad,
        &out,
        &["--disk-format", "aki", "--container-format", "aki"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        names(&out).iter().all(|n| !n.ends_with(".aki")),
        "{:?}",
        names(&out)
    );
}

#[test]
fn glance_incompatible_pair_is_refused_before_any_download() {
    require_tools!("qemu-img", "mkfs.ext4");
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("out");
    for args in [
        ["--disk-format", "ami", "--container-format", "bare"],
        ["--disk-format", "qcow2", "--container-format", "ova"],
        ["--disk-format", "iso", "--container-format", "bare"],
    ] {
        let output = prepare(site(), &out, &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!out.exists(), "{args:?} created {:?}", names(&out));
    }
}

#[test]
fn prepare_with_upload_puts_the_artifact_in_glance_with_matching_digests() {
    require_tools!("qemu-img", "curl");
    require_glance!(glance);
    let cleanup = Cleanup::new(&glance);
    let out = TempDir::new().unwrap();
    let name = unique("prepare");
    let report = json(&prepare(
        site(),
        out.path(),
        &["--name", &name, "--upload", "--glance", &glance],
    ));
    let [(_, meta_path)] = artifact_paths(&report).try_into().unwrap();
    let meta = metadata(&meta_path);
    let uploaded = &report["uploaded"][0];
    let id = cleanup.track(uploaded["id"].as_str().unwrap());
    let image = get(&glance, &format!("/v2/images/{id}")).expect("the image exists");
    assert_eq!(image["name"], name.as_str());
    assert_eq!(image["status"], "active");
    assert_eq!(image["disk_format"], "qcow2");
    assert_eq!(image["checksum"], meta["digests"]["md5"]);
    assert_eq!(image["os_hash_value"], meta["digests"]["sha512"]);
    assert_eq!(image["os_distro"], "ubuntu");
    assert_eq!(image["architecture"], "x86_64");
}

#[test]
fn vhd_vhdx_and_vdi_artifacts_read_like_the_upstream_image() {
    require_tools!("qemu-img");
    let upstream_dir = TempDir::new().unwrap();
    for (disk_format, qemu_format, preset_property) in [
        ("vhd", "vpc", Some(("hypervisor_type", "hyperv"))),
        ("vhdx", "vhdx", Some(("hypervisor_type", "hyperv"))),
        ("vdi", "vdi", None),
    ] {
        let out = upstream_dir.path().join(disk_format);
        let report = json(&prepare(site(), &out, &["--disk-format", disk_format]));
        let [(artifact, meta_path)] = artifact_paths(&report).try_into().unwrap();
        assert_eq!(artifact, out.join(format!("{STEM}.{disk_format}")));
        assert_eq!(qemu_info(&artifact)["format"], qemu_format);
        // qemu-img check knows vdi and vhdx, not vpc.
        if disk_format != "vhd" {
            qemu_ok(&["check", artifact.to_str().unwrap()]);
        }
        let upstream = upstream_of(&report, &out);
        qemu_ok(&[
            "compare",
            upstream.to_str().unwrap(),
            artifact.to_str().unwrap(),
        ]);
        let meta = metadata(&meta_path);
        assert_eq!(meta["disk_format"], disk_format);
        if let Some((key, value)) = preset_property {
            assert_eq!(meta["properties"][key], value);
        }
        assert_digests_match(&meta, &artifact);
    }
}

/// The artifacts of a report as (path, metadata path, Glance name).
fn planned_or_made(
    report: &Value,
    name_of: impl Fn(&Value) -> String,
) -> Vec<(String, String, String)> {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap().to_owned(),
                a["metadata_path"].as_str().unwrap().to_owned(),
                name_of(a),
            )
        })
        .collect()
}

#[test]
fn dry_run_names_what_prepare_would_fetch_and_write_and_writes_nothing() {
    require_tools!("qemu-img", "mkfs.ext4");
    let top = TempDir::new().unwrap();
    for (format, container) in [("qcow2", "bare"), ("vmdk", "ova"), ("ami", "ami")] {
        let out = top.path().join(format!("{format}-{container}"));
        // A cache of its own each time: the real run below fills it.
        let cache = top.path().join(format!("cache-{format}"));
        std::fs::create_dir(&cache).unwrap();
        let args = |dry: bool| {
            let mut args = vec!["--cache-dir", cache.to_str().unwrap(), "--json", "prepare"];
            args.extend(["noble", "-o", out.to_str().unwrap()]);
            args.extend(["--disk-format", format, "--container-format", container]);
            if dry {
                args.push("--dry-run");
            }
            args
        };
        let plan = json(&run(site(), &args(true)));
        assert!(
            !out.exists(),
            "{format}/{container}: a dry run made the output folder"
        );
        assert!(
            names(&cache).is_empty(),
            "a dry run wrote to the cache: {:?}",
            names(&cache)
        );
        assert_eq!(plan["serial"], NEWEST);
        let fetch = plan["fetch"].as_array().unwrap();
        assert!(!fetch.is_empty(), "{plan}");
        assert!(fetch.iter().all(|f| f["present"] == false), "{plan}");

        // The real run writes exactly what the dry run named.
        let made = json(&run(site(), &args(false)));
        let sources: Vec<&str> = made["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["url"].as_str().unwrap())
            .collect();
        let planned: Vec<&str> = fetch.iter().map(|f| f["url"].as_str().unwrap()).collect();
        assert_eq!(planned, sources, "{format}/{container}");
        assert_eq!(
            planned_or_made(&plan, |a| a["name"].as_str().unwrap().to_owned()),
            planned_or_made(&made, |a| a["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned()),
            "{format}/{container}"
        );
    }
}
