//! Glance for a published serial: its artifacts uploaded (idempotently) to every target of the
//! catalog, and there the images of serials no longer published retired as the target says
//! (hide, deactivate, delete). Each target is independent: one that fails fails its own row.

use std::path::PathBuf;

use super::publish::{self, ImageTree};
use super::{Delivered, Run, SyncError, TargetOutcome};
use crate::catalog::user::{ImageSpec, Retire};
use crate::io::blocking;
use crate::io::progress::Reporter;
use crate::upload::{Glance, ImageFilter, NamedTarget, Outcome as UploadOutcome, UploadOptions};

/// The tag that marks an image as one of an entry's serials in Glance.
pub(super) fn tag(image: &str) -> String {
    format!("cloudimg:{image}")
}

impl Run {
    /// Uploads the serial's artifacts (idempotently) to every Glance target and retires there
    /// the images of serials no longer published, and those of `serial` that its artifacts
    /// superseded (a rebake), never the ones just uploaded or found. One row per target;
    /// a target that fails (down, refusing) fails its row only. Nothing when the catalog has no
    /// Glance target or the entry opts out.
    pub(super) async fn glance_step(
        &self,
        image: &ImageSpec,
        tree: &ImageTree,
        serial: &str,
        reporter: &dyn Reporter,
    ) -> Result<Vec<TargetOutcome>, SyncError> {
        if super::registry::is_containerdisk(image) {
            return self.registry_step(image, tree, serial, reporter).await;
        }
        if image.upload == Some(false) || self.glance.is_empty() {
            return Ok(Vec::new());
        }
        let (files, kept) = {
            let (tree, serial) = (tree.clone(), serial.to_owned());
            blocking::run(&tree.dir(), move || {
                Ok::<_, SyncError>((
                    publish::metadata_files(&tree.serial_dir(&serial))?,
                    tree.serials()?,
                ))
            })
            .await?
        };
        let mut rows = Vec::new();
        for (named, session) in self.options.glance.iter().zip(&self.glance) {
            let result = match session {
                Ok(glance) => {
                    let place = Place {
                        files: &files,
                        serial,
                        kept: &kept,
                    };
                    self.glance_target(image, glance, named, &place, reporter)
                        .await
                }
                Err(error) => Err(SyncError::GlanceUnavailable(error.clone())),
            };
            rows.push(TargetOutcome::of(
                &image.name,
                &named.name,
                "glance",
                result,
            ));
        }
        Ok(rows)
    }

    /// [`Run::glance_step`] for one target: the serial's image ids, the retired ones, the bytes
    /// sent.
    async fn glance_target(
        &self,
        image: &ImageSpec,
        glance: &Glance,
        named: &NamedTarget,
        place: &Place<'_>,
        reporter: &dyn Reporter,
    ) -> Result<Delivered, SyncError> {
        let upload = UploadOptions {
            visibility: named.visibility.clone(),
            ..self.options.upload.clone()
        };
        let uploaded = glance
            .upload_artifacts(place.files, &upload, reporter)
            .await?;
        let ids: Vec<String> = uploaded.iter().map(|u| u.id.clone()).collect();
        let bytes_sent = uploaded
            .iter()
            .filter(|u| u.outcome == UploadOutcome::Uploaded)
            .map(|u| u.size)
            .sum();
        let policy = named.retire;
        let mut retired = Vec::new();
        for hidden in [false, true] {
            let filter = ImageFilter {
                tags: vec![tag(&image.name)],
                hidden,
                ..ImageFilter::default()
            };
            for candidate in glance.images(&filter).await? {
                let Some(of_serial) = candidate.property("cloudimg_serial") else {
                    continue;
                };
                let done = match policy {
                    Retire::Hide => candidate.os_hidden,
                    Retire::Deactivate => candidate.status == "deactivated",
                    Retire::Delete => false,
                };
                // An image of the current serial that this upload did not name was
                // superseded (baked again with another recipe): it is retired like an old
                // serial's, so one image carries the serial's name.
                let superseded = of_serial == place.serial && !ids.contains(&candidate.id);
                let kept = of_serial == place.serial || place.kept.iter().any(|k| k == of_serial);
                if done || (kept && !superseded) {
                    continue;
                }
                glance.retire(&candidate.id, policy).await?;
                tracing::info!(image = %image.name, target = %named.name, id = %candidate.id,
                    serial = of_serial, policy = ?policy, "retired from Glance");
                retired.push(candidate.id);
            }
        }
        Ok(Delivered {
            ids,
            retired,
            bytes_sent,
        })
    }
}

/// What a target receives: the serial's metadata files, and the serials still published (their
/// images stay).
struct Place<'a> {
    files: &'a [PathBuf],
    serial: &'a str,
    kept: &'a [String],
}
