//! `upload`: send prepared artifacts to Glance and print one line per image.

use std::time::Duration;

use cloudimg::fetch::ClientConfig;
use cloudimg::pipeline::Error;
use cloudimg::upload::{self, GlanceTarget, Outcome, UploadMethod, UploadOptions};

use super::args::{Global, UploadArgs};
use super::{print_json, progress};

pub fn upload(global: &Global, args: UploadArgs) -> Result<i32, Error> {
    // The token is read here rather than by clap so that `--help` never shows its value.
    let token = args
        .token
        .or_else(|| std::env::var("OS_TOKEN").ok().filter(|t| !t.is_empty()));
    let target = GlanceTarget::from_env(args.glance.as_deref(), token.as_deref())?;
    let files = upload::metadata_files(&args.path)?;
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
        for image in &images {
            let note = match image.outcome {
                Outcome::Uploaded => "",
                Outcome::AlreadyPresent => " (already present)",
            };
            println!("{} {} {}{note}", image.name, image.id, image.status);
        }
    }
    Ok(0)
}
