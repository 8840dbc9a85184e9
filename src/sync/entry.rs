//! One entry of a sync, from discovery to publication.
//!
//! The entry's source is resolved once and its newest build discovered once; that listing is
//! what `prepare` builds from. Everything touching the tree (verification of a published
//! serial, staging, the rename into place, `current`, retention, the state file) runs on a
//! blocking thread with owned inputs; only discovery, downloads and Glance are awaited here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::publish::{self, ImageTree};
use super::state::{ArtifactRecord, SerialRecord, UpstreamRecord};
use super::{hook, now, EntryReport, Outcome, Run, SyncError, SPACE_HEADROOM};
use crate::bake::BakeError;
use crate::catalog::user::ImageSpec;
use crate::catalog::Catalog;
use crate::container::ContainerFormat;
use crate::formats::Options;
use crate::index::release::sort_serials_newest_first;
use crate::index::{Discovery, Listing};
use crate::io::blocking;
use crate::io::progress::Reporter;
use crate::pipeline::{self, BakeStep, ImageSettings, MachineSettings, PrepareRequest, Prepared};
use crate::runner::{self, EntrySource};

/// Hex digits of the download-cache folder name (from the SHA-256 of the build's URL).
const CACHE_KEY_HEX: usize = 16;

/// The OCI architectures an entry's containerDisk is for, sorted, as its layout names them.
fn oci_arches(image: &ImageSpec) -> Vec<String> {
    let mut arches: Vec<String> = image
        .arches
        .iter()
        .map(|arch| {
            crate::oci::oci_arch(arch)
                .map_or(arch.as_str(), |(oci, _)| oci)
                .to_owned()
        })
        .collect();
    arches.sort();
    arches
}

/// The download-cache folder of a build: entries built from the same upstream folder share it.
fn download_cache_key(listing: &Listing) -> String {
    let digest = Sha256::digest(listing.dir_url.as_str().as_bytes());
    hex::encode(digest)[..CACHE_KEY_HEX].to_owned()
}

/// What an entry decided after discovery.
pub(super) struct Found {
    pub(super) source: EntrySource,
    pub(super) listing: Listing,
    tree: ImageTree,
    previous: Option<String>,
    /// Whether `ROOT/<name>/<serial>/` is already there and verifies.
    published: bool,
}

impl Found {
    fn serial(&self) -> &str {
        &self.listing.serial
    }

    /// `serials` newest first, in the source's serial order.
    fn newest_first(&self, serials: &mut [String]) {
        sort_serials_newest_first(serials, self.source.catalog.serial_separator);
    }
}

