//! `prepare`: fetch and verify → convert → wrap in a Glance container → write the metadata an
//! operator needs to upload it.
//!
//! The plan (which upstream files, which artifacts) is decided before anything is downloaded, so
//! combinations Glance would reject fail at once. Every artifact appears under its final name only
//! when complete; its `<artifact>.glance.json` is written last.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

use super::{fetch_entry, Error, Fetched, Refusal, SignaturePolicy, VISIBILITIES};
use crate::catalog::Catalog;
use crate::container::glance::{Digests, ImageMetadata};
use crate::container::manifest::ManifestHash;
use crate::container::ovf::{self, Firmware, OvfSpec};
use crate::container::{self, ova, ContainerFormat};
use crate::fetch::Client;
use crate::formats::{self, DiskFormat, Options};
use crate::glance::{self, Amazon};
use crate::index::{Discovery, FileEntry, IndexError, Listing, Query};
use crate::io::blocking;
use crate::io::digests::DigestTee;
use crate::io::progress::Reporter;

/// Default upstream kind of the ami machine image: the raw disk inside the `.tar.gz`.
const DEFAULT_AMI_KIND: &str = "tar.gz";
/// Kinds of the kernel and ramdisk of an aki/ari/ami set.
pub(super) const KERNEL_KIND: &str = "vmlinuz";
pub(super) const RAMDISK_KIND: &str = "initrd";

/// OVF disk format URIs by VMDK subformat (VMware's vmdk.html fragments).
const VMDK_SPARSE_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#sparse";

/// What the Glance image records say, beyond what the catalog presets give.
#[derive(Clone, Debug, Default)]
pub struct ImageSettings {
    /// Image name; default `<artifact stem>-<serial>`. For an ami set the kernel and ramdisk are
    /// named `<name>-kernel` and `<name>-ramdisk`.
    pub name: Option<String>,
    /// MiB; default the catalog's.
    pub min_ram: Option<u64>,
    /// `private` (default), `shared`, `community` or `public`.
    pub visibility: Option<String>,
    pub tags: Vec<String>,
    /// A catalog preset by name; default the first one listing the disk format.
    pub preset: Option<String>,
    /// `key=value` overrides, applied last.
    pub properties: Vec<(String, String)>,
}

/// The virtual machine an OVF descriptor describes, and the manifest digest.
#[derive(Clone, Copy, Debug)]
pub struct MachineSettings {
    pub cpus: u32,
    pub memory_mib: u64,
    pub firmware: Firmware,
    pub manifest_hash: ManifestHash,
    /// How a containerDisk's layer is stored (plain tar or gzip).
    pub layer: crate::oci::layer::Compression,
}

impl Default for MachineSettings {
    fn default() -> MachineSettings {
        MachineSettings {
            cpus: 2,
            memory_mib: 2048,
            firmware: Firmware::Bios,
            manifest_hash: ManifestHash::Sha256,
            layer: crate::oci::layer::Compression::None,
        }
    }
}

/// One `prepare` request.
pub struct PrepareRequest<'a> {
    pub query: Query,
    pub serial: Option<String>,
    /// Upstream file kind (simplestreams ftype); default `disk1.img`, `tar.gz` for ami.
    pub kind: Option<String>,
    pub disk_format: glance::DiskFormat,
    pub container: ContainerFormat,
    /// Where the artifacts go.
    pub output_dir: PathBuf,
    /// Where upstream files are downloaded (and resumed from); default `output_dir`.
    pub download_dir: Option<PathBuf>,
    pub signature: SignaturePolicy<'a>,
    /// qemu-img style `-o` options of the conversion.
    pub convert_options: Options,
    pub image: ImageSettings,
    pub machine: MachineSettings,
    /// Bake the upstream disk with this recipe before converting it.
    pub bake: Option<super::BakeStep>,
}

/// One artifact ready for Glance.
#[derive(Debug, serde::Serialize)]
pub struct Artifact {
    /// The file Glance receives.
    pub path: PathBuf,
    /// Its `<artifact>.glance.json`.
    pub metadata_path: PathBuf,
    /// Other files of the package (the OVF descriptor and manifest).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub package_files: Vec<PathBuf>,
    pub metadata: ImageMetadata,
}

/// What `prepare` did, as printed with `--json`.
#[derive(Debug, serde::Serialize)]
pub struct Prepared {
    pub release: String,
    pub version: String,
    pub serial: String,
    pub arch: String,
    /// The verified upstream files.
    pub sources: Vec<Fetched>,
    /// In upload order: kernel and ramdisk before the machine image.
    pub artifacts: Vec<Artifact>,
    /// `--container-format containerdisk`: the OCI image layout written (no Glance artifact).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerdisk: Option<crate::oci::LayoutSummary>,
    /// `--bake`: the recipe's digest, the console log, where the seconds went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake: Option<super::BakeReport>,
}

