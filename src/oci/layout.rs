//! The OCI image layout folder: `oci-layout`, `index.json` and `blobs/sha256/<hex>`, as
//! skopeo, podman and crane read it.
//!
//! Writing: every blob first (layers streamed by [`super::layer`], then the config, the
//! manifest and, for several architectures, an image index), `oci-layout`, and `index.json`
//! last, so a reader never sees an index naming a missing blob. JSON documents are written with
//! sorted keys so the same inputs always give the same digests.
//!
//! Reading (for a push): the small documents are read with a size cap and checked against
//! their digests; a digest is only ever turned into a path after it parsed as
//! `sha256:<64 hex>`, so a hostile layout cannot point outside `blobs/`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Arch, Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType, Os, Platform, ANNOTATION_REF_NAME, ANNOTATION_SOURCE, ANNOTATION_TITLE,
    ANNOTATION_VERSION,
};
use serde::Serialize;
use sha2::Digest as _;

use super::layer::{self, Compression, Layer};
use super::{
    OciError, ANNOTATION_DISK_FORMAT, ANNOTATION_RELEASE, ANNOTATION_SERIAL,
    ANNOTATION_SOURCE_DIGEST, ANNOTATION_SOURCE_URL,
};
use crate::io::progress::Reporter;

/// The layout version this writer produces and the reader accepts.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// Largest JSON document read from a layout (index, manifest, config): real ones are a few KiB.
pub const DOCUMENT_LIMIT: u64 = 4 << 20;
const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
const BLOB_DIR: [&str; 2] = ["blobs", "sha256"];
/// OCI schema version of manifests and indexes.
const SCHEMA_VERSION: u32 = 2;

/// Where an image came from, carried as manifest annotations.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// The upstream file's URL.
    pub source_url: String,
    /// Its digest as published upstream, `sha256:<hex>` or `sha512:<hex>`.
    pub source_digest: String,
    pub release: String,
    pub serial: String,
}

/// One architecture's disk to put in the layout.
#[derive(Clone, Debug)]
pub struct ContainerDisk {
    /// The disk file (qcow2 or raw), read once.
    pub disk: PathBuf,
    /// Its name inside `disk/`.
    pub name: String,
    /// `qcow2` or `raw`.
    pub disk_format: String,
    /// An architecture word: Glance's (`x86_64`) or the source's (`amd64`).
    pub arch: String,
    pub provenance: Provenance,
}

/// One image manifest written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestSummary {
    pub architecture: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
    pub disk: String,
}

/// What a layout holds, as printed with `--json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayoutSummary {
    pub path: PathBuf,
    /// `org.opencontainers.image.ref.name` of the image in `index.json`.
    pub ref_name: String,
    /// The manifest (one architecture) or image index (several) the layout points at.
    pub digest: String,
    pub media_type: String,
    pub manifests: Vec<ManifestSummary>,
}

fn json_error(what: &'static str) -> impl FnOnce(serde_json::Error) -> OciError {
    move |source| OciError::Json { what, source }
}

/// `value` as JSON with object keys sorted: stable bytes, stable digests.
fn canonical_json(value: &impl Serialize, what: &'static str) -> Result<Vec<u8>, OciError> {
    let tree = serde_json::to_value(value).map_err(json_error(what))?;
    serde_json::to_vec(&tree).map_err(json_error(what))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn digest_of(hex: &str) -> Result<Digest, OciError> {
    Digest::from_str(&format!("sha256:{hex}"))
        .map_err(|e| OciError::invalid("digest", hex, e.to_string()))
}

fn blob_dir(root: &Path) -> PathBuf {
    BLOB_DIR
        .iter()
        .fold(root.to_owned(), |path, part| path.join(part))
}

/// Stores a small blob (skipped when the content-addressed file is already there).
fn put_blob(blobs: &Path, bytes: &[u8]) -> Result<String, OciError> {
    let hex = sha256_hex(bytes);
    let path = layer::blob_path(blobs, &hex);
    let present =
        std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64);
    if !present {
        crate::io::publish::write(&path, bytes).map_err(|e| OciError::io(&path, "write", e))?;
    }
    Ok(hex)
}

