//! `seed`: a cloud-init NoCloud seed ISO, ready to attach to a golden image or upload to Glance.

use std::path::Path;

use cloudimg::bake::validate;
use cloudimg::container::glance::ImageMetadata;
use cloudimg::container::iso;
use cloudimg::pipeline::{Error, Usage};
use sha2::{Digest, Sha256};

use super::args::{Global, SeedArgs};
use super::print_json;

/// The filesystem label cloud-init's NoCloud datasource looks for.
const SEED_VOLUME_ID: &str = "cidata";

/// Hex digits of the ISO's SHA-256 in its default Glance name.
const NAME_DIGEST_DIGITS: usize = 12;

/// `<output stem>-<SHA-256 prefix>`: the ISO is deterministic, so the same inputs give the same
/// name and different seeds never share one (the default output is always `seed.iso`).
fn default_name(output: &Path, sha256: &str) -> String {
    let stem = output
        .file_stem()
        .map_or_else(|| "seed".to_owned(), |s| s.to_string_lossy().into_owned());
    let digits = &sha256[..NAME_DIGEST_DIGITS.min(sha256.len())];
    format!("{stem}-{digits}")
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

pub fn seed(global: &Global, args: SeedArgs) -> Result<i32, Error> {
    let user_data = read(&args.user_data)?;
    // A broken seed is an error here, not an ISO that cloud-init ignores at boot.
    let refuse = |path: &Path, source: validate::ValidationError| Usage::InvalidSeed {
        path: path.to_owned(),
        source,
    };
    let checked = validate::user_data(&user_data).map_err(|e| refuse(&args.user_data, e))?;
    for warning in &checked.warnings {
        tracing::warn!("{}: {warning}", args.user_data.display());
    }
    let meta_data = match &args.meta_data {
        Some(path) => read(path)?,
        // NoCloud needs a meta-data file; a stable instance-id keeps first-boot semantics
        // tied to the user data.
        None => format!(
            "instance-id: iid-{}\n",
            &hex::encode(Sha256::digest(&user_data))[..16]
        )
        .into_bytes(),
    };
    if let Some(path) = &args.meta_data {
        validate::yaml_mapping("meta-data", &meta_data).map_err(|e| refuse(path, e))?;
    }
    let network_config = args.network_config.as_deref().map(read).transpose()?;
    if let (Some(path), Some(network)) = (&args.network_config, &network_config) {
        validate::yaml_mapping("network configuration", network).map_err(|e| refuse(path, e))?;
    }
    let mut files: Vec<(&str, &[u8])> = vec![("user-data", &user_data), ("meta-data", &meta_data)];
    if let Some(network) = &network_config {
        files.push(("network-config", network));
    }
    iso::write_seed(&args.output, &files, SEED_VOLUME_ID).map_err(Error::from)?;
    let size = std::fs::metadata(&args.output)
        .map_err(|source| Error::Io {
            path: args.output.clone(),
            source,
        })?
        .len();
    let mut metadata = ImageMetadata::for_file(
        &args.output,
        "",
        cloudimg::glance::DiskFormat::Iso,
        cloudimg::glance::ContainerFormat::Bare,
        size,
    )
    .map_err(Error::from)?;
    metadata.name = match args.name {
        Some(name) => name,
        None => default_name(&args.output, &metadata.digests.sha256),
    };
    let written = metadata.write_beside(&args.output).map_err(Error::from)?;
    if global.json {
        print_json(&metadata);
    } else if !global.quiet {
        outln!("{}", args.output.display());
        outln!("{}", written.display());
    }
    Ok(0)
}
