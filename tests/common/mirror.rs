//! A cloud-images.ubuntu.com look-alike, generated on disk at test time.
//!
//! Layout (the real site's, see `/work/shared/reference/ubuntu/README.md`):
//!
//! ```text
//! server/releases/<codename>/release-<serial>/   released builds (canonical storage)
//! server/releases/<codename>/release -> release-<newest>
//! releases/<codename>, releases/<version> -> ../server/releases/<codename>
//! releases/server -> ../server                   so stream paths resolve under releases/
//! releases/streams/v1/{index.json, com.ubuntu.cloud:released:download.json}
//! <codename>/<serial>/                           daily builds
//! <codename>/current -> <newest>
//! daily/server/<codename> -> ../../<codename>     so stream paths resolve under daily/
//! daily/streams/v1/{index.json, com.ubuntu.cloud:daily:download.json}
//! ```
//!
//! Each serial folder holds per arch `<prefix>.img` (a real small qcow2 of an ext4 filesystem,
//! distinct bytes per release/arch/serial/stream), `<prefix>.manifest`, optionally
//! `<prefix>.tar.gz` (a raw disk inside), `unpacked/<prefix>-vmlinuz-generic` and `-initrd-generic`
//! (with their own signed `SHA256SUMS`, as on the real site);
//! then `SHA256SUMS`, `MD5SUMS` and their `.gpg` detached signatures by [`pgp::signing_key`].
//! Every real folder gets an Apache-style `index.html`, so a server mapping `dir/` to
//! `dir/index.html` serves listings shaped like the real ones.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use md5::{Digest as _, Md5};
use serde_json::{json, Value};
use sha2::Sha256;

use cloudimg::mirror::listing::apache_size;

use super::pgp::{self, TestKey};

/// Size of the raw disk inside every generated image: room for a small ext4 filesystem.
const RAW_DISK_BYTES: u64 = 8 << 20;

/// Width below which Apache does not shrink the name column (mod_autoindex `NameWidth` default).
const MIN_NAME_WIDTH: usize = 23;

/// An Ubuntu series carried by the mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// `noble`
    pub codename: &'static str,
    /// `24.04`: the series, never a point release.
    pub version: &'static str,
    /// `24.04 LTS`, the simplestreams `release_title`.
    pub title: &'static str,
    /// `Noble Numbat`, the simplestreams `release_codename`.
    pub name: &'static str,
    /// `2029-05-31`
    pub support_eol: &'static str,
    /// simplestreams `aliases`, e.g. `24.04,n,noble,lts,default`.
    pub aliases: &'static str,
}

impl Release {
    pub const NOBLE: Release = Release {
        codename: "noble",
        version: "24.04",
        title: "24.04 LTS",
        name: "Noble Numbat",
        support_eol: "2029-05-31",
        aliases: "24.04,n,noble,lts,default",
    };
    pub const JAMMY: Release = Release {
        codename: "jammy",
        version: "22.04",
        title: "22.04 LTS",
        name: "Jammy Jellyfish",
        support_eol: "2027-06-01",
        aliases: "22.04,j,jammy",
    };

    /// The listing description, e.g. `Ubuntu Server 24.04 LTS (Noble Numbat) daily builds`.
    pub fn description(&self, stream: Stream) -> String {
        let kind = match stream {
            Stream::Released => "released",
            Stream::Daily => "daily",
        };
        format!("Ubuntu Server {} ({}) {kind} builds", self.title, self.name)
    }
}

/// Released builds or daily builds: separate folders, file names and simplestreams roots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    Released,
    Daily,
}

impl Stream {
    /// The simplestreams root, relative to the mirror root.
    pub fn root(self) -> &'static str {
        match self {
            Stream::Released => "releases",
            Stream::Daily => "daily",
        }
    }

    fn content_id(self) -> &'static str {
        match self {
            Stream::Released => "com.ubuntu.cloud:released:download",
            Stream::Daily => "com.ubuntu.cloud:daily:download",
        }
    }

    fn product_prefix(self) -> &'static str {
        match self {
            Stream::Released => "com.ubuntu.cloud:server",
            Stream::Daily => "com.ubuntu.cloud.daily:server",
        }
    }
}