fn annotations(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    let map: HashMap<String, String> = pairs
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    (!map.is_empty()).then_some(map)
}

fn platform(arch: &str) -> Result<Platform, OciError> {
    let (architecture, variant) = super::oci_arch(arch).ok_or_else(|| {
        OciError::invalid("architecture", arch, "no OCI (GOARCH) equivalent is known")
    })?;
    let mut platform = Platform::default();
    platform.set_architecture(Arch::from(architecture));
    platform.set_os(Os::Linux);
    platform.set_variant(variant.map(str::to_owned));
    Ok(platform)
}

/// Writes the blobs of one architecture's image; returns its manifest descriptor.
fn write_image(
    blobs: &Path,
    disk: &ContainerDisk,
    compression: Compression,
    reporter: &dyn Reporter,
) -> Result<(Descriptor, ManifestSummary), OciError> {
    let platform = platform(&disk.arch)?;
    let layer: Layer = layer::write_layer(blobs, &disk.disk, &disk.name, compression, reporter)?;
    let mut config = ImageConfiguration::default();
    config.set_architecture(platform.architecture().clone());
    config.set_os(Os::Linux);
    config.set_variant(platform.variant().clone());
    config
        .rootfs_mut()
        .set_diff_ids(vec![format!("sha256:{}", layer.diff_id)]);
    let config_bytes = canonical_json(&config, "image config")?;
    let config_hex = put_blob(blobs, &config_bytes)?;

    let layer_type = match compression {
        Compression::None => MediaType::ImageLayer,
        Compression::Gzip => MediaType::ImageLayerGzip,
    };
    let mut layer_descriptor = Descriptor::new(layer_type, layer.size, digest_of(&layer.digest)?);
    let member = format!("{}/{}", super::DISK_FOLDER, disk.name);
    layer_descriptor.set_annotations(annotations(&[(ANNOTATION_TITLE, &member)]));
    let provenance = &disk.provenance;
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            digest_of(&config_hex)?,
        ))
        .layers(vec![layer_descriptor])
        .annotations(
            annotations(&[
                (ANNOTATION_SOURCE, &provenance.source_url),
                (ANNOTATION_VERSION, &provenance.serial),
                (ANNOTATION_SOURCE_URL, &provenance.source_url),
                (ANNOTATION_SOURCE_DIGEST, &provenance.source_digest),
                (ANNOTATION_SERIAL, &provenance.serial),
                (ANNOTATION_RELEASE, &provenance.release),
                (ANNOTATION_DISK_FORMAT, &disk.disk_format),
            ])
            .unwrap_or_default(),
        )
        .build()
        .map_err(|e| OciError::invalid("image manifest", &disk.name, e.to_string()))?;
    let manifest_bytes = canonical_json(&manifest, "image manifest")?;
    let manifest_hex = put_blob(blobs, &manifest_bytes)?;
    let mut descriptor = Descriptor::new(
        MediaType::ImageManifest,
        manifest_bytes.len() as u64,
        digest_of(&manifest_hex)?,
    );
    descriptor.set_platform(Some(platform.clone()));
    let summary = ManifestSummary {
        architecture: platform.architecture().to_string(),
        digest: format!("sha256:{manifest_hex}"),
        layer_digest: format!("sha256:{}", layer.digest),
        layer_size: layer.size,
        disk: member,
    };
    Ok((descriptor, summary))
}

