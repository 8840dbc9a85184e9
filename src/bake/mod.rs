//! `cloudimg bake`: customise a cloud image under QEMU with cloud-init, generalise it, prove
//! that it still boots, and publish it.
//!
//! The run, step by step, all in a hidden working folder beside the output
//! (`.<output name>.bake-work`, removed on every way out, Ctrl-C included):
//!
//! 1. the recipe is composed into a cloud-config and checked ([`recipe`], [`validate`]) — a
//!    bad recipe fails here, before anything is copied or booted;
//! 2. a working copy of the source, as qcow2, by the native engine; grown to `--disk-size`
//!    (the guest's cloud-init grows its root partition);
//! 3. a NoCloud seed ISO, by the native seed writer;
//! 4. the bake boot ([`qemu`]): cloud-init applies the recipe, cloudimg's final stage checks
//!    cloud-init's result, generalises, trims and powers off, reporting on the serial console
//!    ([`console`]). QEMU loads the image's kernel and initrd itself when [`crate::guestfs`]
//!    can read them out of the working copy (the firmware and GRUB cost seconds under
//!    emulation); otherwise, or with `--no-direct-kernel`, the guest boots through its firmware;
//! 5. the boot test: the result boots once more, through its firmware and boot loader as a
//!    cloud boots it, from a throwaway overlay with a fresh instance id, and must come up as
//!    that new instance;
//! 6. compaction and conversion of the working copy into the output by the native engine
//!    (trimmed blocks are holes, zero clusters are dropped), published atomically.
//!
//! The serial console of both boots is streamed into a publication of `<output>.bake.log`
//! (`io::publish`) and committed also when the bake fails, so the error's console tail can be
//! read in full.

pub mod console;
pub mod qemu;
pub mod recipe;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::container::{iso, ContainerError};
use crate::formats::convert::{self, ConvertStats};
use crate::formats::{self, DiskFormat, DiskReader, FormatError, ImageInfo, Mapping, Options};
use crate::guestfs::{self, GuestFsError};
use crate::io::lock::{lock_path, FileLock, LockError};
use crate::io::progress::Reporter;
use crate::io::publish::{Publication, PublishError};
use crate::ErrorKind;

use console::{Phase, Scanner, Verdict};
use qemu::{Accel, Arch, DirectKernel, Machine, Network, QemuError};
use recipe::{Recipe, RecipeError, Seed};

/// The label cloud-init's NoCloud datasource looks for.
const SEED_VOLUME_ID: &str = "cidata";

/// The default `--timeout`: an emulated boot with a recipe that installs packages.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Boots of one stage when the guest's kernel panics in its early timer check, which an
/// emulated CPU starved by a loaded host can cause before anything is written to the disk.
const MAX_BOOT_ATTEMPTS: u32 = 3;

/// Guest memory and CPUs when the recipe and the command line say nothing.
pub const DEFAULT_MEMORY_MIB: u64 = 2048;
pub const DEFAULT_CPUS: u32 = 2;
/// The guest's network when the recipe and the command line say nothing: user-mode
/// networking, so that package installs reach their mirrors.
pub const DEFAULT_NETWORK: Network = Network::User;

/// The kernel argument that puts an x86 guest's console on the first serial port.
const SERIAL_CONSOLE_ARG: &str = "console=ttyS0";

/// Write buffer for the extracted kernel and initrd.
const KERNEL_BUFFER: usize = 1 << 20;

/// Suffix of the published console log, after the output's file name.
pub const LOG_SUFFIX: &str = ".bake.log";

/// Which boot something happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Bake,
    BootTest,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Bake => "bake boot",
            Stage::BootTest => "boot test",
        })
    }
}

/// The last console lines and where the whole log is, shown under a failure.
#[derive(Clone, Debug, Default)]
pub struct ConsoleTail {
    pub lines: Vec<String>,
    pub log: Option<PathBuf>,
}

impl fmt::Display for ConsoleTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.lines.is_empty() {
            f.write_str("\n--- last lines of the guest's console ---")?;
            for line in &self.lines {
                write!(f, "\n{line}")?;
            }
        }
        if let Some(log) = &self.log {
            write!(f, "\n--- full console log: {}", log.display())?;
        }
        Ok(())
    }
}

