//! `prepare`: one command from a release name to artifacts and metadata ready for Glance.

use cloudimg::container::manifest::ManifestHash;
use cloudimg::container::ovf::Firmware;
use cloudimg::container::ContainerFormat;
use cloudimg::formats::Options;
use cloudimg::oci::layer::Compression;
use cloudimg::pipeline::{
    self, Error, ImageSettings, MachineSettings, PrepareRequest, Prepared, SignaturePolicy, Usage,
};
use cloudimg::upload::{TargetUpload, Uploaded};

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use cloudimg::bake::recipe::RecipeSpec;
use cloudimg::bake::BakeError;

use super::args::{AccelArg, FirmwareArg, Global, ManifestHashArg, PrepareArgs};
use super::fetch::{default_cache_dir, query, runtime, serial, Context};
use super::{print_json, progress, upload};

/// The cache folder holding `prepare`'s upstream downloads.
const DOWNLOADS_DIR: &str = "downloads";
/// Bytes of the output folder's hash that name its download folder.
const DOWNLOAD_KEY_BYTES: usize = 16;

/// `--bake RECIPE`: the recipe read and checked, its warnings logged.
fn bake_step(path: &Path, accel: AccelArg) -> Result<pipeline::BakeStep, Error> {
    let recipe = RecipeSpec::from_file(path)
        .and_then(|spec| spec.load())
        .map_err(BakeError::from)?;
    for warning in cloudimg::bake::check_recipe(&recipe)? {
        tracing::warn!("{warning}");
    }
    Ok(pipeline::BakeStep::new(recipe, accel.choice()))
}

fn property(text: &str) -> Result<(String, String), Error> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(Usage::BadValue {
            option: "--property",
            value: text.to_owned(),
            expected: "KEY=VALUE",
        }
        .into()),
    }
}

/// Where the upstream files of `prepare -o OUTPUT` are downloaded: a folder of the cache for
/// that output folder (`<cache>/downloads/<hash of OUTPUT>/`), so the output holds only the
/// artifacts, a failed run resumes where it stopped, a repeated run finds the verified file,
/// and two outputs never share (or prune) a download. Without a cache folder, the output
/// folder itself.
fn download_dir(global: &Global, output: &Path) -> Option<PathBuf> {
    let cache = global.cache_dir.clone().or_else(default_cache_dir)?;
    let absolute = std::path::absolute(output).unwrap_or_else(|_| output.to_owned());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    Some(
        cache
            .join(DOWNLOADS_DIR)
            .join(hex::encode(&digest[..DOWNLOAD_KEY_BYTES])),
    )
}

/// After a successful run: keeps this run's downloads in the cache (the next run of the same
/// release and serial needs no transfer) and removes whatever else that folder holds (older
/// serials, abandoned `.part` files), so it never grows beyond one build's files. A file that
/// cannot be removed is only a warning.
fn prune_downloads(prepared: &pipeline::Prepared, download_dir: Option<&Path>) {
    let Some(entries) = download_dir.and_then(|dir| std::fs::read_dir(dir).ok()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = prepared.sources.iter().any(|source| source.path == path);
        let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
        if ours || !is_file {
            continue;
        }
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "cannot remove an old download");
        }
    }
}

/// The names of the Glance targets `--upload` would send to (resolved, not contacted).
fn targets_named(
    global: &Global,
    args: &PrepareArgs,
    targets: &[cloudimg::upload::NamedTarget],
) -> Result<Vec<String>, Error> {
    if !targets.is_empty() {
        return Ok(targets.iter().map(|t| t.name.clone()).collect());
    }
    let (target, _) = upload::target_and_options(global, &args.glance)?;
    Ok(vec![target.endpoint.as_ref().map_or_else(
        || "Glance of the Keystone catalog".to_owned(),
        |url| url.to_string(),
    )])
}

