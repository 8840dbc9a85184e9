//! `sync`: the unattended mode. Per-entry failures are reported and turned into one exit
//! status; they never stop the other entries.

use std::path::Path;

use cloudimg::catalog::user::UserCatalog;
use cloudimg::pipeline::Error;
use cloudimg::sync::{self, Outcome, SyncOptions};

use super::args::{GlanceArgs, Global, SyncArgs, DEFAULT_IMPORT_TIMEOUT_SECONDS};
use super::fetch::{runtime, Context};
use super::{progress, runs, upload};

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
        accel: args.accel.choice(),
        source: runs::source_options(global, &context, args.no_verify_signature)?,
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
                os_project_name: None,
                targets: Vec::new(),
                user_catalog: None,
                // sync owns its names (`<entry>-<serial>`) and retires old images itself.
                allow_duplicates: true,
            },
        )?,
    };
    let reporter = progress::reporter(global.quiet);
    let result = runtime()?.block_on(sync::sync(
        std::sync::Arc::new(context.client),
        catalog,
        catalog_dir,
        options,
        reporter,
    ));
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => return Ok(runs::not_started(&error)),
    };
    Ok(runs::finished(global, &summary, &summary.entries, lines))
}

/// An entry's line, then one line per Glance target.
fn lines(outcome: &Outcome) -> String {
    let mut text = match outcome {
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
    if let Outcome::UpToDate { targets, .. } | Outcome::Published { targets, .. } = outcome {
        for target in targets {
            let row = match &target.error {
                Some(error) => format!("{} {}: FAILED {error}", target.kind, target.target),
                None => format!(
                    "{} {}: {} image(s), {} bytes sent, {} retired",
                    target.kind,
                    target.target,
                    target.ids.len(),
                    target.bytes_sent,
                    target.retired.len()
                ),
            };
            text.push_str(&format!("\n{:<24}   {row}", ""));
        }
    }
    text
}
