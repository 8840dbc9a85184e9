//! Command-line grammar. Option names follow qemu-img (`-f`, `-O`, `-o`, `-c`, `-p`, `-m`) and
//! Glance (`disk_format` words) so users' habits carry over.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  any other failure (local I/O, malformed input, ...)
  2  usage error (bad option, unknown release, arch, serial or file kind)
  3  integrity failure (checksum mismatch, bad or missing signature; upload: the file
     changed since its metadata was written, or Glance stored different bytes)
  4  network or server failure after retries (upload: also a failed Glance import)
  10 bake: a recipe command (--run) failed
  11 bake: cloud-init reported an error, or the guest stopped without a result
  12 bake: the guest did not power off within --timeout
  13 bake: the boot test failed (the result did not come up as a new instance)
  14 bake: QEMU is not installed (Debian/Ubuntu: apt install qemu-system-x86)
  130 interrupted (Ctrl-C); bake stops the guest and removes its working copy
  upload: 1 when Glance refuses the bytes (format inspection), 2 for bad credentials
  sync: 5 some entries failed (the others were done), 6 another sync holds the output root
  upload, prepare --upload, sync: 5 also when some Glance targets failed (the others have
     the images)
  push: 2 also for credentials a registry refuses, 3 a registry storing other bytes
  check: 0 clean, 1 not completed, 2 corruptions, 3 leaked clusters only, 63 no checks
     for the format (as qemu-img check)";

#[derive(Debug, Parser)]
#[command(
    name = "cloudimg",
    version,
    about = "Discover, download, verify and convert cloud images (Ubuntu, Debian)",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, listed apart from the command's own in `--help` (see