/// Faults and extras applied to the serial folders written while they are set.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// Sign SUMS with [`pgp::attacker_key`] instead of the trusted [`pgp::signing_key`].
    pub attacker_signs: bool,
    /// Leave out `SHA256SUMS.gpg` and `MD5SUMS.gpg`.
    pub omit_signatures: bool,
    /// Publish a wrong SHA-256 (in SHA256SUMS and simplestreams) for files whose name ends so,
    /// e.g. `amd64.img`. SHA256SUMS is still signed correctly: only the digest lies.
    pub wrong_sha256_for: Option<String>,
    /// Also write `<prefix>.tar.gz` (a raw disk image inside, as the real ones).
    pub tarballs: bool,
    /// Publish this file (hard-linked, else copied) as every amd64 `<prefix>.img`, instead of
    /// a generated one: the bootable guest, for the bake tests.
    pub amd64_image: Option<PathBuf>,
}

/// Describes the mirror to generate; [`MirrorBuilder::build`] writes it.
pub struct MirrorBuilder {
    root: PathBuf,
    releases: Vec<Release>,
    arches: Vec<String>,
    released_serials: Vec<String>,
    daily_serials: Vec<String>,
    knobs: Knobs,
}

impl MirrorBuilder {
    /// noble and jammy, amd64 and arm64, released `20240821`, `20240912`, `20241004.1`, daily
    /// `20241010`, `20241011`; signed by the test signing key.
    pub fn new(root: impl Into<PathBuf>) -> MirrorBuilder {
        MirrorBuilder {
            root: root.into(),
            releases: vec![Release::NOBLE, Release::JAMMY],
            arches: vec!["amd64".to_owned(), "arm64".to_owned()],
            released_serials: ["20240821", "20240912", "20241004.1"]
                .map(String::from)
                .to_vec(),
            daily_serials: ["20241010", "20241011"].map(String::from).to_vec(),
            knobs: Knobs::default(),
        }
    }

    pub fn releases(mut self, releases: &[Release]) -> MirrorBuilder {
        self.releases = releases.to_vec();
        self
    }

    pub fn arches(mut self, arches: &[&str]) -> MirrorBuilder {
        self.arches = arches.iter().map(|arch| arch.to_string()).collect();
        self
    }

    pub fn released_serials(mut self, serials: &[&str]) -> MirrorBuilder {
        self.released_serials = serials.iter().map(|serial| serial.to_string()).collect();
        self
    }

    pub fn daily_serials(mut self, serials: &[&str]) -> MirrorBuilder {
        self.daily_serials = serials.iter().map(|serial| serial.to_string()).collect();
        self
    }

    pub fn knobs(mut self, knobs: Knobs) -> MirrorBuilder {
        self.knobs = knobs;
        self
    }

    /// Writes the whole tree and returns the mirror, ready for more serials.
    pub fn build(self) -> io::Result<Mirror> {
        fs::create_dir_all(&self.root)?;
        let mut mirror = Mirror {
            root: self.root,
            releases: self.releases,
            arches: self.arches,
            serials: BTreeMap::new(),
            items: Vec::new(),
            knobs: self.knobs,
        };
        for serial in &self.released_serials {
            mirror.write_serial(Stream::Released, serial)?;
        }
        for serial in &self.daily_serials {
            mirror.write_serial(Stream::Daily, serial)?;
        }
        mirror.write_indices()?;
        Ok(mirror)
    }
}

/// One published file, as simplestreams lists it.
#[derive(Clone, Debug)]
struct Item {
    stream: Stream,
    codename: &'static str,
    arch: String,
    serial: String,
    ftype: &'static str,
    /// Relative to the stream root.
    path: String,
    sha256: String,
    md5: String,
    size: u64,
}

/// A generated mirror on disk.
pub struct Mirror {
    root: PathBuf,
    releases: Vec<Release>,
    arches: Vec<String>,
    serials: BTreeMap<Stream, Vec<String>>,
    items: Vec<Item>,
    /// Applied to serials added from now on.
    pub knobs: Knobs,
}

