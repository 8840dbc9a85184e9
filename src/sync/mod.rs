//! `cloudimg sync`: keeps the images a user catalog declares current, unattended.
//!
//! For each entry: discover the newest serial; if it is published and verifies, do nothing;
//! otherwise prepare it in `ROOT/.staging/`, rename it to `ROOT/<name>/<serial>/`, switch
//! `ROOT/<name>/current`, prune old serials, record it in the state file and run the hook. One
//! failing entry never stops the others. A lock on the root keeps two runs apart; anything a
//! killed run leaves is hidden (staging, resumable downloads) and finished by the next run.
//!
//! The run is a plan over [`crate::runner`]: each entry is its own task (`--jobs` at once), so
//! one entry's conversion, on a blocking thread, overlaps another's download. Upstream files go
//! to a download cache shared by the run (`ROOT/.downloads/<build>/`): entries built from the
//! same upstream file share one verified copy, kept while a current serial came from it.
//!
//! - `entry.rs`: one entry, from discovery to publication;
//! - `glance.rs`: upload of a published serial and retirement of older ones;
//! - `registry.rs`: containerDisk entries pushed to the OCI registries (tags retired beyond
//!   `keep`), and the image index of an entry naming several architectures;
//! - `hook.rs`: the user's command after a publication;
//! - `publish.rs`: the tree (`<name>/<serial>/`, `current`, staging); `state.rs`: the record.

mod entry;
mod glance;
mod hook;
pub mod publish;
mod registry;
pub mod state;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing::Instrument;

use crate::catalog::user::{ImageSpec, UserCatalog};
use crate::catalog::CatalogError;
use crate::fetch::Client;
use crate::io::blocking::{self, TaskFailed};
use crate::io::progress::Reporter;
use crate::pipeline;
use crate::runner::{self, EntryOutcome, LockSpec, RunnerError, SourceOptions};
use crate::upload::{Glance, NamedTarget, UploadError, UploadOptions};
use crate::ErrorKind;
use state::State;

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
    #[error(transparent)]
    Task(#[from] TaskFailed),
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
            | SyncError::Task(_)
            | SyncError::NoSpace { .. }
            | SyncError::BadState { .. }
            | SyncError::Hook { .. } => ErrorKind::Other,
        }
    }
}

/// How a run behaves.
#[derive(Clone)]
pub struct SyncOptions {
    pub dry_run: bool,
    /// Entries worked on at once.
    pub jobs: usize,
    /// Only these entries (by name); all when empty.
    pub only: Vec<String>,
    /// Wait for a running sync instead of exiting.
    pub wait: bool,
    pub allow_downgrade: bool,
    /// `--accel`: the accelerator of `[image.bake]` guests.
    pub accel: crate::bake::qemu::AccelChoice,
    /// `--mirror`, `--keyring`, `--no-verify-signature`.
    pub source: SourceOptions,
    /// The catalog's Glance targets, each independent: one that fails fails its own row.
    pub glance: Vec<NamedTarget>,
    /// How uploads are made (retries, method, import timeout).
    pub upload: UploadOptions,
    /// The catalog's OCI registries, for containerDisk entries; each independent.
    pub registries: Vec<crate::catalog::user::RegistryConfig>,
    /// Where registry credentials are found.
    pub auth_files: crate::oci::auth::AuthFiles,
}

/// What one target (a Glance or a registry) did for an entry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TargetOutcome {
    pub target: String,
    /// `glance` or `registry`.
    pub kind: &'static str,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// The serial there: Glance image ids, or the registry's manifest (or index) digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Images (Glance ids) or serial tags of older serials retired there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
    /// Image bytes this run sent there: 0 when the target already had everything.
    pub bytes_sent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TargetOutcome {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// The row of `target` (of `kind`) for `image`: `ok` with what it delivered, or `failed`
    /// with the error's chain, logged naming the image and the target.
    fn of<E: std::error::Error>(
        image: &str,
        target: &str,
        kind: &'static str,
        result: Result<Delivered, E>,
    ) -> TargetOutcome {
        let (status, delivered, error) = match result {
            Ok(delivered) => ("ok", delivered, None),
            Err(error) => {
                let text = crate::error::chain(&error);
                tracing::error!(image, target, "{text}");
                ("failed", Delivered::default(), Some(text))
            }
        };
        TargetOutcome {
            target: target.to_owned(),
            kind,
            status,
            ids: delivered.ids,
            retired: delivered.retired,
            bytes_sent: delivered.bytes_sent,
            error,
        }
    }
}