/// `help::command`).
#[derive(Debug, Args)]
pub struct Global {
    /// Base URL of the image site or of a mirror of it [default: the catalog's site].
    #[arg(long, global = true, env = "CLOUDIMG_MIRROR", value_name = "URL")]
    pub mirror: Option<String>,
    /// OpenPGP public keys (armored or binary) to trust instead of the catalog's built-in keys.
    #[arg(long, global = true, env = "CLOUDIMG_KEYRING", value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// The image source: a built-in catalog (ubuntu, debian) or a catalog file [default: ubuntu].
    #[arg(
        long,
        global = true,
        env = "CLOUDIMG_CATALOG",
        value_name = "NAME|FILE"
    )]
    pub catalog: Option<PathBuf>,
    /// Where index pages and checksum files are cached for conditional requests
    /// [default: $XDG_CACHE_HOME/cloudimg or ~/.cache/cloudimg].
    #[arg(long, global = true, env = "CLOUDIMG_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log lines on stderr as text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Attempts after the first for each request.
    #[arg(long, global = true, default_value_t = 5, value_name = "N")]
    pub retries: u32,
    /// Abandon and retry a transfer that receives nothing for this many seconds.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    pub stall_timeout: u64,
    /// Give up on a small document (listing, checksum file, signature, simplestreams JSON)
    /// that has not arrived whole within this many seconds, retries included. Image transfers
    /// have no total deadline, only --stall-timeout.
    #[arg(
        long,
        global = true,
        env = "CLOUDIMG_DOCUMENT_TIMEOUT",
        default_value_t = cloudimg::fetch::DEFAULT_DOCUMENT_TIMEOUT.as_secs(),
        value_name = "SECONDS"
    )]
    pub document_timeout: u64,
    /// Also trust the CA certificates of this PEM file (a private CA of the mirror, Keystone or
    /// Glance; the system store, SSL_CERT_FILE and SSL_CERT_DIR are trusted already).
    #[arg(long, global = true, env = "CLOUDIMG_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Do not verify TLS certificates at all (warned on every run; prefer --cacert).
    #[arg(long, global = true)]
    pub insecure: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Built once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List releases, or the serials and files of one release.
    List(ListArgs),
    /// Download and verify an image (the checksum file's signature where the source publishes
    /// one, then the file's SHA-256 or SHA-512).
    Fetch(FetchArgs),
    /// Fetch, verify, convert and wrap an image for Glance, with its `.glance.json` metadata.
    Prepare(PrepareArgs),
    /// Keep the images of a user catalog current under its output root (for cron).
    Sync(SyncArgs),
    /// Copy a user catalog's images, verified, into a tree any static web server can serve
    /// as a mirror (air-gapped labs).
    Mirror(MirrorArgs),
    /// Show an image's format, sizes and options.
    Info(InfoArgs),
    /// Convert an image between raw, qcow2, vmdk, vhd, vhdx and vdi.
    Convert(ConvertArgs),
    /// Check an image's structure.
    Check(CheckArgs),
    /// Compare the guest contents of two images (as qemu-img compare).
    Compare(CompareArgs),
    /// Tell the size a conversion to qcow2 or raw needs (as qemu-img measure).
    Measure(MeasureArgs),
    /// Create a blank image.
    Create(CreateArgs),
    /// Change an image's virtual size.
    Resize(ResizeArgs),
    /// Write a cloud-init NoCloud seed ISO (volume `cidata`) and its Glance metadata.
    Seed(SeedArgs),
    /// Customise an image under QEMU with cloud-init, generalise it, boot-test it and publish
    /// it (a golden image).
    Bake(BakeArgs),
    /// Upload artifacts to OpenStack Glance from their `.glance.json` metadata.
    Upload(UploadArgs),
    /// Push an OCI image layout (a KubeVirt containerDisk from `prepare --container-format
    /// containerdisk`) to registries.
    Push(PushArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the manual page, or write one page per command into a folder.
    Man(ManArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StreamArg {
    Released,
    Daily,
    Minimal,
    MinimalDaily,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    Html,
    Streams,
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Architecture, as the source names it (amd64, arm64, ppc64el, ...) or as Glance does
    /// (x86_64, aarch64, ppc64le, ...).
    #[arg(long, default_value = "amd64")]
    pub arch: String,
    /// Image stream: released serials, daily builds, or their minimal variants (Ubuntu).
    #[arg(long, value_enum, default_value_t = StreamArg::Released)]
    pub stream: StreamArg,
    /// Discovery source; default simplestreams where the stream has the release, else HTML.
    #[arg(long, value_enum)]
    pub source: Option<SourceArg>,
    /// A serial such as 20240821 or 20241004.1 (Debian: 20240717-1811); `latest` (default) is
    /// the newest.
    #[arg(long)]
    pub serial: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Sizes: human (KiB, MiB, GiB) when stdout is a terminal; exact bytes when it is not (a pipe, a
script, cron) and in --json, so scripts read the same numbers either way. ~ marks an HTML
listing's rounded figure.")]
pub struct ListArgs {
    /// Codename or version (noble, 24.04); without it, list releases.
    pub release: Option<String>,
    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Codename or version (noble, 24.04; bookworm, 12).
    pub release: String,
    #[command(flatten)]
    pub selection: Selection,
    /// File kind [default: the catalog's, disk1.img for Ubuntu, genericcloud.qcow2 for Debian].
    /// Ubuntu: simplestreams ftype words (disk1.img, disk-kvm.img, vmdk, ova, tar.gz,
    /// root.tar.xz, squashfs, vhd.tar.gz, manifest, ...); Debian: <variant>.<format>
    /// (genericcloud.qcow2, nocloud.raw, generic.tar.xz, ec2.json, ...).
    #[arg(long = "file", value_name = "KIND")]
    pub kind: Option<String>,
    /// Output directory.
    #[arg(short = 'o', long = "output", default_value = ".", value_name = "DIR")]
    pub output: PathBuf,
    /// Skip the OpenPGP check of SHA256SUMS (logged; checksums are still verified). Sources
    /// that publish no signature (Debian) are reported as such either way.
    #[arg(long)]
    pub no_verify_signature: bool,
    /// After verifying, convert the image to this disk format (raw, qcow2, vmdk, vhd, vhdx, vdi).
    #[arg(long, value_name = "FMT")]
    pub convert: Option<String>,
    /// Options for --convert, as qemu-img's -o (comma-separated key=value, repeatable).
    #[arg(long = "convert-options", value_name = "OPTIONS", requires = "convert")]
    pub convert_options: Vec<String>,
    #[command(flatten)]
    pub deprecated: DeprecatedConvertOptions,
}

/// qemu-img's `--output`: how `info`, `check` and `measure` print (the global `--json` is the
/// same as `--output=json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Human,
    Json,
}

/// qemu-img check's `-r`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RepairArg {
    /// Free leaked clusters (refcounts higher than the references).
    Leaks,
    /// Also fix refcounts that are too low and wrong COPIED flags.
    All,
}

/// `-O OPTIONS`, the old spelling of `--convert-options` in `fetch` and `prepare`: `-O` means
/// the output format everywhere else (qemu-img convert). Still accepted, with a warning.
#[derive(Debug, Args)]
pub struct DeprecatedConvertOptions {
    #[arg(short = 'O', value_name = "OPTIONS", hide = true)]
    pub options: Vec<String>,
}

impl DeprecatedConvertOptions {
    /// `--convert-options` values followed by any `-O` ones (warned about).
    pub fn merged(&self, current: &[String]) -> Vec<String> {
        if !self.options.is_empty() {
            tracing::warn!(
                "-O OPTIONS is deprecated in fetch and prepare (-O is convert's output format); \
                 use --convert-options OPTIONS"
            );
        }
        current.iter().chain(&self.options).cloned().collect()
    }
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Input format (detected by content when omitted).
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Output layout, as qemu-img info's.
    #[arg(long, value_enum, default_value_t = OutputArg::Human, value_name = "FMT")]
    pub output: OutputArg,
    /// The image.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input format (detected by content when omitted).
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Output format: raw, qcow2, vmdk, vhd (vpc), vhdx, vdi.
    #[arg(short = 'O', value_name = "FMT")]
    pub output_format: String,
    /// Format options, comma-separated key=value (repeatable), e.g. -o subformat=streamOptimized;
    /// `-o help` lists the output format's options.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Compress (qcow2; vmdk streamOptimized is always compressed).
    #[arg(short = 'c')]
    pub compress: bool,
    /// Show progress: a bar on a terminal, otherwise qemu-img's `    (NN.NN/100%)` + CR lines
    /// on stdout.
    #[arg(short = 'p')]
    pub progress: bool,
    /// Compression threads (default: every core).
    #[arg(short = 'm', value_name = "THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Azure preset for vhd: fixed, force_size, size rounded up to a whole MiB.
    #[arg(long)]
    pub azure: bool,
    /// The image to read (a disk image, or an archive holding one: tar.gz, tar.xz, ova).
    #[arg(required_unless_present = "options")]
    pub source: Option<PathBuf>,
    /// The image to write (published under this name only once complete). A symbolic link is
    /// followed, as qemu-img does: the file it points to is replaced. A block device is written
    /// in place with -O raw (zero regions zeroed; refused when smaller than the image or in
    /// use). Character devices, FIFOs and folders are refused, never replaced.
    #[arg(required_unless_present = "options")]
    pub destination: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Input format (detected by content when omitted).
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Output layout, as qemu-img check's.
    #[arg(long, value_enum, default_value_t = OutputArg::Human, value_name = "FMT")]
    pub output: OutputArg,
    /// Repair the image in place (qcow2), then check it again.
    #[arg(short = 'r', value_enum, value_name = "leaks|all")]
    pub repair: Option<RepairArg>,
    /// The image.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Format of the first image (detected by content when omitted).
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Format of the second image (detected by content when omitted).
    #[arg(short = 'F', value_name = "FMT")]
    pub second_format: Option<String>,
    /// Strict: images of different sizes, or with data where the other has a hole, differ.
    #[arg(short = 's')]
    pub strict: bool,
    /// Show progress (as convert -p).
    #[arg(short = 'p')]
    pub progress: bool,
    /// The first image.
    pub first: PathBuf,
    /// The second image.
    pub second: PathBuf,
}

#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Output layout, as qemu-img measure's.
    #[arg(long, value_enum, default_value_t = OutputArg::Human, value_name = "FMT")]
    pub output: OutputArg,
    /// Format of the image to measure (detected by content when omitted).
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Output format: qcow2 or raw.
    #[arg(short = 'O', value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    /// Output format options, comma-separated key=value (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Measure a blank image of this virtual size instead of a file (K, M, G, T suffixes).
    #[arg(long, value_name = "SIZE", conflicts_with = "file")]
    pub size: Option<String>,
    /// The image to measure.
    #[arg(required_unless_present = "size")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Format of the new image: raw, qcow2, vmdk, vhd (vpc), vhdx, vdi.
    #[arg(short = 'f', value_name = "FMT")]
    pub format: String,
    /// Format options, comma-separated key=value (repeatable); `-o help` lists them.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// The image to create (as for convert's destination: a symbolic link is followed; a
    /// block device is zeroed in place for -f raw; character devices, FIFOs and folders are
    /// refused).
    #[arg(required_unless_present = "options")]
    pub file: Option<PathBuf>,
    /// Virtual size, with an optional K, M, G or T suffix.
    #[arg(required_unless_present = "options")]
    pub size: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// Image format (detected by content when omitted).
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Allow a smaller size (data past the new end is lost).
    #[arg(long)]
    pub shrink: bool,
    /// The image to resize in place.
    pub file: PathBuf,
    /// New size, or +SIZE / -SIZE relative to the current one.
    #[arg(allow_hyphen_values = true)]
    pub size: String,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// cloud-init user data (`#cloud-config …`).
    #[arg(long, value_name = "FILE")]
    pub user_data: PathBuf,
    /// NoCloud meta-data; default: an instance-id derived from the user data.
    #[arg(long, value_name = "FILE")]
    pub meta_data: Option<PathBuf>,
    /// Network configuration (v1 or v2).
    #[arg(long, value_name = "FILE")]
    pub network_config: Option<PathBuf>,
    /// The ISO to write; `<FILE>.glance.json` is written beside it.
    #[arg(
        short = 'o',
        long = "output",
        default_value = "seed.iso",
        value_name = "FILE"
    )]
    pub output: PathBuf,
    /// Glance image name [default: <output file stem>-<first 12 hex digits of the ISO's
    /// SHA-256>, so different seeds get different names and the same seed the same one].
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FirmwareArg {
    Bios,
    /// UEFI (Glance's `uefi`, OVF's `efi`).
    #[value(alias = "efi")]
    Uefi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ManifestHashArg {
    Sha256,
    /// For VMware products older than ESXi 6.5.
    Sha1,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Codename or version (noble, 24.04).
    pub release: String,
    #[command(flatten)]
    pub selection: Selection,
    /// Say what would be fetched, written and uploaded (and the Glance names); only index
    /// documents are read: nothing is downloaded, written or uploaded, not even the cache.
    #[arg(long)]
    pub dry_run: bool,
    /// Glance disk_format: raw, qcow2, vmdk, vhd, vhdx, vdi, or aki/ari/ami.
    #[arg(
        long,
        default_value = "qcow2",
        value_name = "FMT",
        ignore_case = true,
        hide_possible_values = true
    )]
    pub disk_format: cloudimg::glance::DiskFormat,
    /// Glance container_format: bare, ovf, ova, aki, ari, ami; or containerdisk (a KubeVirt
    /// containerDisk: the output directory becomes an OCI image layout for `cloudimg push`).
    #[arg(
        long,
        default_value = "bare",
        value_name = "FMT",
        ignore_case = true,
        hide_possible_values = true
    )]
    pub container_format: cloudimg::glance::ContainerFormat,
    /// containerdisk: gzip the layer (qcow2 disks are often compressed already).
    #[arg(long)]
    pub gzip_layer: bool,
    /// Upstream file kind to start from [default: disk1.img; tar.gz for ami].
    #[arg(long = "file", value_name = "KIND")]
    pub kind: Option<String>,
    /// Output directory (downloads, artifacts and their .glance.json).
    #[arg(short = 'o', long = "output", default_value = ".", value_name = "DIR")]
    pub output: PathBuf,
    /// Conversion options, as qemu-img's -o (e.g. subformat=streamOptimized,
    /// preallocation=metadata; comma-separated, repeatable).
    #[arg(long = "convert-options", value_name = "OPTIONS")]
    pub convert_options: Vec<String>,
    #[command(flatten)]
    pub deprecated: DeprecatedConvertOptions,
    /// Compress the qcow2 output.
    #[arg(short = 'c')]
    pub compress: bool,
    /// Skip the OpenPGP check of SHA256SUMS (logged; checksums are still verified).
    #[arg(long)]
    pub no_verify_signature: bool,
    /// Glance image name [default: <upstream file stem>-<serial>-<disk format>, then
    /// -<container format> unless bare].
    #[arg(long)]
    pub name: Option<String>,
    /// Minimum RAM in MiB [default: the catalog's].
    #[arg(long, value_name = "MIB")]
    pub min_ram: Option<u64>,
    /// private, shared, community or public.
    #[arg(long, default_value = "private")]
    pub visibility: String,
    /// Image tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Image property KEY=VALUE (repeatable), applied after the catalog's.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Catalog property preset (kvm, vmware, hyperv) [default: by disk format].
    #[arg(long)]
    pub preset: Option<String>,
    /// Firmware the image boots with (hw_firmware_type; OVF firmware).
    #[arg(long, value_enum, default_value_t = FirmwareArg::Bios)]
    pub firmware: FirmwareArg,
    /// Virtual CPUs in the OVF descriptor.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Memory in MiB in the OVF descriptor.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    pub memory: u64,
    /// Digest of the OVF manifest (.mf).
    #[arg(long, value_enum, default_value_t = ManifestHashArg::Sha256)]
    pub manifest_hash: ManifestHashArg,
    /// Bake the verified upstream disk with this recipe (TOML, as `bake --recipe`) before
    /// converting it; the metadata records the recipe's digest (cloudimg_recipe_sha256) and
    /// cloudimg_baked=true, the console log is kept as <artifact>.bake.log.
    #[arg(long, value_name = "RECIPE")]
    pub bake: Option<PathBuf>,
    /// The accelerator of --bake's guest.
    #[arg(long, value_enum, env = "CLOUDIMG_ACCEL", default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// Then upload the artifacts to Glance (credentials as for `upload`).
    #[arg(long)]
    pub upload: bool,
    #[command(flatten)]
    pub glance: GlanceArgs,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The user catalog (TOML; see catalogs/examples/).
    #[arg(value_name = "CATALOG")]
    pub user_catalog: PathBuf,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Entries worked on at once, side by side (one converts while another downloads).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// Only this entry (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Wait for a running sync of the same root instead of exiting with status 6.
    #[arg(long)]
    pub wait: bool,
    /// Accept a mirror whose newest serial is older than the published one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// The accelerator of the guests of [image.bake] entries.
    #[arg(long, value_enum, env = "CLOUDIMG_ACCEL", default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// Skip the OpenPGP check of checksum files (logged; checksums are still verified).
    #[arg(long)]
    pub no_verify_signature: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Credentials come from the usual OpenStack variables: OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,
