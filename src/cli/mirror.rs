//! `mirror`: a verified, servable copy of a user catalog's images. Like `sync`, per-entry
//! failures are reported and turned into one exit status.

use std::path::Path;

use cloudimg::catalog::user::UserCatalog;
use cloudimg::mirror::{self, MirrorError, MirrorOptions, Outcome};
use cloudimg::pipeline::Error;

use super::args::{Global, MirrorArgs};
use super::fetch::{runtime, Context};
use super::sync::{EXIT_LOCKED, EXIT_SOME_FAILED};
use super::{print_json, progress};

pub fn mirror(global: &Global, args: MirrorArgs) -> Result<i32, Error> {
    let catalog = UserCatalog::from_path(&args.user_catalog)?;
    let catalog_dir = args
        .user_catalog
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned();
    let context = Context::new(global)?;
    let options = MirrorOptions {
        only: args.only.clone(),
        // An explicit --mirror (or CLOUDIMG_MIRROR) is the upstream of every source.
        upstream: global.mirror.is_some().then(|| context.mirror.clone()),
        keyring: match &global.keyring {
            Some(_) => Some(context.keyring(global)?),
            None => None,
        },
        skip_signature: args.no_verify_signature,
    };
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
        Err(error) => {
            tracing::error!("{}", cloudimg::error::chain(&error));
            return Ok(match error {
                MirrorError::Locked { .. } => EXIT_LOCKED,
                other => other.kind().exit_code(),
            });
        }
    };
    if global.json {
        print_json(&summary);
    } else if !global.quiet {
        for entry in &summary.entries {
            let line = match &entry.outcome {
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
            };
            outln!("{:<24} {line}", entry.name);
        }
    }
    Ok(if summary.failed() > 0 {
        EXIT_SOME_FAILED
    } else {
        0
    })
}
