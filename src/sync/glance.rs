//! Glance for a published serial: its artifacts uploaded (idempotently), and the images of
//! serials no longer published retired as the catalog says (hide, deactivate, delete).

use super::publish::{self, ImageTree};
use super::{Run, SyncError};
use crate::catalog::user::{ImageSpec, Retire};
use crate::io::blocking;
use crate::io::progress::Reporter;
use crate::upload::ImageFilter;

/// The tag that marks an image as one of an entry's serials in Glance.
pub(super) fn tag(image: &str) -> String {
    format!("cloudimg:{image}")
}

impl Run {
    /// Uploads the serial's artifacts and retires the Glance images of serials no longer
    /// published, never those of `serial`. Returns the serial's image ids and the retired ones;
    /// nothing when the catalog has no Glance target or the entry opts out.
    pub(super) async fn glance_step(
        &self,
        image: &ImageSpec,
        tree: &ImageTree,
        serial: &str,
        reporter: &dyn Reporter,
    ) -> Result<(Vec<String>, Vec<String>), SyncError> {
        let (Some(session), Some((_, upload))) = (&self.glance, &self.options.glance) else {
            return Ok((Vec::new(), Vec::new()));
        };
        if image.upload == Some(false) {
            return Ok((Vec::new(), Vec::new()));
        }
        let glance = session
            .as_ref()
            .map_err(|e| SyncError::GlanceUnavailable(e.clone()))?;
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
        let uploaded = glance.upload_artifacts(&files, upload, reporter).await?;
        let ids: Vec<String> = uploaded.iter().map(|u| u.id.clone()).collect();
        let policy = self
            .catalog
            .glance
            .as_ref()
            .map(|g| g.retire)
            .unwrap_or_default();
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
                if of_serial == serial || kept.iter().any(|k| k == of_serial) || done {
                    continue;
                }
                glance.retire(&candidate.id, policy).await?;
                tracing::info!(image = %image.name, id = %candidate.id, serial = of_serial,
                    policy = ?policy, "retired from Glance");
                retired.push(candidate.id);
            }
        }
        Ok((ids, retired))
    }
}
