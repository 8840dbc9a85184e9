//! OCI registries for a published containerDisk serial: the layout pushed (idempotently:
//! present blobs and tags cost a `HEAD` each) to `<url>/<entry name>` of every `[[registry]]`,
//! serial tags beyond the entry's `keep` removed there. Each registry is independent: one that
//! fails fails its own row.
//!
//! An entry naming several architectures (`arch = ["amd64", "arm64"]`) is one image index: the
//! first architecture's newest serial decides, each architecture's disk of that serial is
//! prepared in turn into the one staging layout (blobs side by side), then an index over their
//! manifests becomes the layout's image. An architecture missing that serial fails the entry:
//! a partial index is never published.

use std::path::Path;
use std::sync::Arc;

use super::entry::Found;
use super::publish::ImageTree;
use super::{Delivered, Run, SyncError, TargetOutcome};
use crate::catalog::user::ImageSpec;
use crate::container::ContainerFormat;
use crate::index::Query;
use crate::io::blocking;
use crate::io::progress::Reporter;
use crate::oci::layout::{self, Layout};
use crate::oci::push::{self, PushOptions};
use crate::oci::{OciError, Reference};
use crate::pipeline::{self, Prepared};
use crate::runner;

/// Whether the entry makes KubeVirt containerDisks (OCI layouts for registries).
pub(super) fn is_containerdisk(image: &ImageSpec) -> bool {
    image.container_format == ContainerFormat::ContainerDisk
}

impl Run {
    /// Prepares every architecture of a several-architecture containerDisk entry into
    /// `staging` and makes the layout one image index over them. The result lists every
    /// architecture's upstream files; `containerdisk` is the index.
    pub(super) async fn prepare_arches(
        &self,
        image: &ImageSpec,
        found: &Found,
        staging: &Path,
        downloads: &Path,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Prepared, SyncError> {
        let discovery = found.source.discovery(&self.client);
        let serial = found.listing.serial.clone();
        let mut all: Option<Prepared> = None;
        let mut manifests = Vec::new();
        for arch in &image.arches {
            let listing = if arch == image.arch() {
                found.listing.clone()
            } else {
                let query = Query {
                    arch: arch.clone(),
                    ..runner::query(image)?
                };
                discovery
                    .listing(&query, Some(&serial))
                    .await
                    .map_err(pipeline::Error::from)?
            };
            let mut request =
                self.request(image, found, staging.to_owned(), downloads.to_owned())?;
            request.query.arch = arch.clone();
            let prepared = pipeline::prepare_listing(
                &self.client,
                &found.source.catalog,
                &discovery,
                &listing,
                request,
                reporter.clone(),
            )
            .await?;
            if let Some(layout) = &prepared.containerdisk {
                manifests.extend(layout.manifests.iter().cloned());
            }
            match &mut all {
                None => all = Some(prepared),
                Some(all) => all.sources.extend(prepared.sources),
            }
        }
        let mut all = all.ok_or_else(|| {
            SyncError::from(pipeline::Error::from(OciError::invalid(
                "image",
                &image.name,
                "no architecture",
            )))
        })?;
        let ref_name = format!("{}-{serial}", found.listing.release.codename);
        let root = staging.to_owned();
        let index = blocking::run(staging, move || {
            layout::write_index(&root, &manifests, &ref_name)
                .map_err(|e| SyncError::from(pipeline::Error::from(e)))
        })
        .await?;
        tracing::info!(image = %image.name, serial, digest = %index.digest,
            arches = image.arches.len(), "image index over the architectures");
        all.containerdisk = Some(index);
        Ok(all)
    }

    /// One row per registry of the catalog for `serial` of a containerDisk entry.
    pub(super) async fn registry_step(
        &self,
        image: &ImageSpec,
        tree: &ImageTree,
        serial: &str,
        reporter: &dyn Reporter,
    ) -> Result<Vec<TargetOutcome>, SyncError> {
        if image.upload == Some(false) || self.options.registries.is_empty() {
            return Ok(Vec::new());
        }
        let dir = tree.serial_dir(serial);
        let layout = blocking::run(&dir.clone(), move || {
            Layout::open(&dir, None).map_err(|e| SyncError::from(crate::pipeline::Error::from(e)))
        })
        .await?;
        let mut rows = Vec::new();
        for registry in &self.options.registries {
            let result = async {
                let destination = Reference::parse(&format!(
                    "{}/{}",
                    registry.url.trim_end_matches('/'),
                    image.name.to_ascii_lowercase()
                ))?;
                let options = PushOptions {
                    insecure: registry.insecure,
                    chunk_size: None,
                    keep: Some(self.catalog.keep_for(image)),
                    client: self.options.upload.client.clone(),
                };
                push::push(
                    &layout,
                    std::slice::from_ref(&destination),
                    &[],
                    &options,
                    &self.options.auth_files,
                    reporter,
                )
                .await
            }
            .await;
            let result = result.map(|pushed| Delivered {
                ids: pushed.iter().map(|p| p.digest.clone()).collect(),
                bytes_sent: pushed.iter().map(|p| p.bytes_sent).sum(),
                retired: pushed.into_iter().flat_map(|p| p.retired).collect(),
            });
            rows.push(TargetOutcome::of(
                &image.name,
                &registry.name,
                "registry",
                result,
            ));
        }
        Ok(rows)
    }
}
