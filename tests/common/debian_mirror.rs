//! A cloud.debian.org/images/cloud/ look-alike, generated on disk at test time.
//!
//! Layout (the real site's, see `/work/shared/reference/debian/README.md`):
//!
//! ```text
//! <codename>/<YYYYMMDD>-<N>/                 release builds
//! <codename>/<YYYYMMDD>-<N>/.latest/         unversioned aliases of that build, own SHA512SUMS
//! <codename>/latest -> <newest build>/.latest
//! <codename>/daily/<YYYYMMDD>-<N>/           daily builds (files say `-daily-<serial>`)
//! <codename>/daily/latest -> <newest>/.latest
//! ```
//!
//! A build folder holds, per variant and arch, `debian-<version>-<variant>-<arch>-<serial>` +
//! `.tar.xz` (GNU sparse tar of one `disk.raw`), `.json` (the v1 List describing the build and
//! its uploads) and, for generic/genericcloud/nocloud, `.raw` and `.qcow2` (qemu-img); then
//! `SHA512SUMS` (`<128 hex>  <name>`, sorted by name, every file including the JSON). No
//! signature. Every folder gets an Apache 2.4 table-form `index.html` (icon and name links per
//! row, absolute parent link, `?C=` sort links), which the test server serves for `dir/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha512};

use super::mirror::{file_name, pretty, run};

/// Size of every generated raw disk: room for a small ext4 filesystem.
const RAW_DISK_BYTES: u64 = 8 << 20;

/// A Debian release carried by the mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    pub codename: &'static str,
    /// What file names say: `12`, `sid`.
    pub version: &'static str,
}

impl Release {
    pub const BOOKWORM: Release = Release {
        codename: "bookworm",
        version: "12",
    };
    pub const TRIXIE: Release = Release {
        codename: "trixie",
        version: "13",
    };
    pub const SID: Release = Release {
        codename: "sid",
        version: "sid",
    };
}

/// Dated release builds or daily builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Released,
    Daily,
}

/// One build to generate.
#[derive(Clone, Debug)]
pub struct Build {
    pub release: Release,
    pub stream: Stream,
    /// `20240717-1811`
    pub serial: &'static str,
}

/// Describes the mirror; [`DebianMirrorBuilder::build`] writes it.
pub struct DebianMirrorBuilder {
    root: PathBuf,
    builds: Vec<Build>,
    arches: Vec<&'static str>,
    variants: Vec<&'static str>,
}

/// The generated mirror.
pub struct DebianMirror {
    root: PathBuf,
    pub builds: Vec<Build>,
}

/// Variants that also get `.raw` and `.qcow2`; the cloud vendors' only get `.tar.xz`.
const FULL_VARIANTS: &[&str] = &["generic", "genericcloud", "nocloud"];

impl DebianMirrorBuilder {
    pub fn new(root: impl Into<PathBuf>) -> DebianMirrorBuilder {
        DebianMirrorBuilder {
            root: root.into(),
            builds: Vec::new(),
            arches: vec!["amd64"],
            variants: vec!["genericcloud"],
        }
    }

    pub fn build_of(mut self, release: Release, stream: Stream, serial: &'static str) -> Self {
        self.builds.push(Build {
            release,
            stream,
            serial,
        });
        self
    }

