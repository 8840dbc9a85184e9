//! A push of a layout's image to one or more repositories: blobs first, manifests last,
//! `latest` after every other tag, then retirement of old serial tags.
//!
//! Per blob: `HEAD` (already there: nothing sent), else a mount from a repository of the same
//! registry that this push already filled, else an upload streamed from the blob file
//! (monolithic by default, chunked with a chunk size). A failed upload starts over from a new
//! session, as many times as the retry policy allows. Per-architecture manifests go by digest,
//! then the top manifest or index under each tag; a tag that already names the same digest is
//! left alone, so a second push of the same layout sends nothing.

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::{info, warn};

use super::auth::AuthFiles;
use super::layout::{Blob, Layout};
use super::reference::{check_tag, Reference};
use super::registry::{Registry, RegistryError, Started};
use super::OciError;
use crate::fetch::retry::Retry;
use crate::fetch::ClientConfig;
use crate::io::progress::Reporter;

/// The tag that follows the newest image, moved after every other tag.
pub const LATEST: &str = "latest";

/// How to push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Plain HTTP instead of HTTPS (lab registries).
    pub insecure: bool,
    /// Send blobs in `PATCH`es of this many bytes instead of one `PUT`.
    pub chunk_size: Option<u64>,
    /// Keep this many serial tags (`<release>-<serial>`) and delete older ones.
    pub keep: Option<usize>,
    pub client: ClientConfig,
}

/// What happened in one repository.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Pushed {
    /// `registry/repository`.
    pub repository: String,
    /// The digest of the pushed manifest or index.
    pub digest: String,
    pub blobs_uploaded: usize,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    pub bytes_sent: u64,
    /// Tags set or moved by this push, in order (`latest` last).
    pub tags_set: Vec<String>,
    /// Tags that already named this digest.
    pub tags_unchanged: Vec<String>,
    /// Serial tags removed beyond `keep`.
    pub retired: Vec<String>,
}

/// The tags a destination gets: its own tag plus `extra`, or, without one, the layout's
/// `<release>-<serial>`, `<release>` and `latest`. `latest` always comes last.
pub fn tags_for(
    destination: &Reference,
    extra: &[String],
    layout: &Layout,
) -> Result<Vec<String>, OciError> {
    let mut tags: Vec<String> = destination.tag.iter().chain(extra).cloned().collect();
    if tags.is_empty() {
        let (Some(release), Some(serial)) = (layout.release(), layout.serial()) else {
            return Err(OciError::invalid(
                "destination",
                destination.to_string(),
                "the layout names no release and serial; give a tag (docker://REGISTRY/REPO:TAG)",
            ));
        };
        tags = vec![
            format!("{release}-{serial}"),
            release.to_owned(),
            LATEST.to_owned(),
        ];
    }
    for tag in &tags {
        check_tag(tag)?;
    }
    let mut unique: Vec<String> = Vec::new();
    for tag in tags {
        if !unique.contains(&tag) {
            unique.push(tag);
        }
    }
    // Stable: the others keep their order, `latest` moves to the end.
    unique.sort_by_key(|tag| tag == LATEST);
    Ok(unique)
}

/// Pushes `layout` to every destination, in order.
pub async fn push(
    layout: &Layout,
    destinations: &[Reference],
    extra_tags: &[String],
    options: &PushOptions,
    auth_files: &AuthFiles,
    reporter: &dyn Reporter,
) -> Result<Vec<Pushed>, OciError> {
    let mut plans = Vec::new();
    for destination in destinations {
        plans.push((destination, tags_for(destination, extra_tags, layout)?));
    }
    let mut registries: BTreeMap<String, Registry> = BTreeMap::new();
    // Repositories already holding the blobs, by registry: mount sources.
    let mut filled: BTreeMap<String, String> = BTreeMap::new();
    let mut results = Vec::new();
    for (destination, tags) in plans {
        if !registries.contains_key(&destination.registry) {
            let credentials = auth_files.lookup(&destination.registry, &destination.repository)?;
            let registry = Registry::new(
                &destination.registry,
                options.insecure,
                credentials,
                &options.client,
            )?;
            registries.insert(destination.registry.clone(), registry);
        }
        let registry = &registries[&destination.registry];
        let mount_from = filled.get(&destination.registry).map(String::as_str);
        let pushed = push_one(
            registry,
            layout,
            destination,
            &tags,
            mount_from,
            options,
            reporter,
        )
        .await?;
        filled
            .entry(destination.registry.clone())
            .or_insert_with(|| destination.repository.clone());
        results.push(pushed);
    }
    Ok(results)
}