/// Writes (or updates) the layout at `root` with one image of `disks` (one manifest, or an
/// image index over several architectures) named `ref_name` in `index.json`.
pub fn write_layout(
    root: &Path,
    disks: &[ContainerDisk],
    ref_name: &str,
    compression: Compression,
    reporter: &dyn Reporter,
) -> Result<LayoutSummary, OciError> {
    if disks.is_empty() {
        return Err(OciError::invalid("image", ref_name, "no disk to put in it"));
    }
    check_existing_layout(root)?;
    let blobs = blob_dir(root);
    std::fs::create_dir_all(&blobs).map_err(|e| OciError::io(&blobs, "create", e))?;
    let mut descriptors = Vec::new();
    let mut manifests = Vec::new();
    for disk in disks {
        let (descriptor, summary) = write_image(&blobs, disk, compression, reporter)?;
        descriptors.push(descriptor);
        manifests.push(summary);
    }
    finish_layout(root, descriptors, manifests, ref_name)
}

/// Points the layout at `root` at one image index over `manifests`, images already written
/// into its blobs one architecture at a time (by [`write_layout`] into the same folder), and
/// names it `ref_name`. Each manifest is read back and checked against its digest; its
/// platform comes from its architecture.
pub fn write_index(
    root: &Path,
    manifests: &[ManifestSummary],
    ref_name: &str,
) -> Result<LayoutSummary, OciError> {
    if manifests.len() < 2 {
        return Err(OciError::invalid(
            "image index",
            ref_name,
            "an index needs at least two architectures",
        ));
    }
    check_existing_layout(root)?;
    let blobs = blob_dir(root);
    let mut descriptors = Vec::new();
    for summary in manifests {
        let hex = summary
            .digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| OciError::invalid("manifest digest", &summary.digest, "not sha256"))?;
        let path = layer::blob_path(&blobs, hex);
        let bytes = read_capped(&path)?;
        let actual = sha256_hex(&bytes);
        if actual != hex {
            return Err(OciError::BlobDigest {
                path,
                expected: summary.digest.clone(),
                actual: format!("sha256:{actual}"),
            });
        }
        let mut descriptor = Descriptor::new(
            MediaType::ImageManifest,
            bytes.len() as u64,
            digest_of(hex)?,
        );
        descriptor.set_platform(Some(platform(&summary.architecture)?));
        descriptors.push(descriptor);
    }
    finish_layout(root, descriptors, manifests.to_vec(), ref_name)
}

/// Writes the top document (the one manifest, or an index over several) and then
/// `oci-layout` and `index.json`, which name it `ref_name`.
fn finish_layout(
    root: &Path,
    mut descriptors: Vec<Descriptor>,
    manifests: Vec<ManifestSummary>,
    ref_name: &str,
) -> Result<LayoutSummary, OciError> {
    let blobs = blob_dir(root);
    let mut root_descriptor = if descriptors.len() == 1 {
        descriptors.remove(0)
    } else {
        let mut index = ImageIndex::default();
        index.set_schema_version(SCHEMA_VERSION);
        index.set_media_type(Some(MediaType::ImageIndex));
        index.set_manifests(descriptors);
        let bytes = canonical_json(&index, "image index")?;
        let hex = put_blob(&blobs, &bytes)?;
        Descriptor::new(MediaType::ImageIndex, bytes.len() as u64, digest_of(&hex)?)
    };
    root_descriptor.set_annotations(annotations(&[(ANNOTATION_REF_NAME, ref_name)]));
    let summary = LayoutSummary {
        path: root.to_owned(),
        ref_name: ref_name.to_owned(),
        digest: root_descriptor.digest().to_string(),
        media_type: root_descriptor.media_type().to_string(),
        manifests,
    };
    let layout_file = root.join(LAYOUT_FILE);
    let layout = BTreeMap::from([("imageLayoutVersion", LAYOUT_VERSION)]);
    let layout_bytes = canonical_json(&layout, "oci-layout")?;
    crate::io::publish::write(&layout_file, &layout_bytes)
        .map_err(|e| OciError::io(&layout_file, "write", e))?;
    let mut index = ImageIndex::default();
    index.set_schema_version(SCHEMA_VERSION);
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(vec![root_descriptor]);
    let index_file = root.join(INDEX_FILE);
    let index_bytes = canonical_json(&index, "index.json")?;
    crate::io::publish::write(&index_file, &index_bytes)
        .map_err(|e| OciError::io(&index_file, "write", e))?;
    Ok(summary)
}

