//! `upload`: send prepared artifacts to Glance and print one line per image. `prepare --upload`
//! shares the set-up and the output.

use std::time::Duration;

use cloudimg::catalog::user::{GlanceConfig, UserCatalog};
use cloudimg::fetch::ClientConfig;
use cloudimg::pipeline::{Error, Usage};
use cloudimg::upload::{
    self, GlanceTarget, NamedTarget, Outcome, Planned, PlannedOutcome, Retire, TargetUpload,
    UploadMethod, UploadOptions, Uploaded,
};

use super::args::{GlanceArgs, Global, UploadArgs};
use super::{print_json, progress};

/// The Glance endpoint and credentials, and the upload settings, from the options and `OS_*`.
pub(super) fn target_and_options(
    global: &Global,
    args: &GlanceArgs,
) -> Result<(GlanceTarget, UploadOptions), Error> {
    // The token is read here rather than by clap so that `--help` never shows its value.
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("OS_TOKEN").ok().filter(|t| !t.is_empty()));
    let target = GlanceTarget::from_env(
        args.glance.as_deref(),
        token.as_deref(),
        args.os_project_name.as_deref(),
    )?;
    Ok((target, upload_options(global, args)?))
}

/// Retries, method, import timeout and trust settings (`--cacert`, `--insecure`) of uploads.
/// Each target adds its own CA and `verify` (`OS_CACERT`, clouds.yaml) when it connects.
pub(super) fn upload_options(global: &Global, args: &GlanceArgs) -> Result<UploadOptions, Error> {
    Ok(UploadOptions {
        client: ClientConfig {
            retries: global.retries,
            stall_timeout: Duration::from_secs(global.stall_timeout.max(1)),
            tls: super::fetch::tls(global)?,
            ..ClientConfig::default()
        },
        method: if args.import {
            UploadMethod::Import
        } else {
            UploadMethod::Direct
        },
        import_timeout: Duration::from_secs(args.import_timeout),
        visibility: None,
        allow_duplicates: args.allow_duplicates,
    })
}

/// A catalog's `[[glance]]` table as a target. A lone target without credentials of its own
/// takes them from the environment, as `upload` does; named ones never borrow them.
pub(super) fn catalog_target(config: &GlanceConfig, lone: bool) -> Result<NamedTarget, Error> {
    let inherit = lone && !config.has_own_credentials();
    let target = GlanceTarget::from_settings(&config.os_variables(), inherit)?;
    Ok(NamedTarget {
        name: config.name().to_owned(),
        target,
        retire: config.retire,
        visibility: config.visibility.clone(),
    })
}

/// The targets `--target`, `--os-cloud` and `--os-region-name` name (each scoped to
/// `--os-project-name` when given), else the one the environment (and `--glance`, `--token`,
/// `--os-project-name`) describes.
pub(super) fn targets(global: &Global, args: &GlanceArgs) -> Result<Vec<NamedTarget>, Error> {
    if !args.targets.is_empty() {
        let path = args.user_catalog.as_ref().ok_or(Usage::Missing {
            needed_by: "--target",
            what: "--user-catalog FILE",
        })?;
        let catalog = UserCatalog::from_path(path)?;
        let lone = catalog.glance.len() == 1;
        return args
            .targets
            .iter()
            .map(|name| {
                let config = catalog
                    .glance
                    .iter()
                    .find(|config| config.name() == name)
                    .ok_or_else(|| Usage::UnknownTarget {
                        name: name.clone(),
                        catalog: path.clone(),
                        known: catalog.glance.iter().map(|c| c.name().to_owned()).collect(),
                    })?;
                catalog_target(config, lone)
            })
            .collect();
    }
    let pairs = cloud_region_pairs(&args.os_cloud, &args.os_region_name)?;
    if pairs.is_empty() {
        let (target, _) = target_and_options(global, args)?;
        return Ok(vec![NamedTarget {
            name: cloudimg::catalog::user::DEFAULT_GLANCE_NAME.to_owned(),
            target,
            retire: Retire::default(),
            visibility: None,
        }]);
    }
    pairs
        .into_iter()
        .map(|(cloud, region)| {
            let mut settings = Vec::new();
            if let Some(cloud) = &cloud {
                settings.push(("OS_CLOUD", cloud.as_str()));
            }
            if let Some(region) = &region {
                settings.push(("OS_REGION_NAME", region.as_str()));
            }
            if let Some(project) = &args.os_project_name {
                settings.push(("OS_PROJECT_NAME", project.as_str()));
            }
            // Regions alone split the environment's cloud or credentials.
            let target = GlanceTarget::from_settings(&settings, cloud.is_none())?;
            let name = match (&cloud, &region) {
                (Some(cloud), Some(region)) => format!("{cloud}/{region}"),
                (Some(name), None) | (None, Some(name)) => name.clone(),
                (None, None) => cloudimg::catalog::user::DEFAULT_GLANCE_NAME.to_owned(),
            };
            Ok(NamedTarget {
                name,
                target,
                retire: Retire::default(),
                visibility: None,
            })
        })
        .collect()
}

/// A cloud and a region of one target, either possibly left to the environment.
type CloudRegion = (Option<String>, Option<String>);

