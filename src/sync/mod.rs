//! `cloudimg sync`: keeps the images a user catalog declares current, unattended.
//!
//! For each entry: discover the newest serial; if it is published and verifies, do nothing;
//! otherwise prepare it in `ROOT/.staging/`, rename it to `ROOT/<name>/<serial>/`, switch
//! `ROOT/<name>/current`, prune old serials, record it in the state file and run the hook. One
//! failing entry never stops the others. A lock on the root keeps two runs apart; anything a
//! killed run leaves is hidden (staging, resumable downloads) and finished by the next run.

pub mod publish;
pub mod state;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use futures_util::stream::{self, StreamExt};
use url::Url;

use crate::catalog::user::{ImageSpec, UserCatalog};
use crate::catalog::{Catalog, CatalogError};
use crate::container::ContainerFormat;
use crate::fetch::Client;
use crate::formats::Options;
use crate::index::release::sort_serials_newest_first;
use crate::index::{Discovery, Query, Stream};
use crate::io::progress::Reporter;
use crate::pipeline::{self, ImageSettings, MachineSettings, PrepareRequest, SignaturePolicy};
use crate::upload::{Glance, ImageFilter, NamedTarget, Retire, UploadError, UploadOptions};
use crate::verify::openpgp::Keyring;
use crate::ErrorKind;
use publish::ImageTree;
use state::{ArtifactRecord, SerialRecord, State, UpstreamRecord};

/// The lock file in the output root.
pub const LOCK_FILE: &str = ".cloudimg-sync.lock";
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
    #[error("another sync holds {path}; try again later, or pass --wait to queue behind it")]
    Locked { path: PathBuf },
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
            SyncError::Upload(error) => error.kind(),
            SyncError::GlanceUnavailable(_) => ErrorKind::Network,
            SyncError::Downgrade { .. } => ErrorKind::Integrity,
            SyncError::Io { .. }
            | SyncError::Locked { .. }
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
    /// `--mirror`: used for every source instead of the catalog's mirrors.
    pub mirror: Option<Url>,
    /// `--keyring`: trusted instead of each source's built-in keys.
    pub keyring: Option<Keyring>,
    /// `--no-verify-signature`.
    pub skip_signature: bool,
    /// The catalog's Glance targets, each independent: one that fails fails its own row.
    pub glance: Vec<NamedTarget>,
    /// How uploads are made (retries, method, import timeout).
    pub upload: UploadOptions,
    /// The catalog's OCI registries, for containerDisk entries; each independent.
    pub registries: Vec<crate::catalog::user::RegistryConfig>,
    /// Where registry credentials are found.
    pub auth_files: crate::oci::auth::AuthFiles,
}

