//! `mirror`: a verified, servable copy of a user catalog's images. Like `sync`, per-entry
//! failures are reported and turned into one exit status.

use std::path::Path;

use cloudimg::catalog::user::UserCatalog;
use cloudimg::mirror::{self, MirrorOptions, Outcome, PlannedOutcome};
use cloudimg::pipeline::Error;

use super::args::{Global, MirrorArgs};
use super::fetch::{runtime, Context};
use super::{progress, runs};

pub fn mirror(global: &Global, args: MirrorArgs) -> Result<i32, Error> {
    let catalog = UserCatalog::from_path(&args.user_catalog)?;
    let catalog_dir = args
        .user_catalog
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned();
    let context = if args.dry_run {
        Context::uncached(global)?
    } else {
        Context::new(global)?
    };
    let options = MirrorOptions {
        only: args.only.clone(),
        source: runs::source_options(global, &context, args.no_verify_signature)?,
    };
    if args.dry_run {
        let result = runtime()?.block_on(mirror::preview(
            &context.client,
            &catalog,
            &catalog_dir,
            &args.dir,
            &options,
        ));
        let preview = match result {
            Ok(preview) => preview,
            Err(error) => return Ok(runs::not_started(&error)),
        };
        return Ok(runs::finished(
            global,
            &preview,
            &preview.entries,
            |outcome| match outcome {
                PlannedOutcome::WouldMirror {
                    serials,
                    would_fetch,
                    present,
                    would_prune,
                } => {
                    let mut line = format!(
                        "would mirror {} ({} files to fetch, {present} present)",
                        serials.join(", "),
                        would_fetch.len()
                    );
                    if !would_prune.is_empty() {
                        line.push_str(&format!(" (would prune {})", would_prune.join(", ")));
                    }
                    line
                }
                PlannedOutcome::Failed { error } => format!("FAILED      {error}"),
            },
        ));
    }
    let reporter = progress::reporter(global.quiet);
    let result = runtime()?.block_on(mirror::mirror(
        &context.client,
        &catalog,
        &catalog_dir,
        &args.dir,
        &options,
        reporter.as_ref(),
    ));
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => return Ok(runs::not_started(&error)),
    };
    Ok(runs::finished(
        global,
        &summary,
        &summary.entries,
        |outcome| match outcome {
            Outcome::Mirrored {
                serials,
                pruned,
                files,
            } => {
                let fetched = files.iter().filter(|f| !f.up_to_date).count();
                let mut line = format!(
                    "mirrored    {} ({fetched} of {} files fetched)",
                    serials.join(", "),
                    files.len()
                );
                if !pruned.is_empty() {
                    line.push_str(&format!(" (pruned {})", pruned.join(", ")));
                }
                line
            }
            Outcome::Failed { error } => format!("FAILED      {error}"),
        },
    ))
}