/// Why a bake failed. Every variant leaves nothing under the output's name.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(
        "--disk-size {wanted} is smaller than the image's {size} bytes; a bake only grows disks"
    )]
    ShrinkingDisk { wanted: u64, size: u64 },
    #[error("{0}: the output needs a file name")]
    NoFileName(PathBuf),
    /// Where the working folder goes, something that is not one: never removed.
    #[error("{0}: exists and is not cloudimg's working folder; remove it")]
    NotOurWorkDir(PathBuf),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("{path}: cannot {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not run the guest, or the guest did not finish.
    #[error("{stage}: {error}{console}")]
    Guest {
        stage: Stage,
        error: QemuError,
        console: ConsoleTail,
    },
    #[error("recipe command {number} ({command:?}) failed with exit status {status}{console}")]
    RunFailed {
        /// 1-based, in `--run` order.
        number: usize,
        command: String,
        status: i32,
        console: ConsoleTail,
    },
    #[error("cloud-init reported an error: {detail}{console}")]
    CloudInit {
        detail: String,
        console: ConsoleTail,
    },
    #[error("boot test failed: {reason}{console}")]
    BootTest {
        reason: String,
        console: ConsoleTail,
    },
    #[error("interrupted; the guest was stopped and the working copy removed")]
    Interrupted,
    /// Another bake holds the output's lock.
    #[error("{output}: another cloudimg bake is writing it; wait for it or choose another output")]
    Busy { output: PathBuf },
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl BakeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BakeError::Recipe(RecipeError::Serialise(_)) => ErrorKind::Other,
            BakeError::Recipe(_)
            | BakeError::ShrinkingDisk { .. }
            | BakeError::NoFileName(_)
            | BakeError::NotOurWorkDir(_) => ErrorKind::Usage,
            BakeError::Format(e) => e.kind(),
            BakeError::Container(e) => e.kind(),
            BakeError::Publish(e) => e.kind(),
            BakeError::Io { .. } | BakeError::Busy { .. } | BakeError::Lock(_) => ErrorKind::Other,
            BakeError::Guest { stage, error, .. } => match (error, stage) {
                (QemuError::Missing { .. }, _) => ErrorKind::QemuMissing,
                (QemuError::Interrupted, _) => ErrorKind::Interrupted,
                (QemuError::Timeout { .. } | QemuError::KvmSilent { .. }, Stage::Bake) => {
                    ErrorKind::BakeTimeout
                }
                (QemuError::NoVerdict | QemuError::KernelPanic { .. }, Stage::Bake) => {
                    ErrorKind::BakeCloudInit
                }
                (
                    QemuError::Timeout { .. }
                    | QemuError::KvmSilent { .. }
                    | QemuError::NoVerdict
                    | QemuError::KernelPanic { .. },
                    Stage::BootTest,
                ) => ErrorKind::BakeBootTest,
                (QemuError::Spawn { .. } | QemuError::Io { .. } | QemuError::Exited { .. }, _) => {
                    ErrorKind::Other
                }
            },
            BakeError::RunFailed { .. } => ErrorKind::BakeRecipe,
            BakeError::CloudInit { .. } => ErrorKind::BakeCloudInit,
            BakeError::BootTest { .. } => ErrorKind::BakeBootTest,
            BakeError::Interrupted => ErrorKind::Interrupted,
        }
    }

    /// The console tail a guest failure carries, to say where its log went when it is moved.
    pub fn console_mut(&mut self) -> Option<&mut ConsoleTail> {
        match self {
            BakeError::Guest { console, .. }
            | BakeError::RunFailed { console, .. }
            | BakeError::CloudInit { console, .. }
            | BakeError::BootTest { console, .. } => Some(console),
            _ => None,
        }
    }

    fn io(path: &Path, action: &'static str, source: std::io::Error) -> BakeError {
        BakeError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }
}

/// The guest's hardware and accelerator.
#[derive(Clone, Debug)]
pub struct MachineSettings {
    pub arch: Arch,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    pub network: Network,
    /// QEMU `guestfwd` rules: the ways a restricted guest may reach the host.
    pub guestfwd: Vec<String>,
}

