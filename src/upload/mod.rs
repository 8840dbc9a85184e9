//! Uploads prepared artifacts to OpenStack Glance, from their `<artifact>.glance.json`.
//!
//! - `target.rs`, `clouds.rs`, `keystone.rs`: which Glance, and a token for it (none, a given
//!   token, or Keystone v3 from the `OS_*` variables or `clouds.yaml`).
//! - `glance.rs`: the images API, also used by `sync` (find by name or tag, hide, deactivate,
//!   delete).
//! - `http.rs`: retries by the fetch policy, bounded bodies, the streamed and hashed upload.
//!
//! Keystone and `clouds.yaml` are handled here rather than with the `osauth` crate: it would
//! bring native-tls by default, the deprecated `serde_yaml`, `dirs` and a session and error
//! model of its own, for what is two requests and a YAML lookup; our retry policy and error
//! kinds would have had to be mapped around it.
//!
//! One upload: look for an active image with the same name and SHA-512 (then nothing is sent),
//! create the image, stream the file (or stage and import it), and check that Glance's size,
//! MD5 and SHA-512 are the metadata's. Whatever fails after the image exists deletes it, so no
//! `queued` leftovers pile up.

mod clouds;
mod error;
mod glance;
mod http;
mod keystone;
mod target;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub use error::{Settings, UploadError};
pub use glance::{Glance, Image, ImageFilter, Retire};
pub use http::Secret;
pub use keystone::{Credentials, DomainRef, ProjectRef, UserRef};
pub use target::{Auth, GlanceTarget};

use crate::container::glance::{ImageMetadata, METADATA_SUFFIX};
use crate::fetch::retry::Retry;
use crate::fetch::ClientConfig;
use crate::glance::Amazon;
use crate::io::progress::Reporter;

/// How image data reaches Glance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UploadMethod {
    /// `PUT /v2/images/{id}/file`.
    #[default]
    Direct,
    /// The interoperable import: stage the data, then import it with `glance-direct`.
    Import,
}

/// Settings of one upload run.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// Retries, connect and stall timeouts, as for downloads.
    pub client: ClientConfig,
    pub method: UploadMethod,
    /// How long an import may take before the upload gives up waiting (the image is left).
    pub import_timeout: Duration,
    /// Glance visibility instead of the metadata's (a catalog target's own).
    pub visibility: Option<String>,
    /// Create an image even when one of the same name holds other content (openstacksdk's
    /// `allow_duplicates`); otherwise that is [`UploadError::NameTaken`].
    pub allow_duplicates: bool,
}

impl Default for UploadOptions {
    fn default() -> UploadOptions {
        UploadOptions {
            client: ClientConfig::default(),
            method: UploadMethod::Direct,
            import_timeout: Duration::from_secs(30 * 60),
            visibility: None,
            allow_duplicates: false,
        }
    }
}

/// Whether an image was sent in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Uploaded,
    /// An active image with the same name and SHA-512 was there already.
    AlreadyPresent,
}

/// One image in Glance after the run, as printed with `--json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Uploaded {
    pub metadata: PathBuf,
    pub id: String,
    pub name: String,
    pub status: String,
    pub size: u64,
    pub checksum: String,
    pub os_hash_value: String,
    pub outcome: Outcome,
}

/// What a dry run found an upload would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlannedOutcome {
    WouldUpload,
    /// An active image with the same name and SHA-512 is there: nothing would be sent.
    AlreadyPresent,
}

/// One image of a dry run, as printed with `--json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Planned {
    pub metadata: PathBuf,
    pub name: String,
    pub size: u64,
    pub outcome: PlannedOutcome,
    /// The image already there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// [`Glance::preview_artifacts`] on the Glance of `target`: what an upload would do, with
/// nothing written.
pub async fn preview_artifacts(
    target: &GlanceTarget,
    metadata_files: &[PathBuf],
    options: &UploadOptions,
) -> Result<Vec<Planned>, UploadError> {
    plan(metadata_files)?;
    let glance = Glance::connect(target, &options.client).await?;
    glance.preview_artifacts(metadata_files, options).await
}