/// Refuses to write into a folder whose `oci-layout` says another layout version, or whose
/// layout files are not regular files.
fn check_existing_layout(root: &Path) -> Result<(), OciError> {
    for name in [LAYOUT_FILE, INDEX_FILE] {
        let path = root.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(OciError::bad_layout(
                    root,
                    format!("{name} is not a regular file"),
                ))
            }
            _ => {}
        }
    }
    let layout_file = root.join(LAYOUT_FILE);
    if layout_file.exists() {
        let bytes = read_capped(&layout_file)?;
        let version =
            layout_version(&bytes).map_err(|reason| OciError::bad_layout(root, reason))?;
        if version != LAYOUT_VERSION {
            return Err(OciError::bad_layout(
                root,
                format!("imageLayoutVersion {version:?}, cloudimg writes {LAYOUT_VERSION}"),
            ));
        }
    }
    Ok(())
}

fn layout_version(bytes: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct LayoutFile {
        image_layout_version: String,
    }
    serde_json::from_slice::<LayoutFile>(bytes)
        .map(|file| file.image_layout_version)
        .map_err(|e| format!("oci-layout: {e}"))
}

/// Reads a small document, refusing more than [`DOCUMENT_LIMIT`] bytes.
fn read_capped(path: &Path) -> Result<Vec<u8>, OciError> {
    let file = File::open(path).map_err(|e| OciError::io(path, "open", e))?;
    let mut bytes = Vec::new();
    file.take(DOCUMENT_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OciError::io(path, "read", e))?;
    if bytes.len() as u64 > DOCUMENT_LIMIT {
        return Err(OciError::bad_layout(
            path,
            format!("larger than {DOCUMENT_LIMIT} bytes"),
        ));
    }
    Ok(bytes)
}

/// A blob of a layout opened for a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// A manifest or index document, with the exact bytes its digest names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// A layout read for a push: what to upload, in order.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    /// Layers and configs, each once.
    pub blobs: Vec<Blob>,
    /// Per-architecture manifests, pushed by digest, then `top` (the same as the only
    /// manifest when there is one architecture).
    pub manifests: Vec<Document>,
    pub top: Document,
    /// The `io.cloudimg.*` / OCI annotations of the first manifest (release, serial, …).
    pub annotations: BTreeMap<String, String>,
}

impl Layout {
    /// Opens the layout at `root` and the image named `ref_name` in `index.json` (or the only
    /// image when `ref_name` is `None`).
    pub fn open(root: &Path, ref_name: Option<&str>) -> Result<Layout, OciError> {
        if !root.join(LAYOUT_FILE).is_file() {
            return Err(OciError::bad_layout(root, format!("no {LAYOUT_FILE} file")));
        }
        let layout_bytes = read_capped(&root.join(LAYOUT_FILE))?;
        let version = layout_version(&layout_bytes).map_err(|r| OciError::bad_layout(root, r))?;
        if version != LAYOUT_VERSION {
            return Err(OciError::bad_layout(
                root,
                format!("imageLayoutVersion {version:?}; expected {LAYOUT_VERSION}"),
            ));
        }
        let index_path = root.join(INDEX_FILE);
        let index: ImageIndex = serde_json::from_slice(&read_capped(&index_path)?)
            .map_err(|e| OciError::bad_layout(&index_path, e.to_string()))?;
        let entry = pick_entry(root, index.manifests(), ref_name)?;
        let mut layout = Layout {
            root: root.to_owned(),
            blobs: Vec::new(),
            manifests: Vec::new(),
            top: Document {
                digest: String::new(),
                media_type: String::new(),
                bytes: Vec::new(),
            },
            annotations: BTreeMap::new(),
        };
        let top = layout.document(entry)?;
        match entry.media_type() {
            MediaType::ImageManifest => layout.add_manifest(&top)?,
            MediaType::ImageIndex => {
                let nested: ImageIndex = serde_json::from_slice(&top.bytes)
                    .map_err(|e| OciError::bad_layout(root, format!("{}: {e}", top.digest)))?;
                for child in nested.manifests() {
                    if child.media_type() != &MediaType::ImageManifest {
                        return Err(OciError::bad_layout(
                            root,
                            format!("{}: nested indexes are not supported", child.digest()),
                        ));
                    }
                    let document = layout.document(child)?;
                    layout.add_manifest(&document)?;
                }
            }
            other => {
                return Err(OciError::bad_layout(
                    root,
                    format!("index.json points at a {other}, not a manifest or an index"),
                ))
            }
        }
        if entry.media_type() == &MediaType::ImageIndex {
            layout.top = top;
        } else {
            layout.top = layout.manifests.remove(0);
        }
        Ok(layout)
    }