/// One bake.
#[derive(Clone, Debug)]
pub struct BakeRequest {
    pub source: PathBuf,
    pub source_format: Option<DiskFormat>,
    pub output: PathBuf,
    pub output_format: DiskFormat,
    pub options: Options,
    pub recipe: Recipe,
    /// Grow the disk to this many bytes first.
    pub disk_size: Option<u64>,
    pub machine: MachineSettings,
    /// For each boot.
    pub timeout: Duration,
    pub boot_test: bool,
    /// Load the image's kernel directly for the bake boot ([`qemu::DirectKernel`]) when it can
    /// be found in the image; the boot test always goes through the firmware.
    pub direct_kernel: bool,
}

impl BakeRequest {
    /// A bake of `recipe` from `source` into a qcow2 `output` (uncompressed), on `arch` with
    /// `accel`: the recipe's machine options, each unset one taking its default. The one place
    /// the defaults are applied, for `bake`, `prepare --bake` and `sync`.
    pub fn new(
        recipe: Recipe,
        arch: Arch,
        accel: Accel,
        source: PathBuf,
        output: PathBuf,
    ) -> BakeRequest {
        let options = recipe.machine.clone();
        BakeRequest {
            source,
            source_format: None,
            output,
            output_format: DiskFormat::Qcow2,
            options: Options::default(),
            disk_size: options.disk_size,
            machine: MachineSettings {
                arch,
                accel,
                memory_mib: options.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
                cpus: options.cpus.unwrap_or(DEFAULT_CPUS),
                network: options.network.unwrap_or(DEFAULT_NETWORK),
                guestfwd: options.guestfwd,
            },
            timeout: options.timeout.unwrap_or(DEFAULT_TIMEOUT),
            boot_test: options.boot_test.unwrap_or(true),
            direct_kernel: options.direct_kernel.unwrap_or(true),
            recipe,
        }
    }
}

/// When a phase of a boot began, in seconds from QEMU's start.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PhaseTime {
    pub phase: &'static str,
    pub at: f64,
}

/// Where the seconds went.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub working_copy: f64,
    /// Reading the kernel and initrd out of the working copy for a direct boot.
    pub kernel_extraction: f64,
    /// The image's kernel the bake boot loaded directly and the GRUB entry that named it, or
    /// none when the bake boot went through the firmware.
    pub direct_kernel: Option<String>,
    pub bake_boot: f64,
    pub bake_phases: Vec<PhaseTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_test: Option<f64>,
    pub compaction: f64,
    pub total: f64,
}

/// What a bake produced, as `--json` prints it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Baked {
    pub output: PathBuf,
    pub format: DiskFormat,
    pub log: PathBuf,
    /// SHA-256 of the composed recipe (nonce excluded).
    pub recipe_digest: String,
    pub accel: &'static str,
    pub boot_tested: bool,
    pub timings: Timings,
    pub conversion: ConvertStats,
    pub warnings: Vec<String>,
}

/// `<output>.bake.log`.
pub fn log_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(LOG_SUFFIX);
    PathBuf::from(name)
}

/// Composes and checks a recipe without booting anything: what `bake` refuses first.
pub fn check_recipe(recipe: &Recipe) -> Result<Vec<String>, BakeError> {
    Ok(recipe::compose(recipe, "check")?.warnings)
}

/// Runs the whole bake. `reporter` shows the phases and the conversions; `cancel` (set by the
/// caller's Ctrl-C handler) stops the guest and removes the working copy.
/// Takes the lock of `output` ([`lock_path`]: in `<cache>/locks/` when there is a cache), so
/// that two bakes into one output cannot interleave their working copies and publications; a
/// held lock is [`BakeError::Busy`] at once rather than a wait behind a guest's minutes.
pub fn lock_output(output: &Path, cache_dir: Option<&Path>) -> Result<FileLock, BakeError> {
    match FileLock::acquire(&lock_path(output, cache_dir), false) {
        Ok(lock) => Ok(lock),
        Err(LockError::Held { .. }) => Err(BakeError::Busy {
            output: output.to_owned(),
        }),
        Err(error) => Err(error.into()),
    }
}