impl Run {
    /// Syncs one entry and reports it; a failure is the report, never a panic or an early end.
    pub(super) async fn entry(self: &Arc<Self>, image: &ImageSpec) -> EntryReport {
        let reporter = self
            .reporter
            .operation(&image.name)
            .unwrap_or_else(|| self.reporter.clone());
        let outcome = match self.sync_image(image, reporter).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let text = crate::error::chain(&error);
                tracing::error!(image = %image.name, "{text}");
                Outcome::Failed { error: text }
            }
        };
        match &outcome {
            Outcome::UpToDate { serial, .. } => {
                tracing::info!(image = %image.name, serial, "up to date")
            }
            Outcome::Published { serial, pruned, .. } => {
                tracing::info!(image = %image.name, serial, pruned = pruned.len(), "published")
            }
            Outcome::WouldPublish { serial, .. } => {
                tracing::info!(image = %image.name, serial, "would publish (dry run)")
            }
            Outcome::Failed { .. } => {}
        }
        EntryReport {
            name: image.name.clone(),
            outcome,
        }
    }

    async fn sync_image(
        self: &Arc<Self>,
        image: &ImageSpec,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Outcome, SyncError> {
        // `[image.bake]`: a bad recipe fails the entry before anything is downloaded, and a
        // published serial baked with another recipe is baked again.
        let bake = self.bake_step(image)?;
        let mut found = self.discover(image).await?;
        if found.published {
            // Published, but as the entry asked before: another recipe, other architectures.
            let recipe_digest = bake.as_ref().map(|step| step.recipe.digest()).transpose();
            let wanted = publish::Wanted {
                recipe_digest: recipe_digest
                    .map_err(|e| pipeline::Error::from(BakeError::from(e)))?,
                oci_arches: (image.container_format == ContainerFormat::ContainerDisk)
                    .then(|| oci_arches(image)),
            };
            let dir = found.tree.serial_dir(found.serial());
            let changed = blocking::run(&dir.clone(), move || wanted.changed(&dir)).await?;
            if let Some(what) = changed {
                tracing::info!(image = %image.name, serial = found.serial(), "{what} changed: building the serial again");
                found.published = false;
            }
        }
        let serial = found.serial().to_owned();
        let keep = self.catalog.keep_for(image);
        if found.published && found.previous.as_deref() == Some(serial.as_str()) {
            let mut targets = Vec::new();
            if !self.options.dry_run {
                let (tree, order) = (found.tree.clone(), found.source.catalog.serial_separator);
                blocking::run(&found.tree.dir(), move || {
                    tree.prune(keep, |s| sort_serials_newest_first(s, order), false)
                })
                .await?;
                // Idempotent: images already in Glance cost one lookup, no bytes; a target
                // that missed the serial catches up.
                targets = self
                    .glance_step(image, &found.tree, &serial, reporter.as_ref())
                    .await?;
            }
            return Ok(Outcome::UpToDate { serial, targets });
        }
        if self.options.dry_run {
            // Retention as it would be once `serial` exists and is current.
            let tree = found.tree.clone();
            let mut serials = blocking::run(&found.tree.dir(), move || tree.serials()).await?;
            if !serials.contains(&serial) {
                serials.push(serial.clone());
            }
            found.newest_first(&mut serials);
            let would_prune = serials.into_iter().skip(keep).collect();
            return Ok(Outcome::WouldPublish {
                serial,
                previous: found.previous,
                would_prune,
            });
        }
        let mut record = if found.published {
            tracing::info!(image = %image.name, serial, "finishing a serial an interrupted run published");
            SerialRecord {
                published_at: now(),
                upstream: Vec::new(),
                artifacts: Vec::new(),
                glance_ids: Vec::new(),
                download_cache: Some(download_cache_key(&found.listing)),
            }
        } else {
            self.build(image, &found, bake, reporter.clone()).await?
        };
        let (pruned, artifacts) = self.switch(image, &found, keep, record.clone()).await?;
        // Published locally first: a Glance outage must not hold back local consumers.
        let targets = self
            .glance_step(image, &found.tree, &serial, reporter.as_ref())
            .await?;
        let glance_ids: Vec<String> = targets.iter().flat_map(|t| t.ids.clone()).collect();
        let retired: Vec<String> = targets.iter().flat_map(|t| t.retired.clone()).collect();
        if !glance_ids.is_empty() {
            record.glance_ids = glance_ids.clone();
            let (run, name, serial) = (self.clone(), image.name.clone(), serial.clone());
            blocking::run(&self.catalog.output, move || {
                run.record(&name, &serial, record, &[])
            })
            .await?;
        }
        if let Some(command) = self.catalog.hook_for(image) {
            hook::run(
                command,
                &image.name,
                &serial,
                &found.tree.serial_dir(&serial),
                &self.catalog.output,
            )
            .await?;
        }
        Ok(Outcome::Published {
            serial,
            previous: found.previous,
            pruned,
            artifacts,
            glance_ids,
            retired,
            targets,
        })
    }

    /// Resolves the entry's source and its newest build, once, and looks at the tree.
    async fn discover(&self, image: &ImageSpec) -> Result<Found, SyncError> {
        let source = EntrySource::resolve(
            image,
            &self.catalog,
            &self.catalog_dir,
            &self.options.source,
        )?;
        let listing = source
            .discovery(&self.client)
            .listing(&runner::query(image)?, None)
            .await
            .map_err(pipeline::Error::from)?;
        let tree = ImageTree::new(&self.catalog.output, &image.name);
        let serial_dir = tree.serial_dir(&listing.serial);
        let (previous, published) = {
            let tree = tree.clone();
            blocking::run(&serial_dir.clone(), move || {
                Ok::<_, SyncError>((tree.current(), publish::verify_serial(&serial_dir)?))
            })
            .await?
        };
        let found = Found {
            source,
            listing,
            tree,
            previous,
            published,
        };
        if let Some(published) = &found.previous {
            let mut pair = [published.clone(), found.serial().to_owned()];
            found.newest_first(&mut pair);
            if pair[0] != found.serial() && !self.options.allow_downgrade {
                return Err(SyncError::Downgrade {
                    image: image.name.clone(),
                    published: published.clone(),
                    offered: found.serial().to_owned(),
                });
            }
        }
        Ok(found)
    }

    /// Makes the published serial current: switches `current`, prunes beyond `keep`, records
    /// the serial in the state file. Returns the pruned serials and the serial's artifacts.
    async fn switch(
        self: &Arc<Self>,
        image: &ImageSpec,
        found: &Found,
        keep: usize,
        record: SerialRecord,
    ) -> Result<(Vec<String>, Vec<PathBuf>), SyncError> {
        let (run, tree, name) = (self.clone(), found.tree.clone(), image.name.clone());
        let serial = found.serial().to_owned();
        let order = found.source.catalog.serial_separator;
        blocking::run(&found.tree.dir(), move || {
            tree.switch_current(&serial)?;
            let pruned = tree.prune(keep, |s| sort_serials_newest_first(s, order), false)?;
            let artifacts = publish::metadata_files(&tree.serial_dir(&serial))?
                .into_iter()
                .filter_map(|meta| {
                    let text = meta.to_string_lossy();
                    text.strip_suffix(crate::container::glance::METADATA_SUFFIX)
                        .map(PathBuf::from)
                })
                .collect::<Vec<_>>();
            run.record(&name, &serial, record, &pruned)?;
            Ok((pruned, artifacts))
        })
        .await
    }

    /// Fetches, converts and wraps the serial in staging, then renames it into the tree.
    async fn build(
        self: &Arc<Self>,
        image: &ImageSpec,
        found: &Found,
        bake: Option<BakeStep>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<SerialRecord, SyncError> {
        let serial = found.serial();
        let staging = found.tree.staging_dir(serial);
        let cache_key = download_cache_key(&found.listing);
        self.download_caches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key.clone());
        let downloads = self
            .catalog
            .output
            .join(publish::DOWNLOADS)
            .join(&cache_key);
        let needed = space_needed(image, &found.source.catalog, &found.listing)
            .saturating_mul(image.arches.len() as u64);
        {
            let (root, staging) = (self.catalog.output.clone(), staging.clone());
            let (name, serial) = (image.name.clone(), serial.to_owned());
            blocking::run(&staging.clone(), move || {
                check_space(&root, &name, &serial, needed)?;
                // Whatever a killed run left in staging is incomplete by definition.
                let _ = std::fs::remove_dir_all(&staging);
                std::fs::create_dir_all(&staging).map_err(|source| SyncError::Io {
                    path: staging.clone(),
                    source,
                })
            })
            .await?;
        }
        let prepared = if image.arches.len() > 1 {
            self.prepare_arches(image, found, &staging, &downloads, reporter)
                .await
        } else {
            let mut request = self.request(image, found, staging.clone(), downloads)?;
            // Catalog validation keeps `[image.bake]` to one architecture.
            request.bake = bake;
            let discovery: Discovery<'_> = found.source.discovery(&self.client);
            pipeline::prepare_listing(
                &self.client,
                &found.source.catalog,
                &discovery,
                &found.listing,
                request,
                reporter,
            )
            .await
            .map_err(SyncError::from)
        };
        let published = match prepared {
            Ok(prepared) => {
                let record = serial_record(&prepared, &staging, cache_key);
                let (tree, staging, serial) =
                    (found.tree.clone(), staging.clone(), serial.to_owned());
                blocking::run(&staging.clone(), move || {
                    tree.publish(&staging, &serial).map(|_| record)
                })
                .await
            }
            Err(error) => Err(error),
        };
        if published.is_err() {
            let staging = staging.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staging)).await;
        }
        published
    }

    /// The entry's `[image.bake]` recipe, read and checked; its files are relative to the
    /// catalog's folder.
    fn bake_step(&self, image: &ImageSpec) -> Result<Option<BakeStep>, SyncError> {
        let Some(config) = &image.bake else {
            return Ok(None);
        };
        let recipe = config
            .spec(&self.catalog_dir)
            .and_then(|spec| spec.load())
            .map_err(|e| pipeline::Error::from(BakeError::from(e)))?;
        crate::bake::check_recipe(&recipe).map_err(pipeline::Error::from)?;
        Ok(Some(BakeStep::new(recipe, self.options.accel)))
    }

    /// What `prepare` is asked for this entry: the build discovered, the catalog's Glance words
    /// and properties, staging as the output and the shared cache for downloads.
    pub(super) fn request<'s>(
        &self,
        image: &ImageSpec,
        found: &'s Found,
        staging: PathBuf,
        downloads: PathBuf,
    ) -> Result<PrepareRequest<'s>, SyncError> {
        let serial = found.serial();
        Ok(PrepareRequest {
            query: crate::index::Query {
                release: image.release.clone(),
                arch: image.arch().to_owned(),
                stream: found.listing.stream,
                source: Some(found.listing.source),
            },
            serial: Some(serial.to_owned()),
            kind: image.file.clone(),
            disk_format: image.disk_format,
            container: image.container_format,
            output_dir: staging,
            download_dir: Some(downloads),
            signature: found.source.signature(),
            convert_options: Options::parse(image.options.as_deref().unwrap_or(""))
                .map_err(pipeline::Error::from)?,
            image: ImageSettings {
                name: Some(format!("{}-{serial}", image.name)),
                min_ram: image.min_ram,
                visibility: self
                    .catalog
                    .glance
                    .first()
                    .and_then(|g| g.visibility.clone()),
                tags: image
                    .tags
                    .iter()
                    .cloned()
                    .chain([super::glance::tag(&image.name)])
                    .collect(),
                preset: None,
                properties: image
                    .properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain([("cloudimg_image".to_owned(), image.name.clone())])
                    .collect(),
            },
            machine: MachineSettings::default(),
            bake: None,
        })
    }
}