    pub fn arches(mut self, arches: &[&'static str]) -> Self {
        self.arches = arches.to_vec();
        self
    }

    pub fn variants(mut self, variants: &[&'static str]) -> Self {
        self.variants = variants.to_vec();
        self
    }

    pub fn build(self) -> io::Result<DebianMirror> {
        fs::create_dir_all(&self.root)?;
        for build in &self.builds {
            self.write_build(build)?;
        }
        let mirror = DebianMirror {
            root: self.root,
            builds: self.builds,
        };
        mirror.write_latest_links()?;
        write_listings(&mirror.root, Path::new(""))?;
        Ok(mirror)
    }

    fn write_build(&self, build: &Build) -> io::Result<()> {
        let relative = DebianMirror::build_dir(build);
        let dir = self.root.join(&relative);
        let latest = dir.join(".latest");
        fs::create_dir_all(&latest)?;
        let mut published: Vec<(String, String)> = Vec::new();
        let mut aliases: Vec<(String, String)> = Vec::new();
        for arch in &self.arches {
            for variant in &self.variants {
                let stem = DebianMirror::stem(build, variant, arch);
                let alias_stem = DebianMirror::alias_stem(build, variant, arch);
                let work = tempfile::tempdir()?;
                let tag = format!(
                    "{} {variant} {arch} {}",
                    build.release.codename, build.serial
                );
                let raw = make_raw_disk(work.path(), &tag)?;
                let mut formats: Vec<(&str, PathBuf)> = Vec::new();
                let tarball = dir.join(format!("{stem}.tar.xz"));
                write_sparse_tar_xz(&raw, &tarball)?;
                formats.push(("internal", tarball));
                if FULL_VARIANTS.contains(variant) {
                    let qcow2 = dir.join(format!("{stem}.qcow2"));
                    run(Command::new("qemu-img")
                        .args(["convert", "-c", "-O", "qcow2"])
                        .arg(&raw)
                        .arg(&qcow2))?;
                    let raw_copy = dir.join(format!("{stem}.raw"));
                    fs::copy(&raw, &raw_copy)?;
                    formats.push(("raw", raw_copy));
                    formats.push(("qcow2", qcow2));
                }
                let mut uploads = Vec::new();
                for (format, path) in &formats {
                    let name = file_name(path);
                    let digest = sha512_file(path)?;
                    uploads.push(upload_item(build, &relative, &name, format, arch, &digest));
                    published.push((name.clone(), digest));
                    let alias = name.replacen(&stem, &alias_stem, 1);
                    fs::copy(path, latest.join(&alias))?;
                    aliases.push((alias, sha512_file(path)?));
                }
                let json_path = dir.join(format!("{stem}.json"));
                let list = image_json(build, variant, arch, uploads);
                fs::write(&json_path, pretty(&list)?)?;
                published.push((file_name(&json_path), sha512_file(&json_path)?));
                let alias_json = format!("{alias_stem}.json");
                fs::copy(&json_path, latest.join(&alias_json))?;
                aliases.push((alias_json, sha512_file(&json_path)?));
            }
        }
        write_sums(&dir, &mut published)?;
        write_sums(&latest, &mut aliases)
    }
}

impl DebianMirror {
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `bookworm/20240717-1811` or `bookworm/daily/20240720-1815`.
    pub fn build_dir(build: &Build) -> String {
        match build.stream {
            Stream::Released => format!("{}/{}", build.release.codename, build.serial),
            Stream::Daily => format!("{}/daily/{}", build.release.codename, build.serial),
        }
    }

    /// `debian-12-genericcloud-amd64-20240717-1811` (daily: `…-amd64-daily-<serial>`).
    pub fn stem(build: &Build, variant: &str, arch: &str) -> String {
        let version = build.release.version;
        match build.stream {
            Stream::Released => format!("debian-{version}-{variant}-{arch}-{}", build.serial),
            Stream::Daily => format!("debian-{version}-{variant}-{arch}-daily-{}", build.serial),
        }
    }

    /// The unversioned name in `latest/`: `debian-12-genericcloud-amd64`.
    pub fn alias_stem(build: &Build, variant: &str, arch: &str) -> String {
        let version = build.release.version;
        match build.stream {
            Stream::Released => format!("debian-{version}-{variant}-{arch}"),
            Stream::Daily => format!("debian-{version}-{variant}-{arch}-daily"),
        }
    }

    /// The path of a published file, relative to the mirror root.
    pub fn file_path(build: &Build, variant: &str, arch: &str, ext: &str) -> String {
        format!(
            "{}/{}.{ext}",
            DebianMirror::build_dir(build),
            DebianMirror::stem(build, variant, arch)
        )
    }

    /// `latest` of each release and stream points at the newest build's `.latest`, as on the
    /// real site; builds order by (date, counter).
    fn write_latest_links(&self) -> io::Result<()> {
        for build in &self.builds {
            let newest = self
                .builds
                .iter()
                .filter(|b| b.release == build.release && b.stream == build.stream)
                .max_by_key(|b| serial_key(b.serial))
                .unwrap_or(build);
            if newest.serial != build.serial {
                continue;
            }
            let parent = match build.stream {
                Stream::Released => self.root.join(build.release.codename),
                Stream::Daily => self.root.join(build.release.codename).join("daily"),
            };
            let link = parent.join("latest");
            if link.exists() || fs::symlink_metadata(&link).is_ok() {
                fs::remove_file(&link)?;
            }
            std::os::unix::fs::symlink(format!("{}/.latest", build.serial), link)?;
        }
        Ok(())
    }
}

/// (date, counter) of `20240717-1811`.
fn serial_key(serial: &str) -> (u64, u64) {
    let (date, counter) = serial.split_once('-').unwrap_or((serial, "0"));
    (date.parse().unwrap_or(0), counter.parse().unwrap_or(0))
}

/// `SHA512SUMS`: `<128 hex>  <name>`, sorted by name.
fn write_sums(dir: &Path, entries: &mut [(String, String)]) -> io::Result<()> {
    entries.sort();
    let text: String = entries
        .iter()
        .map(|(name, digest)| format!("{digest}  {name}\n"))
        .collect();
    fs::write(dir.join("SHA512SUMS"), text)
}

pub fn sha512_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha512::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// One `Upload` item of an image's JSON: where a format of the image lives and its digest.
fn upload_item(
    build: &Build,
    relative: &str,
    name: &str,
    format: &str,
    arch: &str,
    digest_hex: &str,
) -> serde_json::Value {
    let digest = base64_no_pad(&hex::decode(digest_hex).unwrap_or_default());
    json!({
        "apiVersion": "cloud.debian.org/v1alpha1",
        "kind": "Upload",
        "metadata": {
            "labels": {
                "cloud.debian.org/version": build.serial,
                "debian.org/arch": arch,
                "debian.org/release": build.release.codename,
                "upload.cloud.debian.org/image-format": format,
                "upload.cloud.debian.org/provider": "cdimage.debian.org"
            },
            "annotations": {
                "cloud.debian.org/digest": format!("sha512:{digest}")
            }
        },
        "data": {
            "provider": "cdimage.debian.org",
            "ref": format!("{relative}/{name}")
        }
    })
}

/// Standard base64 without `=` padding, as the JSON's `sha512:` digests are written.
fn base64_no_pad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The `v1 List` of one image: its `Build` item then its uploads.
fn image_json(
    build: &Build,
    variant: &str,
    arch: &str,
    uploads: Vec<serde_json::Value>,
) -> serde_json::Value {
    let mut items = vec![json!({
        "apiVersion": "cloud.debian.org/v1alpha1",
        "kind": "Build",
        "metadata": {
            "labels": {
                "cloud.debian.org/vendor": variant,
                "cloud.debian.org/version": build.serial,
                "debian.org/arch": arch,
                "debian.org/release": build.release.codename
            }
        },
        "data": {
            "info": {
                "arch": arch,
                "release": build.release.codename,
                "release_id": build.release.version,
                "vendor": variant,
                "version": build.serial,
                "type": match build.stream { Stream::Released => "official", Stream::Daily => "daily" }
            }
        }
    })];
    items.extend(uploads);
    json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

/// An 8 MiB raw disk holding an ext4 filesystem with a few files, one naming `tag`.
fn make_raw_disk(work: &Path, tag: &str) -> io::Result<PathBuf> {
    let content = work.join("content");
    fs::create_dir_all(content.join("etc"))?;
    fs::write(content.join("etc/hostname"), "debian\n")?;
    fs::write(
        content.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux (cloudimg test image)\"\nID=debian\n",
    )?;
    fs::write(content.join("etc/cloudimg-test-tag"), format!("{tag}\n"))?;
    let raw = work.join("disk.raw");
    fs::File::create(&raw)?.set_len(RAW_DISK_BYTES)?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-d"])
        .arg(&content)
        .arg(&raw))?;
    Ok(raw)
}

/// `tar --sparse` of one `disk.raw`, xz-compressed, as Debian's build tool writes it.
fn write_sparse_tar_xz(raw: &Path, out: &Path) -> io::Result<()> {
    let dir = raw.parent().unwrap_or(Path::new("."));
    run(Command::new("tar")
        .args(["--sparse", "--format=gnu", "-cJf"])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg("disk.raw"))
}

/// One row of a listing.
struct Row {
    name: String,
    is_dir: bool,
    modified: String,
    size: Option<u64>,
}

/// Writes `index.html` in `relative` and every real (not symlinked) subfolder. Hidden entries
/// (`.latest`) are left out, as Apache's default `IndexIgnore` does.
fn write_listings(root: &Path, relative: &Path) -> io::Result<()> {
    let dir = root.join(relative);
    let mut rows = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "index.html" {
            continue;
        }
        let path = entry.path();
        let metadata = fs::metadata(&path)?;
        let is_link = entry.file_type()?.is_symlink();
        if metadata.is_dir() && !is_link {
            write_listings(root, &relative.join(&name))?;
        }
        if name.starts_with('.') {
            continue;
        }
        rows.push(Row {
            modified: listing_date(&relative.join(&name)),
            is_dir: metadata.is_dir(),
            size: (!metadata.is_dir()).then_some(metadata.len()),
            name,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    fs::write(dir.join("index.html"), table_listing(relative, &rows))
}

/// `2024-07-17 18:11` from the deepest `YYYYMMDD-N` in the path; a fixed date otherwise.
fn listing_date(relative: &Path) -> String {
    relative
        .iter()
        .rev()
        .find_map(|part| {
            let part = part.to_string_lossy();
            let (date, _) = part.split_once('-')?;
            (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()))
                .then(|| format!("{}-{}-{} 18:11", &date[..4], &date[4..6], &date[6..8]))
        })
        .unwrap_or_else(|| "2025-08-12 09:30".to_owned())
}

/// Apache's human size: `339M`, `1.2K`, `833`.
fn human_size(bytes: u64) -> String {
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut value = bytes as f64;
    for unit in ["K", "M", "G", "T"] {
        value /= 1024.0;
        if value < 1024.0 {
            return if value < 10.0 {
                format!("{value:.1}{unit}")
            } else {
                format!("{value:.0}{unit}")
            };
        }
    }
    format!("{value:.0}P")
}

/// An Apache 2.4 mod_autoindex page in table form, as cloud.debian.org serves (`HTMLTable`,
/// `/icons2/` icons, no description column).
fn table_listing(relative: &Path, rows: &[Row]) -> String {
    let path = relative.to_string_lossy();
    let title = if path.is_empty() {
        "/images/cloud".to_owned()
    } else {
        format!("/images/cloud/{path}")
    };
    let mut html = format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html>\n <head>\n  \
         <title>Index of {title}</title>\n </head>\n <body>\n<h1>Index of {title}</h1>\n  \
         <table id=\"indexlist\">\n   \
         <tr class=\"indexhead\"><th class=\"indexcolicon\"><img src=\"/icons2/blank.png\" alt=\"[ICO]\"></th>\
         <th class=\"indexcolname\"><a href=\"?C=N;O=D\">Name</a></th>\
         <th class=\"indexcollastmod\"><a href=\"?C=M;O=A\">Last modified</a></th>\
         <th class=\"indexcolsize\"><a href=\"?C=S;O=A\">Size</a></th></tr>\n   \
         <tr class=\"indexbreakrow\"><th colspan=\"4\"><hr></th></tr>\n"
    );
    // The parent link is absolute; the mirror root's parent is the site's /images/.
    let parent = match relative.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => format!("/{}/", parent.display()),
        Some(_) => "/".to_owned(),
        None => "/images/".to_owned(),
    };
    html.push_str(&format!(
        "   <tr class=\"even\"><td class=\"indexcolicon\"><a href=\"{parent}\"><img src=\"/icons2/go-previous.png\" alt=\"[PARENTDIR]\"></a></td>\
         <td class=\"indexcolname\"><a href=\"{parent}\">Parent Directory</a></td>\
         <td class=\"indexcollastmod\">&nbsp;</td><td class=\"indexcolsize\">  - </td></tr>\n"
    ));
    for (index, row) in rows.iter().enumerate() {
        let class = if index % 2 == 0 { "odd" } else { "even" };
        let (href, icon, alt) = if row.is_dir {
            (format!("{}/", row.name), "folder.png", "[DIR]")
        } else if row.name.ends_with(".json") || row.name == "SHA512SUMS" {
            (row.name.clone(), "text.png", "[TXT]")
        } else {
            (row.name.clone(), "package.png", "[   ]")
        };
        let size = row.size.map_or_else(|| "  - ".to_owned(), human_size);
        html.push_str(&format!(
            "   <tr class=\"{class}\"><td class=\"indexcolicon\"><a href=\"{href}\"><img src=\"/icons2/{icon}\" alt=\"{alt}\"></a></td>\
             <td class=\"indexcolname\"><a href=\"{href}\">{href}</a></td>\
             <td class=\"indexcollastmod\">{}  </td><td class=\"indexcolsize\">{size}</td></tr>\n",
            row.modified
        ));
    }
    html.push_str(
        "   <tr class=\"indexbreakrow\"><th colspan=\"4\"><hr></th></tr>\n</table>\n\
         <address>Apache/2.4.62 (Unix) Server at cloud.debian.org Port 443</address>\n</body></html>\n",
    );
    html
}

#[test]
fn base64_matches_rfc4648_vectors_without_padding() {
    assert_eq!(base64_no_pad(b"f"), "Zg");
    assert_eq!(base64_no_pad(b"fo"), "Zm8");
    assert_eq!(base64_no_pad(b"foo"), "Zm9v");
    assert_eq!(base64_no_pad(b"foobar"), "Zm9vYmFy");
}

#[test]
fn human_sizes_look_like_apache_table_listings() {
    assert_eq!(human_size(833), "833");
    assert_eq!(human_size(1229), "1.2K");
    assert_eq!(human_size(355_467_264), "339M");
}