/// Pairs repeated `--os-cloud` and `--os-region-name`: position by position, or one of them
/// given once and applied to each of the other.
fn cloud_region_pairs(clouds: &[String], regions: &[String]) -> Result<Vec<CloudRegion>, Error> {
    let some = |v: &String| Some(v.clone());
    Ok(match (clouds.len(), regions.len()) {
        (0, _) => regions.iter().map(|r| (None, some(r))).collect(),
        (_, 0) => clouds.iter().map(|c| (some(c), None)).collect(),
        (1, _) => regions
            .iter()
            .map(|r| (some(&clouds[0]), some(r)))
            .collect(),
        (_, 1) => clouds
            .iter()
            .map(|c| (some(c), some(&regions[0])))
            .collect(),
        (c, r) if c == r => clouds
            .iter()
            .zip(regions)
            .map(|(c, r)| (some(c), some(r)))
            .collect(),
        (c, r) => {
            return Err(Usage::Conflict {
                option: format!("--os-cloud ×{c}"),
                other: format!("--os-region-name ×{r}"),
                why: "give them in pairs, or one of them once".into(),
            }
            .into())
        }
    })
}

/// One line per target and image; failed targets with their reason.
pub(super) fn print_target_uploads(rows: &[TargetUpload]) {
    for row in rows {
        match &row.error {
            Some(error) => outln!("{}: FAILED {error}", row.target),
            None => {
                outln!("{}:", row.target);
                for image in &row.images {
                    let note = match image.outcome {
                        Outcome::Uploaded => "",
                        Outcome::AlreadyPresent => " (already present)",
                    };
                    outln!("  {} {} {}{note}", image.name, image.id, image.status);
                }
            }
        }
    }
}

/// The exit status of a multi-target upload: 5 when some target failed.
pub(super) fn targets_status(rows: &[TargetUpload]) -> i32 {
    if rows.iter().any(|row| row.error.is_some()) {
        super::runs::EXIT_SOME_FAILED
    } else {
        0
    }
}

/// One `name id status` line per image.
pub(super) fn print_uploaded(images: &[Uploaded]) {
    for image in images {
        let note = match image.outcome {
            Outcome::Uploaded => "",
            Outcome::AlreadyPresent => " (already present)",
        };
        outln!("{} {} {}{note}", image.name, image.id, image.status);
    }
}

/// One target of a dry run: what it would receive, or why it cannot be asked.
#[derive(serde::Serialize)]
struct PlannedTarget {
    target: String,
    images: Vec<Planned>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `upload --dry-run`: every target asked what it holds, nothing created. A target that
/// cannot be asked fails its row (exit 5 with several, its own status alone); a name taken by
/// other content is the refusal the upload would meet (exit 7).
fn dry_run(global: &Global, args: &UploadArgs) -> Result<i32, Error> {
    let files = upload::metadata_files(&args.path)?;
    let options = upload_options(global, &args.glance)?;
    let named = args.glance.names_targets();
    let runtime = super::fetch::runtime()?;
    let mut rows = Vec::new();
    for target in targets(global, &args.glance)? {
        let found = runtime.block_on(upload::preview_artifacts(&target.target, &files, &options));
        let (images, error) = match found {
            Ok(images) => (images, None),
            Err(error) if !named => return Err(error.into()),
            Err(error) => (Vec::new(), Some(cloudimg::error::chain(&error))),
        };
        rows.push(PlannedTarget {
            target: target.name,
            images,
            error,
        });
    }
    if global.json {
        print_json(&rows);
    } else if !global.quiet {
        for row in &rows {
            if let Some(error) = &row.error {
                outln!("{}: FAILED {error}", row.target);
                continue;
            }
            for image in &row.images {
                let what = match image.outcome {
                    PlannedOutcome::WouldUpload => "would upload".to_owned(),
                    PlannedOutcome::AlreadyPresent => format!(
                        "already present as {}",
                        image.id.as_deref().unwrap_or_default()
                    ),
                };
                outln!(
                    "{}: {} ({} bytes, {}): {what}",
                    row.target,
                    image.name,
                    image.size,
                    image.metadata.display()
                );
            }
        }
    }
    Ok(if rows.iter().any(|row| row.error.is_some()) {
        super::runs::EXIT_SOME_FAILED
    } else {
        0
    })
}

pub fn upload(global: &Global, args: UploadArgs) -> Result<i32, Error> {
    if args.dry_run {
        return dry_run(global, &args);
    }
    if args.glance.names_targets() {
        let targets = targets(global, &args.glance)?;
        let options = upload_options(global, &args.glance)?;
        let files = upload::metadata_files(&args.path)?;
        let reporter = progress::reporter(global.quiet);
        let rows = super::fetch::runtime()?.block_on(upload::upload_to_targets(
            &targets,
            &files,
            &options,
            reporter.as_ref(),
        ))?;
        if global.json {
            print_json(&rows);
        } else {
            print_target_uploads(&rows);
        }
        return Ok(targets_status(&rows));
    }
    let (target, options) = target_and_options(global, &args.glance)?;
    let files = upload::metadata_files(&args.path)?;
    let reporter = progress::reporter(global.quiet);
    let runtime = super::fetch::runtime()?;
    let images = runtime.block_on(upload::upload_artifacts(
        &target,
        &files,
        &options,
        reporter.as_ref(),
    ))?;
    if global.json {
        print_json(&images);
    } else {
        print_uploaded(&images);
    }
    Ok(0)
}