/// The metadata files `path` names: a metadata file itself, or every `*.glance.json` directly
/// in a directory (sorted by name). An empty directory is a usage error.
pub fn metadata_files(path: &Path) -> Result<Vec<PathBuf>, UploadError> {
    let info = std::fs::metadata(path).map_err(|e| UploadError::io(path, "read", e))?;
    if !info.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| UploadError::io(path, "list", e))? {
        let entry = entry.map_err(|e| UploadError::io(path, "list", e))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(METADATA_SUFFIX) && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Settings::NoMetadata(path.to_owned()).into());
    }
    Ok(files)
}

/// Uploads the artifacts described by `metadata_files` to the Glance of `target`: the entry
/// point of `upload`, `prepare --upload` and `sync`.
///
/// Contract:
/// - Kernels (aki) and ramdisks (ari) go first; an ami gets `kernel_id` / `ramdisk_id` set to
///   the ids of the images whose artifact files its metadata names in `kernel` / `ramdisk`.
///   Those metadata files are read from beside the ami's when not in the list.
/// - An active image with the same name and SHA-512 is not uploaded again
///   ([`Outcome::AlreadyPresent`]).
/// - An image with the same name and other content (Glance's `os_hash_value`, else its MD5
///   `checksum`) stops the upload before anything is created ([`UploadError::NameTaken`]),
///   unless `options.allow_duplicates`. Images without data yet (queued) do not count.
/// - The file is streamed (never held in memory) and hashed on the way; it must still match
///   its metadata ([`UploadError::FileChanged`], integrity) and Glance's size, `checksum` and
///   `os_hash_value` must match ours ([`UploadError::Mismatch`], integrity).
/// - Any failure once the image exists deletes it, except an import timeout, which leaves it
///   (it may still finish) and says so. A transient one (5xx, broken connection) then starts
///   over with a new image, within `options.client.retries`. Images completed before a
///   failure stay.
/// - `reporter` sees one `start`/`advance`…/`finish` per file sent.
///
/// The result lists every image in processing order.
pub async fn upload_artifacts(
    target: &GlanceTarget,
    metadata_files: &[PathBuf],
    options: &UploadOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<Uploaded>, UploadError> {
    let plan = plan(metadata_files)?;
    let glance = Glance::connect(target, &options.client).await?;
    glance.upload_plan(&plan, options, reporter).await
}

/// One of several Glance targets: its name (for summaries and logs), where and as whom, and
/// how old images are retired there.
#[derive(Clone, Debug)]
pub struct NamedTarget {
    pub name: String,
    pub target: GlanceTarget,
    pub retire: Retire,
    /// Visibility of the images uploaded there, instead of the metadata's.
    pub visibility: Option<String>,
}

/// What one target did with a set of artifacts, as printed with `--json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TargetUpload {
    pub target: String,
    /// `ok` or `failed`.
    pub status: &'static str,
    pub images: Vec<Uploaded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Uploads the artifacts to every target, one after the other; a target that fails (down,
/// refusing credentials) is reported in its row and does not stop the others.
pub async fn upload_to_targets(
    targets: &[NamedTarget],
    metadata_files: &[PathBuf],
    options: &UploadOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<TargetUpload>, UploadError> {
    // A bad metadata file is the same mistake for every target: report it once.
    plan(metadata_files)?;
    let mut rows = Vec::new();
    for named in targets {
        let options = UploadOptions {
            visibility: named
                .visibility
                .clone()
                .or_else(|| options.visibility.clone()),
            ..options.clone()
        };
        let result = upload_artifacts(&named.target, metadata_files, &options, reporter).await;
        rows.push(match result {
            Ok(images) => TargetUpload {
                target: named.name.clone(),
                status: "ok",
                images,
                error: None,
            },
            Err(error) => {
                let text = crate::error::chain(&error);
                tracing::error!(target = %named.name, "{text}");
                TargetUpload {
                    target: named.name.clone(),
                    status: "failed",
                    images: Vec::new(),
                    error: Some(text),
                }
            }
        });
    }
    Ok(rows)
}

/// One artifact to upload: where its metadata was read and what it says.
#[derive(Clone, Debug)]
struct Item {
    metadata_path: PathBuf,
    metadata: ImageMetadata,
}

impl Item {
    fn artifact(&self) -> PathBuf {
        self.metadata_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.metadata.file)
    }
}

/// Reads the metadata files (and the kernels and ramdisks amis link to), checks the links, and
/// orders the uploads: aki, then ari, then the rest in the given order.
fn plan(metadata_files: &[PathBuf]) -> Result<Vec<Item>, UploadError> {
    let mut items = Vec::new();
    for path in metadata_files {
        items.push(read_item(path)?);
    }
    // Links are resolved beside the ami's metadata; a file already listed is not read twice.
    let mut index = 0;
    while index < items.len() {
        let item = items[index].clone();
        for linked in [&item.metadata.kernel, &item.metadata.ramdisk]
            .into_iter()
            .flatten()
        {
            if !items.iter().any(|other| &other.metadata.file == linked) {
                let beside = item
                    .metadata_path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(format!("{linked}{METADATA_SUFFIX}"));
                if !beside.is_file() {
                    return Err(Settings::MissingLink {
                        metadata: item.metadata_path.clone(),
                        linked: linked.to_string(),
                        expected: beside,
                    }
                    .into());
                }
                items.push(read_item(&beside)?);
            }
        }
        index += 1;
    }
    // Kernels and ramdisks first: the machine image names them by id.
    let rank = |item: &Item| match item.metadata.disk_format.amazon() {
        Some(Amazon::Kernel) => 0,
        Some(Amazon::Ramdisk) => 1,
        _ => 2,
    };
    // Stable: equal ranks keep the caller's order.
    items.sort_by_key(rank);
    Ok(items)
}

fn read_item(path: &Path) -> Result<Item, UploadError> {
    let metadata = ImageMetadata::read(path)?;
    // The artifact must sit beside its metadata; a path could point anywhere.
    let plain = Path::new(&metadata.file)
        .file_name()
        .is_some_and(|name| name == metadata.file.as_str());
    if !plain {
        return Err(Settings::NotPlainName {
            metadata: path.to_owned(),
            file: metadata.file.clone(),
        }
        .into());
    }
    Ok(Item {
        metadata_path: path.to_owned(),
        metadata,
    })
}

/// The `POST /v2/images` body: the standard attributes, then each property as a top-level
/// string (Glance's custom properties are strings), then the kernel and ramdisk ids.
fn create_body(metadata: &ImageMetadata, links: &[(&str, &str)]) -> Map<String, Value> {
    let mut body = Map::new();
    for (key, value) in &metadata.properties {
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        body.insert(key.clone(), Value::String(text));
    }
    for (key, id) in links {
        body.insert((*key).to_owned(), Value::String((*id).to_owned()));
    }
    // The standard attributes win over properties of the same name.
    body.insert("name".into(), metadata.name.clone().into());
    body.insert("disk_format".into(), metadata.disk_format.name().into());
    body.insert(
        "container_format".into(),
        metadata.container_format.name().into(),
    );
    body.insert("visibility".into(), metadata.visibility.clone().into());
    body.insert("min_disk".into(), metadata.min_disk.into());
    body.insert("min_ram".into(), metadata.min_ram.into());
    body.insert(
        "tags".into(),
        Value::Array(metadata.tags.iter().cloned().map(Value::String).collect()),
    );
    body
}

/// Glance's view of an uploaded image compared with what was sent; the first difference.
fn compare(image: &Image, sent: &http::Streamed) -> Option<(&'static str, String, String)> {
    let shown = |value: &Option<String>| value.clone().unwrap_or_else(|| "nothing".to_owned());
    if image.size != Some(sent.size) {
        let actual = image.size.map_or("nothing".to_owned(), |s| s.to_string());
        return Some(("size", sent.size.to_string(), actual));
    }
    if image.checksum.as_deref() != Some(sent.md5.as_str()) {
        return Some(("checksum (MD5)", sent.md5.clone(), shown(&image.checksum)));
    }
    if image.os_hash_algo.as_deref() != Some("sha512") {
        return Some((
            "os_hash_algo",
            "sha512".to_owned(),
            shown(&image.os_hash_algo),
        ));
    }
    if image.os_hash_value.as_deref() != Some(sent.sha512.as_str()) {
        return Some((
            "os_hash_value (SHA-512)",
            sent.sha512.clone(),
            shown(&image.os_hash_value),
        ));
    }
    None
}

impl Glance {
    /// Uploads metadata files with this session; see [`upload_artifacts`] for the contract.
    pub async fn upload_artifacts(
        &self,
        metadata_files: &[PathBuf],
        options: &UploadOptions,
        reporter: &dyn Reporter,
    ) -> Result<Vec<Uploaded>, UploadError> {
        let plan = plan(metadata_files)?;
        self.upload_plan(&plan, options, reporter).await
    }

    async fn upload_plan(
        &self,
        plan: &[Item],
        options: &UploadOptions,
        reporter: &dyn Reporter,
    ) -> Result<Vec<Uploaded>, UploadError> {
        if options.method == UploadMethod::Import {
            let offered = self.import_methods().await?;
            if !offered.iter().any(|m| m == "glance-direct") {
                return Err(UploadError::MethodUnavailable {
                    method: "glance-direct".to_owned(),
                    offered: if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    },
                });
            }
        }
        let overridden: Vec<Item>;
        let plan = match &options.visibility {
            Some(visibility) => {
                overridden = plan
                    .iter()
                    .cloned()
                    .map(|mut item| {
                        item.metadata.visibility = visibility.clone();
                        item
                    })
                    .collect();
                &overridden[..]
            }
            None => plan,
        };
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut done = Vec::new();
        for item in plan {
            let mut links = Vec::new();
            for (key, file) in [
                ("kernel_id", &item.metadata.kernel),
                ("ramdisk_id", &item.metadata.ramdisk),
            ] {
                if let Some(file) = file {
                    // `plan` put every linked file before the ami.
                    let id = ids.get(file).ok_or_else(|| Settings::OutOfOrder {
                        metadata: item.metadata_path.clone(),
                        file: file.to_string(),
                    })?;
                    links.push((key, id.as_str()));
                }
            }
            let uploaded = self.upload_one(item, &links, options, reporter).await?;
            ids.insert(item.metadata.file.clone(), uploaded.id.clone());
            done.push(uploaded);
        }
        Ok(done)
    }

    async fn upload_one(
        &self,
        item: &Item,
        links: &[(&str, &str)],
        options: &UploadOptions,
        reporter: &dyn Reporter,
    ) -> Result<Uploaded, UploadError> {
        let metadata = &item.metadata;
        let artifact = item.artifact();
        // One call: tokio's file system (async code never blocks on std::fs).
        let size = tokio::fs::metadata(&artifact)
            .await
            .map_err(|e| UploadError::io(&artifact, "read", e))?
            .len();
        if size != metadata.digests.size {
            return Err(UploadError::FileChanged {
                path: artifact,
                what: "size",
                expected: metadata.digests.size.to_string(),
                actual: size.to_string(),
            });
        }
        if let Some(image) = self.already_present(metadata, options).await? {
            tracing::info!(name = %metadata.name, id = %image.id, "already in Glance with the same SHA-512; not uploaded again");
            return Ok(uploaded(item, image, Outcome::AlreadyPresent));
        }
        // A transient failure once the image exists (a 5xx at the end of the data, a broken
        // connection) is retried with a fresh image after deleting the failed one: the data
        // request itself cannot be replayed, and a half-made image cannot take data twice.
        let mut retry = Retry::new(&options.client);
        loop {
            let created = self.create(&create_body(metadata, links)).await?;
            tracing::info!(name = %metadata.name, id = %created.id, file = %artifact.display(), "image created; sending data");
            let error = match self
                .send_and_check(item, &created.id, &artifact, options, reporter)
                .await
            {
                Ok(image) => return Ok(uploaded(item, image, Outcome::Uploaded)),
                // The import may still finish: the image is left for the operator.
                Err(error @ UploadError::ImportTimeout { .. }) => return Err(error),
                Err(error) => error,
            };
            let gone = self.discard(&created.id).await;
            if !(gone && error.is_transient()) {
                return Err(error);
            }
            let Some(delay) = retry.next_delay(None) else {
                return Err(error);
            };
            tracing::warn!(name = %metadata.name, error = %error, delay_ms = delay.as_millis() as u64,
                "upload failed; trying again with a new image");
            tokio::time::sleep(delay).await;
        }
    }

    /// The active image with the artifact's name and SHA-512, if Glance has one; an image of
    /// that name with other content is [`UploadError::NameTaken`] unless
    /// `options.allow_duplicates`. Only reads.
    async fn already_present(
        &self,
        metadata: &ImageMetadata,
        options: &UploadOptions,
    ) -> Result<Option<Image>, UploadError> {
        let namesakes = self
            .images(&ImageFilter {
                name: Some(metadata.name.clone()),
                ..ImageFilter::default()
            })
            .await?;
        let present = namesakes.iter().find(|image| {
            image.status == "active"
                && image.os_hash_value.as_deref() == Some(metadata.digests.sha512.as_str())
        });
        if let Some(image) = present {
            return Ok(Some(image.clone()));
        }
        if let Some((image, difference)) = namesakes
            .iter()
            .find_map(|image| other_content(image, metadata).map(|d| (image, d)))
        {
            if !options.allow_duplicates {
                return Err(UploadError::NameTaken {
                    name: metadata.name.clone(),
                    image_id: image.id.clone(),
                    what: difference.what,
                    theirs: difference.theirs,
                    ours: difference.ours,
                });
            }
            tracing::warn!(name = %metadata.name, id = %image.id,
                "an image of this name with other content is in Glance; creating another (--allow-duplicates)");
        }
        Ok(None)
    }

    /// What [`Glance::upload_artifacts`] would do with `metadata_files`, found by reading
    /// only: the files are checked against their metadata's size, Glance is asked for images
    /// of the same name, and nothing is created. A name another image holds with other content
    /// is the same [`UploadError::NameTaken`] the upload would meet.
    pub async fn preview_artifacts(
        &self,
        metadata_files: &[PathBuf],
        options: &UploadOptions,
    ) -> Result<Vec<Planned>, UploadError> {
        let mut rows = Vec::new();
        for item in plan(metadata_files)? {
            let metadata = &item.metadata;
            let artifact = item.artifact();
            let size = std::fs::metadata(&artifact)
                .map_err(|e| UploadError::io(&artifact, "read", e))?
                .len();
            if size != metadata.digests.size {
                return Err(UploadError::FileChanged {
                    path: artifact,
                    what: "size",
                    expected: metadata.digests.size.to_string(),
                    actual: size.to_string(),
                });
            }
            let present = self.already_present(metadata, options).await?;
            rows.push(Planned {
                metadata: item.metadata_path.clone(),
                name: metadata.name.clone(),
                size,
                outcome: if present.is_some() {
                    PlannedOutcome::AlreadyPresent
                } else {
                    PlannedOutcome::WouldUpload
                },
                id: present.map(|image| image.id),
            });
        }
        Ok(rows)
    }

    /// Sends the data of a created image and checks the result; the caller deletes the image
    /// on failure.
    async fn send_and_check(
        &self,
        item: &Item,
        id: &str,
        artifact: &Path,
        options: &UploadOptions,
        reporter: &dyn Reporter,
    ) -> Result<Image, UploadError> {
        let metadata = &item.metadata;
        let stage = options.method == UploadMethod::Import;
        reporter.start(&metadata.name, Some(metadata.digests.size), 0);
        let sent = self
            .put_data(id, stage, artifact, metadata.digests.size, reporter)
            .await;
        reporter.finish();
        let sent = sent.map_err(|error| match error {
            // A 4xx on the data is Glance judging the bytes (format inspection, safety
            // checks, quota): the user needs its words, not a URL.
            UploadError::Status {
                status: status @ 400..=499,
                message,
                ..
            } if status != 401 && status != 403 => UploadError::Refused {
                name: metadata.name.clone(),
                image_id: id.to_owned(),
                status,
                message,
            },
            other => other,
        })?;
        for (what, expected, actual) in [
            ("MD5", &metadata.digests.md5, &sent.md5),
            ("SHA-512", &metadata.digests.sha512, &sent.sha512),
        ] {
            if expected != actual {
                return Err(UploadError::FileChanged {
                    path: artifact.to_owned(),
                    what,
                    expected: expected.clone(),
                    actual: actual.clone(),
                });
            }
        }
        let image = if stage {
            self.import(id, "glance-direct").await?;
            self.wait_for_import(id, &metadata.name, options.import_timeout)
                .await?
        } else {
            self.image(id).await?
        };
        if let Some((what, expected, actual)) = compare(&image, &sent) {
            return Err(UploadError::Mismatch {
                name: metadata.name.clone(),
                image_id: id.to_owned(),
                what,
                expected,
                actual,
            });
        }
        if image.status != "active" {
            return Err(UploadError::BadResponse {
                method: reqwest::Method::GET,
                url: self.root().to_string(),
                reason: format!("image {id} is {} after its data was accepted", image.status),
            });
        }
        tracing::info!(name = %metadata.name, id, "uploaded and verified");
        Ok(image)
    }
}

/// How an image's content differs from an artifact's, by the strongest digest both have.
#[derive(Debug, PartialEq, Eq)]
struct Difference {
    what: &'static str,
    theirs: String,
    ours: String,
}

/// Whether `image` holds other bytes than the artifact `metadata` describes: its SHA-512
/// (`os_hash_value` with `os_hash_algo` sha512) or, from a Glance without multihash, its MD5
/// `checksum`. `None` when the content is the same, or unknown (no data yet).
fn other_content(image: &Image, metadata: &ImageMetadata) -> Option<Difference> {
    let digests = &metadata.digests;
    let (what, theirs, ours) = match (&image.os_hash_algo, &image.os_hash_value, &image.checksum) {
        (Some(algo), Some(value), _) if algo == "sha512" => {
            ("os_hash_value (SHA-512)", value, &digests.sha512)
        }
        (_, _, Some(md5)) => ("checksum (MD5)", md5, &digests.md5),
        _ => return None,
    };
    (!theirs.eq_ignore_ascii_case(ours)).then(|| Difference {
        what,
        theirs: theirs.clone(),
        ours: ours.clone(),
    })
}

fn uploaded(item: &Item, image: Image, outcome: Outcome) -> Uploaded {
    Uploaded {
        metadata: item.metadata_path.clone(),
        name: image.name.unwrap_or_else(|| item.metadata.name.clone()),
        id: image.id,
        status: image.status,
        size: image.size.unwrap_or(item.metadata.digests.size),
        checksum: image.checksum.unwrap_or_default(),
        os_hash_value: image.os_hash_value.unwrap_or_default(),
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_artifact(dir: &Path, file: &str, disk_format: &str) -> PathBuf {
        let artifact = dir.join(file);
        std::fs::write(&artifact, file.as_bytes()).unwrap();
        let metadata = ImageMetadata::for_file(
            &artifact,
            file,
            disk_format.parse().unwrap(),
            // aki/ari/ami pair with themselves, everything else goes bare.
            disk_format
                .parse()
                .unwrap_or(crate::glance::ContainerFormat::Bare),
            1,
        )
        .unwrap();
        metadata.write_beside(&artifact).unwrap()
    }

    fn write_ami(dir: &Path, kernel: Option<&str>, ramdisk: Option<&str>) -> PathBuf {
        let artifact = dir.join("root.img");
        std::fs::write(&artifact, b"root").unwrap();
        let mut metadata = ImageMetadata::for_file(
            &artifact,
            "root",
            crate::glance::DiskFormat::Ami,
            crate::glance::ContainerFormat::Ami,
            1,
        )
        .unwrap();
        metadata.kernel = kernel.map(str::to_owned);
        metadata.ramdisk = ramdisk.map(str::to_owned);
        metadata.write_beside(&artifact).unwrap()
    }

    fn order(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.metadata.file.as_str()).collect()
    }

    #[test]
    fn kernel_and_ramdisk_come_before_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        write_artifact(dir.path(), "a.qcow2", "qcow2");
        write_artifact(dir.path(), "initrd", "ari");
        write_artifact(dir.path(), "vmlinuz", "aki");
        write_ami(dir.path(), Some("vmlinuz"), Some("initrd"));
        let files = metadata_files(dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        let items = plan(&files).unwrap();
        assert_eq!(order(&items), ["vmlinuz", "initrd", "a.qcow2", "root.img"]);
    }

    #[test]
    fn an_ami_alone_brings_its_kernel_and_ramdisk_from_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        write_artifact(dir.path(), "initrd", "ari");
        write_artifact(dir.path(), "vmlinuz", "aki");
        let ami = write_ami(dir.path(), Some("vmlinuz"), Some("initrd"));
        let items = plan(&[ami]).unwrap();
        assert_eq!(order(&items), ["vmlinuz", "initrd", "root.img"]);
    }

    #[test]
    fn a_missing_linked_kernel_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let ami = write_ami(dir.path(), Some("vmlinuz"), None);
        let error = plan(&[ami]).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Usage);
        assert!(error.to_string().contains("vmlinuz.glance.json"), "{error}");
    }

    #[test]
    fn an_artifact_path_outside_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let meta_path = write_artifact(dir.path(), "x.raw", "raw");
        let mut metadata = ImageMetadata::read(&meta_path).unwrap();
        metadata.file = "../etc/passwd".into();
        std::fs::write(&meta_path, serde_json::to_string(&metadata).unwrap()).unwrap();
        let error = plan(&[meta_path]).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Usage);
    }

    #[test]
    fn a_directory_without_metadata_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk.qcow2"), b"x").unwrap();
        let error = metadata_files(dir.path()).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Usage);
    }

    #[test]
    fn create_body_has_attributes_string_properties_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("root.img");
        std::fs::write(&artifact, b"root").unwrap();
        let mut metadata = ImageMetadata::for_file(
            &artifact,
            "noble",
            crate::glance::DiskFormat::Ami,
            crate::glance::ContainerFormat::Ami,
            3 << 30,
        )
        .unwrap();
        metadata.set_property("os_distro", "ubuntu");
        metadata
            .properties
            .insert("hw_vif_multiqueue_enabled".into(), Value::Bool(true));
        // A property may not override a standard attribute.
        metadata.set_property("name", "other");
        metadata.tags = vec!["cloudimg".into()];
        let body = create_body(&metadata, &[("kernel_id", "k1"), ("ramdisk_id", "r1")]);
        let expected = serde_json::json!({
            "name": "noble", "disk_format": "ami", "container_format": "ami",
            "visibility": "private", "min_disk": 3, "min_ram": 0, "tags": ["cloudimg"],
            "os_distro": "ubuntu", "hw_vif_multiqueue_enabled": "true",
            "kernel_id": "k1", "ramdisk_id": "r1"
        });
        assert_eq!(Value::Object(body), expected);
    }

    fn image(size: Option<u64>, md5: &str, algo: &str, sha512: &str) -> Image {
        serde_json::from_value(serde_json::json!({
            "id": "i", "status": "active", "size": size, "checksum": md5,
            "os_hash_algo": algo, "os_hash_value": sha512
        }))
        .unwrap()
    }

    #[test]
    fn other_content_is_judged_by_sha512_then_md5_and_not_without_data() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("a.raw");
        std::fs::write(&artifact, b"a").unwrap();
        let metadata = ImageMetadata::for_file(
            &artifact,
            "a",
            crate::glance::DiskFormat::Raw,
            crate::glance::ContainerFormat::Bare,
            1,
        )
        .unwrap();
        let (md5, sha512) = (&metadata.digests.md5, &metadata.digests.sha512);
        assert_eq!(
            other_content(&image(Some(1), md5, "sha512", sha512), &metadata),
            None
        );
        let other = other_content(&image(Some(1), md5, "sha512", "beef"), &metadata).unwrap();
        assert_eq!(other.what, "os_hash_value (SHA-512)");
        assert_eq!(
            (other.theirs.as_str(), other.ours.as_str()),
            ("beef", sha512.as_str())
        );
        // A Glance without multihash: the MD5 decides.
        let old: Image = serde_json::from_value(
            serde_json::json!({"id": "i", "status": "active", "checksum": "beef"}),
        )
        .unwrap();
        assert_eq!(
            other_content(&old, &metadata).unwrap().what,
            "checksum (MD5)"
        );
        let same_md5: Image = serde_json::from_value(
            serde_json::json!({"id": "i", "status": "active", "checksum": md5}),
        )
        .unwrap();
        assert_eq!(other_content(&same_md5, &metadata), None);
        // Queued: no data, nothing to compare.
        let queued: Image =
            serde_json::from_value(serde_json::json!({"id": "i", "status": "queued"})).unwrap();
        assert_eq!(other_content(&queued, &metadata), None);
    }

    #[test]
    fn compare_names_the_first_differing_digest() {
        let sent = http::Streamed {
            size: 3,
            md5: "m".into(),
            sha512: "s".into(),
        };
        assert_eq!(compare(&image(Some(3), "m", "sha512", "s"), &sent), None);
        assert_eq!(
            compare(&image(Some(4), "m", "sha512", "s"), &sent)
                .unwrap()
                .0,
            "size"
        );
        assert_eq!(
            compare(&image(None, "m", "sha512", "s"), &sent).unwrap().2,
            "nothing"
        );
        assert_eq!(
            compare(&image(Some(3), "x", "sha512", "s"), &sent)
                .unwrap()
                .0,
            "checksum (MD5)"
        );
        assert_eq!(
            compare(&image(Some(3), "m", "sha256", "s"), &sent)
                .unwrap()
                .0,
            "os_hash_algo"
        );
        assert_eq!(
            compare(&image(Some(3), "m", "sha512", "t"), &sent)
                .unwrap()
                .0,
            "os_hash_value (SHA-512)"
        );
    }
}
