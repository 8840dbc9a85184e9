//! `bake`: the recipe from options and a recipe file, the source (a local image or a verified
//! release download), Ctrl-C, and the blocking bake on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cloudimg::bake::qemu::{self, AccelChoice, Arch};
use cloudimg::bake::recipe::{RecipeSpec, Scalar};
use cloudimg::bake::{self, BakeError, BakeRequest};
use cloudimg::formats::{DiskFormat, Options};
use cloudimg::io::blocking;
use cloudimg::pipeline::{self, Error, FetchRequest, SignaturePolicy, Usage};
use tracing::info;

use super::args::{AccelArg, BakeArgs, Global};
use super::fetch::{default_cache_dir, query, runtime, serial, Context};
use super::{print_json, progress};

/// How often a download in progress looks at the Ctrl-C flag.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

pub fn bake(global: &Global, args: BakeArgs) -> Result<i32, Error> {
    // The recipe first: a bad one is refused before anything is downloaded or booted.
    let recipe = recipe_spec(&args)?.load().map_err(BakeError::from)?;
    for warning in bake::check_recipe(&recipe)? {
        tracing::warn!("{warning}");
    }
    let arch = Arch::from_name(&args.selection.arch).ok_or_else(|| Usage::BadValue {
        option: "--arch",
        value: args.selection.arch.clone(),
        expected: "amd64 (x86_64) or arm64 (aarch64), the guests bake boots",
    })?;
    let output_format =
        DiskFormat::from_name(&args.output_format).ok_or_else(|| Usage::UnknownFormat {
            name: args.output_format.clone(),
            expected: "raw, qcow2, vmdk, vhd (vpc) or vdi",
        })?;
    let mut options = Options::parse(&args.options.join(","))?;
    if args.compress {
        if output_format != DiskFormat::Qcow2 {
            return Err(Usage::Conflict {
                option: "-c".into(),
                other: format!("-O {output_format}"),
                why: "-c compresses qcow2 output; for vmdk use --options subformat=streamOptimized"
                    .into(),
            }
            .into());
        }
        options.set("compress", "on");
    }
    let source_format = args
        .format
        .as_deref()
        .map(super::image::disk_format)
        .transpose()?;
    // Held until the result is published (or the bake fails).
    let cache = global.cache_dir.clone().or_else(default_cache_dir);
    let _lock = bake::lock_output(&args.output, cache.as_deref())?;
    let (accel, why) = qemu::choose_accel(args.accel.choice(), arch);
    info!("accelerator: {} ({why})", accel.name());

    let cancel = Arc::new(AtomicBool::new(false));
    let runtime = runtime()?;
    let baked = runtime.block_on(async {
        let flag = Arc::clone(&cancel);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::warn!("interrupted: stopping the guest");
                flag.store(true, Ordering::Relaxed);
            }
        });
        // Ctrl-C during a release download stops it (the part file is kept for a resume).
        let source = tokio::select! {
            source = source(global, &args) => source?,
            () = cancelled(&cancel) => return Err(BakeError::Interrupted.into()),
        };
        let mut request = BakeRequest::new(recipe, arch, accel, source, args.output.clone());
        request.source_format = source_format;
        request.output_format = output_format;
        request.options = options;
        let reporter = progress::phase_reporter(global.quiet);
        let cancel = Arc::clone(&cancel);
        let output = request.output.clone();
        blocking::run(&output, move || {
            bake::bake(&request, reporter.as_ref(), &cancel).map_err(Error::from)
        })
        .await
    })?;
    if global.json {
        print_json(&baked);
    } else if !global.quiet {
        let t = &baked.timings;
        info!(
            "baked in {:.0} s: working copy {:.1} s, bake boot {:.0} s, boot test {}, compaction {:.1} s",
            t.total,
            t.working_copy,
            t.bake_boot,
            t.boot_test
                .map_or_else(|| "skipped".to_owned(), |s| format!("{s:.0} s")),
            t.compaction
        );
        outln!("{}", baked.output.display());
        outln!("{}", baked.log.display());
    }
    Ok(0)
}

impl AccelArg {
    pub fn choice(self) -> AccelChoice {
        match self {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Kvm,
            AccelArg::Tcg => AccelChoice::Tcg,
        }
    }
}

/// Runs `work` until it ends or Ctrl-C sets `flag`; then it is dropped (a blocking bake sees
/// the flag, stops its guest and removes its working copy) and the run is `Interrupted`.
pub async fn interruptible<T>(
    work: impl std::future::Future<Output = Result<T, Error>>,
    flag: &Arc<AtomicBool>,
) -> Result<T, Error> {
    let watcher = Arc::clone(flag);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping the guest");
            watcher.store(true, Ordering::Relaxed);
        }
    });
    tokio::select! {
        result = work => result,
        () = cancelled(flag) => Err(BakeError::Interrupted.into()),
    }
}

/// Returns once the Ctrl-C flag is set.
async fn cancelled(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// The recipe file, if any, followed by the command-line shorthands.
fn recipe_spec(args: &BakeArgs) -> Result<RecipeSpec, Error> {
    let from_options = RecipeSpec {
        user_data: args.user_data.clone(),
        cloud_config: None,
        user: args.user.clone(),
        ssh_authorized_keys: args.ssh_authorized_keys.clone(),
        password_hash: args.password_hash.clone(),
        packages: args.packages.clone(),
        run: args.run.clone(),
        write_files: args.write_files.clone(),
        hostname: args.hostname.clone(),
        disk_size: args.disk_size.clone().map(Scalar::Text),
        memory: args.memory,
        cpus: args.cpus,
        timeout: args.timeout.clone().map(Scalar::Text),
        boot_test: args.no_boot_test.then_some(false),
        direct_kernel: args.no_direct_kernel.then_some(false),
        network: if args.no_network {
            Some("none".into())
        } else if args.restrict_network {
            Some("restricted".into())
        } else {
            None
        },
        guestfwd: args.guestfwd.clone(),
    };
    Ok(match &args.recipe {
        Some(path) => RecipeSpec::from_file(path)
            .map_err(BakeError::from)?
            .and(from_options),
        None => from_options,
    })
}

/// A local file as it is; otherwise a release, downloaded and verified into the output's
/// folder (kept there, so the next bake of the same serial does not download it again).
async fn source(global: &Global, args: &BakeArgs) -> Result<PathBuf, Error> {
    let local = Path::new(&args.image);
    if local.exists() {
        return Ok(local.to_owned());
    }
    let context = Context::new(global)?;
    let keyring;
    let signature = if args.no_verify_signature {
        SignaturePolicy::Skip
    } else {
        keyring = context.keyring(global)?;
        SignaturePolicy::Require(&keyring)
    };
    let kind = context
        .catalog
        .default_kind
        .clone()
        .ok_or_else(|| Usage::NotAFile {
            image: args.image.clone(),
            catalog: context.catalog.name.clone(),
        })?;
    let output_dir = match args.output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let request = FetchRequest {
        query: query(&args.image, &args.selection),
        serial: serial(&args.selection).map(str::to_owned),
        kind,
        output_dir,
        signature,
        convert: None,
    };
    let reporter = progress::reporter(global.quiet);
    let fetched = pipeline::fetch(
        &context.client,
        &context.catalog,
        &context.mirror,
        request,
        reporter,
    )
    .await?;
    info!(serial = %fetched.serial, path = %fetched.path.display(), "verified source");
    Ok(fetched.path)
}