OS_PROJECT_NAME or OS_PROJECT_ID, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME (default
Default), OS_REGION_NAME, OS_INTERFACE; or OS_APPLICATION_CREDENTIAL_ID and _SECRET; or
OS_CLOUD naming a cloud of clouds.yaml; or a token. Without any, Glance is called
unauthenticated (--glance is then required).

Several targets: --os-cloud repeated (and/or --os-region-name), or --target NAME naming
[[glance]] tables of a user catalog (--user-catalog). Each target is independent: one that
fails is reported in its row and the others still get the images (exit 5).")]
pub struct UploadArgs {
    /// A `<artifact>.glance.json` file, or a directory: every `*.glance.json` directly in it.
    #[arg(value_name = "DIR_OR_METADATA")]
    pub path: PathBuf,
    /// Say what would be uploaded (or found already present, or refused) to each target;
    /// only read: no image is created.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub glance: GlanceArgs,
}

/// How long an import may run before cloudimg stops waiting (large images on slow stores).
pub const DEFAULT_IMPORT_TIMEOUT_SECONDS: u64 = 1800;

/// Where and how artifacts are uploaded (`upload`, `prepare --upload`).
#[derive(Debug, Args)]
pub struct GlanceArgs {
    /// Glance's URL, instead of the one in the Keystone service catalog.
    #[arg(long, env = "OS_IMAGE_URL", value_name = "URL")]
    pub glance: Option<String>,
    /// A Keystone token sent as X-Auth-Token, instead of authenticating [env: OS_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Use the interoperable import (stage, then glance-direct) instead of a direct upload.
    #[arg(long)]
    pub import: bool,
    /// Give up waiting for an import after this many seconds (the image is left in place).
    #[arg(long, default_value_t = DEFAULT_IMPORT_TIMEOUT_SECONDS, value_name = "SECONDS")]
    pub import_timeout: u64,
    /// A cloud of clouds.yaml to upload to, as OS_CLOUD (repeatable: one target each).
    #[arg(long = "os-cloud", value_name = "CLOUD")]
    pub os_cloud: Vec<String>,
    /// A region, as OS_REGION_NAME (repeatable: with one --os-cloud, one target per region;
    /// otherwise paired with the --os-cloud of the same position).
    #[arg(long = "os-region-name", value_name = "REGION")]
    pub os_region_name: Vec<String>,
    /// The project to scope the Keystone token to, instead of the cloud's or the
    /// environment's [env: OS_PROJECT_NAME] (applies to every --os-cloud/--os-region-name
    /// target; a catalog's --target has its own).
    #[arg(
        long = "os-project-name",
        value_name = "PROJECT",
        conflicts_with = "targets"
    )]
    pub os_project_name: Option<String>,
    /// A [[glance]] target of the user catalog named by --user-catalog (repeatable).
    #[arg(long = "target", value_name = "NAME", requires = "user_catalog")]
    pub targets: Vec<String>,
    /// The user catalog whose [[glance]] targets --target names.
    #[arg(long, env = "CLOUDIMG_USER_CATALOG", value_name = "FILE")]
    pub user_catalog: Option<PathBuf>,
    /// Create the image even when Glance has one of the same name with other content
    /// (os_hash_value, else checksum); without it that stops the upload with exit 7.
    #[arg(long)]
    pub allow_duplicates: bool,
}

