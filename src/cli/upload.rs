//! `upload`: send prepared artifacts to Glance and print one line per image. `prepare --upload`
//! shares the set-up and the output.

use std::time::Duration;

use cloudimg::fetch::ClientConfig;
use cloudimg::pipeline::Error;
use cloudimg::upload::{self, GlanceTarget, Outcome, UploadMethod, UploadOptions, Uploaded};

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
    let target = GlanceTarget::from_env(args.glance.as_deref(), token.as_deref())?;
    let options = UploadOptions {
        client: ClientConfig {
            retries: global.retries,
            stall_timeout: Duration::from_secs(global.stall_timeout.max(1)),
            ..ClientConfig::default()
        },
        method: if args.import {
            UploadMethod::Import
        } else {
            UploadMethod::Direct
        },
        import_timeout: Duration::from_secs(args.import_timeout),
    };
    Ok((target, options))
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

pub fn upload(global: &Global, args: UploadArgs) -> Result<i32, Error> {
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
