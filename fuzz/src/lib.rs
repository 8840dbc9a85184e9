//! What the fuzz targets do. Disk readers: put the input in a file, open it as one format, and
//! read the whole guest through `map`/`read_at` with a cap on the work. Network parsers (checksum
//! files, listings, simplestreams, VMDK descriptors, OpenPGP, OVA members, catalogs): hand them
//! the bytes and check the promises their docs make. Errors are fine; panics, hangs and huge
//! allocations are the bugs being looked for.

use std::io::Write;

use std::sync::OnceLock;

use cloudimg::catalog::user::UserCatalog;
use cloudimg::catalog::{Catalog, DigestAlgorithm};
use cloudimg::formats::archive::{self, ArchiveKind};
use cloudimg::index::{html, streams, sums};
use cloudimg::verify::openpgp::Keyring;
use cloudimg::formats::{DiskFormat, DiskReader, Extent};

/// Guest bytes read at most per input, so a hostile virtual size cannot make a run slow.
const MAX_GUEST_BYTES: u64 = 64 << 20;
/// `map` calls at most per input (readers may answer with tiny runs).
const MAX_RUNS: u32 = 100_000;
/// Largest single read.
const READ_CHUNK: usize = 1 << 20;

/// Opens `data` as `format` and reads its guest.
pub fn fuzz_format(format: DiskFormat, data: &[u8]) {
    let Some(file) = input_file(data) else { return };
    if let Ok(mut reader) = cloudimg::formats::open(file.path(), Some(format)) {
        read_guest(reader.as_mut());
    }
}

/// The first byte picks the compression (so plain tar is reachable too); the rest is the file.
pub fn fuzz_archive(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let kind = match selector % 3 {
        0 => ArchiveKind::Tar,
        1 => ArchiveKind::TarGz,
        _ => ArchiveKind::TarXz,
    };
    let Some(file) = input_file(rest) else { return };
    let Ok(handle) = std::fs::File::open(file.path()) else { return };
    if let Ok(mut reader) = archive::open(file.path(), handle, kind) {
        read_guest(reader.as_mut());
    }
}

fn input_file(data: &[u8]) -> Option<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new().ok()?;
    file.write_all(data).ok()?;
    file.flush().ok()?;
    Some(file)
}

/// Walks the guest in increasing order, as the copy loop does.
pub fn read_guest(reader: &mut dyn DiskReader) {
    let _ = reader.info();
    let end = reader.virtual_size().min(MAX_GUEST_BYTES);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0;
    for _ in 0..MAX_RUNS {
        if offset >= end {
            break;
        }
        let Ok(run) = reader.map(offset) else { return };
        assert!(run.len > 0, "map({offset:#x}) answered an empty run");
        let len = run.len.min(READ_CHUNK as u64).min(end - offset);
        if run.extent == Extent::Data {
            let Some(slice) = buf.get_mut(..len as usize) else { return };
            if reader.read_at(offset, slice).is_err() {
                return;
            }
        }
        offset += len;
    }
}

/// SHA256SUMS / SHA512SUMS: every parsed entry has a digest of the algorithm's length.
pub fn fuzz_sums(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let algorithm = if selector & 1 == 0 {
        DigestAlgorithm::Sha256
    } else {
        DigestAlgorithm::Sha512
    };
    if let Ok(entries) = sums::parse(rest, algorithm) {
        for entry in &entries {
            assert!(entry.file_digest(algorithm).is_some(), "entry without its digest");
        }
    }
}

/// A listing: never more rows than the cap, never a name that leaves the folder.
pub fn fuzz_listing(data: &[u8]) {
    if let Ok(entries) = html::parse_listing(data) {
        assert!(entries.len() <= html::MAX_LISTING_ENTRIES);
        for entry in &entries {
            assert!(!entry.name.contains('/') && entry.name != "..", "{:?}", entry.name);
        }
    }
}

/// Simplestreams: both documents; item paths of a parsed products file resolve under the root
/// or are refused.
pub fn fuzz_streams(data: &[u8]) {
    let _ = streams::parse_index(data);
    let Ok(products) = streams::parse_products(data) else { return };
    let root = url::Url::parse("http://mirror.invalid/releases/").expect("root URL");
    for product in &products.products {
        for version in product.versions.values() {
            for item in version.items.values() {
                if let Ok(url) = streams::resolve_path(&root, &item.path) {
                    assert!(url.as_str().starts_with(root.as_str()), "{url} escapes");
                }
            }
        }
    }
}