/// What is being produced, decided before any download.
pub(super) enum Plan {
    /// One disk (bare, ovf or ova).
    Disk {
        kind: String,
        format: DiskFormat,
        container: ContainerFormat,
    },
    /// Amazon-style images: any of kernel (aki), ramdisk (ari), machine image (ami).
    Amazon {
        kernel: bool,
        ramdisk: bool,
        machine: Option<String>,
    },
}

pub(super) fn plan(request: &PrepareRequest<'_>, catalog: &Catalog) -> Result<Plan, Error> {
    let disk_format = request.disk_format;
    container::validate(disk_format, request.container)?;
    if request.bake.is_some() && disk_format.amazon().is_some() {
        return Err(Refusal::BakeNeedsADisk {
            format: disk_format,
        }
        .into());
    }
    match disk_format {
        glance::DiskFormat::Iso => return Err(Refusal::SeedIsNotADisk.into()),
        glance::DiskFormat::Ploop => {
            return Err(Refusal::NotWritten {
                format: disk_format,
            }
            .into())
        }
        _ => {}
    }
    if let Some(visibility) = &request.image.visibility {
        if !VISIBILITIES.contains(&visibility.as_str()) {
            return Err(Refusal::Visibility {
                value: visibility.clone(),
            }
            .into());
        }
    }
    match disk_format.amazon() {
        Some(Amazon::Kernel | Amazon::Ramdisk) if request.kind.is_some() => {
            Err(Refusal::FileForKernelOrRamdisk {
                format: disk_format,
            }
            .into())
        }
        Some(part @ (Amazon::Kernel | Amazon::Ramdisk)) => Ok(Plan::Amazon {
            kernel: part == Amazon::Kernel,
            ramdisk: part == Amazon::Ramdisk,
            machine: None,
        }),
        Some(Amazon::Machine) => Ok(Plan::Amazon {
            kernel: true,
            ramdisk: true,
            machine: upstream_kind(catalog, disk_format, request.kind.as_deref()),
        }),
        None => {
            let format = DiskFormat::from_glance(disk_format).ok_or(Refusal::NotWritable {
                format: disk_format,
            })?;
            if format == DiskFormat::Vmdk {
                check_vmdk_subformat(request.container, &request.convert_options)?;
            }
            Ok(Plan::Disk {
                kind: upstream_kind(catalog, disk_format, request.kind.as_deref()).ok_or_else(
                    || Refusal::NoDefaultKind {
                        catalog: catalog.name.clone(),
                    },
                )?,
                format,
                container: request.container,
            })
        }
    }
}

/// The upstream file an artifact of `disk_format` starts from: the one asked for, else the raw
/// disk of the `.tar.gz` for an ami, else the catalog's default kind.
pub fn upstream_kind(
    catalog: &Catalog,
    disk_format: glance::DiskFormat,
    asked: Option<&str>,
) -> Option<String> {
    if let Some(kind) = asked {
        return Some(kind.to_owned());
    }
    if disk_format.amazon() == Some(Amazon::Machine) {
        return Some(DEFAULT_AMI_KIND.to_owned());
    }
    catalog.default_kind.clone()
}

/// Glance's import refuses VMDKs with flat extents, and OVF packages carry one file per disk.
fn check_vmdk_subformat(container: ContainerFormat, options: &Options) -> Result<(), Error> {
    let subformat = options.get("subformat").unwrap_or(match container {
        ContainerFormat::Ovf | ContainerFormat::Ova => "streamOptimized",
        _ => "monolithicSparse",
    });
    if subformat.eq_ignore_ascii_case("monolithicFlat") {
        return Err(Refusal::FlatVmdk.into());
    }
    Ok(())
}

/// Fetches, converts, wraps and describes images for Glance.
pub async fn prepare(
    client: &Client,
    catalog: &Catalog,
    mirror: &Url,
    request: PrepareRequest<'_>,
    reporter: Arc<dyn Reporter>,
) -> Result<Prepared, Error> {
    // Refused combinations fail before any request.
    plan(&request, catalog)?;
    let discovery = Discovery::new(client, catalog, mirror.clone());
    let listing = discovery
        .listing(&request.query, request.serial.as_deref())
        .await?;
    prepare_listing(client, catalog, &discovery, &listing, request, reporter).await
}

