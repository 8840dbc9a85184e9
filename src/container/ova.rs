//! OVA: an OVF package in one USTAR archive (DSP0243 5.3): the descriptor first, the manifest
//! next, then the disks in the order of the descriptor's References.
//!
//! Headers are reproducible (owner 0/0 with empty user and group names, mode 0644, a fixed
//! mtime) and disks are streamed from their files. Disks are not compressed again: they are
//! streamOptimized VMDKs already, and OVF consumers read OVA members in place.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::manifest::{manifest, ManifestHash, Source};
use super::ovf::{descriptor, OvfSpec};
use super::{check_member_name, write_atomically, ContainerError};
use crate::io::digests::{DigestTee, DigestWriter};

/// Modification time of every member, in seconds since the Unix epoch: fixed so the same inputs
/// make the same archive.
pub const OVA_MTIME: u64 = 0;

/// Permissions of every member: owner read/write, everyone else read.
const MEMBER_MODE: u32 = 0o644;

/// Writes the OVA `out` holding the descriptor `ovf` (name, text), the manifest `manifest`
/// (name, text) and `disks` (name in the archive, file to copy), in that order. `tee`, when
/// given, hashes the archive as it is written (its Glance digests, without reading it back).
pub fn write_ova(
    out: &Path,
    ovf: (&str, &[u8]),
    manifest: (&str, &[u8]),
    disks: &[(&str, &Path)],
    tee: Option<&mut DigestTee>,
) -> Result<(), ContainerError> {
    check_names(ovf.0, manifest.0, disks)?;
    write_atomically(out, |writer, temp| {
        let io = |e| ContainerError::io(temp, "write", e);
        let hashed = DigestWriter {
            inner: &mut *writer,
            tee,
        };
        let mut builder = tar::Builder::new(hashed);
        for (name, text) in [ovf, manifest] {
            let header = member_header(name, text.len() as u64).map_err(io)?;
            builder.append(&header, text).map_err(io)?;
        }
        for &(name, path) in disks {
            let file = File::open(path).map_err(|e| ContainerError::io(path, "open", e))?;
            let size = file
                .metadata()
                .map_err(|e| ContainerError::io(path, "stat", e))?
                .len();
            append_exact(&mut builder, name, size, file, path, temp)?;
        }
        builder.finish().map_err(io)?;
        builder.into_inner().map_err(io)?;
        Ok(())
    })
}

/// Builds a complete OVA at `out` around the disk file `disk` (a streamOptimized VMDK): the
/// descriptor from `spec`, with `disk_file_size` taken from the file, then a manifest of the
/// descriptor and the disk, then the disk as `spec.disk_file_name`. The descriptor and manifest
/// are named after `out` (`noble.ova` holds `noble.ovf` and `noble.mf`).
///
/// The disk is read twice, once for its digest and once into the archive, because the manifest
/// precedes it; `tee` hashes the archive as it is written.
pub fn write_ova_package(
    out: &Path,
    spec: &OvfSpec,
    disk: &Path,
    hash: ManifestHash,
    tee: Option<&mut DigestTee>,
) -> Result<(), ContainerError> {
    let stem = out
        .file_stem()
        .and_then(|stem| stem.to_str())
        .ok_or_else(|| {
            ContainerError::invalid(
                "output path",
                out.display().to_string(),
                "needs a UTF-8 file name to name the descriptor after",
            )
        })?;
    let ovf_name = format!("{stem}.ovf");
    let mf_name = format!("{stem}.mf");
    let disk_file_size = std::fs::metadata(disk)
        .map_err(|e| ContainerError::io(disk, "stat", e))?
        .len();
    let text = descriptor(&OvfSpec {
        disk_file_size,
        ..spec.clone()
    });
    let disk_name = spec.disk_file_name.as_str();
    let mf = manifest(
        hash,
        &[
            (ovf_name.as_str(), Source::Bytes(text.as_bytes())),
            (disk_name, Source::File(disk)),
        ],
    )?;
    write_ova(
        out,
        (&ovf_name, text.as_bytes()),
        (&mf_name, mf.as_bytes()),
        &[(disk_name, disk)],
        tee,
    )
}

/// Appends `size` bytes of `source` (the file at `path`) as member `name`. The header promises
/// `size` bytes: never copy more, and fail if the file turns out shorter.
fn append_exact<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    source: impl Read,
    path: &Path,
    archive: &Path,
) -> Result<(), ContainerError> {
    let header = member_header(name, size).map_err(|e| ContainerError::io(archive, "write", e))?;
    let mut reader = Counted {
        inner: source.take(size),
        count: 0,
        read_failed: false,
    };
    builder.append(&header, &mut reader).map_err(|e| {
        if reader.read_failed {
            ContainerError::io(path, "read", e)
        } else {
            ContainerError::io(archive, "write", e)
        }
    })?;
    if reader.count != size {
        return Err(ContainerError::SizeChanged {
            path: path.to_owned(),
            expected: size,
            actual: reader.count,
        });
    }
    Ok(())
}