/// The VMDK text descriptor, as lossy UTF-8 the way the reader sees it.
pub fn fuzz_vmdk_descriptor(data: &[u8]) {
    let _ = cloudimg::formats::vmdk::Descriptor::parse(&String::from_utf8_lossy(data));
}

/// Ubuntu's two signing keys, parsed once.
fn ubuntu_keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| {
        let catalog = Catalog::builtin("ubuntu").expect("built-in catalog");
        let keys: Vec<&str> = catalog.keys.iter().map(|k| k.armored.as_str()).collect();
        Keyring::from_armored_texts(&keys).expect("built-in keys")
    })
}

/// Even first byte: the rest is a keyring; odd: a detached signature over a fixed text.
pub fn fuzz_openpgp(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    if selector & 1 == 0 {
        let _ = Keyring::from_bytes(rest);
    } else {
        let result = ubuntu_keyring().verify_detached(b"SHA256SUMS contents\n", rest);
        // Nobody but Canonical can make a good signature.
        assert!(result.is_err(), "a fuzzed signature verified");
    }
}

/// Largest member the OVA target packs, so each run stays quick.
const MAX_MEMBER: usize = 1 << 20;

/// Members separated by 0xFF bytes; in each, the first line is the name and the rest the contents.
/// Packed into a tar (names the tar crate refuses are skipped), opened as the `.ova` reader opens
/// one, and read.
pub fn fuzz_ova(data: &[u8]) {
    let mut builder = tar::Builder::new(Vec::new());
    for member in data.split_inclusive(|&b| b == 0xff).take(16) {
        let member = member.strip_suffix(&[0xff]).unwrap_or(member);
        let (name, contents) = match member.iter().position(|&b| b == b'\n') {
            Some(at) => (&member[..at], &member[at + 1..]),
            None => (member, &[][..]),
        };
        let contents = &contents[..contents.len().min(MAX_MEMBER)];
        let name = String::from_utf8_lossy(name);
        let mut header = tar::Header::new_ustar();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        if header.set_path(name.as_ref()).is_err() {
            continue;
        }
        header.set_cksum();
        if builder.append(&header, contents).is_err() {
            return;
        }
    }
    let Ok(bytes) = builder.into_inner() else { return };
    let Some(file) = input_file(&bytes) else { return };
    let Ok(handle) = std::fs::File::open(file.path()) else { return };
    if let Ok(mut reader) = archive::open(file.path(), handle, ArchiveKind::Tar) {
        read_guest(reader.as_mut());
    }
}

/// Any text as a source catalog and as a user catalog.
pub fn fuzz_catalog(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Catalog::from_toml_str(text, "fuzz.toml");
    let _ = UserCatalog::from_toml_str(text, "fuzz.toml");
}

/// A bake recipe (TOML): parsed, then — without the keys that name local files, which a fuzzer
/// must not make it read — checked, composed into a cloud-config and digested.
pub fn fuzz_recipe(data: &[u8]) {
    use cloudimg::bake::recipe::{self, RecipeSpec};
    let Ok(mut spec) = RecipeSpec::parse(data, std::path::Path::new("/nonexistent/recipe.toml"))
    else {
        return;
    };
    spec.user_data = None;
    spec.ssh_authorized_keys.clear();
    spec.write_files.clear();
    let Ok(loaded) = spec.load() else { return };
    if let Ok(seed) = recipe::compose(&loaded, "fuzz") {
        assert!(seed.user_data.starts_with(b"#cloud-config\n"));
        // The composed document is valid YAML cloudimg would itself accept.
        assert!(cloudimg::bake::validate::cloud_config(&seed.user_data).is_ok());
        let _ = loaded.digest();
    }
}

/// A disk held in memory (the fuzz input), so the guestfs targets need no file.
pub struct MemoryDisk(pub Vec<u8>);