/// [`prepare`] of a build already discovered: `listing` is used as it is (`sync` resolved it
/// to decide whether there is anything to do), and `discovery` only locates the files of its
/// `unpacked/` folder.
pub async fn prepare_listing(
    client: &Client,
    catalog: &Catalog,
    discovery: &Discovery<'_>,
    listing: &Listing,
    request: PrepareRequest<'_>,
    reporter: Arc<dyn Reporter>,
) -> Result<Prepared, Error> {
    let plan = plan(&request, catalog)?;
    // Building moves to a blocking thread: it owns what it reads.
    let describe = Describe {
        catalog: catalog.clone(),
        listing: listing.clone(),
        request: BuildSettings {
            output_dir: request.output_dir.clone(),
            convert_options: request.convert_options.clone(),
            image: request.image.clone(),
            machine: request.machine,
        },
        reporter: reporter.clone(),
    };
    let inputs = Inputs {
        client,
        catalog,
        discovery,
        listing,
        downloads: Downloads {
            dir: request
                .download_dir
                .as_deref()
                .unwrap_or(&request.output_dir),
            signature: &request.signature,
            output_dir: &request.output_dir,
        },
        reporter: reporter.as_ref(),
    };
    let built = match plan {
        Plan::Disk {
            kind,
            format,
            container,
        } => {
            let bake = request.bake.as_ref();
            disk_plan(&inputs, describe, bake, &kind, format, container).await?
        }
        Plan::Amazon {
            kernel,
            ramdisk,
            machine,
        } => amazon_plan(&inputs, describe, kernel, ramdisk, machine.as_deref()).await?,
    };
    Ok(Prepared {
        release: listing.release.codename.clone(),
        version: listing.release.version.clone(),
        serial: listing.serial.clone(),
        arch: listing.arch.clone(),
        sources: built.sources,
        artifacts: built.artifacts,
        containerdisk: built.containerdisk,
        bake: built.bake,
    })
}

/// What a plan reads from and writes with.
struct Inputs<'a, 'd> {
    client: &'a Client,
    catalog: &'a Catalog,
    discovery: &'a Discovery<'d>,
    listing: &'a Listing,
    downloads: Downloads<'a>,
    reporter: &'a dyn Reporter,
}

impl Inputs<'_, '_> {
    async fn fetch(&self, listing: &Listing, file: &FileEntry) -> Result<Fetched, Error> {
        fetch(
            self.client,
            self.catalog,
            listing,
            file,
            &self.downloads,
            self.reporter,
        )
        .await
    }
}

/// What a plan built.
#[derive(Default)]
struct Built {
    sources: Vec<Fetched>,
    artifacts: Vec<Artifact>,
    containerdisk: Option<crate::oci::LayoutSummary>,
    bake: Option<super::BakeReport>,
}