impl Mirror {
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Publishes a new serial for every release and arch, then regenerates listings, streams and
    /// the `current/` and `release/` aliases (as the real site does after a build).
    pub fn add_serial(&mut self, stream: Stream, serial: &str) -> io::Result<()> {
        self.write_serial(stream, serial)?;
        self.write_indices()
    }

    /// Serials published in `stream`, oldest first.
    pub fn serials(&self, stream: Stream) -> &[String] {
        self.serials.get(&stream).map_or(&[], Vec::as_slice)
    }

    /// The user-facing folder of a serial, relative to the root, ending with `/`:
    /// `releases/24.04/release-20240821/` or `noble/20241010/`.
    pub fn serial_dir(stream: Stream, release: &Release, serial: &str) -> String {
        match stream {
            Stream::Released => format!("releases/{}/release-{serial}/", release.version),
            Stream::Daily => format!("{}/{serial}/", release.codename),
        }
    }

    /// The file name prefix: `ubuntu-24.04-server-cloudimg-amd64` or `noble-server-cloudimg-amd64`.
    pub fn prefix(stream: Stream, release: &Release, arch: &str) -> String {
        match stream {
            Stream::Released => format!("ubuntu-{}-server-cloudimg-{arch}", release.version),
            Stream::Daily => format!("{}-server-cloudimg-{arch}", release.codename),
        }
    }

    /// The disk image's user-facing path, relative to the root.
    pub fn image_path(stream: Stream, release: &Release, arch: &str, serial: &str) -> String {
        format!(
            "{}{}.img",
            Mirror::serial_dir(stream, release, serial),
            Mirror::prefix(stream, release, arch)
        )
    }

    /// Where a serial is stored, relative to the root.
    fn storage_dir(stream: Stream, release: &Release, serial: &str) -> String {
        match stream {
            Stream::Released => format!("server/releases/{}/release-{serial}", release.codename),
            Stream::Daily => format!("{}/{serial}", release.codename),
        }
    }

    /// The serial folder relative to the stream root, as simplestreams `path`s start.
    fn stream_dir(stream: Stream, release: &Release, serial: &str) -> String {
        match stream {
            Stream::Released => format!("server/releases/{}/release-{serial}", release.codename),
            Stream::Daily => format!("server/{}/{serial}", release.codename),
        }
    }

    fn write_serial(&mut self, stream: Stream, serial: &str) -> io::Result<()> {
        let releases = self.releases.clone();
        let arches = self.arches.clone();
        for release in &releases {
            let relative = Mirror::stream_dir(stream, release, serial);
            let dir = self.root.join(Mirror::storage_dir(stream, release, serial));
            fs::create_dir_all(dir.join("unpacked"))?;
            let mut published: Vec<(String, Vec<u8>)> = Vec::new();
            // unpacked/ has its own signed checksum files.
            let mut unpacked_published: Vec<(String, Vec<u8>)> = Vec::new();
            for arch in &arches {
                let prefix = Mirror::prefix(stream, release, arch);
                let tag = format!("{stream:?} {} {arch} {serial}", release.codename);
                let work = tempfile::tempdir()?;
                let raw = make_raw_disk(work.path(), &tag)?;
                let image = dir.join(format!("{prefix}.img"));
                match self
                    .knobs
                    .amd64_image
                    .as_deref()
                    .filter(|_| arch == "amd64")
                {
                    Some(given) => {
                        if fs::hard_link(given, &image).is_err() {
                            fs::copy(given, &image)?;
                        }
                    }
                    None => run(Command::new("qemu-img")
                        .args(["convert", "-c", "-O", "qcow2"])
                        .arg(&raw)
                        .arg(&image))?,
                }
                let manifest = dir.join(format!("{prefix}.manifest"));
                fs::write(&manifest, manifest_text(&tag))?;
                let mut files = vec![("disk1.img", image), ("manifest", manifest)];
                if self.knobs.tarballs {
                    let tarball = dir.join(format!("{prefix}.tar.gz"));
                    let inner = format!("{}-server-cloudimg-{arch}.img", release.codename);
                    write_tarball(&raw, &inner, &tarball)?;
                    files.push(("tar.gz", tarball));
                }
                let unpacked = dir.join("unpacked");
                for (name, bytes) in [
                    (
                        format!("{prefix}-vmlinuz-generic"),
                        format!("vmlinuz {tag}\n"),
                    ),
                    (
                        format!("{prefix}-initrd-generic"),
                        format!("initrd {tag}\n"),
                    ),
                ] {
                    fs::write(unpacked.join(&name), &bytes)?;
                    unpacked_published.push((name, bytes.into_bytes()));
                }
                for (ftype, file) in files {
                    let bytes = fs::read(&file)?;
                    let name = file_name(&file);
                    self.items.push(Item {
                        stream,
                        codename: release.codename,
                        arch: arch.clone(),
                        serial: serial.to_owned(),
                        ftype,
                        path: format!("{relative}/{name}"),
                        sha256: self.published_sha256(&name, &bytes),
                        md5: hex::encode(Md5::digest(&bytes)),
                        size: bytes.len() as u64,
                    });
                    published.push((name, bytes));
                }
            }
            self.write_sums(&dir, &published)?;
            self.write_sums(&dir.join("unpacked"), &unpacked_published)?;
        }
        let serials = self.serials.entry(stream).or_default();
        serials.push(serial.to_owned());
        serials.sort();
        serials.dedup();
        Ok(())
    }

