//! `sync`: the unattended mode. Per-entry failures are reported and turned into one exit
//! status; they never stop the other entries.

use std::path::Path;

use cloudimg::catalog::user::UserCatalog;
use cloudimg::pipeline::Error;
use cloudimg::sync::{self, Outcome, SyncError, SyncOptions};

use super::args::{GlanceArgs, Global, SyncArgs, DEFAULT_IMPORT_TIMEOUT_SECONDS};
use super::fetch::{runtime, Context};
use super::{print_json, progress, upload};

/// Some entries failed; the others were done.
pub const EXIT_SOME_FAILED: i32 = 5;
/// Another sync holds the output root's lock.
pub const EXIT_LOCKED: i32 = 6;

pub fn sync(global: &Global, args: SyncArgs) -> Result<i32, Error> {
    let catalog = UserCatalog::from_path(&args.user_catalog)?;
    let catalog_dir = args
        .user_catalog
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned();
    let context = Context::new(global)?;
    let options = SyncOptions {
        dry_run: args.dry_run,
        jobs: args.jobs,
        only: args.only.clone(),
        wait: args.wait,
        allow_downgrade: args.allow_downgrade,
        // An explicit --mirror (or CLOUDIMG_MIRROR) serves every source.
        mirror: global.mirror.is_some().then(|| context.mirror.clone()),
        keyring: match &global.keyring {
            Some(_) => Some(context.keyring(global)?),
            None => None,
        },
        skip_signature: args.no_verify_signature,
        glance: catalog
            .glance
            .iter()
            .map(|config| upload::catalog_target(config, catalog.glance.len() == 1))
            .collect::<Result<_, _>>()?,
        registries: catalog.registry.clone(),
        auth_files: cloudimg::oci::auth::AuthFiles::from_env(),
        upload: upload::upload_options(
            global,
            &GlanceArgs {
                glance: None,
                token: None,
                import: false,
                import_timeout: DEFAULT_IMPORT_TIMEOUT_SECONDS,
                os_cloud: Vec::new(),
                os_region_name: Vec::new(),
                targets: Vec::new(),
                user_catalog: None,
            },
        )?,
    };
    let reporter = progress::reporter(global.quiet);
    let result = runtime()?.block_on(sync::sync(
        &context.client,
        &catalog,
        &catalog_dir,
        &options,
        reporter.as_ref(),
    ));
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            tracing::error!("{}", cloudimg::error::chain(&error));
            return Ok(match error {
                SyncError::Locked { .. } => EXIT_LOCKED,
                other => other.kind().exit_code(),
            });
        }
    };
    if global.json {
        print_json(&summary);
    } else if !global.quiet {
        for entry in &summary.entries {
            let line = match &entry.outcome {
                Outcome::UpToDate { serial, .. } => format!("up to date  {serial}"),
                Outcome::Published { serial, pruned, .. } if pruned.is_empty() => {
                    format!("published   {serial}")
                }
                Outcome::Published { serial, pruned, .. } => {
                    format!("published   {serial} (pruned {})", pruned.join(", "))
                }
                Outcome::WouldPublish {
                    serial,
                    would_prune,
                    ..
                } if would_prune.is_empty() => format!("would publish {serial}"),
                Outcome::WouldPublish {
                    serial,
                    would_prune,
                    ..
                } => format!(
                    "would publish {serial} (and prune {})",
                    would_prune.join(", ")
                ),
                Outcome::Failed { error, .. } => format!("FAILED      {error}"),
            };
            outln!("{:<24} {line}", entry.name);
            if let Outcome::UpToDate { targets, .. } | Outcome::Published { targets, .. } =
                &entry.outcome
            {
                for target in targets {
                    match &target.error {
                        Some(error) => {
                            outln!(
                                "{:<24}   {} {}: FAILED {error}",
                                "",
                                target.kind,
                                target.target
                            )
                        }
                        None => outln!(
                            "{:<24}   {} {}: {} image(s), {} retired",
                            "",
                            target.kind,
                            target.target,
                            target.ids.len(),
                            target.retired.len()
                        ),
                    }
                }
            }
        }
    }
    Ok(if summary.failed() > 0 {
        EXIT_SOME_FAILED
    } else {
        0
    })
}