    /// The blob file of `descriptor`, after checking that its digest is a SHA-256 and the file
    /// has the promised size.
    fn blob(&self, descriptor: &Descriptor) -> Result<Blob, OciError> {
        let hex = descriptor.as_digest_sha256().ok_or_else(|| {
            OciError::bad_layout(
                &self.root,
                format!("{}: only sha256 digests are supported", descriptor.digest()),
            )
        })?;
        // oci-spec checked the encoding; a path component is only ever 64 hex digits.
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OciError::bad_layout(
                &self.root,
                format!("bad digest {hex:?}"),
            ));
        }
        let path = layer::blob_path(&blob_dir(&self.root), hex);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| OciError::io(&path, "stat", e))?;
        if !meta.is_file() {
            return Err(OciError::bad_layout(&path, "not a regular file"));
        }
        if meta.len() != descriptor.size() {
            return Err(OciError::BlobSize {
                path,
                expected: descriptor.size(),
                actual: meta.len(),
            });
        }
        Ok(Blob {
            digest: format!("sha256:{hex}"),
            size: descriptor.size(),
            path,
        })
    }

    /// A small document, read whole and checked against its digest.
    fn document(&self, descriptor: &Descriptor) -> Result<Document, OciError> {
        let blob = self.blob(descriptor)?;
        if blob.size > DOCUMENT_LIMIT {
            return Err(OciError::bad_layout(
                &blob.path,
                format!(
                    "a {}-byte document; the limit is {DOCUMENT_LIMIT}",
                    blob.size
                ),
            ));
        }
        let bytes = read_capped(&blob.path)?;
        let actual = format!("sha256:{}", sha256_hex(&bytes));
        if actual != blob.digest {
            return Err(OciError::BlobDigest {
                path: blob.path,
                expected: blob.digest,
                actual,
            });
        }
        Ok(Document {
            digest: blob.digest,
            media_type: descriptor.media_type().to_string(),
            bytes,
        })
    }

    fn add_manifest(&mut self, document: &Document) -> Result<(), OciError> {
        let manifest: ImageManifest = serde_json::from_slice(&document.bytes)
            .map_err(|e| OciError::bad_layout(&self.root, format!("{}: {e}", document.digest)))?;
        for descriptor in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let blob = self.blob(descriptor)?;
            if !self.blobs.contains(&blob) {
                self.blobs.push(blob);
            }
        }
        if self.annotations.is_empty() {
            if let Some(found) = manifest.annotations() {
                self.annotations = found.clone().into_iter().collect();
            }
        }
        self.manifests.push(document.clone());
        Ok(())
    }

    /// The `io.cloudimg.release` annotation.
    pub fn release(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_RELEASE).map(String::as_str)
    }

    /// The `io.cloudimg.serial` annotation.
    pub fn serial(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_SERIAL).map(String::as_str)
    }

    /// Whether every blob (layers included, read whole) hashes to its digest.
    pub fn blobs_match(&self) -> Result<bool, OciError> {
        for blob in &self.blobs {
            let mut file =
                File::open(&blob.path).map_err(|e| OciError::io(&blob.path, "open", e))?;
            let mut hasher = crate::io::hashing::ContentHasher::default();
            crate::io::hashing::hash_reader(&mut file, &mut hasher)
                .map_err(|e| OciError::io(&blob.path, "read", e))?;
            let actual = match crate::io::hashing::finish(hasher) {
                crate::verify::digest::FileDigest::Sha256(digest) => hex::encode(digest.0),
                crate::verify::digest::FileDigest::Sha512(digest) => hex::encode(digest.0),
            };
            if blob.digest.strip_prefix("sha256:") != Some(actual.as_str()) {
                tracing::warn!(path = %blob.path.display(), "blob does not match its digest");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The OCI architectures (`amd64`, `arm64`, …) the layout's image is for, one per
    /// manifest, from each manifest's configuration.
    pub fn architectures(&self) -> Result<Vec<String>, OciError> {
        let mut arches = Vec::new();
        for document in &self.manifests_with_top() {
            let manifest: ImageManifest = serde_json::from_slice(&document.bytes).map_err(|e| {
                OciError::bad_layout(&self.root, format!("{}: {e}", document.digest))
            })?;
            let config = self.document(manifest.config())?;
            let config: ImageConfiguration = serde_json::from_slice(&config.bytes)
                .map_err(|e| OciError::bad_layout(&self.root, format!("{}: {e}", config.digest)))?;
            arches.push(config.architecture().to_string());
        }
        Ok(arches)
    }

    /// Every image manifest: the per-architecture ones, and `top` when it is the only one.
    fn manifests_with_top(&self) -> Vec<&Document> {
        if self.manifests.is_empty() {
            vec![&self.top]
        } else {
            self.manifests.iter().collect()
        }
    }

    /// Whether `root` holds an OCI image layout (its `oci-layout` file).
    pub fn is_layout(root: &Path) -> bool {
        root.join(LAYOUT_FILE).is_file()
    }

    /// Bytes of every blob (layers and configs).
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|blob| blob.size).sum()
    }
}