/// What a target received for an entry: the serial's ids there, what was retired, the bytes
/// sent.
#[derive(Default)]
struct Delivered {
    ids: Vec<String>,
    retired: Vec<String>,
    bytes_sent: u64,
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

impl EntryOutcome for Outcome {
    fn is_failure(&self) -> bool {
        self.failed()
    }
}

pub type EntryReport = runner::EntryReport<Outcome>;

#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub output: PathBuf,
    pub entries: Vec<EntryReport>,
}

impl Summary {
    /// Entries that failed, or whose serial did not reach every Glance target.
    pub fn failed(&self) -> usize {
        runner::failed(&self.entries)
    }
}

/// Runs a sync of `catalog` (whose file is in `catalog_dir`). Errors of single entries are in
/// the summary; `Err` means the run itself could not start (lock, state file).
pub async fn sync(
    client: Arc<Client>,
    catalog: UserCatalog,
    catalog_dir: PathBuf,
    options: SyncOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<Summary, SyncError> {
    let root = catalog.output.clone();
    let selected: Vec<ImageSpec> = runner::select(&catalog, &options.only)?
        .into_iter()
        .cloned()
        .collect();
    let _lock = if options.dry_run {
        None
    } else {
        Some(runner::lock_root(&root, LOCK, options.wait).await?)
    };
    let state = {
        let root = root.clone();
        blocking::run(&root.join(state::STATE_FILE), move || State::load(&root)).await?
    };
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
    let jobs = options.jobs;
    let run = Arc::new(Run {
        client,
        catalog,
        catalog_dir,
        options,
        state: Mutex::new(state),
        reporter,
        glance,
        download_caches: Mutex::new(BTreeSet::new()),
    });
    let entries = runner::spawn_entries(
        selected,
        jobs,
        |image| {
            let run = run.clone();
            let span = tracing::info_span!("entry", image = %image.name);
            async move { run.entry(&image).await }.instrument(span)
        },
        |image, error| EntryReport {
            name: image.name.clone(),
            outcome: Outcome::Failed { error },
        },
    )
    .await;
    if !run.options.dry_run {
        let run = run.clone();
        let path = root.join(publish::DOWNLOADS);
        // Best effort: a cache folder left behind costs space, never correctness.
        if let Err(error) = blocking::run(&path, move || run.prune_download_caches()).await {
            tracing::warn!("download cache: {}", crate::error::chain(&error));
        }
    }
    Ok(Summary {
        output: root,
        entries,
    })
}

/// One run: what every entry's task shares.
struct Run {
    client: Arc<Client>,
    catalog: UserCatalog,
    catalog_dir: PathBuf,
    options: SyncOptions,
    state: Mutex<State>,
    reporter: Arc<dyn Reporter>,
    /// A session per Glance target (as `options.glance`) when the catalog uploads, or why
    /// there is none; empty when nothing uploads.
    glance: Vec<Result<Glance, String>>,
    /// Download-cache folders the entries of this run used (kept, whatever happened).
    download_caches: Mutex<BTreeSet<String>>,
}

impl Run {
    /// Records `serial` as `image`'s current one (forgetting `pruned`) and saves the state
    /// file. Blocking.
    fn record(
        &self,
        image: &str,
        serial: &str,
        record: state::SerialRecord,
        pruned: &[String],
    ) -> Result<(), SyncError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.record(image, serial, record, pruned);
        state.save(&self.catalog.output)
    }

    /// Removes the download-cache folders no current serial came from and no entry of this run
    /// used (which keeps a failed entry's partial download for the next run to resume).
    /// Blocking.
    fn prune_download_caches(&self) -> Result<(), SyncError> {
        let dir = self.catalog.output.join(publish::DOWNLOADS);
        let mut keep = self
            .download_caches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        keep.extend(
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .current_download_caches()
                .map(str::to_owned),
        );
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(SyncError::Io { path: dir, source }),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                tracing::debug!(folder = name, "download cache no longer needed");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
