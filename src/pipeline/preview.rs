//! `prepare --dry-run`: what [`super::prepare`] would fetch and write, found by reading only.
//!
//! The plan is checked as for a real run (the same refusals), the build is discovered (index
//! documents are read), and the upstream files and artifacts are named by the rules the build
//! uses (`prepare::stem`, `prepare::default_name`). Nothing is downloaded, created or
//! verified; a test compares a dry run with the real run that follows it, so the two cannot
//! drift apart.

use std::path::{Path, PathBuf};

use url::Url;

use super::prepare::{self, Plan, KERNEL_KIND, RAMDISK_KIND};
use super::{Error, PrepareRequest};
use crate::catalog::Catalog;
use crate::container::glance::metadata_path;
use crate::container::ContainerFormat;
use crate::fetch::Client;
use crate::formats::DiskFormat;
use crate::glance::Amazon;
use crate::index::{Discovery, FileEntry};

/// An upstream file a run would download.
#[derive(Debug, serde::Serialize)]
pub struct PlannedFetch {
    pub url: String,
    /// Where it would be downloaded (and verified).
    pub path: PathBuf,
    /// As the index gives it (rounded in HTML listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A file of that name is there already (a real run verifies it, resumes or replaces it).
    pub present: bool,
}

/// An artifact a run would write, with its `.glance.json`.
#[derive(Debug, serde::Serialize)]
pub struct PlannedArtifact {
    pub path: PathBuf,
    pub metadata_path: PathBuf,
    pub disk_format: String,
    pub container_format: String,
    /// Its Glance name.
    pub name: String,
}

/// What `prepare --dry-run` prints.
#[derive(Debug, serde::Serialize)]
pub struct PreparePreview {
    pub release: String,
    pub version: String,
    pub serial: String,
    pub arch: String,
    pub fetch: Vec<PlannedFetch>,
    pub artifacts: Vec<PlannedArtifact>,
    /// `--container-format containerdisk`: the OCI image layout folder that would be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerdisk: Option<PathBuf>,
}

/// What [`super::prepare`] would do with `request`: refusals as the real run has them, then
/// the build discovered and its files and artifacts named. Writes nothing.
pub async fn preview(
    client: &Client,
    catalog: &Catalog,
    mirror: &Url,
    request: &PrepareRequest<'_>,
) -> Result<PreparePreview, Error> {
    let plan = prepare::plan(request, catalog)?;
    let discovery = Discovery::new(client, catalog, mirror.clone());
    let listing = discovery
        .listing(&request.query, request.serial.as_deref())
        .await?;
    let downloads = request
        .download_dir
        .as_deref()
        .unwrap_or(&request.output_dir);
    let mut preview = PreparePreview {
        release: listing.release.codename.clone(),
        version: listing.release.version.clone(),
        serial: listing.serial.clone(),
        arch: listing.arch.clone(),
        fetch: Vec::new(),
        artifacts: Vec::new(),
        containerdisk: None,
    };
    let names = Names {
        dir: &request.output_dir,
        serial: &listing.serial,
        name: request.image.name.as_deref(),
    };
    match plan {
        Plan::Disk {
            kind,
            format,
            container,
        } => {
            let file = listing.file(&kind)?;
            preview.fetch.push(planned_fetch(file, downloads).await);
            if container == ContainerFormat::ContainerDisk {
                preview.containerdisk = Some(request.output_dir.clone());
            } else {
                preview
                    .artifacts
                    .push(names.disk(prepare::stem(&file.name), format, container));
            }
        }
        Plan::Amazon {
            kernel,
            ramdisk,
            machine,
        } => {
            for (wanted, kind, part) in [
                (kernel, KERNEL_KIND, Amazon::Kernel),
                (ramdisk, RAMDISK_KIND, Amazon::Ramdisk),
            ] {
                if wanted {
                    let (_, file) = prepare::unpacked_file(&discovery, &listing, kind)?;
                    preview.fetch.push(planned_fetch(&file, downloads).await);
                    preview.artifacts.push(names.part(&file.name, part));
                }
            }
            if let Some(kind) = machine {
                let file = listing.file(&kind)?;
                preview.fetch.push(planned_fetch(file, downloads).await);
                preview
                    .artifacts
                    .push(names.machine(prepare::stem(&file.name)));
            }
        }
    }
    Ok(preview)
}

/// A file to download; whether one of that name is there is asked without blocking.
async fn planned_fetch(file: &FileEntry, dir: &Path) -> PlannedFetch {
    let path = dir.join(&file.name);
    PlannedFetch {
        url: file.url.to_string(),
        present: tokio::fs::metadata(&path)
            .await
            .is_ok_and(|meta| meta.is_file()),
        path,
        size: file.size,
    }
}

/// The naming rules of the build, for one output folder and serial.
struct Names<'a> {
    dir: &'a Path,
    serial: &'a str,
    /// `--name`.
    name: Option<&'a str>,
}

impl Names<'_> {
    fn artifact(
        &self,
        path: PathBuf,
        disk_format: &str,
        container: &str,
        name: String,
    ) -> PlannedArtifact {
        PlannedArtifact {
            metadata_path: metadata_path(&path),
            path,
            disk_format: disk_format.to_owned(),
            container_format: container.to_owned(),
            name,
        }
    }

    /// `build_disk`: `<stem>.<ext>`, in `<stem>/` for an OVF package, `<stem>.ova` for an OVA.
    fn disk(&self, stem: &str, format: DiskFormat, container: ContainerFormat) -> PlannedArtifact {
        let disk_name = format!("{stem}.{}", format.extension());
        let path = match container {
            ContainerFormat::Ovf => self.dir.join(stem).join(&disk_name),
            ContainerFormat::Ova => self.dir.join(format!("{stem}.ova")),
            _ => self.dir.join(&disk_name),
        };
        let name = self.name.map_or_else(
            || prepare::default_name(stem, self.serial, format.glance(), container),
            str::to_owned,
        );
        self.artifact(path, format.name(), container.name(), name)
    }

    /// `build_amazon_part`: the upstream file name plus `.aki` / `.ari`.
    fn part(&self, upstream: &str, part: Amazon) -> PlannedArtifact {
        let (format, container) = (part.disk_format(), part.container_format());
        let name = match (self.name, part.name_suffix()) {
            (Some(name), Some(suffix)) => format!("{name}-{suffix}"),
            (Some(name), None) => name.to_owned(),
            (None, _) => prepare::default_name(upstream, self.serial, format, container),
        };
        let path = self.dir.join(format!("{upstream}.{format}"));
        self.artifact(path, format.name(), container.name(), name)
    }

    /// `build_machine_image`: `<stem>.ami`.
    fn machine(&self, stem: &str) -> PlannedArtifact {
        let name = self.name.map_or_else(
            || {
                prepare::default_name(
                    stem,
                    self.serial,
                    Amazon::Machine.disk_format(),
                    Amazon::Machine.container_format(),
                )
            },
            str::to_owned,
        );
        let (format, container) = (
            Amazon::Machine.disk_format(),
            Amazon::Machine.container_format(),
        );
        self.artifact(
            self.dir.join(format!("{stem}.{format}")),
            format.name(),
            container.name(),
            name,
        )
    }
}