fn pick_entry<'a>(
    root: &Path,
    entries: &'a [Descriptor],
    ref_name: Option<&str>,
) -> Result<&'a Descriptor, OciError> {
    let name_of = |entry: &Descriptor| {
        entry
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
            .cloned()
    };
    match (ref_name, entries) {
        (None, [only]) => Ok(only),
        (None, []) => Err(OciError::bad_layout(root, "index.json lists no image")),
        (None, _) => Err(OciError::bad_layout(
            root,
            format!(
                "index.json lists {} images; name one (DIR:REF): {}",
                entries.len(),
                entries
                    .iter()
                    .filter_map(name_of)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        (Some(name), _) => entries
            .iter()
            .find(|entry| name_of(entry).as_deref() == Some(name))
            .ok_or_else(|| OciError::bad_layout(root, format!("no image named {name:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::progress::Silent;

    fn disk(dir: &Path, arch: &str, bytes: &[u8]) -> ContainerDisk {
        let path = dir.join(format!("{arch}.qcow2"));
        std::fs::write(&path, bytes).unwrap();
        ContainerDisk {
            disk: path,
            name: format!("noble-{arch}.qcow2"),
            disk_format: "qcow2".into(),
            arch: arch.into(),
            provenance: Provenance {
                source_url: "https://cloud-images.ubuntu.com/x.img".into(),
                source_digest: "sha256:00".into(),
                release: "noble".into(),
                serial: "20240821".into(),
            },
        }
    }

    #[test]
    fn one_arch_layout_reads_back_with_its_blobs_and_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("layout");
        let written = write_layout(
            &out,
            &[disk(dir.path(), "amd64", b"disk bytes")],
            "noble-20240821",
            Compression::None,
            &Silent,
        )
        .unwrap();
        assert_eq!(
            written.media_type,
            "application/vnd.oci.image.manifest.v1+json"
        );
        let layout = Layout::open(&out, None).unwrap();
        assert_eq!(layout.top.digest, written.digest);
        assert!(layout.manifests.is_empty());
        assert_eq!(layout.blobs.len(), 2);
        assert_eq!(layout.release(), Some("noble"));
        assert_eq!(layout.serial(), Some("20240821"));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&layout.blobs[0].path).unwrap()).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(layout.architectures().unwrap(), ["amd64"]);
        // Same inputs, same digests: a rewrite changes nothing.
        let again = write_layout(
            &out,
            &[disk(dir.path(), "amd64", b"disk bytes")],
            "noble-20240821",
            Compression::None,
            &Silent,
        )
        .unwrap();
        assert_eq!(again, written);
    }

    #[test]
    fn several_arches_make_an_index_with_platforms() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("layout");
        let written = write_layout(
            &out,
            &[
                disk(dir.path(), "amd64", b"a"),
                disk(dir.path(), "arm64", b"b"),
            ],
            "noble",
            Compression::None,
            &Silent,
        )
        .unwrap();
        assert_eq!(
            written.media_type,
            "application/vnd.oci.image.index.v1+json"
        );
        let layout = Layout::open(&out, Some("noble")).unwrap();
        assert_eq!(layout.manifests.len(), 2);
        assert_eq!(layout.blobs.len(), 4);
        let index: serde_json::Value = serde_json::from_slice(&layout.top.bytes).unwrap();
        assert_eq!(index["manifests"][1]["platform"]["architecture"], "arm64");
        assert_eq!(index["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(layout.architectures().unwrap(), ["amd64", "arm64"]);
        assert!(Layout::open(&out, Some("other")).is_err());
    }

    #[test]
    fn arches_written_one_at_a_time_join_in_one_index() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("layout");
        let together = write_layout(
            &dir.path().join("together"),
            &[
                disk(dir.path(), "amd64", b"a"),
                disk(dir.path(), "arm64", b"b"),
            ],
            "noble",
            Compression::None,
            &Silent,
        )
        .unwrap();
        let mut manifests = Vec::new();
        for (arch, bytes) in [("amd64", b"a"), ("arm64", b"b")] {
            let one = write_layout(
                &out,
                &[disk(dir.path(), arch, bytes)],
                "noble",
                Compression::None,
                &Silent,
            )
            .unwrap();
            manifests.extend(one.manifests);
        }
        let joined = write_index(&out, &manifests, "noble").unwrap();
        // The same index as writing both at once, byte for byte.
        assert_eq!(joined.digest, together.digest);
        let layout = Layout::open(&out, None).unwrap();
        assert_eq!(layout.manifests.len(), 2);
        assert!(layout.blobs_match().unwrap());
        assert!(write_index(&out, &manifests[..1], "noble").is_err());
        // A manifest that is not in the blobs is refused.
        let mut missing = manifests.clone();
        missing[1].digest = format!("sha256:{}", "0".repeat(64));
        assert!(write_index(&out, &missing, "noble").is_err());
    }

    #[test]
    fn a_tampered_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("layout");
        let written = write_layout(
            &out,
            &[disk(dir.path(), "amd64", b"x")],
            "r",
            Compression::None,
            &Silent,
        )
        .unwrap();
        let hex = written.digest.strip_prefix("sha256:").unwrap();
        let path = blob_dir(&out).join(hex);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let error = Layout::open(&out, None).unwrap_err();
        assert!(matches!(error, OciError::BlobDigest { .. }), "{error:?}");
    }

    #[test]
    fn a_digest_cannot_name_a_path_outside_the_blobs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LAYOUT_FILE),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(INDEX_FILE),
            br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../etc/passwd","size":1}]}"#,
        )
        .unwrap();
        let error = Layout::open(dir.path(), None).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Usage, "{error:?}");
    }

    #[test]
    fn an_unknown_architecture_is_refused_before_packing() {
        let dir = tempfile::tempdir().unwrap();
        let error = write_layout(
            &dir.path().join("l"),
            &[disk(dir.path(), "mips", b"x")],
            "r",
            Compression::None,
            &Silent,
        )
        .unwrap_err();
        assert!(matches!(error, OciError::Invalid { .. }), "{error:?}");
    }
}