    fn published_sha256(&self, name: &str, bytes: &[u8]) -> String {
        let lie = self
            .knobs
            .wrong_sha256_for
            .as_deref()
            .is_some_and(|suffix| name.ends_with(suffix));
        let mut hasher = Sha256::new();
        hasher.update(bytes);
        if lie {
            hasher.update(b"wrong");
        }
        hex::encode(hasher.finalize())
    }

    fn write_sums(&self, dir: &Path, published: &[(String, Vec<u8>)]) -> io::Result<()> {
        let mut sha256sums = String::new();
        let mut md5sums = String::new();
        for (name, bytes) in published {
            sha256sums.push_str(&format!("{} *{name}\n", self.published_sha256(name, bytes)));
            md5sums.push_str(&format!("{} *{name}\n", hex::encode(Md5::digest(bytes))));
        }
        fs::write(dir.join("SHA256SUMS"), &sha256sums)?;
        fs::write(dir.join("MD5SUMS"), &md5sums)?;
        let signer: &TestKey = if self.knobs.attacker_signs {
            pgp::attacker_key()
        } else {
            pgp::signing_key()
        };
        for (sums, text) in [("SHA256SUMS", &sha256sums), ("MD5SUMS", &md5sums)] {
            let signature = dir.join(format!("{sums}.gpg"));
            if self.knobs.omit_signatures {
                remove_if_present(&signature)?;
            } else {
                fs::write(signature, signer.sign(text.as_bytes()))?;
            }
        }
        Ok(())
    }

    /// Aliases, simplestreams and every listing, from the current state.
    fn write_indices(&self) -> io::Result<()> {
        if !self.serials(Stream::Released).is_empty() {
            symlink(Path::new("../server"), &self.root.join("releases/server"))?;
        }
        for release in &self.releases {
            if let Some(newest) = self.serials(Stream::Released).last() {
                let canonical = format!("../server/releases/{}", release.codename);
                symlink(
                    Path::new(&canonical),
                    &self.root.join("releases").join(release.codename),
                )?;
                symlink(
                    Path::new(&canonical),
                    &self.root.join("releases").join(release.version),
                )?;
                symlink(
                    Path::new(&format!("release-{newest}")),
                    &self
                        .root
                        .join("server/releases")
                        .join(release.codename)
                        .join("release"),
                )?;
            }
            if let Some(newest) = self.serials(Stream::Daily).last() {
                symlink(
                    Path::new(&format!("../../{}", release.codename)),
                    &self.root.join("daily/server").join(release.codename),
                )?;
                symlink(
                    Path::new(newest.as_str()),
                    &self.root.join(release.codename).join("current"),
                )?;
            }
        }
        for stream in [Stream::Released, Stream::Daily] {
            self.write_streams(stream)?;
        }
        self.write_listing(Path::new(""))
    }

