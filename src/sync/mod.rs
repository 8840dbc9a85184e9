//! `cloudimg sync`: keeps the images a user catalog declares current, unattended.
//!
//! For each entry: discover the newest serial; if it is published and verifies, do nothing;
//! otherwise prepare it in `ROOT/.staging/`, rename it to `ROOT/<name>/<serial>/`, switch
//! `ROOT/<name>/current`, prune old serials, record it in the state file and run the hook. One
//! failing entry never stops the others. A lock on the root keeps two runs apart; anything a
//! killed run leaves is hidden (staging, resumable downloads) and finished by the next run.

pub mod publish;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::stream::{self, StreamExt};

use crate::catalog::user::{ImageSpec, UserCatalog};
use crate::catalog::{Catalog, CatalogError};
use crate::container::ContainerFormat;
use crate::fetch::Client;
use crate::formats::Options;
use crate::index::release::sort_serials_newest_first;
use crate::index::{Discovery, Query};
use crate::io::progress::Reporter;
use crate::pipeline::{self, ImageSettings, MachineSettings, PrepareRequest};
use crate::runner::{self, EntryOutcome, EntrySource, LockSpec, RunnerError, SourceOptions};
use crate::upload::{Glance, GlanceTarget, ImageFilter, Retire, UploadError, UploadOptions};
use crate::ErrorKind;
use publish::ImageTree;
use state::{ArtifactRecord, SerialRecord, State, UpstreamRecord};

/// The lock file in the output root.
pub const LOCK_FILE: &str = ".cloudimg-sync.lock";
const LOCK: LockSpec = LockSpec {
    file: LOCK_FILE,
    command: "sync",
    hint: ", or pass --wait to queue behind it",
};
/// Room kept free beyond the estimate, for metadata and the filesystem's own needs.
const SPACE_HEADROOM: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Pipeline(Box<pipeline::Error>),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(
        "{image}: the mirror's newest serial {offered} is older than the published {published} \
         (a stale or replayed mirror?); pass --allow-downgrade to accept it"
    )]
    Downgrade {
        image: String,
        published: String,
        offered: String,
    },
    #[error("{path}: {available} bytes free, {needed} needed for {image} {serial}")]
    NoSpace {
        path: PathBuf,
        image: String,
        serial: String,
        needed: u64,
        available: u64,
    },
    #[error("{path}: unusable state file: {reason}")]
    BadState { path: PathBuf, reason: String },
    #[error("Glance")]
    Upload(#[source] Box<UploadError>),
    /// The run could not reach Glance; kept as text because every uploading entry reports it.
    #[error("Glance unavailable: {0}")]
    GlanceUnavailable(String),
    #[error("{image}: hook `{command}` failed ({status})")]
    Hook {
        image: String,
        command: String,
        status: String,
    },
}

impl runner::RunFailure for SyncError {
    fn kind(&self) -> ErrorKind {
        SyncError::kind(self)
    }

    fn is_locked(&self) -> bool {
        matches!(self, SyncError::Runner(error) if error.is_locked())
    }
}

impl From<pipeline::Error> for SyncError {
    fn from(error: pipeline::Error) -> SyncError {
        SyncError::Pipeline(Box::new(error))
    }
}

impl From<UploadError> for SyncError {
    fn from(error: UploadError) -> SyncError {
        SyncError::Upload(Box::new(error))
    }
}

impl SyncError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Pipeline(error) => error.kind(),
            SyncError::Catalog(error) => error.kind(),
            SyncError::Runner(error) => error.kind(),
            SyncError::Upload(error) => error.kind(),
            SyncError::GlanceUnavailable(_) => ErrorKind::Network,
            SyncError::Downgrade { .. } => ErrorKind::Integrity,
            SyncError::Io { .. }
            | SyncError::NoSpace { .. }
            | SyncError::BadState { .. }
            | SyncError::Hook { .. } => ErrorKind::Other,
        }
    }
}

/// How a run behaves.
pub struct SyncOptions {
    pub dry_run: bool,
    /// Entries worked on at once.
    pub jobs: usize,
    /// Only these entries (by name); all when empty.
    pub only: Vec<String>,
    /// Wait for a running sync instead of exiting.
    pub wait: bool,
    pub allow_downgrade: bool,
    /// `--mirror`, `--keyring`, `--no-verify-signature`.
    pub source: SourceOptions,
    /// Where new serials go when the catalog has a `[glance]` target.
    pub glance: Option<(GlanceTarget, UploadOptions)>,
}