/// One disk, baked first when asked: an artifact (bare, ovf, ova) or a containerDisk layout.
async fn disk_plan(
    inputs: &Inputs<'_, '_>,
    mut describe: Describe,
    bake: Option<&super::BakeStep>,
    kind: &str,
    format: DiskFormat,
    container: ContainerFormat,
) -> Result<Built, Error> {
    let mut built = Built::default();
    let output_dir = inputs.downloads.output_dir;
    let file = inputs.listing.file(kind)?;
    let fetched = inputs.fetch(inputs.listing, file).await?;
    // `--bake`: the build starts from the baked disk, its metadata says so.
    let baked = match bake {
        Some(step) => Some(
            super::bake::bake_source(
                step,
                &fetched,
                output_dir,
                &inputs.listing.arch,
                describe.reporter.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let mut source = fetched.clone();
    if let Some(baked) = &baked {
        source = baked.fetched.clone();
        describe
            .request
            .image
            .properties
            .extend(baked.properties.iter().cloned());
    }
    let kind = kind.to_owned();
    let log_beside = if container == ContainerFormat::ContainerDisk {
        let built_layout = on_blocking(&describe, &source, move |describe, fetched| {
            build_containerdisk(fetched, &kind, format, describe)
        });
        built.containerdisk = Some(built_layout.await?);
        output_dir.join(&file.name)
    } else {
        let artifact = on_blocking(&describe, &source, move |describe, fetched| {
            build_disk(fetched, &kind, format, container, describe)
        })
        .await?;
        let path = artifact.path.clone();
        built.artifacts.push(artifact);
        path
    };
    if let Some(baked) = baked {
        built.bake = Some(baked.finish(&log_beside).await?);
    }
    built.sources.push(fetched);
    Ok(built)
}

/// Amazon-style images: the kernel and ramdisk first (their names go into the machine
/// image's metadata), then the machine image.
async fn amazon_plan(
    inputs: &Inputs<'_, '_>,
    describe: Describe,
    kernel: bool,
    ramdisk: bool,
    machine: Option<&str>,
) -> Result<Built, Error> {
    let mut built = Built::default();
    // Fetch everything before building anything: a missing kernel should not cost a
    // machine-image conversion.
    let mut parts = Vec::new();
    for (wanted, kind, role) in [
        (kernel, KERNEL_KIND, Amazon::Kernel),
        (ramdisk, RAMDISK_KIND, Amazon::Ramdisk),
    ] {
        if wanted {
            let (sub_listing, file) = unpacked_file(inputs.discovery, inputs.listing, kind)?;
            parts.push((role, inputs.fetch(&sub_listing, &file).await?));
        }
    }
    let machine_source = match machine {
        Some(kind) => {
            let file = inputs.listing.file(kind)?;
            Some(inputs.fetch(inputs.listing, file).await?)
        }
        None => None,
    };
    let mut links = (None, None);
    for (role, fetched) in parts {
        let artifact = on_blocking(&describe, &fetched, move |describe, fetched| {
            build_amazon_part(fetched, role, describe)
        })
        .await?;
        let file_name = artifact.metadata.file.clone();
        match role {
            Amazon::Kernel => links.0 = Some(file_name),
            _ => links.1 = Some(file_name),
        }
        built.sources.push(fetched);
        built.artifacts.push(artifact);
    }
    if let Some(fetched) = machine_source {
        let artifact = on_blocking(&describe, &fetched, move |describe, fetched| {
            build_machine_image(fetched, links, describe)
        })
        .await?;
        built.sources.push(fetched);
        built.artifacts.push(artifact);
    }
    Ok(built)
}

/// Where a request's upstream files go, and how their checksum file is trusted: what fetching
/// needs of the request (the rest stays off the awaiting task).
struct Downloads<'a> {
    dir: &'a Path,
    signature: &'a SignaturePolicy<'a>,
    /// Where the artifacts go.
    output_dir: &'a Path,
}

async fn fetch(
    client: &Client,
    catalog: &Catalog,
    listing: &Listing,
    file: &FileEntry,
    downloads: &Downloads<'_>,
    reporter: &dyn Reporter,
) -> Result<Fetched, Error> {
    let fetched = fetch_entry(
        client,
        catalog,
        listing,
        file,
        downloads.dir,
        downloads.signature,
        reporter,
    )
    .await?;
    // The download may live elsewhere (the cache): the output folder is made once there is
    // something verified to put in it.
    tokio::fs::create_dir_all(downloads.output_dir)
        .await
        .map_err(io_error(downloads.output_dir))?;
    Ok(fetched)
}

/// A file of the build's sub-folder (`unpacked/`) and the listing of that folder: its own
/// checksum file and signature verify it like any other file.
pub(crate) fn unpacked_file(
    discovery: &Discovery<'_>,
    listing: &Listing,
    kind: &str,
) -> Result<(Listing, FileEntry), Error> {
    let file = discovery.unlisted_file(listing, kind)?;
    let folder = file.url.join(".").map_err(|source| IndexError::Url {
        base: file.url.clone(),
        path: ".".into(),
        source,
    })?;
    let relocate = |url: &Url| -> Result<Url, Error> {
        let name = url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .unwrap_or_default();
        folder.join(name).map_err(|source| {
            Error::from(IndexError::Url {
                base: folder.clone(),
                path: name.to_owned(),
                source,
            })
        })
    };
    let sub_listing = Listing {
        dir_url: folder.clone(),
        files: vec![file.clone()],
        sums_url: relocate(&listing.sums_url)?,
        signature_url: listing.signature_url.as_ref().map(relocate).transpose()?,
        ..listing.clone()
    };
    Ok((sub_listing, file))
}

/// Runs one artifact's build (conversion, container, metadata) on a blocking thread, with its
/// own copy of what it reads (not a borrow: `Options` may not be shared between threads).
fn on_blocking<T: Send + 'static>(
    describe: &Describe,
    fetched: &Fetched,
    build: impl FnOnce(&Describe, &Fetched) -> Result<T, Error> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, Error>> + Send + 'static {
    let (describe, fetched) = (describe.clone(), fetched.clone());
    async move {
        let path = fetched.path.clone();
        blocking::run(&path, move || build(&describe, &fetched)).await
    }
}

/// What of the request the artifacts are built from.
#[derive(Clone)]
struct BuildSettings {
    output_dir: PathBuf,
    convert_options: Options,
    image: ImageSettings,
    machine: MachineSettings,
}

/// The shared facts every artifact's metadata is made from, owned so that building can move to
/// a blocking thread (each build its own copy: `Options` is not shared between threads).
#[derive(Clone)]
struct Describe {
    catalog: Catalog,
    listing: Listing,
    request: BuildSettings,
    reporter: Arc<dyn Reporter>,
}

impl Describe {
    /// `<upstream stem>-<serial>-<disk format>`, plus `-<container>` when it is neither bare
    /// nor the disk format's own word (aki/ari/ami): one folder prepared in several formats gives
    /// Glance distinct names.
    fn default_name(
        &self,
        stem: &str,
        disk_format: glance::DiskFormat,
        container: ContainerFormat,
    ) -> String {
        default_name(stem, &self.listing.serial, disk_format, container)
    }

    /// Metadata of `artifact`: catalog properties, the preset, provenance, request overrides.
    /// `digests` are the artifact's, computed as it was written; `None` for a file this run
    /// did not write byte by byte (a hard-linked download, a format that writes its header
    /// last), which is then read once to hash it.
    #[allow(clippy::too_many_arguments)]
    fn metadata(
        &self,
        artifact: &Path,
        name: String,
        disk_format: glance::DiskFormat,
        container: ContainerFormat,
        virtual_size: u64,
        digests: Option<Digests>,
        source: &Fetched,
    ) -> Result<ImageMetadata, Error> {
        let glance = &self.catalog.glance;
        let image = &self.request.image;
        let digests = match digests {
            Some(digests) => digests,
            None => crate::container::glance::digests(artifact)?,
        };
        let mut metadata = ImageMetadata::with_digests(
            artifact,
            &name,
            disk_format,
            container,
            virtual_size,
            digests,
        );
        metadata.min_ram = image.min_ram.unwrap_or(glance.min_ram);
        if let Some(visibility) = &image.visibility {
            metadata.visibility = visibility.clone();
        }
        metadata.tags = image.tags.clone();
        for (key, value) in &glance.properties {
            metadata.set_property(key, value.clone());
        }
        let preset = match &image.preset {
            Some(name) => Some(glance.preset(name).ok_or_else(|| {
                Refusal::UnknownPreset {
                    name: name.clone(),
                    catalog: self.catalog.name.clone(),
                    known: glance
                        .presets
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?),
            None => glance.preset_for_disk_format(disk_format.name()),
        };
        if let Some(preset) = preset {
            for (key, value) in &preset.properties {
                metadata.set_property(key, value.clone());
            }
        }
        let listing = &self.listing;
        metadata.set_property("os_version", listing.release.version.clone());
        if let Some(arch) = self.catalog.arch(&listing.arch) {
            metadata.set_property("architecture", arch.glance.clone());
        }
        let firmware = match self.request.machine.firmware {
            Firmware::Bios => "bios",
            Firmware::Efi => "uefi",
        };
        metadata.set_property("hw_firmware_type", firmware);
        if disk_format == glance::DiskFormat::Vmdk {
            let subformat =
                self.request
                    .convert_options
                    .get("subformat")
                    .unwrap_or(match container {
                        ContainerFormat::Ovf | ContainerFormat::Ova => "streamOptimized",
                        _ => "monolithicSparse",
                    });
            // Nova's VMware driver words for the VMDK layout.
            let disktype = if subformat.eq_ignore_ascii_case("streamOptimized") {
                "streamOptimized"
            } else {
                "sparse"
            };
            metadata.set_property("vmware_disktype", disktype);
        }
        metadata.set_property("cloudimg_source_url", source.url.clone());
        metadata.set_property("cloudimg_serial", listing.serial.clone());
        // The upstream digest in the algorithm the source publishes (Ubuntu SHA-256, Debian
        // SHA-512).
        metadata.set_property(
            &format!("cloudimg_source_{}", source.digest.algorithm().name()),
            source.digest.to_hex(),
        );
        metadata.set_property("cloudimg_sha256", metadata.digests.sha256.clone());
        for (key, value) in &image.properties {
            metadata.set_property(key, value.clone());
        }
        Ok(metadata)
    }
}

/// [`Describe::default_name`] of a build of `serial` (also what a dry run shows).
pub(super) fn default_name(
    stem: &str,
    serial: &str,
    disk_format: glance::DiskFormat,
    container: ContainerFormat,
) -> String {
    // Validated pairs: an Amazon container always holds its own word.
    if container == ContainerFormat::Bare || container.amazon().is_some() {
        format!("{stem}-{serial}-{disk_format}")
    } else {
        format!("{stem}-{serial}-{disk_format}-{container}")
    }
}

/// The name an artifact takes from its upstream file: `x.img` → `x`, `x.tar.gz` → `x`
/// (`x.vhd.tar.gz` → `x`, but the dots of `ubuntu-24.04-…` are not extensions).
pub(super) fn stem(file_name: &str) -> &str {
    const DISK_EXTENSIONS: [&str; 7] = ["img", "raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi"];
    let strip_disk_extension = |name: &'_ str| -> Option<usize> {
        let (stem, extension) = name.rsplit_once('.')?;
        (!stem.is_empty() && DISK_EXTENSIONS.contains(&extension)).then_some(stem.len())
    };
    for archive in [".tar.gz", ".tar.xz", ".ova", ".box"] {
        if let Some(stem) = file_name.strip_suffix(archive) {
            return &stem[..strip_disk_extension(stem).unwrap_or(stem.len())];
        }
    }
    &file_name[..strip_disk_extension(file_name).unwrap_or(file_name.len())]
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn upstream_stem(fetched: &Fetched) -> Result<String, Error> {
    fetched
        .path
        .file_name()
        .and_then(|name| name.to_str())
        .map(|name| stem(name).to_owned())
        .ok_or_else(|| {
            Error::from(Refusal::NotUtf8 {
                path: fetched.path.clone(),
            })
        })
}

/// Makes `dst` a copy of the verified download `src` without converting: a hard link (no space,
/// no time), else a copy; under a temporary name, then renamed.
fn link_or_copy(src: &Path, dst: &Path) -> Result<(), Error> {
    crate::io::publish::link_or_copy(src, dst).map_err(|e| io_error(dst)(e.into()))
}

/// Whether the upstream file already is the requested disk, so no conversion is needed.
fn is_already(catalog: &Catalog, kind: &str, format: DiskFormat, options: &Options) -> bool {
    catalog.kind(kind).is_some_and(|k| {
        k.archive.is_none()
            && k.container_format.as_deref().unwrap_or("bare") == "bare"
            && k.disk_format.as_deref() == Some(format.name())
    }) && options.is_empty()
}

fn virtual_size(path: &Path) -> Result<u64, Error> {
    Ok(formats::open(path, None)?.virtual_size())
}

/// Whether an artifact's Glance digests are wanted as it is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hash {
    /// Hash the output (when it is written byte by byte in order: a raw disk).
    Output,
    /// The disk is an ingredient (of an OVA, a containerDisk): its digests are not needed.
    No,
}

/// Produces the disk file at `dst` from the verified download. Returns its digests when they
/// were computed as it was written: a converted raw disk, whose bytes are the guest stream
/// (zero runs hashed without being read). Other formats write tables and headers after the
/// data, and a hard link writes nothing: their digests are `None`, for the caller to compute.
#[allow(clippy::too_many_arguments)]
fn produce_disk(
    fetched: &Fetched,
    kind: &str,
    format: DiskFormat,
    options: &Options,
    catalog: &Catalog,
    dst: &Path,
    hash: Hash,
    reporter: &dyn Reporter,
) -> Result<Option<Digests>, Error> {
    if is_already(catalog, kind, format, options) {
        // Still parse it: a file that is not the format its kind promises must not be published.
        formats::open(&fetched.path, Some(format))?;
        link_or_copy(&fetched.path, dst)?;
        return Ok(None);
    }
    let mut tee = (hash == Hash::Output && format == DiskFormat::Raw).then(DigestTee::new);
    let output = formats::convert::Output {
        path: dst,
        format,
        options,
    };
    let source = formats::convert::Source::file(&fetched.path);
    formats::convert::convert_file(source, output, tee.as_mut(), reporter)?;
    tee.map(|tee| finish_digests(tee, dst)).transpose()
}

/// The digests a [`DigestTee`] reached for the file at `path`.
fn finish_digests(tee: DigestTee, path: &Path) -> Result<Digests, Error> {
    tee.finish()
        .map_err(|e| io_error(path)(std::io::Error::other(e)))
}

fn build_disk(
    fetched: &Fetched,
    kind: &str,
    format: DiskFormat,
    container: ContainerFormat,
    describe: &Describe,
) -> Result<Artifact, Error> {
    let request = &describe.request;
    let dir = &request.output_dir;
    let stem = upstream_stem(fetched)?;
    let name = request
        .image
        .name
        .clone()
        .unwrap_or_else(|| describe.default_name(&stem, format.glance(), container));
    let disk_name = format!("{stem}.{}", format.extension());
    let mut options = request.convert_options.clone();
    if matches!(container, ContainerFormat::Ovf | ContainerFormat::Ova)
        && options.get("subformat").is_none()
    {
        options.set("subformat", "streamOptimized");
    }
    let ovf_spec = |disk_name: &str, capacity: u64| {
        let mut spec = OvfSpec::new(&name, disk_name, 0, capacity);
        spec.cpus = request.machine.cpus;
        spec.memory_mib = request.machine.memory_mib;
        spec.firmware = request.machine.firmware;
        if !options
            .get("subformat")
            .is_some_and(|s| s.eq_ignore_ascii_case("streamOptimized"))
        {
            spec.disk_format_uri = VMDK_SPARSE_URI.to_owned();
        }
        spec
    };
    let produce = |disk: &Path, hash: Hash| {
        let digests = produce_disk(
            fetched,
            kind,
            format,
            &options,
            &describe.catalog,
            disk,
            hash,
            describe.reporter.as_ref(),
        )?;
        Ok::<_, Error>((virtual_size(disk)?, digests))
    };
    let (path, (capacity, digests), package_files) = match container {
        ContainerFormat::Ovf => {
            // Built in a hidden sibling folder, then renamed: the package appears whole.
            let package = dir.join(&stem);
            let staging = dir.join(format!(".{stem}.ovf-partial"));
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
            let built = produce(&staging.join(&disk_name), Hash::Output).and_then(|produced| {
                let spec = ovf_spec(&disk_name, produced.0);
                ovf::write_package_files(&staging, &stem, &spec, request.machine.manifest_hash)?;
                Ok(produced)
            });
            let produced = match built {
                Ok(produced) => produced,
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(error);
                }
            };
            replace_dir(&staging, &package)?;
            let files = vec![
                package.join(format!("{stem}.ovf")),
                package.join(format!("{stem}.mf")),
            ];
            (package.join(&disk_name), produced, files)
        }
        ContainerFormat::Ova => {
            let ova_path = dir.join(format!("{stem}.ova"));
            // The disk is only an ingredient: a hidden temporary, removed whatever happens.
            let disk = dir.join(format!(".{stem}.ova-disk.vmdk"));
            let built = produce(&disk, Hash::No).and_then(|(capacity, _)| {
                let spec = ovf_spec(&disk_name, capacity);
                // The archive is hashed as it is written.
                let mut tee = DigestTee::new();
                let hash = request.machine.manifest_hash;
                ova::write_ova_package(&ova_path, &spec, &disk, hash, Some(&mut tee))?;
                Ok((capacity, Some(finish_digests(tee, &ova_path)?)))
            });
            let _ = std::fs::remove_file(&disk);
            (ova_path, built?, Vec::new())
        }
        _ => {
            let disk = dir.join(&disk_name);
            let produced = produce(&disk, Hash::Output)?;
            (disk, produced, Vec::new())
        }
    };
    let metadata = describe.metadata(
        &path,
        name,
        format.glance(),
        container,
        capacity,
        digests,
        fetched,
    )?;
    let metadata_path = metadata.write_beside(&path)?;
    Ok(Artifact {
        path,
        metadata_path,
        package_files,
        metadata,
    })
}

/// A KubeVirt containerDisk: the disk made as for a bare artifact (a hidden ingredient), then
/// packed into the OCI image layout that is the output folder itself.
fn build_containerdisk(
    fetched: &Fetched,
    kind: &str,
    format: DiskFormat,
    describe: &Describe,
) -> Result<crate::oci::LayoutSummary, Error> {
    use crate::oci::layout::{self, ContainerDisk, Provenance};
    let request = &describe.request;
    let listing = &describe.listing;
    let reporter = describe.reporter.as_ref();
    let dir = &request.output_dir;
    let stem = upstream_stem(fetched)?;
    // KubeVirt's examples name raw disks `.img`.
    let extension = match format {
        DiskFormat::Raw => "img",
        other => other.extension(),
    };
    let disk = dir.join(format!(".{stem}.containerdisk.{extension}"));
    let arch = describe
        .catalog
        .arch(&listing.arch)
        .map_or_else(|| listing.arch.clone(), |arch| arch.glance.clone());
    let spec = ContainerDisk {
        disk: disk.clone(),
        name: format!("{stem}.{extension}"),
        disk_format: format.name().to_owned(),
        arch,
        provenance: Provenance {
            source_url: fetched.url.clone(),
            source_digest: format!(
                "{}:{}",
                fetched.digest.algorithm().name(),
                fetched.digest.to_hex()
            ),
            release: listing.release.codename.clone(),
            serial: listing.serial.clone(),
        },
    };
    let ref_name = format!("{}-{}", listing.release.codename, listing.serial);
    let built = produce_disk(
        fetched,
        kind,
        format,
        &request.convert_options,
        &describe.catalog,
        &disk,
        Hash::No,
        reporter,
    )
    .and_then(|_| {
        layout::write_layout(
            dir,
            std::slice::from_ref(&spec),
            &ref_name,
            request.machine.layer,
            reporter,
        )
        .map_err(Error::from)
    });
    let _ = std::fs::remove_file(&disk);
    built
}

/// Puts the finished folder `staging` at `target`, replacing an older one: the old folder is
/// moved aside first and removed after, so `target` is never half old, half new.
fn replace_dir(staging: &Path, target: &Path) -> Result<(), Error> {
    crate::io::publish::replace_dir(staging, target).map_err(|e| io_error(target)(e.into()))
}

/// Name of an aki/ari image: the ami's name plus a suffix when the user named the set.
fn part_name(describe: &Describe, stem: &str, part: Amazon) -> String {
    match (&describe.request.image.name, part.name_suffix()) {
        (Some(name), Some(suffix)) => format!("{name}-{suffix}"),
        (Some(name), None) => name.clone(),
        (None, _) => describe.default_name(stem, part.disk_format(), part.container_format()),
    }
}

/// The kernel or the ramdisk of an Amazon set: the verified download as it is.
fn build_amazon_part(
    fetched: &Fetched,
    part: Amazon,
    describe: &Describe,
) -> Result<Artifact, Error> {
    let format = part.disk_format();
    let upstream = fetched
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Refusal::NotUtf8 {
            path: fetched.path.clone(),
        })?
        .to_owned();
    let path = describe
        .request
        .output_dir
        .join(format!("{upstream}.{format}"));
    link_or_copy(&fetched.path, &path)?;
    let metadata = describe.metadata(
        &path,
        part_name(describe, &upstream, part),
        format,
        part.container_format(),
        fetched.size,
        None,
        fetched,
    )?;
    let metadata_path = metadata.write_beside(&path)?;
    Ok(Artifact {
        path,
        metadata_path,
        package_files: Vec::new(),
        metadata,
    })
}

/// The ami: the raw disk, streamed out of the `.tar.gz` or converted from the qcow2 image.
fn build_machine_image(
    fetched: &Fetched,
    (kernel, ramdisk): (Option<String>, Option<String>),
    describe: &Describe,
) -> Result<Artifact, Error> {
    let request = &describe.request;
    let stem = upstream_stem(fetched)?;
    let name = request
        .image
        .name
        .clone()
        .unwrap_or_else(|| part_name(describe, &stem, Amazon::Machine));
    let path = request.output_dir.join(format!("{stem}.ami"));
    // A raw disk: hashed as it is written.
    let mut tee = DigestTee::new();
    let output = formats::convert::Output {
        path: &path,
        format: DiskFormat::Raw,
        options: &request.convert_options,
    };
    let source = formats::convert::Source::file(&fetched.path);
    let reporter = describe.reporter.as_ref();
    let stats = formats::convert::convert_file(source, output, Some(&mut tee), reporter)?;
    let digests = finish_digests(tee, &path)?;
    let mut metadata = describe.metadata(
        &path,
        name,
        Amazon::Machine.disk_format(),
        Amazon::Machine.container_format(),
        stats.virtual_size,
        Some(digests),
        fetched,
    )?;
    metadata.kernel = kernel;
    metadata.ramdisk = ramdisk;
    let metadata_path = metadata.write_beside(&path)?;
    Ok(Artifact {
        path,
        metadata_path,
        package_files: Vec::new(),
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Stream;

    fn ubuntu() -> Catalog {
        Catalog::builtin("ubuntu").unwrap()
    }

    fn request(disk_format: &str, container: ContainerFormat) -> PrepareRequest<'static> {
        PrepareRequest {
            query: Query {
                release: "noble".into(),
                arch: "amd64".into(),
                stream: Stream::Released,
                source: None,
            },
            serial: None,
            kind: None,
            disk_format: disk_format.parse().unwrap(),
            container,
            output_dir: PathBuf::from("out"),
            download_dir: None,
            signature: SignaturePolicy::Skip,
            convert_options: Options::default(),
            image: ImageSettings::default(),
            machine: MachineSettings::default(),
            bake: None,
        }
    }

    #[test]
    fn artifact_stems_drop_the_upstream_extension() {
        assert_eq!(
            stem("ubuntu-24.04-server-cloudimg-amd64.img"),
            "ubuntu-24.04-server-cloudimg-amd64"
        );
        assert_eq!(
            stem("noble-server-cloudimg-amd64.tar.gz"),
            "noble-server-cloudimg-amd64"
        );
        assert_eq!(
            stem("ubuntu-24.04-server-cloudimg-amd64.tar.gz"),
            "ubuntu-24.04-server-cloudimg-amd64"
        );
        assert_eq!(
            stem("noble-server-cloudimg-amd64-azure.vhd.tar.gz"),
            "noble-server-cloudimg-amd64-azure"
        );
        // Version dots are not extensions.
        assert_eq!(stem("ubuntu-24.04-server"), "ubuntu-24.04-server");
    }

    #[test]
    fn ami_in_a_bare_container_is_refused_before_any_download() {
        let error = plan(&request("ami", ContainerFormat::Bare), &ubuntu())
            .err()
            .unwrap();
        assert_eq!(error.kind(), crate::ErrorKind::Usage);
    }

    #[test]
    fn iso_points_to_the_seed_command() {
        let error = plan(&request("iso", ContainerFormat::Bare), &ubuntu())
            .err()
            .unwrap();
        assert!(error.to_string().contains("cloudimg seed"), "{error}");
    }

    #[test]
    fn flat_vmdk_is_refused_because_glance_would_be() {
        let mut request = request("vmdk", ContainerFormat::Bare);
        request.convert_options = Options::parse("subformat=monolithicFlat").unwrap();
        let error = plan(&request, &ubuntu()).err().unwrap();
        assert!(error.to_string().contains("flat extents"), "{error}");
    }

    #[test]
    fn ami_plan_fetches_kernel_ramdisk_and_the_tarball() {
        let Plan::Amazon {
            kernel,
            ramdisk,
            machine,
        } = plan(&request("ami", ContainerFormat::Ami), &ubuntu()).unwrap()
        else {
            panic!("not an amazon plan");
        };
        assert!(kernel && ramdisk);
        assert_eq!(machine.as_deref(), Some(DEFAULT_AMI_KIND));
    }

    #[test]
    fn unknown_visibility_is_refused() {
        let mut request = request("qcow2", ContainerFormat::Bare);
        request.image.visibility = Some("everyone".into());
        assert!(plan(&request, &ubuntu()).is_err());
    }
}