/// The state record of a prepared serial: its upstream files and its artifacts.
fn serial_record(prepared: &Prepared, staging: &Path, cache_key: String) -> SerialRecord {
    SerialRecord {
        published_at: now(),
        upstream: prepared
            .sources
            .iter()
            .map(|f| UpstreamRecord {
                url: f.url.clone(),
                digest: f.digest,
                size: f.size,
                signed_by: f.signed_by.clone(),
            })
            .collect(),
        artifacts: prepared
            .artifacts
            .iter()
            .map(|a| ArtifactRecord {
                path: a.path.strip_prefix(staging).unwrap_or(&a.path).to_owned(),
                disk_format: a.metadata.disk_format.to_string(),
                container_format: a.metadata.container_format.to_string(),
                size: a.metadata.digests.size,
                sha256: a.metadata.digests.sha256.clone(),
                sha512: a.metadata.digests.sha512.clone(),
                md5: a.metadata.digests.md5.clone(),
            })
            .collect(),
        glance_ids: Vec::new(),
        download_cache: Some(cache_key),
    }
}

/// What a build needs on disk: the download plus an artifact of about the same size, plus
/// headroom.
fn space_needed(image: &ImageSpec, source: &Catalog, listing: &Listing) -> u64 {
    let kind = pipeline::upstream_kind(source, image.disk_format, image.file.as_deref())
        .unwrap_or_default();
    let download = listing
        .files
        .iter()
        .find(|f| f.ftype.as_deref() == Some(kind.as_str()))
        .and_then(|f| f.size)
        .unwrap_or(0);
    download.saturating_mul(2).saturating_add(SPACE_HEADROOM)
}

/// Refuses to start a build the filesystem cannot hold; running out later still publishes
/// nothing. Blocking.
fn check_space(root: &Path, image: &str, serial: &str, needed: u64) -> Result<(), SyncError> {
    let available = publish::free_space(root)?;
    if available < needed {
        return Err(SyncError::NoSpace {
            path: root.to_owned(),
            image: image.to_owned(),
            serial: serial.to_owned(),
            needed,
            available,
        });
    }
    Ok(())
}