/// What happened to one entry.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// The newest serial is published and verifies: nothing transferred.
    UpToDate {
        serial: String,
    },
    /// A new serial was published (or a published one finished after an interrupted run).
    Published {
        serial: String,
        previous: Option<String>,
        pruned: Vec<String>,
        artifacts: Vec<PathBuf>,
        /// Glance image ids of the serial, when uploading.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        glance_ids: Vec<String>,
        /// Glance images of older serials retired (hidden, deactivated or deleted).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        retired: Vec<String>,
    },
    /// `--dry-run`: what would happen.
    WouldPublish {
        serial: String,
        previous: Option<String>,
        would_prune: Vec<String>,
    },
    Failed {
        error: String,
    },
}

impl EntryOutcome for Outcome {
    fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }
}

pub type EntryReport = runner::EntryReport<Outcome>;

#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub output: PathBuf,
    pub entries: Vec<EntryReport>,
}

impl Summary {
    pub fn failed(&self) -> usize {
        runner::failed(&self.entries)
    }
}

/// Runs a sync of `catalog`. Errors of single entries are in the summary; `Err` means the run
/// itself could not start (lock, state file).
pub async fn sync(
    client: &Client,
    catalog: &UserCatalog,
    catalog_dir: &Path,
    options: &SyncOptions,
    reporter: &dyn Reporter,
) -> Result<Summary, SyncError> {
    let root = &catalog.output;
    let selected = runner::select(catalog, &options.only)?;
    let _lock = if options.dry_run {
        None
    } else {
        Some(runner::lock_root(root, LOCK, options.wait).await?)
    };
    let state = Mutex::new(State::load(root)?);
    let uploads = selected.iter().any(|image| image.upload != Some(false));
    let glance = match &options.glance {
        Some((target, upload)) if uploads && !options.dry_run => Some(
            Glance::connect(target, &upload.client)
                .await
                .map_err(|e| crate::error::chain(&e)),
        ),
        _ => None,
    };
    let run = Run {
        client,
        catalog,
        catalog_dir,
        options,
        state: &state,
        reporter,
        glance: glance.as_ref(),
    };
    let entries: Vec<EntryReport> = stream::iter(selected)
        .map(|image| run.entry(image))
        .buffered(options.jobs.max(1))
        .collect()
        .await;
    Ok(Summary {
        output: root.clone(),
        entries,
    })
}

struct Run<'a> {
    client: &'a Client,
    catalog: &'a UserCatalog,
    catalog_dir: &'a Path,
    options: &'a SyncOptions,
    state: &'a Mutex<State>,
    reporter: &'a dyn Reporter,
    /// The Glance session when the catalog uploads, or why there is none.
    glance: Option<&'a Result<Glance, String>>,
}