    fn write_streams(&self, stream: Stream) -> io::Result<()> {
        let dir = self.root.join(stream.root()).join("streams/v1");
        fs::create_dir_all(&dir)?;
        let updated = self.serials(stream).last().map_or_else(
            || "Mon, 01 Jan 2024 00:00:00 +0000".to_owned(),
            |serial| rfc2822(serial),
        );
        let mut products = serde_json::Map::new();
        for release in &self.releases {
            for arch in &self.arches {
                let mut versions = serde_json::Map::new();
                for serial in self.serials(stream) {
                    let items: serde_json::Map<String, Value> = self
                        .items
                        .iter()
                        .filter(|item| {
                            item.stream == stream
                                && item.codename == release.codename
                                && &item.arch == arch
                                && &item.serial == serial
                        })
                        .map(|item| {
                            let value = json!({
                                "ftype": item.ftype,
                                "md5": item.md5,
                                "path": item.path,
                                "sha256": item.sha256,
                                "size": item.size,
                            });
                            (item.ftype.to_owned(), value)
                        })
                        .collect();
                    let label = match stream {
                        Stream::Released => "release",
                        Stream::Daily => "daily",
                    };
                    let pubname = format!(
                        "ubuntu-{}-{}-{arch}-server-{serial}",
                        release.codename, release.version
                    );
                    versions.insert(
                        serial.clone(),
                        json!({ "items": items, "label": label, "pubname": pubname }),
                    );
                }
                let key = format!("{}:{}:{arch}", stream.product_prefix(), release.version);
                let product = json!({
                    "aliases": release.aliases,
                    "arch": arch,
                    "os": "ubuntu",
                    "release": release.codename,
                    "release_codename": release.name,
                    "release_title": release.title,
                    "support_eol": release.support_eol,
                    "supported": true,
                    "version": release.version,
                    "versions": versions,
                });
                products.insert(key, product);
            }
        }
        let product_keys: Vec<String> = products.keys().cloned().collect();
        let content_id = stream.content_id();
        let download = json!({
            "content_id": content_id,
            "creator": "cloudimg-test-mirror",
            "datatype": "image-downloads",
            "format": "products:1.0",
            "license": "https://ubuntu.com/legal/intellectual-property-policy",
            "products": products,
            "updated": updated,
        });
        let index = json!({
            "format": "index:1.0",
            "index": {
                content_id: {
                    "datatype": "image-downloads",
                    "format": "products:1.0",
                    "path": format!("streams/v1/{content_id}.json"),
                    "products": product_keys,
                    "updated": updated,
                }
            },
            "updated": updated,
        });
        fs::write(dir.join(format!("{content_id}.json")), pretty(&download)?)?;
        fs::write(dir.join("index.json"), pretty(&index)?)
    }

