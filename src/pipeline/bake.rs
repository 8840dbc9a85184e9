//! `prepare --bake` and a catalog's `[image.bake]`: the verified upstream disk is baked (see
//! [`crate::bake`]) between verification and conversion, so that what is converted, wrapped and
//! described for Glance is the golden image, and its metadata says where it came from.
//!
//! The bake runs on a blocking thread into a hidden folder of the output directory
//! (`.<upstream file>.bake/`) holding the baked disk — an uncompressed qcow2 under the upstream
//! file's own name, so the artifact is named as it would be unbaked — the bake's working folder
//! and its console log. The build then starts from the baked disk instead of the download. The
//! artifact's `.glance.json` keeps the upstream provenance every artifact has
//! (`cloudimg_source_url`, `cloudimg_serial`, `cloudimg_source_<digest>`) and adds
//! [`BAKED_PROPERTY`], [`RECIPE_DIGEST_PROPERTY`] and [`BOOT_TESTED_PROPERTY`]. The console log
//! is kept beside the artifact (`<artifact>.bake.log`); the hidden folder is removed whatever
//! happens.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{Error, Fetched, Refusal};
use crate::bake::qemu::{self, AccelChoice, Arch};
use crate::bake::recipe::Recipe;
use crate::bake::{self as baking, BakeRequest, Timings};
use crate::io::blocking;
use crate::io::progress::Reporter;

/// Glance property of a baked artifact: `true`.
pub const BAKED_PROPERTY: &str = "cloudimg_baked";
/// Glance property: the recipe's digest ([`Recipe::digest`]), which `sync` compares to decide
/// whether a published serial must be baked again.
pub const RECIPE_DIGEST_PROPERTY: &str = "cloudimg_recipe_sha256";
/// Glance property: whether the result passed the boot test (`false`: it was skipped).
pub const BOOT_TESTED_PROPERTY: &str = "cloudimg_boot_tested";

/// Suffix of the hidden folder a bake works in, after a dot and the upstream file name.
const WORK_SUFFIX: &str = ".bake";

/// What `prepare` bakes: the recipe, read and checked, and how its guest is accelerated.
#[derive(Clone, Debug)]
pub struct BakeStep {
    pub recipe: Recipe,
    pub accel: AccelChoice,
    /// Set by the caller's Ctrl-C handler: stops the guest and removes its working copy.
    pub cancel: Arc<AtomicBool>,
}

impl BakeStep {
    pub fn new(recipe: Recipe, accel: AccelChoice) -> BakeStep {
        BakeStep {
            recipe,
            accel,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What `prepare --json` says about a bake.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BakeReport {
    pub recipe_digest: String,
    pub accel: &'static str,
    pub boot_tested: bool,
    /// The console log, beside the artifact.
    pub log: PathBuf,
    pub timings: Timings,
    pub warnings: Vec<String>,
}

/// A baked disk in its hidden folder, standing in for the download; the folder is removed when
/// this is dropped.
pub(super) struct BakedSource {
    dir: PathBuf,
    log: PathBuf,
    /// The download with `path` pointing at the baked disk.
    pub fetched: Fetched,
    /// The provenance the artifact's metadata gains.
    pub properties: Vec<(String, String)>,
    report: BakeReport,
}

/// Bakes the verified download `fetched` of a build for `arch`, on a blocking thread.
pub(super) async fn bake_source(
    step: &BakeStep,
    fetched: &Fetched,
    output_dir: &Path,
    arch: &str,
    reporter: Arc<dyn Reporter>,
) -> Result<BakedSource, Error> {
    let guest_arch = Arch::from_name(arch).ok_or_else(|| Refusal::BakeArch {
        arch: arch.to_owned(),
    })?;
    let name = fetched
        .path
        .file_name()
        .ok_or_else(|| Refusal::NotUtf8 {
            path: fetched.path.clone(),
        })?
        .to_owned();
    let mut dir_name = std::ffi::OsString::from(".");
    dir_name.push(&name);
    dir_name.push(WORK_SUFFIX);
    let dir = output_dir.join(dir_name);
    let (accel, why) = qemu::choose_accel(step.accel, guest_arch);
    tracing::info!("bake: accelerator {} ({why})", accel.name());
    let request = BakeRequest::new(
        step.recipe.clone(),
        guest_arch,
        accel,
        fetched.path.clone(),
        dir.join(&name),
    );
    let cancel = Arc::clone(&step.cancel);
    let work_dir = dir.clone();
    let baked = blocking::run(&fetched.path, move || {
        // A folder left by a killed run is ours and incomplete by definition.
        let _ = std::fs::remove_dir_all(&work_dir);
        std::fs::create_dir_all(&work_dir).map_err(|source| Error::Io {
            path: work_dir.clone(),
            source,
        })?;
        let baked = baking::bake(&request, reporter.as_ref(), &cancel).map_err(|mut error| {
            // The console log of a failed bake is kept beside the folder, for reading.
            let mut kept = name.clone();
            kept.push(baking::LOG_SUFFIX);
            let kept = work_dir.with_file_name(kept);
            if std::fs::rename(baking::log_path(&request.output), &kept).is_ok() {
                if let Some(console) = error.console_mut() {
                    console.log = Some(kept);
                }
            }
            let _ = std::fs::remove_dir_all(&work_dir);
            error
        })?;
        Ok::<_, Error>(baked)
    })
    .await?;
    let mut source = fetched.clone();
    source.path = baked.output.clone();
    let properties = vec![
        (BAKED_PROPERTY.to_owned(), "true".to_owned()),
        (
            RECIPE_DIGEST_PROPERTY.to_owned(),
            baked.recipe_digest.clone(),
        ),
        (
            BOOT_TESTED_PROPERTY.to_owned(),
            baked.boot_tested.to_string(),
        ),
    ];
    Ok(BakedSource {
        dir,
        log: baked.log.clone(),
        fetched: source,
        properties,
        report: BakeReport {
            recipe_digest: baked.recipe_digest,
            accel: baked.accel,
            boot_tested: baked.boot_tested,
            log: baked.log,
            timings: baked.timings,
            warnings: baked.warnings,
        },
    })
}

impl BakedSource {
    /// Once the artifact at `artifact` is built: keeps the console log beside it
    /// (`<artifact>.bake.log`) and removes the hidden folder.
    pub(super) async fn finish(mut self, artifact: &Path) -> Result<BakeReport, Error> {
        let log = baking::log_path(artifact);
        tokio::fs::rename(&self.log, &log)
            .await
            .map_err(|source| Error::Io {
                path: log.clone(),
                source,
            })?;
        let dir = std::mem::take(&mut self.dir);
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|source| Error::Io { path: dir, source })?;
        let mut report = self.report.clone();
        report.log = log;
        Ok(report)
    }
}

impl Drop for BakedSource {
    /// A build that failed after the bake: the hidden folder goes, on a blocking thread when
    /// there is a runtime to ask.
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let dir = std::mem::take(&mut self.dir);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || std::fs::remove_dir_all(dir));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