pub fn bake(
    request: &BakeRequest,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Baked, BakeError> {
    let started = Instant::now();
    let nonce = format!("{:016x}", rand::random::<u64>());
    let seed = recipe::compose(&request.recipe, &nonce)?;
    for warning in &seed.warnings {
        warn!("{warning}");
    }
    let test_nonce = format!("{:016x}", rand::random::<u64>());
    let test_seed = recipe::boot_test(&test_nonce)?;
    let recipe_digest = request.recipe.digest()?;
    let binary = request.machine.arch.binary();
    if !on_path(binary) {
        return Err(BakeError::Guest {
            stage: Stage::Bake,
            error: QemuError::Missing {
                binary,
                package: request.machine.arch.package(),
            },
            console: ConsoleTail::default(),
        });
    }

    let work = WorkDir::create(&request.output)?;
    let mut log = Log::create(&request.output)?;
    let result = run_steps(
        request,
        &work,
        &mut log,
        &seed,
        &nonce,
        &test_nonce,
        &test_seed,
        reporter,
        cancel,
    );
    let published_log = log.publish();
    drop(work);
    if let Err(error) = &published_log {
        warn!(
            "cannot publish the console log: {}",
            crate::error::chain(error)
        );
    }
    let (timings, conversion, mut warnings) = match result {
        Ok(value) => value,
        Err(error) if cancel.load(Ordering::Relaxed) => {
            debug!(%error, "stopped after Ctrl-C");
            return Err(BakeError::Interrupted);
        }
        Err(error) => return Err(error),
    };
    let log_path = published_log?;
    warnings.extend(seed.warnings);
    let mut timings = timings;
    timings.total = started.elapsed().as_secs_f64();
    Ok(Baked {
        output: request.output.clone(),
        format: request.output_format,
        log: log_path,
        recipe_digest,
        accel: request.machine.accel.name(),
        boot_tested: request.boot_test,
        timings,
        conversion,
        warnings,
    })
}

type StepsResult = Result<(Timings, ConvertStats, Vec<String>), BakeError>;

#[allow(clippy::too_many_arguments)]
fn run_steps(
    request: &BakeRequest,
    work: &WorkDir,
    log: &mut Log,
    seed: &Seed,
    nonce: &str,
    test_nonce: &str,
    test_seed: &Seed,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> StepsResult {
    let mut timings = Timings::default();
    let mut warnings = Vec::new();

    let step = Instant::now();
    let disk = work.path.join("disk.qcow2");
    info!(source = %request.source.display(), "making the working copy");
    working_copy(request, &disk, reporter, cancel)?;
    timings.working_copy = step.elapsed().as_secs_f64();
    check_cancel(cancel)?;

    let step = Instant::now();
    let (kernel, source) = match request.direct_kernel {
        true => direct_kernel(request.machine.arch, &disk, &work.path).unzip(),
        false => (None, None),
    };
    timings.kernel_extraction = step.elapsed().as_secs_f64();
    timings.direct_kernel = source;
    check_cancel(cancel)?;

    let step = Instant::now();
    let seed_path = work.path.join("seed.iso");
    write_seed(&seed_path, seed)?;
    let bake_machine = machine(request, &disk, &seed_path, false, kernel);
    info!(
        accel = request.machine.accel.name(),
        "booting the guest to apply the recipe"
    );
    let outcome = run_boot(
        Stage::Bake,
        &bake_machine,
        nonce,
        request,
        log,
        reporter,
        cancel,
    )?;
    timings.bake_boot = step.elapsed().as_secs_f64();
    timings.bake_phases = outcome
        .phases
        .iter()
        .map(|(phase, at)| PhaseTime {
            phase: phase.label(),
            at: at.as_secs_f64(),
        })
        .collect();
    warnings.extend(outcome.warnings.iter().cloned());
    match outcome.verdict {
        Verdict::Ok { .. } => {}
        Verdict::RunFailed { index, status } => {
            return Err(BakeError::RunFailed {
                number: index + 1,
                command: request.recipe.run.get(index).cloned().unwrap_or_default(),
                status,
                console: log.tail(&outcome.tail),
            })
        }
        Verdict::CloudInitError { detail } => {
            return Err(BakeError::CloudInit {
                detail,
                console: log.tail(&outcome.tail),
            })
        }
        Verdict::Malformed { line } => {
            return Err(BakeError::CloudInit {
                detail: format!("unreadable result line {line:?}"),
                console: log.tail(&outcome.tail),
            })
        }
    }
    check_cancel(cancel)?;

    if request.boot_test {
        let step = Instant::now();
        let test_seed_path = work.path.join("boot-test-seed.iso");
        write_seed(&test_seed_path, test_seed)?;
        let test_machine = machine(request, &disk, &test_seed_path, true, None);
        info!("boot test: booting the result from a throwaway overlay");
        log.separator("boot test");
        let outcome = run_boot(
            Stage::BootTest,
            &test_machine,
            test_nonce,
            request,
            log,
            reporter,
            cancel,
        )?;
        let expected = recipe::boot_test_instance_id(test_nonce);
        let reason = match outcome.verdict {
            Verdict::Ok { detail } if detail == expected => None,
            Verdict::Ok { detail } => Some(format!(
                "the guest came up as instance {detail:?}, not as the new instance {expected:?}"
            )),
            Verdict::CloudInitError { detail } => Some(format!("cloud-init: {detail}")),
            other => Some(format!("unexpected result {other:?}")),
        };
        if let Some(reason) = reason {
            return Err(BakeError::BootTest {
                reason,
                console: log.tail(&outcome.tail),
            });
        }
        timings.boot_test = Some(step.elapsed().as_secs_f64());
        check_cancel(cancel)?;
    }

    let step = Instant::now();
    info!(output = %request.output.display(), format = %request.output_format, "compacting and converting");
    let conversion = compact(request, &disk, reporter, cancel)?;
    timings.compaction = step.elapsed().as_secs_f64();
    Ok((timings, conversion, warnings))
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), BakeError> {
    if cancel.load(Ordering::Relaxed) {
        Err(BakeError::Interrupted)
    } else {
        Ok(())
    }
}

/// The source as an uncompressed qcow2 QEMU can write, grown to `--disk-size`.
fn working_copy(
    request: &BakeRequest,
    disk: &Path,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<(), BakeError> {
    let reader = formats::open(&request.source, request.source_format)?;
    let size = reader.virtual_size();
    if let Some(wanted) = request.disk_size {
        if wanted < size {
            return Err(BakeError::ShrinkingDisk { wanted, size });
        }
    }
    let mut reader = Cancellable {
        inner: reader,
        cancel,
    };
    let output = convert::Output {
        path: disk,
        format: DiskFormat::Qcow2,
        options: &Options::default(),
    };
    let source = convert::Source::Reader {
        reader: &mut reader,
        path: &request.source,
    };
    convert::convert_file(source, output, None, reporter)?;
    if let Some(wanted) = request.disk_size.filter(|&wanted| wanted > size) {
        formats::resize(disk, Some(DiskFormat::Qcow2), wanted, false)?;
    }
    Ok(())
}

/// The working copy into the output: holes and zero clusters are skipped by the copy loop.
fn compact(
    request: &BakeRequest,
    disk: &Path,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<ConvertStats, BakeError> {
    let reader = formats::open(disk, Some(DiskFormat::Qcow2))?;
    let mut reader = Cancellable {
        inner: reader,
        cancel,
    };
    let output = convert::Output {
        path: &request.output,
        format: request.output_format,
        options: &request.options,
    };
    let source = convert::Source::Reader {
        reader: &mut reader,
        path: disk,
    };
    Ok(convert::convert_file(source, output, None, reporter)?)
}

/// Why the bake boot goes through the firmware: the image's boot files could not be read
/// natively. Logged, never fatal.
#[derive(Debug, thiserror::Error)]
enum NoDirectKernel {
    #[error("direct kernel boot is done for x86_64 guests only")]
    Arch,
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    GuestFs(#[from] GuestFsError),
    #[error("{path}: cannot write")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The working copy's kernel, initrd and command line, extracted into `dir` for the bake
/// boot, with where they came from in the image; `None`, and why in the log, when they cannot
/// be read natively.
fn direct_kernel(arch: Arch, disk: &Path, dir: &Path) -> Option<(DirectKernel, String)> {
    match extract_kernel(arch, disk, dir) {
        Ok((kernel, source)) => {
            info!(%source, cmdline = %kernel.cmdline, "loading the image's kernel directly");
            Some((kernel, source))
        }
        Err(why) => {
            info!(
                "booting through the firmware and the image's boot loader: {}",
                crate::error::chain(&why)
            );
            None
        }
    }
}

fn extract_kernel(
    arch: Arch,
    disk: &Path,
    dir: &Path,
) -> Result<(DirectKernel, String), NoDirectKernel> {
    if arch != Arch::X86_64 {
        return Err(NoDirectKernel::Arch);
    }
    let mut reader = formats::open(disk, Some(DiskFormat::Qcow2))?;
    let files = guestfs::boot::find(reader.as_mut())?;
    for arg in &files.dropped_args {
        debug!(%arg, "left out of the kernel command line: GRUB would expand a variable");
    }
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    let mut kernel_out = create_boot_file(&kernel)?;
    let mut initrd_out = create_boot_file(&initrd)?;
    guestfs::boot::extract(reader.as_mut(), &files, &mut kernel_out, &mut initrd_out)?;
    finish_boot_file(kernel_out, &kernel)?;
    finish_boot_file(initrd_out, &initrd)?;
    let source = format!("{} ({})", files.kernel.path, files.source);
    let direct = DirectKernel {
        kernel,
        initrd: (!files.initrds.is_empty()).then_some(initrd),
        cmdline: serial_console(&files.cmdline),
    };
    Ok((direct, source))
}

fn create_boot_file(path: &Path) -> Result<std::io::BufWriter<std::fs::File>, NoDirectKernel> {
    std::fs::File::create(path)
        .map(|file| std::io::BufWriter::with_capacity(KERNEL_BUFFER, file))
        .map_err(|source| NoDirectKernel::Write {
            path: path.to_owned(),
            source,
        })
}

fn finish_boot_file(
    out: std::io::BufWriter<std::fs::File>,
    path: &Path,
) -> Result<(), NoDirectKernel> {
    out.into_inner()
        .map_err(|e| e.into_error())
        .map(drop)
        .map_err(|source| NoDirectKernel::Write {
            path: path.to_owned(),
            source,
        })
}

/// The image's command line with the serial console cloudimg reads the guest's progress
/// from, when the image does not name it already (GRUB's own serial settings do not reach a
/// kernel QEMU loads).
fn serial_console(cmdline: &str) -> String {
    let has_serial = cmdline
        .split_whitespace()
        .any(|arg| arg == "console=ttyS0" || arg.starts_with("console=ttyS0,"));
    if has_serial {
        cmdline.to_owned()
    } else {
        format!("{cmdline} {SERIAL_CONSOLE_ARG}")
            .trim_start()
            .to_owned()
    }
}

fn write_seed(path: &Path, seed: &Seed) -> Result<(), BakeError> {
    iso::write_seed(
        path,
        &[
            ("user-data", &seed.user_data),
            ("meta-data", &seed.meta_data),
        ],
        SEED_VOLUME_ID,
    )?;
    Ok(())
}

fn machine(
    request: &BakeRequest,
    disk: &Path,
    seed: &Path,
    snapshot: bool,
    kernel: Option<DirectKernel>,
) -> Machine {
    let settings = &request.machine;
    Machine {
        arch: settings.arch,
        accel: settings.accel,
        memory_mib: settings.memory_mib,
        cpus: settings.cpus,
        network: settings.network,
        guestfwd: settings.guestfwd.clone(),
        disk: disk.to_owned(),
        snapshot,
        seed: seed.to_owned(),
        kernel,
    }
}

/// A boot's result with the console's last lines.
struct BootResult {
    verdict: Verdict,
    phases: Vec<(Phase, Duration)>,
    warnings: Vec<String>,
    tail: Vec<String>,
}

fn run_boot(
    stage: Stage,
    machine: &Machine,
    nonce: &str,
    request: &BakeRequest,
    log: &mut Log,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<BootResult, BakeError> {
    let mut attempt = 1;
    loop {
        match boot_once(stage, machine, nonce, request, log, reporter, cancel) {
            Err(BakeError::Guest {
                error: QemuError::KernelPanic { message },
                ..
            }) if console::is_transient_panic(&message) && attempt < MAX_BOOT_ATTEMPTS => {
                attempt += 1;
                warn!(
                    "{stage}: the guest's kernel panicked in its timer check ({message}); the \
                     emulated CPU was starved by a loaded host. Booting again (attempt {attempt} \
                     of {MAX_BOOT_ATTEMPTS})"
                );
                log.separator(&format!("{stage}, attempt {attempt}"));
            }
            other => return other,
        }
    }
}

fn boot_once(
    stage: Stage,
    machine: &Machine,
    nonce: &str,
    request: &BakeRequest,
    log: &mut Log,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<BootResult, BakeError> {
    let mut scanner = Scanner::new(nonce);
    let mut watcher = PhaseWatcher { stage, reporter };
    reporter.start(&format!("{stage}: starting QEMU"), None, 0);
    let run = qemu::Run {
        machine,
        timeout: request.timeout,
        cancel,
        log: &mut log.publication.file(),
        log_written: &mut log.written,
    };
    let result = qemu::boot(run, &mut scanner, &mut watcher);
    reporter.finish();
    match result {
        Ok(outcome) => {
            info!(
                "{stage}: guest done in {:.0} s",
                outcome.elapsed.as_secs_f64()
            );
            Ok(BootResult {
                verdict: outcome.verdict,
                phases: outcome.phases,
                warnings: outcome.warnings,
                tail: scanner.tail(),
            })
        }
        Err(error) => Err(BakeError::Guest {
            stage,
            error,
            console: log.tail(&scanner.tail()),
        }),
    }
}

/// Shows each phase through the reporter; streams the console at debug level (`-v`).
struct PhaseWatcher<'a> {
    stage: Stage,
    reporter: &'a dyn Reporter,
}

impl qemu::Watcher for PhaseWatcher<'_> {
    fn phase(&mut self, phase: Phase) {
        self.reporter.finish();
        self.reporter
            .start(&format!("{}: {}", self.stage, phase.label()), None, 0);
    }

    fn line(&mut self, line: &str) {
        debug!(target: "cloudimg::bake::console", "{line}");
    }
}

/// Whether `binary` is an executable file in a `PATH` folder.
fn on_path(binary: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(binary))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The hidden working folder beside the output, removed when dropped.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(output: &Path) -> Result<WorkDir, BakeError> {
        let name = output
            .file_name()
            .ok_or_else(|| BakeError::NoFileName(output.to_owned()))?;
        let mut work_name = std::ffi::OsString::from(".");
        work_name.push(name);
        work_name.push(".bake-work");
        let path = output.with_file_name(work_name);
        // A folder of ours left by a killed bake: only a real folder is removed, never what a
        // symlink points to.
        if let Ok(metadata) = std::fs::symlink_metadata(&path) {
            if !metadata.is_dir() {
                return Err(BakeError::NotOurWorkDir(path));
            }
            std::fs::remove_dir_all(&path)
                .map_err(|e| BakeError::io(&path, "remove a stale working folder", e))?;
        }
        std::fs::create_dir(&path).map_err(|e| BakeError::io(&path, "create", e))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            warn!(path = %self.path.display(), %error, "cannot remove the working folder");
        }
    }
}

/// The console log, streamed into a publication of `<output>.bake.log` (a hidden temporary
/// beside it) and committed at the end, whatever the bake's outcome.
struct Log {
    publication: Publication,
    written: u64,
}

impl Log {
    fn create(output: &Path) -> Result<Log, BakeError> {
        Ok(Log {
            publication: Publication::begin(&log_path(output))?,
            written: 0,
        })
    }

    /// Where the log is being written.
    fn writer(&self) -> &std::fs::File {
        self.publication.file()
    }

    fn separator(&mut self, title: &str) {
        use std::io::Write;
        let _ = writeln!(self.writer(), "\n===== cloudimg: {title} =====");
    }

    fn tail(&self, lines: &[String]) -> ConsoleTail {
        ConsoleTail {
            lines: lines.to_vec(),
            log: Some(self.publication.final_path().to_owned()),
        }
    }

    fn publish(self) -> Result<PathBuf, BakeError> {
        let path = self.publication.final_path().to_owned();
        self.publication.commit()?;
        Ok(path)
    }
}

/// A reader that fails once `cancel` is set, so a conversion stops at Ctrl-C and its
/// temporary output is removed like any failed conversion's.
struct Cancellable<'a> {
    inner: Box<dyn DiskReader>,
    cancel: &'a AtomicBool,
}

impl Cancellable<'_> {
    fn check(&self) -> Result<(), FormatError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(FormatError::io(
                Path::new("conversion"),
                std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
            ));
        }
        Ok(())
    }
}