impl Run<'_> {
    async fn entry(&self, image: &ImageSpec) -> EntryReport {
        let outcome = match self.sync_image(image).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let text = crate::error::chain(&error);
                tracing::error!(image = %image.name, "{text}");
                Outcome::Failed { error: text }
            }
        };
        match &outcome {
            Outcome::UpToDate { serial } => {
                tracing::info!(image = %image.name, serial, "up to date")
            }
            Outcome::Published { serial, pruned, .. } => {
                tracing::info!(image = %image.name, serial, pruned = pruned.len(), "published")
            }
            Outcome::WouldPublish { serial, .. } => {
                tracing::info!(image = %image.name, serial, "would publish (dry run)")
            }
            Outcome::Failed { .. } => {}
        }
        EntryReport {
            name: image.name.clone(),
            outcome,
        }
    }

    async fn sync_image(&self, image: &ImageSpec) -> Result<Outcome, SyncError> {
        let source =
            EntrySource::resolve(image, self.catalog, self.catalog_dir, &self.options.source)?;
        let discovery = source.discovery(self.client);
        let listing = discovery
            .listing(&runner::query(image)?, None)
            .await
            .map_err(pipeline::Error::from)?;
        let serial = listing.serial.clone();
        let separator = source.catalog.serial_separator;
        let newest_first = |serials: &mut [String]| sort_serials_newest_first(serials, separator);
        let tree = ImageTree::new(&self.catalog.output, &image.name);
        let previous = tree.current();
        if let Some(published) = &previous {
            let mut pair = [published.clone(), serial.clone()];
            newest_first(&mut pair);
            if pair[0] != serial && !self.options.allow_downgrade {
                return Err(SyncError::Downgrade {
                    image: image.name.clone(),
                    published: published.clone(),
                    offered: serial,
                });
            }
        }
        let keep = self.catalog.keep_for(image);
        let serial_dir = tree.serial_dir(&serial);
        let already_published =
            tokio::task::block_in_place(|| publish::verify_serial(&serial_dir))?;
        if already_published && previous.as_deref() == Some(serial.as_str()) {
            if !self.options.dry_run {
                tree.prune(keep, newest_first, false)?;
                // Idempotent: images already in Glance cost one lookup, no bytes.
                self.glance_step(image, &tree, &serial).await?;
            }
            return Ok(Outcome::UpToDate { serial });
        }
        if self.options.dry_run {
            // Retention as it would be once `serial` exists and is current.
            let mut serials = tree.serials()?;
            if !serials.contains(&serial) {
                serials.push(serial.clone());
            }
            newest_first(&mut serials);
            let would_prune = serials.into_iter().skip(keep).collect();
            return Ok(Outcome::WouldPublish {
                serial,
                previous,
                would_prune,
            });
        }
        let record = if already_published {
            tracing::info!(image = %image.name, serial, "finishing a serial an interrupted run published");
            SerialRecord {
                published_at: now(),
                upstream: Vec::new(),
                artifacts: Vec::new(),
                glance_ids: Vec::new(),
            }
        } else {
            self.build(image, &source, &discovery, &tree, &listing)
                .await?
        };
        tree.switch_current(&serial)?;
        let pruned = tree.prune(keep, newest_first, false)?;
        let artifacts = publish::metadata_files(&serial_dir)?
            .into_iter()
            .filter_map(|meta| {
                let text = meta.to_string_lossy();
                text.strip_suffix(crate::container::glance::METADATA_SUFFIX)
                    .map(PathBuf::from)
            })
            .collect::<Vec<_>>();
        let mut record = record;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.record(&image.name, &serial, record.clone(), &pruned);
            state.save(&self.catalog.output)?;
        }
        // Published locally first: a Glance outage must not hold back local consumers.
        let (glance_ids, retired) = self.glance_step(image, &tree, &serial).await?;
        if !glance_ids.is_empty() {
            record.glance_ids = glance_ids.clone();
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.record(&image.name, &serial, record, &[]);
            state.save(&self.catalog.output)?;
        }
        // The download cache only serves resuming; a published serial no longer needs it.
        let _ = std::fs::remove_dir_all(tree.download_dir());
        if let Some(command) = self.catalog.hook_for(image) {
            run_hook(command, image, &serial, &serial_dir, &self.catalog.output)?;
        }
        Ok(Outcome::Published {
            serial,
            previous,
            pruned,
            artifacts,
            glance_ids,
            retired,
        })
    }

    /// Fetches, converts and wraps `serial` in staging, then renames it into the tree.
    async fn build(
        &self,
        image: &ImageSpec,
        source: &EntrySource,
        discovery: &Discovery<'_>,
        tree: &ImageTree,
        listing: &crate::index::Listing,
    ) -> Result<SerialRecord, SyncError> {
        let serial = listing.serial.as_str();
        let staging = tree.staging_dir(serial);
        let io = |path: &Path, source| SyncError::Io {
            path: path.to_owned(),
            source,
        };
        self.check_space(image, &source.catalog, serial, listing)?;
        // Whatever a killed run left in staging is incomplete by definition.
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
        let request = PrepareRequest {
            query: Query {
                release: image.release.clone(),
                arch: image.arch.clone(),
                stream: listing.stream,
                source: Some(listing.source),
            },
            serial: Some(serial.to_owned()),
            kind: image.file.clone(),
            disk_format: image.disk_format.to_ascii_lowercase(),
            container: ContainerFormat::from_name(&image.container_format)
                .map_err(pipeline::Error::from)?,
            output_dir: staging.clone(),
            download_dir: Some(tree.download_dir()),
            signature: source.signature(),
            convert_options: Options::parse(image.options.as_deref().unwrap_or(""))
                .map_err(pipeline::Error::from)?,
            image: ImageSettings {
                name: Some(format!("{}-{serial}", image.name)),
                min_ram: image.min_ram,
                visibility: self
                    .catalog
                    .glance
                    .as_ref()
                    .and_then(|g| g.visibility.clone()),
                tags: image
                    .tags
                    .iter()
                    .cloned()
                    .chain([glance_tag(&image.name)])
                    .collect(),
                preset: None,
                properties: image
                    .properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain([("cloudimg_image".to_owned(), image.name.clone())])
                    .collect(),
            },
            machine: MachineSettings::default(),
        };
        let prepared = pipeline::prepare_listing(
            self.client,
            &source.catalog,
            discovery,
            listing,
            request,
            self.reporter,
        )
        .await;
        let prepared = match prepared {
                Ok(prepared) => prepared,
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(error.into());
                }
            };
        let record = SerialRecord {
            published_at: now(),
            upstream: prepared
                .sources
                .iter()
                .map(|f| UpstreamRecord {
                    url: f.url.clone(),
                    digest: f.digest,
                    size: f.size,
                    signed_by: f.signed_by.clone(),
                })
                .collect(),
            artifacts: prepared
                .artifacts
                .iter()
                .map(|a| ArtifactRecord {
                    path: a.path.strip_prefix(&staging).unwrap_or(&a.path).to_owned(),
                    disk_format: a.metadata.disk_format.clone(),
                    container_format: a.metadata.container_format.clone(),
                    size: a.metadata.digests.size,
                    sha256: a.metadata.digests.sha256.clone(),
                    sha512: a.metadata.digests.sha512.clone(),
                    md5: a.metadata.digests.md5.clone(),
                })
                .collect(),
            glance_ids: Vec::new(),
        };
        // Upstream files stay in the download cache: only artifacts are published.
        for fetched in &prepared.sources {
            let _ =
                std::fs::remove_file(staging.join(fetched.path.file_name().unwrap_or_default()));
        }
        if let Err(error) = tree.publish(&staging, serial) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
        Ok(record)
    }

    /// Uploads the serial's artifacts (idempotently) and retires the Glance images of serials no
    /// longer published, never those of `serial`. Returns the serial's image ids and the
    /// retired ones; nothing when the catalog has no Glance target or the entry opts out.
    async fn glance_step(
        &self,
        image: &ImageSpec,
        tree: &ImageTree,
        serial: &str,
    ) -> Result<(Vec<String>, Vec<String>), SyncError> {
        let (Some(session), Some((_, upload))) = (self.glance, &self.options.glance) else {
            return Ok((Vec::new(), Vec::new()));
        };
        if image.upload == Some(false) {
            return Ok((Vec::new(), Vec::new()));
        }
        let glance = session
            .as_ref()
            .map_err(|e| SyncError::GlanceUnavailable(e.clone()))?;
        let files = publish::metadata_files(&tree.serial_dir(serial))?;
        let uploaded = glance
            .upload_artifacts(&files, upload, self.reporter)
            .await?;
        let ids: Vec<String> = uploaded.iter().map(|u| u.id.clone()).collect();
        let policy = self
            .catalog
            .glance
            .as_ref()
            .map(|g| g.retire)
            .unwrap_or_default();
        let kept = tree.serials()?;
        let mut retired = Vec::new();
        for hidden in [false, true] {
            let filter = ImageFilter {
                tags: vec![glance_tag(&image.name)],
                hidden,
                ..ImageFilter::default()
            };
            for candidate in glance.images(&filter).await? {
                let Some(of_serial) = candidate.property("cloudimg_serial") else {
                    continue;
                };
                let done = match policy {
                    Retire::Hide => candidate.os_hidden,
                    Retire::Deactivate => candidate.status == "deactivated",
                    Retire::Delete => false,
                };
                if of_serial == serial || kept.iter().any(|k| k == of_serial) || done {
                    continue;
                }
                glance.retire(&candidate.id, policy).await?;
                tracing::info!(image = %image.name, id = %candidate.id, serial = of_serial,
                    policy = ?policy, "retired from Glance");
                retired.push(candidate.id);
            }
        }
        Ok((ids, retired))
    }

    /// Refuses to start a build the filesystem cannot hold: the download plus an artifact of
    /// about the same size, plus headroom. Running out later still publishes nothing.
    fn check_space(
        &self,
        image: &ImageSpec,
        source: &Catalog,
        serial: &str,
        listing: &crate::index::Listing,
    ) -> Result<(), SyncError> {
        let kind = pipeline::upstream_kind(source, &image.disk_format, image.file.as_deref())
            .unwrap_or_default();
        let download = listing
            .files
            .iter()
            .find(|f| f.ftype.as_deref() == Some(kind.as_str()))
            .and_then(|f| f.size)
            .unwrap_or(0);
        let needed = download.saturating_mul(2).saturating_add(SPACE_HEADROOM);
        let root = &self.catalog.output;
        let available = publish::free_space(root)?;
        if available < needed {
            return Err(SyncError::NoSpace {
                path: root.clone(),
                image: image.name.clone(),
                serial: serial.to_owned(),
                needed,
                available,
            });
        }
        Ok(())
    }
}

/// The tag that marks an image as one of an entry's serials in Glance.
fn glance_tag(image: &str) -> String {
    format!("cloudimg:{image}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the hook by `sh -c` with the publication's facts in the environment; its output goes
/// to stderr so `--json` on stdout stays clean.
fn run_hook(
    command: &str,
    image: &ImageSpec,
    serial: &str,
    serial_dir: &Path,
    root: &Path,
) -> Result<(), SyncError> {
    use std::os::fd::AsFd;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| SyncError::Io {
            path: "stderr".into(),
            source,
        })?;
    let status = tokio::task::block_in_place(|| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("CLOUDIMG_IMAGE", &image.name)
            .env("CLOUDIMG_SERIAL", serial)
            .env("CLOUDIMG_DIR", serial_dir)
            .env("CLOUDIMG_ROOT", root)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(stderr))
            .status()
    })
    .map_err(|source| SyncError::Io {
        path: "sh".into(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(SyncError::Hook {
            image: image.name.clone(),
            command: command.to_owned(),
            status: status.to_string(),
        })
    }
}
