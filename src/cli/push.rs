//! `push`: an OCI image layout to one or more registry repositories.

use std::time::Duration;

use cloudimg::fetch::ClientConfig;
use cloudimg::formats::options::parse_size;
use cloudimg::oci::auth::AuthFiles;
use cloudimg::oci::layout::Layout;
use cloudimg::oci::push::{self, PushOptions, Pushed};
use cloudimg::oci::Reference;
use cloudimg::pipeline::{Error, Usage};

use super::args::{Global, PushArgs};
use super::fetch::runtime;
use super::{print_json, progress};

pub fn push(global: &Global, args: PushArgs) -> Result<i32, Error> {
    let destinations = args
        .destinations
        .iter()
        .map(|text| Reference::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    let chunk_size = match &args.chunk_size {
        Some(text) => {
            Some(
                parse_size(text)
                    .filter(|size| *size > 0)
                    .ok_or_else(|| Usage::BadValue {
                        option: "--chunk-size",
                        value: text.clone(),
                        expected: "a size such as 64M",
                    })?,
            )
        }
        None => None,
    };
    let layout = Layout::open(&args.layout, args.ref_name.as_deref())?;
    let options = PushOptions {
        insecure: args.insecure_registry,
        chunk_size,
        keep: args.keep,
        client: ClientConfig {
            retries: global.retries,
            stall_timeout: Duration::from_secs(global.stall_timeout.max(1)),
            tls: super::fetch::tls(global)?,
            ..ClientConfig::default()
        },
    };
    let reporter = progress::reporter(global.quiet);
    let pushed = runtime()?.block_on(push::push(
        &layout,
        &destinations,
        &args.tags,
        &options,
        &AuthFiles::from_env(),
        reporter.as_ref(),
    ))?;
    if global.json {
        print_json(&pushed);
    } else if !global.quiet {
        print_pushed(&pushed);
    }
    Ok(0)
}

fn print_pushed(pushed: &[Pushed]) {
    for result in pushed {
        outln!("{}@{}", result.repository, result.digest);
        outln!(
            "  blobs: {} uploaded ({} bytes), {} mounted, {} already present",
            result.blobs_uploaded,
            result.bytes_sent,
            result.blobs_mounted,
            result.blobs_present
        );
        if !result.tags_set.is_empty() {
            outln!("  tagged: {}", result.tags_set.join(", "));
        }
        if !result.tags_unchanged.is_empty() {
            outln!("  unchanged: {}", result.tags_unchanged.join(", "));
        }
        if !result.retired.is_empty() {
            outln!("  retired: {}", result.retired.join(", "));
        }
    }
}