impl DiskReader for Cancellable<'_> {
    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }
    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        self.check()?;
        self.inner.map(offset)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        self.check()?;
        self.inner.read_at(offset, buf)
    }
    fn info(&self) -> ImageInfo {
        self.inner.info()
    }
}

/// Reads a duration: seconds (`900`), or a number with `s`, `m` or `h` (`90s`, `20m`, `1h`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => value,
        "m" => value.checked_mul(60)?,
        "h" => value.checked_mul(3600)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_kernel_always_writes_to_the_serial_console() {
        let image = "BOOT_IMAGE=/boot/vmlinuz root=LABEL=cloudimg-rootfs ro";
        assert_eq!(serial_console(image), format!("{image} console=ttyS0"));
        for named in [
            "root=/dev/vda1 console=tty1 console=ttyS0",
            "root=/dev/vda1 console=ttyS0,115200n8 console=tty0",
        ] {
            assert_eq!(serial_console(named), named);
        }
        // Another serial port, or a prefix of the name, is not ours.
        assert!(serial_console("console=ttyS1").ends_with(" console=ttyS0"));
        assert!(serial_console("console=ttyS01").ends_with(" console=ttyS0"));
        assert_eq!(serial_console(""), "console=ttyS0");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("20m"), Some(Duration::from_secs(1200)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("5d"), None);
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn exit_statuses_follow_the_documented_contract() {
        let console = ConsoleTail::default;
        let cases = [
            (
                BakeError::RunFailed {
                    number: 1,
                    command: "false".into(),
                    status: 1,
                    console: console(),
                },
                10,
            ),
            (
                BakeError::CloudInit {
                    detail: "x".into(),
                    console: console(),
                },
                11,
            ),
            (
                BakeError::Guest {
                    stage: Stage::Bake,
                    error: QemuError::Timeout {
                        after: Duration::from_secs(1),
                    },
                    console: console(),
                },
                12,
            ),
            (
                BakeError::Guest {
                    stage: Stage::BootTest,
                    error: QemuError::Timeout {
                        after: Duration::from_secs(1),
                    },
                    console: console(),
                },
                13,
            ),
            (
                BakeError::Guest {
                    stage: Stage::Bake,
                    error: QemuError::Missing {
                        binary: "qemu-system-x86_64",
                        package: "qemu-system-x86",
                    },
                    console: console(),
                },
                14,
            ),
            (BakeError::Interrupted, 130),
        ];
        for (error, code) in cases {
            assert_eq!(error.kind().exit_code(), code, "{error}");
        }
    }

    #[test]
    fn the_console_tail_says_where_the_log_is() {
        let tail = ConsoleTail {
            lines: vec!["a".into(), "b".into()],
            log: Some(PathBuf::from("/o/x.qcow2.bake.log")),
        };
        let text = tail.to_string();
        assert!(text.contains("\na\nb\n"), "{text}");
        assert!(
            text.ends_with("full console log: /o/x.qcow2.bake.log"),
            "{text}"
        );
        assert_eq!(
            log_path(Path::new("/o/x.qcow2")),
            PathBuf::from("/o/x.qcow2.bake.log")
        );
    }
}