async fn push_one(
    registry: &Registry,
    layout: &Layout,
    destination: &Reference,
    tags: &[String],
    mount_from: Option<&str>,
    options: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed, OciError> {
    let repository = destination.repository.as_str();
    let mut pushed = Pushed {
        repository: format!("{}/{}", destination.registry, repository),
        digest: layout.top.digest.clone(),
        ..Pushed::default()
    };
    for blob in &layout.blobs {
        if registry.blob_exists(repository, &blob.digest).await? {
            pushed.blobs_present += 1;
            continue;
        }
        match send_blob(registry, repository, blob, mount_from, options, reporter).await? {
            Sent::Mounted => pushed.blobs_mounted += 1,
            Sent::Uploaded => {
                pushed.blobs_uploaded += 1;
                pushed.bytes_sent += blob.size;
            }
        }
    }
    for manifest in &layout.manifests {
        if registry
            .manifest_digest(repository, &manifest.digest)
            .await?
            .is_none()
        {
            registry
                .put_manifest(
                    repository,
                    &manifest.digest,
                    &manifest.media_type,
                    &manifest.bytes,
                    &manifest.digest,
                )
                .await?;
        }
    }
    let top = &layout.top;
    for tag in tags {
        let current = registry.manifest_digest(repository, tag).await?;
        if current.as_deref() == Some(top.digest.as_str()) {
            pushed.tags_unchanged.push(tag.clone());
            continue;
        }
        registry
            .put_manifest(repository, tag, &top.media_type, &top.bytes, &top.digest)
            .await?;
        info!(repository = %pushed.repository, tag, digest = %top.digest, "tagged");
        pushed.tags_set.push(tag.clone());
    }
    if let (Some(keep), Some(release)) = (options.keep, layout.release()) {
        pushed.retired = retire(registry, repository, release, keep, tags).await?;
    }
    Ok(pushed)
}

enum Sent {
    Mounted,
    Uploaded,
}

/// One blob, mounted or uploaded; a failed upload starts again from a new session.
async fn send_blob(
    registry: &Registry,
    repository: &str,
    blob: &Blob,
    mount_from: Option<&str>,
    options: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Sent, OciError> {
    let mut retry = Retry::new(&options.client);
    loop {
        let mount = mount_from.map(|from| (blob.digest.as_str(), from));
        let result = async {
            let session = match registry.start_upload(repository, mount).await? {
                Started::Mounted => return Ok(Sent::Mounted),
                Started::Session(url) => url,
            };
            reporter.start(
                &format!("pushing {}", short(&blob.digest)),
                Some(blob.size),
                0,
            );
            let sent = match options.chunk_size {
                Some(chunk) if chunk > 0 && chunk < blob.size => {
                    registry
                        .upload_chunked(
                            session,
                            &blob.path,
                            &blob.digest,
                            blob.size,
                            chunk,
                            reporter,
                        )
                        .await
                }
                _ => {
                    registry
                        .upload_monolithic(session, &blob.path, &blob.digest, blob.size, reporter)
                        .await
                }
            };
            reporter.finish();
            sent.map(|()| Sent::Uploaded)
        }
        .await;
        let error: RegistryError = match result {
            Ok(sent) => return Ok(sent),
            Err(error) => error,
        };
        if !error.is_transient() {
            return Err(error.into());
        }
        let Some(delay) = retry.next_delay(None) else {
            return Err(error.into());
        };
        warn!(digest = %blob.digest, error = %crate::error::chain(&error), "blob upload failed; starting over");
        tokio::time::sleep(delay).await;
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// Whether `tag` is a serial tag of `release`: `<release>-<digit>…`.
fn serial_of<'a>(tag: &'a str, release: &str) -> Option<&'a str> {
    tag.strip_prefix(release)?
        .strip_prefix('-')
        .filter(|serial| serial.starts_with(|c: char| c.is_ascii_digit()))
}

/// The serial tags of `release` beyond the newest `keep`, never one of `protected`.
pub fn tags_to_retire(
    all: &[String],
    release: &str,
    keep: usize,
    protected: &[String],
) -> Vec<String> {
    let mut serials: Vec<&String> = all
        .iter()
        .filter(|tag| serial_of(tag, release).is_some())
        .collect();
    // Newest first: serials are dates (20240821, 20240821.1, 20240717-1811).
    serials.sort_by(|a, b| b.cmp(a));
    serials
        .into_iter()
        .skip(keep)
        .filter(|tag| !protected.contains(tag))
        .cloned()
        .collect()
}

/// Deletes the manifests of old serial tags; a manifest another kept tag still names stays.
async fn retire(
    registry: &Registry,
    repository: &str,
    release: &str,
    keep: usize,
    pushed_tags: &[String],
) -> Result<Vec<String>, OciError> {
    let all = registry.tags(repository).await?;
    let retiring = tags_to_retire(&all, release, keep, pushed_tags);
    if retiring.is_empty() {
        return Ok(Vec::new());
    }
    let mut kept_digests = Vec::new();
    for tag in all.iter().filter(|tag| !retiring.contains(tag)) {
        if let Some(digest) = registry.manifest_digest(repository, tag).await? {
            kept_digests.push(digest);
        }
    }
    let mut retired = Vec::new();
    for tag in retiring {
        let Some(digest) = registry.manifest_digest(repository, &tag).await? else {
            continue;
        };
        if kept_digests.contains(&digest) {
            warn!(repository, tag, %digest, "not retired: a kept tag names the same manifest");
            continue;
        }
        registry.delete_manifest(repository, &digest).await?;
        info!(repository, tag, %digest, "retired");
        retired.push(tag);
    }
    Ok(retired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn old_serials_beyond_keep_are_retired_but_never_other_tags() {
        let all = strings(&[
            "latest",
            "noble",
            "noble-20240801",
            "noble-20240821",
            "noble-20240821.1",
            "noble-custom",
            "jammy-20240101",
        ]);
        assert_eq!(
            tags_to_retire(&all, "noble", 2, &[]),
            strings(&["noble-20240801"])
        );
        assert_eq!(
            tags_to_retire(&all, "noble", 1, &strings(&["noble-20240821"])),
            strings(&["noble-20240801"])
        );
        assert!(tags_to_retire(&all, "noble", 5, &[]).is_empty());
    }

    #[test]
    fn latest_moves_last() {
        let layout = Layout {
            root: "x".into(),
            blobs: Vec::new(),
            manifests: Vec::new(),
            top: super::super::layout::Document {
                digest: String::new(),
                media_type: String::new(),
                bytes: Vec::new(),
            },
            annotations: [
                (
                    super::super::ANNOTATION_RELEASE.to_owned(),
                    "noble".to_owned(),
                ),
                (
                    super::super::ANNOTATION_SERIAL.to_owned(),
                    "20240821".to_owned(),
                ),
            ]
            .into_iter()
            .collect(),
        };
        let untagged = Reference::parse("docker://r:5000/lab/noble").unwrap();
        assert_eq!(
            tags_for(&untagged, &[], &layout).unwrap(),
            strings(&["noble-20240821", "noble", "latest"])
        );
        let tagged = Reference::parse("docker://r:5000/lab/noble:latest").unwrap();
        assert_eq!(
            tags_for(&tagged, &strings(&["noble", "latest"]), &layout).unwrap(),
            strings(&["noble", "latest"])
        );
        assert!(tags_for(&untagged, &strings(&["-bad"]), &layout).is_err());
    }
}