impl GlanceArgs {
    /// Whether the targets were named (one or several), so results are shown per target.
    pub fn names_targets(&self) -> bool {
        !(self.os_cloud.is_empty() && self.os_region_name.is_empty() && self.targets.is_empty())
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
Credentials come from the containers auth files, as podman and skopeo use them:
$REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json,
~/.config/containers/auth.json, ~/.docker/config.json (podman login / docker login write
them). Registries asking for a bearer token (WWW-Authenticate: Bearer) get one from their
token service with those credentials.

Without a tag in the destination, the image gets <release>-<serial>, <release> and latest
(moved last), from the layout's annotations.")]
pub struct PushArgs {
    /// The OCI image layout folder (as written by `prepare --container-format containerdisk`).
    #[arg(value_name = "DIR")]
    pub layout: PathBuf,
    /// docker://REGISTRY/REPOSITORY[:TAG] (repeatable: blobs are mounted across repositories
    /// of one registry when it allows).
    #[arg(value_name = "DESTINATION", required = true)]
    pub destinations: Vec<String>,
    /// The image of the layout's index.json to push, by its ref name [default: the only one].
    #[arg(long = "ref", value_name = "NAME")]
    pub ref_name: Option<String>,
    /// Another tag to set (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Talk plain HTTP to the registry (lab registries without TLS).
    #[arg(long)]
    pub insecure_registry: bool,
    /// Upload blobs in chunks of this size (e.g. 64M) instead of one request each.
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<String>,
    /// Keep this many <release>-<serial> tags; delete the manifests of older ones.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The user catalog (TOML) naming the images to mirror; its `keep` says how many serials.
    // Not `catalog`: that id is the global --catalog option's.
    #[arg(value_name = "CATALOG")]
    pub user_catalog: PathBuf,
    /// The mirror tree to create or update.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Say which serials each entry would hold, which files would be fetched and which serials
    /// pruned; only index documents and the tree are read, nothing is written.
    #[arg(long)]
    pub dry_run: bool,
    /// Only this entry (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Skip the OpenPGP check of checksum files (logged; checksums are still verified).
    #[arg(long)]
    pub no_verify_signature: bool,
}

// `completions` and `man`: documentation generated from these definitions.

#[derive(Debug, Args)]
#[command(after_help = "\
Install (bash): cloudimg completions bash > ~/.local/share/bash-completion/completions/cloudimg
        (zsh):  cloudimg completions zsh > ~/.zfunc/_cloudimg  (with ~/.zfunc in $fpath)
        (fish): cloudimg completions fish > ~/.config/fish/completions/cloudimg.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Install: cloudimg man --dir ~/.local/share/man/man1 (then `man cloudimg`, `man cloudimg-fetch`)")]
pub struct ManArgs {
    /// Write cloudimg.1 and one cloudimg-COMMAND.1 per command into this folder instead of
    /// printing cloudimg.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    /// KVM when /dev/kvm works (and is not a paravirtual kvm_pvm), else TCG.
    Auto,
    Kvm,
    /// Emulation: slow (about 50 s for a small recipe) but works everywhere.
    Tcg,
}

#[derive(Debug, Args)]
#[command(after_help = "\
The recipe is cloud-init: --user-data (any #cloud-config) and the shorthands compose into one
cloud-config, checked before anything boots. cloudimg then boots a working copy under QEMU,
waits for cloud-init, generalises the guest (cloud-init clean, empty machine-id, no SSH host
keys, logs emptied), trims it, powers it off, boots the result once more from a throwaway
overlay as a new instance (the boot test), and only then converts and publishes it. The
guest's serial console is written to <OUTPUT>.bake.log, also on failure.

A recipe file (--recipe) is TOML with the same names: user_data (a file) or cloud_config
(inline), user, ssh_authorized_keys, password_hash, packages, run, write_files, hostname,
disk_size, memory, cpus, timeout, boot_test (true/false), direct_kernel (true/false), network
(user, restricted, none), guestfwd (a list of rules);
paths are relative to the recipe, unknown keys are refused. Options given on the command line
are added to it (lists) or win over it (single values). `prepare --bake` and a user catalog's
[image.bake] take the same recipe.

Exit codes: 10 a --run command failed, 11 cloud-init error, 12 timeout, 13 boot test failed,
14 QEMU missing, 130 interrupted; nothing is published in each case.")]
pub struct BakeArgs {
    /// A local image (any format cloudimg reads), or a release (noble, 24.04) fetched and
    /// verified as `fetch` does into the output's folder.
    // Not `source`: that id is Selection's --source.
    #[arg(value_name = "SOURCE")]
    pub image: String,
    #[command(flatten)]
    pub selection: Selection,
    /// Source format (detected by content when omitted).
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// The image to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Output format: raw, qcow2, vmdk, vhd (vpc), vdi.
    #[arg(short = 'O', value_name = "FMT", default_value = "qcow2")]
    pub output_format: String,
    /// Output format options, comma-separated key=value (repeatable), as qemu-img's -o.
    #[arg(long = "options", value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Compress the qcow2 output.
    #[arg(short = 'c')]
    pub compress: bool,
    /// A TOML recipe file.
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// cloud-init user data (#cloud-config).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// An SSH public key file for the image's default user, or --user (repeatable).
    #[arg(long = "ssh-authorized-key", value_name = "FILE")]
    pub ssh_authorized_keys: Vec<PathBuf>,
    /// Create this user (sudo without password) for the keys and password hash.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The --user's password as a crypt(3) hash (mkpasswd -m sha-512); never a clear password.
    #[arg(long, value_name = "HASH", requires = "user")]
    pub password_hash: Option<String>,
    /// A package to install (repeatable).
    #[arg(long = "package", value_name = "NAME")]
    pub packages: Vec<String>,
    /// A shell command to run as root (repeatable, in order; the first failure stops the bake).
    #[arg(long = "run", value_name = "CMD")]
    pub run: Vec<String>,
    /// Copy a local file into the guest (repeatable).
    #[arg(long = "write-file", value_name = "LOCAL:GUEST[:MODE]")]
    pub write_files: Vec<String>,
    /// The image's hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Grow the disk to this size first (K, M, G, T suffixes); cloud-init grows the root.
    #[arg(long, value_name = "SIZE")]
    pub disk_size: Option<String>,
    /// Give up on a boot that has not powered off after this long (seconds, or 90s, 20m, 1h)
    /// [default: 30m].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Skip the boot test of the result.
    #[arg(long)]
    pub no_boot_test: bool,
    /// Boot the bake through the firmware and the image's boot loader instead of loading the
    /// image's kernel directly (the boot test always goes through the boot loader).
    #[arg(long)]
    pub no_direct_kernel: bool,
    /// The accelerator.
    #[arg(long, value_enum, env = "CLOUDIMG_ACCEL", default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// Guest memory in MiB [default: 2048].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Guest CPUs [default: 2].
    #[arg(long)]
    pub cpus: Option<u32>,
    /// No network in the guest (offline recipes).
    #[arg(long, conflicts_with = "restrict_network")]
    pub no_network: bool,
    /// A NIC with DHCP but no traffic out of the guest (QEMU's restrict=on).
    #[arg(long)]
    pub restrict_network: bool,
    /// A QEMU guestfwd rule (repeatable), the way a restricted guest reaches one host server:
    /// tcp:10.0.2.100:80-tcp:127.0.0.1:8080 (10.0.2.2 itself cannot be forwarded).
    #[arg(long, value_name = "RULE")]
    pub guestfwd: Vec<String>,
    /// Skip the OpenPGP check of SHA256SUMS when SOURCE is a release.
    #[arg(long)]
    pub no_verify_signature: bool,
}