    /// Writes `index.html` in `relative` (a real folder) and, recursively, in its real subfolders.
    fn write_listing(&self, relative: &Path) -> io::Result<()> {
        let dir = self.root.join(relative);
        let mut rows = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "index.html" {
                continue;
            }
            let path = entry.path();
            let target = fs::metadata(&path)?;
            if entry.file_type()?.is_dir() {
                self.write_listing(&relative.join(&name))?;
            }
            let link_target = fs::read_link(&path).ok().map(|target| file_name(&target));
            let dated_by = link_target.as_deref().unwrap_or(&name);
            rows.push(Row {
                is_dir: target.is_dir(),
                date: serial_date(dated_by)
                    .or_else(|| path_date(relative))
                    .unwrap_or_else(|| self.newest_date()),
                size: if target.is_dir() {
                    None
                } else {
                    Some(target.len())
                },
                description: self.describe(relative, &name),
                name,
            });
        }
        // Apache's default order: by name, byte-wise, folders not first (`release/` before
        // `release-20240821/`, `MD5SUMS` before `noble-…`).
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let html = listing_html(&self.title(relative), relative, &rows);
        fs::write(dir.join("index.html"), html)
    }

    fn title(&self, relative: &Path) -> String {
        let parts: Vec<String> = relative
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        let serial_folder = match parts.as_slice() {
            [server, releases, codename, folder]
                if server == "server" && releases == "releases" =>
            {
                folder
                    .strip_prefix("release-")
                    .map(|serial| (codename, "release", serial))
            }
            [codename, serial] => Some((codename, "daily", serial.as_str())),
            _ => None,
        };
        if let Some((codename, kind, serial)) = serial_folder {
            if let Some(release) = self.releases.iter().find(|r| r.codename == codename) {
                return format!(
                    "Ubuntu {} ({}) {kind} [{serial}]",
                    release.title, release.name
                );
            }
        }
        if parts.is_empty() {
            "Ubuntu Cloud Images".to_owned()
        } else {
            format!("Index of /{}", parts.join("/"))
        }
    }

    /// The Description column, as the real site fills it.
    fn describe(&self, relative: &Path, name: &str) -> Option<String> {
        let release_named = |name: &str| {
            self.releases
                .iter()
                .find(|r| r.codename == name || r.version == name)
        };
        if relative == Path::new("") {
            return match name {
                "daily" => Some("Daily image builds".to_owned()),
                "releases" => Some("Release image builds".to_owned()),
                "server" => Some("Ubuntu Server Cloud Image Builds".to_owned()),
                _ => release_named(name).map(|r| r.description(Stream::Daily)),
            };
        }
        if relative == Path::new("releases") {
            return release_named(name).map(|r| r.description(Stream::Released));
        }
        if name.ends_with(".img") {
            Some("QCow2 UEFI/GPT Bootable disk image".to_owned())
        } else if name.ends_with(".manifest") {
            Some("Package manifest file".to_owned())
        } else if name.ends_with(".tar.gz") {
            Some("File system image and Kernel packed".to_owned())
        } else {
            None
        }
    }

    fn newest_date(&self) -> String {
        self.serials
            .values()
            .flatten()
            .max()
            .and_then(|serial| serial_date(serial))
            .unwrap_or_else(|| "2024-01-01 00:00".to_owned())
    }
}

/// One row of an Apache listing.
struct Row {
    name: String,
    is_dir: bool,
    date: String,
    size: Option<u64>,
    description: Option<String>,
}