/// What one Glance target did for an entry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TargetOutcome {
    pub target: String,
    /// `glance` or `registry`.
    pub kind: &'static str,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Glance image ids of the serial there (a registry: the manifest digest).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Images (a registry: serial tags) of older serials retired there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TargetOutcome {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// What happened to one entry.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// The newest serial is published and verifies: nothing transferred.
    UpToDate {
        serial: String,
        /// Per Glance target (an up-to-date serial still catches up a target that missed it).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        targets: Vec<TargetOutcome>,
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
        /// Per Glance target: ids, retired images, or why it failed.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        targets: Vec<TargetOutcome>,
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

impl Outcome {
    /// Failed, or published but missing from a Glance target.
    pub fn failed(&self) -> bool {
        match self {
            Outcome::Failed { .. } => true,
            Outcome::UpToDate { targets, .. } | Outcome::Published { targets, .. } => {
                targets.iter().any(TargetOutcome::failed)
            }
            Outcome::WouldPublish { .. } => false,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct EntryReport {
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub output: PathBuf,
    pub entries: Vec<EntryReport>,
}

impl Summary {
    /// Entries that failed, or whose serial did not reach every Glance target.
    pub fn failed(&self) -> usize {
        self.entries.iter().filter(|e| e.outcome.failed()).count()
    }
}

/// Holds a root's lock for a run.
pub(crate) struct RootLock {
    _file: File,
}

/// Takes the lock file `name` in `root` (created with `root` if missing); `wait` queues behind
/// a run holding it, otherwise that is [`SyncError::Locked`].
pub(crate) async fn lock_root(root: &Path, name: &str, wait: bool) -> Result<RootLock, SyncError> {
    let path = root.join(name);
    let io = |path: &Path, source| SyncError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(RootLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) if wait => {
            tracing::info!(path = %path.display(), "another run holds the lock; waiting for it");
            tokio::task::spawn_blocking(move || file.lock().map(|()| RootLock { _file: file }))
                .await
                .map_err(|e| io(&path, std::io::Error::other(e.to_string())))?
                .map_err(|e| io(&path, e))
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(SyncError::Locked { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(io(&path, source)),
    }
}

/// The source catalog of an entry: a built-in name, or a file relative to the user catalog.
pub(crate) fn source_catalog(image: &ImageSpec, catalog_dir: &Path) -> Result<Catalog, SyncError> {
    let looks_like_path = image.source.contains('/') || image.source.ends_with(".toml");
    Ok(if looks_like_path {
        Catalog::from_path(&catalog_dir.join(&image.source))?
    } else {
        Catalog::builtin(&image.source)?
    })
}

/// Where `source` is read from: `--mirror` for every source, else the user catalog's mirror
/// for it, else its own base URL.
pub(crate) fn mirror_url(
    catalog: &UserCatalog,
    source: &Catalog,
    cli_mirror: Option<&Url>,
) -> Result<Url, SyncError> {
    let text = match (cli_mirror, catalog.mirrors.get(&source.name)) {
        (Some(url), _) => return Ok(url.clone()),
        (None, Some(text)) => text.as_str(),
        (None, None) => return Ok(source.base_url.clone()),
    };
    let mut url = Url::parse(text).map_err(|e| CatalogError::Invalid {
        origin: "mirrors".into(),
        reason: format!("{}: {text:?}: {e}", source.name),
    })?;
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// The keys trusted for `source`: `--keyring` when given, else the source's built-in keys.
pub(crate) fn keyring_for(
    source: &Catalog,
    cli_keyring: Option<&Keyring>,
) -> Result<Keyring, SyncError> {
    match cli_keyring {
        Some(keyring) => Ok(keyring.clone()),
        None => Ok(Keyring::from_armored_texts(
            &source
                .keys
                .iter()
                .map(|k| k.armored.as_str())
                .collect::<Vec<_>>(),
        )
        .map_err(pipeline::Error::from)?),
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
    let _lock = if options.dry_run {
        None
    } else {
        Some(lock_root(root, LOCK_FILE, options.wait).await?)
    };
    let state = Mutex::new(State::load(root)?);
    let selected: Vec<&ImageSpec> = catalog
        .images
        .iter()
        .filter(|image| options.only.is_empty() || options.only.contains(&image.name))
        .collect();
    for name in &options.only {
        if !catalog.images.iter().any(|image| &image.name == name) {
            return Err(SyncError::Catalog(CatalogError::Invalid {
                origin: "--only".into(),
                reason: format!("no image named {name:?} in the catalog"),
            }));
        }
    }
    let uploads = selected.iter().any(|image| image.upload != Some(false));
    let mut glance = Vec::new();
    if uploads && !options.dry_run {
        for named in &options.glance {
            let session = Glance::connect(&named.target, &options.upload.client)
                .await
                .map_err(|e| crate::error::chain(&e));
            if let Err(error) = &session {
                tracing::error!(target = %named.name, "{error}");
            }
            glance.push(session);
        }
    }
    let run = Run {
        client,
        catalog,
        catalog_dir,
        options,
        state: &state,
        reporter,
        glance: &glance,
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
    /// A session per Glance target (as `options.glance`) when the catalog uploads, or why
    /// there is none; empty when nothing uploads.
    glance: &'a [Result<Glance, String>],
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
            Outcome::UpToDate { serial, .. } => {
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
        let source = source_catalog(image, self.catalog_dir)?;
        let mirror = mirror_url(self.catalog, &source, self.options.mirror.as_ref())?;
        let stream = Stream::from_str(&image.stream).map_err(pipeline::Error::from)?;
        let query = Query {
            release: image.release.clone(),
            arch: image.arch.clone(),
            stream,
            source: None,
        };
        let discovery = Discovery::new(self.client, &source, mirror.clone());
        let listing = discovery
            .listing(&query, None)
            .await
            .map_err(pipeline::Error::from)?;
        let serial = listing.serial.clone();
        let separator = source.serial_separator;
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
                // Idempotent: images already in Glance cost one lookup, no bytes; a target
                // that missed the serial catches up.
                let targets = self.glance_step(image, &tree, &serial).await?;
                return Ok(Outcome::UpToDate { serial, targets });
            }
            return Ok(Outcome::UpToDate {
                serial,
                targets: Vec::new(),
            });
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
            self.build(image, &source, &mirror, &tree, &serial, &listing)
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
        let targets = self.glance_step(image, &tree, &serial).await?;
        let glance_ids: Vec<String> = targets.iter().flat_map(|t| t.ids.clone()).collect();
        let retired: Vec<String> = targets.iter().flat_map(|t| t.retired.clone()).collect();
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
            targets,
        })
    }

    /// Fetches, converts and wraps `serial` in staging, then renames it into the tree.
    async fn build(
        &self,
        image: &ImageSpec,
        source: &Catalog,
        mirror: &Url,
        tree: &ImageTree,
        serial: &str,
        listing: &crate::index::Listing,
    ) -> Result<SerialRecord, SyncError> {
        let staging = tree.staging_dir(serial);
        let io = |path: &Path, source| SyncError::Io {
            path: path.to_owned(),
            source,
        };
        self.check_space(image, source, serial, listing)?;
        // Whatever a killed run left in staging is incomplete by definition.
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
        let keyring;
        let signature = if self.options.skip_signature {
            SignaturePolicy::Skip
        } else {
            keyring = keyring_for(source, self.options.keyring.as_ref())?;
            SignaturePolicy::Require(&keyring)
        };
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
            signature,
            convert_options: Options::parse(image.options.as_deref().unwrap_or(""))
                .map_err(pipeline::Error::from)?,
            image: ImageSettings {
                name: Some(format!("{}-{serial}", image.name)),
                min_ram: image.min_ram,
                visibility: self
                    .catalog
                    .glance
                    .first()
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
        let prepared =
            match pipeline::prepare(self.client, source, mirror, request, self.reporter).await {
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

    /// Uploads the serial's artifacts (idempotently) to every Glance target and retires there
    /// the images of serials no longer published, never those of `serial`. One row per target;
    /// a target that fails (down, refusing) fails its row only. Nothing when the catalog has no
    /// Glance target or the entry opts out.
    async fn glance_step(
        &self,
        image: &ImageSpec,
        tree: &ImageTree,
        serial: &str,
    ) -> Result<Vec<TargetOutcome>, SyncError> {
        if is_containerdisk(image) {
            return self.registry_step(image, tree, serial).await;
        }
        if image.upload == Some(false) || self.glance.is_empty() {
            return Ok(Vec::new());
        }
        let files = publish::metadata_files(&tree.serial_dir(serial))?;
        let kept = tree.serials()?;
        let mut rows = Vec::new();
        for (named, session) in self.options.glance.iter().zip(self.glance) {
            let result = match session {
                Ok(glance) => {
                    self.glance_target(image, glance, named, &files, serial, &kept)
                        .await
                }
                Err(error) => Err(SyncError::GlanceUnavailable(error.clone())),
            };
            rows.push(match result {
                Ok((ids, retired)) => TargetOutcome {
                    target: named.name.clone(),
                    kind: "glance",
                    status: "ok",
                    ids,
                    retired,
                    error: None,
                },
                Err(error) => {
                    let text = crate::error::chain(&error);
                    tracing::error!(image = %image.name, target = %named.name, "{text}");
                    TargetOutcome {
                        target: named.name.clone(),
                        kind: "glance",
                        status: "failed",
                        ids: Vec::new(),
                        retired: Vec::new(),
                        error: Some(text),
                    }
                }
            });
        }
        Ok(rows)
    }

    /// A containerDisk serial pushed to every registry of the catalog (idempotently: present
    /// blobs and tags cost a `HEAD` each), old serial tags beyond `keep` removed there.
    async fn registry_step(
        &self,
        image: &ImageSpec,
        tree: &ImageTree,
        serial: &str,
    ) -> Result<Vec<TargetOutcome>, SyncError> {
        if image.upload == Some(false) || self.options.dry_run {
            return Ok(Vec::new());
        }
        let layout = crate::oci::layout::Layout::open(&tree.serial_dir(serial), None)
            .map_err(pipeline::Error::from)?;
        let mut rows = Vec::new();
        for registry in &self.options.registries {
            let result = async {
                let destination = crate::oci::Reference::parse(&format!(
                    "{}/{}",
                    registry.url.trim_end_matches('/'),
                    image.name.to_ascii_lowercase()
                ))?;
                let options = crate::oci::push::PushOptions {
                    insecure: registry.insecure,
                    chunk_size: None,
                    keep: Some(self.catalog.keep_for(image)),
                    client: self.options.upload.client.clone(),
                };
                crate::oci::push::push(
                    &layout,
                    std::slice::from_ref(&destination),
                    &[],
                    &options,
                    &self.options.auth_files,
                    self.reporter,
                )
                .await
            }
            .await;
            rows.push(match result {
                Ok(pushed) => TargetOutcome {
                    target: registry.name.clone(),
                    kind: "registry",
                    status: "ok",
                    ids: pushed.iter().map(|p| p.digest.clone()).collect(),
                    retired: pushed.into_iter().flat_map(|p| p.retired).collect(),
                    error: None,
                },
                Err(error) => {
                    let text = crate::error::chain(&error);
                    tracing::error!(image = %image.name, target = %registry.name, "{text}");
                    TargetOutcome {
                        target: registry.name.clone(),
                        kind: "registry",
                        status: "failed",
                        ids: Vec::new(),
                        retired: Vec::new(),
                        error: Some(text),
                    }
                }
            });
        }
        Ok(rows)
    }

    /// [`Run::glance_step`] for one target: the serial's image ids and the retired ones.
    async fn glance_target(
        &self,
        image: &ImageSpec,
        glance: &Glance,
        named: &NamedTarget,
        files: &[PathBuf],
        serial: &str,
        kept: &[String],
    ) -> Result<(Vec<String>, Vec<String>), SyncError> {
        let upload = UploadOptions {
            visibility: named.visibility.clone(),
            ..self.options.upload.clone()
        };
        let uploaded = glance
            .upload_artifacts(files, &upload, self.reporter)
            .await?;
        let ids: Vec<String> = uploaded.iter().map(|u| u.id.clone()).collect();
        let policy = named.retire;
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
                tracing::info!(image = %image.name, target = %named.name, id = %candidate.id,
                    serial = of_serial, policy = ?policy, "retired from Glance");
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

/// Whether the entry makes KubeVirt containerDisks (OCI layouts for registries).
fn is_containerdisk(image: &ImageSpec) -> bool {
    image
        .container_format
        .eq_ignore_ascii_case(ContainerFormat::ContainerDisk.name())
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