/// Refuses names an OVA cannot carry: members must be plain, distinct file names, the
/// descriptor a `.ovf` and the manifest named after it with `.mf` (what VMware requires).
fn check_names(ovf: &str, manifest: &str, disks: &[(&str, &Path)]) -> Result<(), ContainerError> {
    check_member_name(ovf)?;
    check_member_name(manifest)?;
    let Some(base) = ovf.strip_suffix(".ovf") else {
        return Err(ContainerError::invalid(
            "descriptor name",
            ovf,
            "must end with .ovf",
        ));
    };
    if manifest != format!("{base}.mf") {
        return Err(ContainerError::invalid(
            "manifest name",
            manifest,
            format!("must be {base}.mf, named after the descriptor"),
        ));
    }
    let mut seen = vec![ovf, manifest];
    for &(name, _) in disks {
        check_member_name(name)?;
        if seen.contains(&name) {
            return Err(ContainerError::invalid(
                "package member name",
                name,
                "appears twice in the package",
            ));
        }
        seen.push(name);
    }
    Ok(())
}

/// A USTAR header for a regular file; member names are at most 100 bytes, so they fit the name
/// field without a prefix. Sizes of 8 GiB and more use the base-256 size encoding (a GNU and
/// star extension that tar readers, Python's tarfile and VMware's ovftool accept).
fn member_header(name: &str, size: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(MEMBER_MODE);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(OVA_MTIME);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

/// Counts the bytes read, and remembers whether an error came from the source file rather than
/// from the archive being written.
struct Counted<R> {
    inner: R,
    count: u64,
    read_failed: bool,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.read_failed = e.kind() != io::ErrorKind::Interrupted;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::{oracle, oracles, qemu_img_info};

    /// tar's reading of an archive: its standard output for `args`.
    fn tar_tool(args: &[&str]) -> Option<String> {
        let out = oracle("tar")?.run(args);
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    struct Fixture {
        dir: tempfile::TempDir,
        disk1: Vec<u8>,
        disk2: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // Not a multiple of 512, to exercise the block padding.
        let disk1: Vec<u8> = (0..70_001u32).map(|i| (i % 253) as u8).collect();
        let disk2 = b"second disk".to_vec();
        std::fs::write(dir.path().join("d1.vmdk"), &disk1).unwrap();
        std::fs::write(dir.path().join("d2.vmdk"), &disk2).unwrap();
        Fixture { dir, disk1, disk2 }
    }

    fn build(f: &Fixture, out_name: &str) -> std::path::PathBuf {
        let out = f.dir.path().join(out_name);
        let d1 = f.dir.path().join("d1.vmdk");
        let d2 = f.dir.path().join("d2.vmdk");
        let mut tee = DigestTee::new();
        write_ova(
            &out,
            ("vm.ovf", b"<Envelope/>\n"),
            ("vm.mf", b"SHA256(vm.ovf)= 00\n"),
            &[("vm-disk1.vmdk", &d1), ("vm-disk2.vmdk", &d2)],
            Some(&mut tee),
        )
        .unwrap();
        // Hashed as written: the same digests as reading the archive back.
        let written = crate::container::glance::digests(&out).unwrap();
        assert_eq!(tee.finish().unwrap(), written);
        out
    }

    #[test]
    fn members_are_in_ovf_order_with_fixed_owner_and_mode() {
        let f = fixture();
        let out = build(&f, "vm.ova");
        let Some(listing) = tar_tool(&["--numeric-owner", "-tvf", out.to_str().unwrap()]) else {
            return;
        };
        let lines: Vec<Vec<&str>> = listing
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let names: Vec<&str> = lines.iter().map(|l| *l.last().unwrap()).collect();
        assert_eq!(names, ["vm.ovf", "vm.mf", "vm-disk1.vmdk", "vm-disk2.vmdk"]);
        for line in &lines {
            assert_eq!(line[0], "-rw-r--r--", "{listing}");
            assert_eq!(line[1], "0/0", "{listing}");
            assert!(line[3].starts_with("1970-01-01"), "{listing}");
        }
        assert_eq!(lines[2][2], f.disk1.len().to_string());
    }

    #[test]
    fn extracted_members_equal_their_sources() {
        let f = fixture();
        let out = build(&f, "vm.ova");
        let x = f.dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        if tar_tool(&["-xf", out.to_str().unwrap(), "-C", x.to_str().unwrap()]).is_none() {
            return;
        }
        assert_eq!(std::fs::read(x.join("vm.ovf")).unwrap(), b"<Envelope/>\n");
        assert_eq!(
            std::fs::read(x.join("vm.mf")).unwrap(),
            b"SHA256(vm.ovf)= 00\n"
        );
        assert_eq!(std::fs::read(x.join("vm-disk1.vmdk")).unwrap(), f.disk1);
        assert_eq!(std::fs::read(x.join("vm-disk2.vmdk")).unwrap(), f.disk2);
    }

    #[test]
    fn headers_are_ustar_and_archive_is_reproducible() {
        let f = fixture();
        let a = std::fs::read(build(&f, "a.ova")).unwrap();
        let b = std::fs::read(build(&f, "b.ova")).unwrap();
        assert_eq!(a, b);
        // POSIX ustar magic and version at offset 257 of the first header.
        assert_eq!(&a[257..265], b"ustar\x0000");
        assert_eq!(a.len() % 512, 0);
    }

    #[test]
    fn mismatched_names_are_refused() {
        let f = fixture();
        let out = f.dir.path().join("bad.ova");
        let d1 = f.dir.path().join("d1.vmdk");
        let cases: [(&str, &str, &str); 4] = [
            ("vm.xml", "vm.mf", "d.vmdk"),
            ("vm.ovf", "other.mf", "d.vmdk"),
            ("vm.ovf", "vm.mf", "vm.ovf"),
            ("vm.ovf", "vm.mf", "../d.vmdk"),
        ];
        for (ovf, mf, disk) in cases {
            let err = write_ova(&out, (ovf, b""), (mf, b""), &[(disk, &d1)], None).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{ovf} {mf} {disk}");
        }
        assert!(!out.exists());
    }

    #[test]
    fn missing_disk_leaves_no_output() {
        let f = fixture();
        let out = f.dir.path().join("vm.ova");
        let missing = f.dir.path().join("nope.vmdk");
        let err = write_ova(
            &out,
            ("vm.ovf", b""),
            ("vm.mf", b""),
            &[("d.vmdk", &missing)],
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope.vmdk"), "{err}");
        assert!(!out.exists());
        let temporaries = std::fs::read_dir(f.dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cloudimg-tmp"))
            .count();
        assert_eq!(temporaries, 0);
    }

    #[test]
    fn package_holds_a_consistent_descriptor_manifest_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("source.vmdk");
        let disk_str = disk.to_str().unwrap();
        let create = [
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ];
        let Some([qemu, tar, sha256sum]) = oracles(["qemu-img", "tar", "sha256sum"]) else {
            return;
        };
        qemu.run([&create[..], &[disk_str, "64M"]].concat());
        let out = dir.path().join("noble.ova");
        let spec = OvfSpec::new("noble", "noble-disk1.vmdk", 0, 64 << 20);
        write_ova_package(&out, &spec, &disk, ManifestHash::Sha256, None).unwrap();

        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let x_str = x.to_str().unwrap();
        let listing = tar.run(["-tf", out.to_str().unwrap()]).stdout;
        assert_eq!(
            String::from_utf8_lossy(&listing),
            "noble.ovf\nnoble.mf\nnoble-disk1.vmdk\n"
        );
        tar.run(["-xf", out.to_str().unwrap(), "-C", x_str]);

        let extracted = x.join("noble-disk1.vmdk");
        assert_eq!(
            std::fs::read(&extracted).unwrap(),
            std::fs::read(&disk).unwrap()
        );
        let info = qemu_img_info(&qemu, &extracted, None);
        assert_eq!(info["format"], "vmdk");
        assert_eq!(info["virtual-size"], 64 << 20);

        let ovf = std::fs::read_to_string(x.join("noble.ovf")).unwrap();
        let size = std::fs::metadata(&disk).unwrap().len();
        assert!(ovf.contains(&format!("ovf:size=\"{size}\"")), "{ovf}");
        assert!(
            ovf.contains(&format!("ovf:capacity=\"{}\"", 64u64 << 20)),
            "{ovf}"
        );

        let mf = std::fs::read_to_string(x.join("noble.mf")).unwrap();
        let sum = |name: &str| {
            let path = x.join(name);
            let out = sha256sum.run([path.as_os_str()]).stdout;
            String::from_utf8_lossy(&out)
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            mf,
            format!(
                "SHA256(noble.ovf)= {}\nSHA256(noble-disk1.vmdk)= {}\n",
                sum("noble.ovf"),
                sum("noble-disk1.vmdk")
            )
        );
    }

    #[test]
    fn short_source_is_reported_as_size_change() {
        let mut builder = tar::Builder::new(Vec::new());
        let err = append_exact(
            &mut builder,
            "d.vmdk",
            10,
            &b"abc"[..],
            Path::new("/src/d.vmdk"),
            Path::new("/out/x.ova"),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ContainerError::SizeChanged {
                    expected: 10,
                    actual: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn longer_source_is_cut_at_the_announced_size() {
        let mut builder = tar::Builder::new(Vec::new());
        append_exact(
            &mut builder,
            "d",
            2,
            &b"abc"[..],
            Path::new("s"),
            Path::new("o"),
        )
        .unwrap();
        let archive = builder.into_inner().unwrap();
        // Header, one data block holding "ab" and zero padding, two end-of-archive blocks.
        assert_eq!(archive.len(), 4 * 512);
        assert_eq!(&archive[512..515], b"ab\0");
    }
}