impl Row {
    fn href(&self) -> String {
        if self.is_dir {
            format!("{}/", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// An Apache mod_autoindex FancyIndexing page (`<pre>` rows, icons, sort links, absolute parent).
fn listing_html(title: &str, relative: &Path, rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|row| row.href().len())
        .max()
        .unwrap_or(0)
        .max(MIN_NAME_WIDTH);
    let mut pre = format!(
        "<pre><img src=\"/icons/blank.gif\" alt=\"Icon \" width=\"22\" height=\"22\"> \
         <a href=\"?C=N;O=D\">Name</a>{}<a href=\"?C=M;O=A\">Last modified</a>      \
         <a href=\"?C=S;O=A\">Size</a>  <a href=\"?C=D;O=A\">Description</a><hr>",
        " ".repeat(width - 3)
    );
    if let Some(parent) = relative.parent() {
        let parent = parent.to_string_lossy();
        let href = if parent.is_empty() {
            "/".to_owned()
        } else {
            format!("/{parent}/")
        };
        // Apache pads the parent row to the size column and prints only its "-".
        pre.push_str(&format!(
            "<img src=\"/icons/back.gif\" alt=\"[PARENTDIR]\" width=\"22\" height=\"22\"> \
             <a href=\"{href}\">Parent Directory</a>{}-\n",
            " ".repeat(width + 6)
        ));
    }
    for row in rows {
        let href = row.href();
        let (icon, alt) = if row.is_dir {
            ("../../../../cdicons/folder.png", "[DIR]")
        } else if href.ends_with(".manifest") {
            ("/icons/text.gif", "[TXT]")
        } else if href.ends_with(".gz") {
            ("/icons/compressed.gif", "[   ]")
        } else {
            ("/icons/unknown.gif", "[   ]")
        };
        let size = row.size.map_or_else(|| "  - ".to_owned(), apache_size);
        let mut line = format!(
            "<img src=\"{icon}\" alt=\"{alt}\" width=\"22\" height=\"22\"> <a href=\"{href}\">{href}</a>{} {}  {size}",
            " ".repeat(width - href.len()),
            row.date
        );
        match &row.description {
            Some(description) => line.push_str(&format!("  {description}")),
            None => line.truncate(line.trim_end().len()),
        }
        pre.push_str(&line);
        pre.push('\n');
    }
    pre.push_str("<hr></pre>");
    format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"\n \"http://www.w3.org/TR/html4/strict.dtd\">\n\
         <html>\n <head>\n   <title>{title}</title>\n </head>\n <body><div id=\"pageWrapper\">\n\n\
         <div id=\"main\">\n\n<h1>{title}</h1>\n\n{pre}\n</div></div></body></html>\n"
    )
}

/// `2024-08-21 12:00` for a serial `20240821` (`.N` adds N minutes), else `None`.
fn serial_date(name: &str) -> Option<String> {
    let serial = name.strip_prefix("release-").unwrap_or(name);
    let (day, respin) = serial.split_once('.').unwrap_or((serial, "0"));
    let respin: u32 = respin.parse().ok()?;
    if day.len() != 8 || !day.bytes().all(|b| b.is_ascii_digit()) || respin > 59 {
        return None;
    }
    Some(format!(
        "{}-{}-{} 12:{respin:02}",
        &day[..4],
        &day[4..6],
        &day[6..8]
    ))
}

/// The date of the deepest serial folder in `relative`, for files inside it.
fn path_date(relative: &Path) -> Option<String> {
    relative
        .iter()
        .rev()
        .find_map(|part| serial_date(&part.to_string_lossy()))
}

/// `Wed, 21 Aug 2024 12:00:00 +0000` for a serial, as simplestreams `updated`.
fn rfc2822(serial: &str) -> String {
    let day = serial.get(..8).unwrap_or(serial);
    let field = |range: std::ops::Range<usize>| -> i64 {
        day.get(range).and_then(|s| s.parse().ok()).unwrap_or(1)
    };
    let days = days_from_civil(field(0..4), field(4..6), field(6..8));
    let time = UNIX_EPOCH + Duration::from_secs((days * 86_400 + 12 * 3600).max(0) as u64);
    httpdate::fmt_http_date(time).replace("GMT", "+0000")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// An 8 MiB raw disk holding an ext4 filesystem with a few files, one naming `tag`.
fn make_raw_disk(work: &Path, tag: &str) -> io::Result<PathBuf> {
    let content = work.join("content");
    fs::create_dir_all(content.join("etc"))?;
    fs::create_dir_all(content.join("usr/share/doc"))?;
    fs::write(content.join("etc/hostname"), "ubuntu\n")?;
    fs::write(
        content.join("etc/os-release"),
        "NAME=\"Ubuntu\"\nID=ubuntu\nPRETTY_NAME=\"cloudimg test image\"\n",
    )?;
    fs::write(
        content.join("usr/share/doc/README"),
        "A test image.\n".repeat(200),
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

fn manifest_text(tag: &str) -> String {
    format!("adduser\t3.137ubuntu1\nbase-files\t13ubuntu10.1\ncloud-init\t24.2-0ubuntu1\n# {tag}\n")
}

/// A gzip'd tar holding the raw disk under `inner`, like the real `.tar.gz` downloads.
fn write_tarball(raw: &Path, inner: &str, out: &Path) -> io::Result<()> {
    let gzip = flate2::write::GzEncoder::new(fs::File::create(out)?, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gzip);
    tar.append_path_with_name(raw, inner)?;
    tar.into_inner()?.finish()?;
    Ok(())
}

pub fn run(command: &mut Command) -> io::Result<()> {
    let output = command.output().map_err(|error| {
        io::Error::new(error.kind(), format!("cannot run {command:?}: {error}"))
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// (Re)points the symlink `link` at `target`.
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent)?;
    }
    remove_if_present(link)?;
    std::os::unix::fs::symlink(target, link)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn pretty(value: &Value) -> io::Result<String> {
    serde_json::to_string_pretty(value).map_err(io::Error::other)
}

#[test]
fn serial_dates_follow_the_serial() {
    assert_eq!(serial_date("20240821").as_deref(), Some("2024-08-21 12:00"));
    assert_eq!(
        serial_date("release-20241004.1").as_deref(),
        Some("2024-10-04 12:01")
    );
    assert_eq!(serial_date("current"), None);
    assert_eq!(rfc2822("20240822"), "Thu, 22 Aug 2024 12:00:00 +0000");
}
