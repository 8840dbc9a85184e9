//! OCI registries for a published containerDisk serial: the layout pushed (idempotently:
//! present blobs and tags cost a `HEAD` each) to `<url>/<entry name>` of every `[[registry]]`,
//! serial tags beyond the entry's `keep` removed there. Each registry is independent: one that
//! fails fails its own row.

use super::publish::ImageTree;
use super::{Run, SyncError, TargetOutcome};
use crate::catalog::user::ImageSpec;
use crate::container::ContainerFormat;
use crate::io::blocking;
use crate::io::progress::Reporter;
use crate::oci::layout::Layout;
use crate::oci::push::{self, PushOptions};
use crate::oci::Reference;

/// Whether the entry makes KubeVirt containerDisks (OCI layouts for registries).
pub(super) fn is_containerdisk(image: &ImageSpec) -> bool {
    image.container_format == ContainerFormat::ContainerDisk
}

impl Run {
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
            rows.push(match result {
                Ok(pushed) => TargetOutcome {
                    target: registry.name.clone(),
                    kind: "registry",
                    status: "ok",
                    ids: pushed.iter().map(|p| p.digest.clone()).collect(),
                    bytes_sent: pushed.iter().map(|p| p.bytes_sent).sum(),
                    retired: pushed.into_iter().flat_map(|p| p.retired).collect(),
                    error: None,
                },
                Err(error) => {
                    let text = crate::error::chain(&error);
                    tracing::error!(image = %image.name, target = %registry.name, "{text}");
                    TargetOutcome {
                        target: registry.name.clone(),
                        kind: "registry",
                        status: "failed",
                        ids: Vec::new(),
                        retired: Vec::new(),
                        bytes_sent: 0,
                        error: Some(text),
                    }
                }
            });
        }
        Ok(rows)
    }
}