/// `prepare --dry-run`: the plan and names, from the index alone.
fn dry_run(
    global: &Global,
    context: &Context,
    request: &PrepareRequest<'_>,
    targets: &[String],
) -> Result<i32, Error> {
    let preview = runtime()?.block_on(pipeline::preview(
        &context.client,
        &context.catalog,
        &context.mirror,
        request,
    ))?;
    if global.json {
        let mut report = serde_json::to_value(&preview).unwrap_or_default();
        if let Some(fields) = report.as_object_mut() {
            fields.insert("upload_to".into(), serde_json::json!(targets));
        }
        print_json(&report);
        return Ok(0);
    }
    if global.quiet {
        return Ok(0);
    }
    outln!(
        "{} {} ({}), serial {}: dry run, nothing written",
        preview.release,
        preview.version,
        preview.arch,
        preview.serial
    );
    for file in &preview.fetch {
        let size = file
            .size
            .map_or_else(String::new, |s| format!(", {s} bytes"));
        let state = if file.present {
            ", present: would be verified"
        } else {
            ""
        };
        outln!(
            "would fetch {} -> {}{size}{state}",
            file.url,
            file.path.display()
        );
    }
    for artifact in &preview.artifacts {
        outln!(
            "would write {} ({}/{}) as {:?}, and {}",
            artifact.path.display(),
            artifact.disk_format,
            artifact.container_format,
            artifact.name,
            artifact.metadata_path.display()
        );
        for target in targets {
            outln!("would upload {:?} to {target}", artifact.name);
        }
    }
    if let Some(layout) = &preview.containerdisk {
        outln!("would write the OCI image layout {}", layout.display());
    }
    Ok(0)
}

pub fn prepare(global: &Global, args: PrepareArgs) -> Result<i32, Error> {
    let context = if args.dry_run {
        Context::uncached(global)?
    } else {
        Context::new(global)?
    };
    let keyring;
    let signature = if args.no_verify_signature {
        SignaturePolicy::Skip
    } else {
        keyring = context.keyring(global)?;
        SignaturePolicy::Require(&keyring)
    };
    // A bad recipe is refused before anything is downloaded.
    let bake = args
        .bake
        .as_deref()
        .map(|path| bake_step(path, args.accel))
        .transpose()?;
    let downloads = download_dir(global, &args.output);
    let request = request(&args, signature, bake.clone(), downloads.clone())?;
    if args.upload && request.container == ContainerFormat::ContainerDisk {
        return Err(Usage::Conflict {
            option: "--upload".into(),
            other: "--container-format containerdisk".into(),
            why: "a containerdisk goes to a registry, not Glance: `cloudimg push DIR \
                  docker://REGISTRY/REPO`"
                .into(),
        }
        .into());
    }
    // Credentials are checked before any download, not after an hour of it.
    let multi = args.upload && args.glance.names_targets();
    let upload = if args.upload && !multi {
        Some(upload::target_and_options(global, &args.glance)?)
    } else {
        None
    };
    let targets = if multi {
        upload::targets(global, &args.glance)?
    } else {
        Vec::new()
    };
    if args.dry_run {
        let names = if args.upload {
            targets_named(global, &args, &targets)?
        } else {
            Vec::new()
        };
        return dry_run(global, &context, &request, &names);
    }
    let reporter = progress::reporter(global.quiet);
    let runtime = runtime()?;
    let prepared = runtime.block_on(async {
        let prepare = pipeline::prepare(
            &context.client,
            &context.catalog,
            &context.mirror,
            request,
            reporter.clone(),
        );
        match &bake {
            // Ctrl-C stops the guest (the bake thread sees the flag and cleans up) or the
            // download; without a bake, Ctrl-C keeps its default.
            Some(step) => super::bake::interruptible(prepare, &step.cancel).await,
            None => prepare.await,
        }
    })?;
    prune_downloads(&prepared, downloads.as_deref());
    let files: Vec<_> = prepared
        .artifacts
        .iter()
        .map(|a| a.metadata_path.clone())
        .collect();
    let uploaded =
        match &upload {
            Some((target, options)) => Some(runtime.block_on(
                cloudimg::upload::upload_artifacts(target, &files, options, reporter.as_ref()),
            )?),
            None => None,
        };
    let rows = if multi {
        Some(runtime.block_on(cloudimg::upload::upload_to_targets(
            &targets,
            &files,
            &upload::upload_options(global, &args.glance)?,
            reporter.as_ref(),
        ))?)
    } else {
        None
    };
    if global.json {
        print_json_report(&prepared, uploaded.as_deref(), rows.as_deref());
    } else if !global.quiet {
        print_prepared(&prepared, uploaded.as_deref(), rows.as_deref());
    }
    Ok(rows.as_deref().map_or(0, upload::targets_status))
}