impl DiskReader for MemoryDisk {
    fn virtual_size(&self) -> u64 {
        self.0.len() as u64
    }
    fn map(
        &mut self,
        offset: u64,
    ) -> Result<cloudimg::formats::Mapping, cloudimg::formats::FormatError> {
        Ok(cloudimg::formats::Mapping {
            extent: Extent::Data,
            len: self.virtual_size() - offset,
        })
    }
    fn read_at(
        &mut self,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), cloudimg::formats::FormatError> {
        // guestfs::Volume checks its reads against the virtual size before they come here.
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
    fn info(&self) -> cloudimg::formats::ImageInfo {
        cloudimg::formats::ImageInfo::new(DiskFormat::Raw, self.virtual_size())
    }
}

/// A partition table: whatever `gpt::read` returns lies within the disk.
pub fn fuzz_gpt(data: &[u8]) {
    use cloudimg::guestfs::{gpt, Volume};
    let mut disk = MemoryDisk(data.to_vec());
    let sectors = disk.virtual_size() / gpt::SECTOR;
    if let Ok(table) = gpt::read(&mut Volume::whole(&mut disk)) {
        for part in table.partitions() {
            assert!(part.number >= 1 && part.first_lba >= 1);
            assert!(
                part.first_lba <= part.last_lba && part.last_lba < sectors,
                "{part:?}"
            );
        }
    }
}

/// Files read per ext4 input at most, and the largest file read.
const MAX_EXT4_FILES: usize = 256;
const MAX_EXT4_FILE: u64 = 4 << 20;

/// An ext2/3/4 filesystem (the whole input): walk the tree from the root, read every link and
/// small file, resolve the boot paths, then `boot::find` and `extract` on the same bytes.
pub fn fuzz_ext4(data: &[u8]) {
    use cloudimg::guestfs::ext4::{Ext4, Kind};
    use cloudimg::guestfs::{boot, Volume};
    let mut disk = MemoryDisk(data.to_vec());
    if let Ok(mut fs) = Ext4::open(Volume::whole(&mut disk)) {
        let mut pending = vec![2u32];
        let mut seen = 0;
        while let Some(number) = pending.pop() {
            seen += 1;
            if seen > MAX_EXT4_FILES {
                break;
            }
            let Ok(inode) = fs.inode(number) else {
                continue;
            };
            match inode.kind() {
                Kind::Directory => {
                    let mut children = Vec::new();
                    let _ = fs.for_each_entry(&inode, &mut |name, child| {
                        if name != b"." && name != b".." {
                            children.push(child);
                        }
                        children.len() < MAX_EXT4_FILES
                    });
                    pending.extend(children);
                }
                Kind::Symlink => {
                    if let Ok(target) = fs.read_link(&inode) {
                        assert!(target.len() as u64 <= cloudimg::guestfs::ext4::MAX_SYMLINK_LEN);
                    }
                }
                Kind::File if inode.size <= MAX_EXT4_FILE => {
                    let mut counted = Counter(0);
                    if let Ok(n) = fs.copy(&inode, &mut counted) {
                        assert_eq!(n, counted.0, "copy wrote a different length than it says");
                        assert_eq!(n, inode.size);
                    }
                }
                _ => {}
            }
        }
        for path in [
            "/boot/grub/grub.cfg",
            "/grub/grub.cfg",
            "/vmlinuz",
            "/initrd.img",
        ] {
            let _ = fs.resolve(path);
        }
    }
    if let Ok(found) = boot::find(&mut disk) {
        if found.kernel.size + found.initrd_len() <= MAX_EXT4_FILE {
            let (mut kernel, mut initrd) = (Counter(0), Counter(0));
            if let Ok((k, i)) = boot::extract(&mut disk, &found, &mut kernel, &mut initrd) {
                assert_eq!((k, i), (kernel.0, initrd.0));
                assert_eq!((k, i), (found.kernel.size, found.initrd_len()));
            }
        }
    }
}

/// A `Write` that counts.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A grub.cfg: the first menu entry, when there is one, names a kernel and no argument that
/// expands a variable.
pub fn fuzz_grub_cfg(data: &[u8]) {
    use cloudimg::guestfs::grub;
    let text = String::from_utf8_lossy(data);
    if let Ok(entry) = grub::first_menuentry(&text) {
        assert!(!entry.kernel.is_empty());
        assert!(entry.initrds.iter().all(|p| !p.is_empty()));
        let (device, _) = grub::split_device(&entry.kernel);
        if let Some(device) = device {
            let _ = grub::device_partition(device);
        }
    }
}