/// The pipeline's request from the command line.
fn request<'k>(
    args: &PrepareArgs,
    signature: SignaturePolicy<'k>,
    bake: Option<pipeline::BakeStep>,
    downloads: Option<PathBuf>,
) -> Result<PrepareRequest<'k>, Error> {
    Ok(PrepareRequest {
        query: query(&args.release, &args.selection),
        serial: serial(&args.selection).map(str::to_owned),
        kind: args.kind.clone(),
        disk_format: args.disk_format,
        container: args.container_format,
        output_dir: args.output.clone(),
        download_dir: downloads,
        signature,
        convert_options: convert_options(args)?,
        image: ImageSettings {
            name: args.name.clone(),
            min_ram: args.min_ram,
            visibility: Some(args.visibility.to_ascii_lowercase()),
            tags: args.tags.clone(),
            preset: args.preset.clone(),
            properties: args
                .properties
                .iter()
                .map(|p| property(p))
                .collect::<Result<_, _>>()?,
        },
        machine: MachineSettings {
            cpus: args.cpus,
            memory_mib: args.memory,
            firmware: match args.firmware {
                FirmwareArg::Bios => Firmware::Bios,
                FirmwareArg::Uefi => Firmware::Efi,
            },
            manifest_hash: match args.manifest_hash {
                ManifestHashArg::Sha256 => ManifestHash::Sha256,
                ManifestHashArg::Sha1 => ManifestHash::Sha1,
            },
            layer: if args.gzip_layer {
                Compression::Gzip
            } else {
                Compression::None
            },
        },
        bake,
    })
}

/// `-o` options of the conversion, and `-c` (qcow2 only).
fn convert_options(args: &PrepareArgs) -> Result<Options, Error> {
    let mut options = Options::parse(&args.deprecated.merged(&args.convert_options).join(","))?;
    if args.compress {
        if args.disk_format != cloudimg::glance::DiskFormat::Qcow2 {
            return Err(Usage::Conflict {
                option: "-c".into(),
                other: format!("--disk-format {}", args.disk_format),
                why: "-c compresses qcow2 output; vmdk in ovf/ova is streamOptimized \
                      (compressed) already"
                    .into(),
            }
            .into());
        }
        options.set("compress", "on");
    }
    Ok(options)
}

/// `--json`: what was prepared, with the uploads when there were any.
fn print_json_report(
    prepared: &Prepared,
    uploaded: Option<&[Uploaded]>,
    rows: Option<&[TargetUpload]>,
) {
    let mut report = serde_json::to_value(prepared).unwrap_or_default();
    if let (Some(rows), Some(fields)) = (rows, report.as_object_mut()) {
        fields.insert(
            "targets".into(),
            serde_json::to_value(rows).unwrap_or_default(),
        );
    }
    if let (Some(images), Some(fields)) = (uploaded, report.as_object_mut()) {
        fields.insert(
            "uploaded".into(),
            serde_json::to_value(images).unwrap_or_default(),
        );
    }
    print_json(&report);
}

/// The artifacts, their files, the bake, the layout and the uploads, one per line.
fn print_prepared(
    prepared: &Prepared,
    uploaded: Option<&[Uploaded]>,
    rows: Option<&[TargetUpload]>,
) {
    for artifact in &prepared.artifacts {
        let meta = &artifact.metadata;
        outln!(
            "{} ({}/{}, {} bytes)",
            artifact.path.display(),
            meta.disk_format,
            meta.container_format,
            meta.digests.size
        );
        for file in &artifact.package_files {
            outln!("  {}", file.display());
        }
        outln!("  {}", artifact.metadata_path.display());
    }
    if let Some(bake) = &prepared.bake {
        outln!(
            "  baked (recipe sha256 {}, boot test {}): {}",
            bake.recipe_digest,
            if bake.boot_tested {
                "passed"
            } else {
                "skipped"
            },
            bake.log.display()
        );
    }
    if let Some(layout) = &prepared.containerdisk {
        outln!(
            "{} ({} {})",
            layout.path.display(),
            layout.ref_name,
            layout.digest
        );
        for manifest in &layout.manifests {
            outln!(
                "  {} {} ({} bytes layer)",
                manifest.architecture,
                manifest.disk,
                manifest.layer_size
            );
        }
    }
    if let Some(images) = uploaded {
        upload::print_uploaded(images);
    }
    if let Some(rows) = rows {
        upload::print_target_uploads(rows);
    }
}
