//! The runner of catalog-driven commands: `sync` and `mirror` are two plans over it.
//!
//! A run takes its root's lock ([`lock::lock_root`]), selects the entries of the user catalog
//! (`--only`, [`select`]), resolves each entry's source once into an [`EntrySource`] — the
//! source catalog, the URL it is read from and the keys that verify it — and hands that to the
//! command's plan. Each entry ends as one [`EntryReport`]; a failing entry is reported and never
//! stops the others ([`failed`] counts them for the exit status).
//!
//! Both commands read the catalog through here, so neither depends on the other: `sync` and
//! `mirror` sit side by side above this room, and this room sits above `pipeline`, `index` and
//! `catalog`. Work runs on tasks ([`spawn_entries`]): an entry owns what it needs, and several
//! entries overlap (one's conversion on a blocking thread while another downloads).

pub mod lock;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use url::Url;

use crate::catalog::user::{ImageSpec, UserCatalog};
use crate::catalog::{Catalog, CatalogError};
use crate::fetch::Client;
use crate::index::{Discovery, IndexError, Query, Stream};
use crate::io::blocking::TaskFailed;
use crate::pipeline::SignaturePolicy;
use crate::verify::openpgp::{Keyring, KeyringError};
use crate::ErrorKind;

pub use lock::{lock_root, LockSpec, RootLock};

/// Why a run, or one entry's source, could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("built-in keys of source {source_name}")]
    Keyring {
        source_name: String,
        #[source]
        source: KeyringError,
    },
    #[error("mirror of source {source_name} in the user catalog: {text:?} is not a URL")]
    MirrorUrl {
        source_name: String,
        text: String,
        #[source]
        source: url::ParseError,
    },
    #[error("--only {name}: no image of that name in the catalog")]
    UnknownEntry { name: String },
    /// Another run holds the root: its own exit status, so cron can tell it from a failure.
    #[error("another {command} holds {path}; try again later{hint}")]
    Locked {
        path: PathBuf,
        command: &'static str,
        hint: &'static str,
    },
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

impl RunnerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunnerError::Catalog(error) => error.kind(),
            RunnerError::Index(error) => error.kind(),
            RunnerError::Keyring { source, .. } => source.kind(),
            RunnerError::MirrorUrl { .. } | RunnerError::UnknownEntry { .. } => ErrorKind::Usage,
            RunnerError::Io { .. } | RunnerError::Locked { .. } | RunnerError::Task(_) => {
                ErrorKind::Other
            }
        }
    }

    /// Whether the run did not start because another holds the root.
    pub fn is_locked(&self) -> bool {
        matches!(self, RunnerError::Locked { .. })
    }
}

/// What the command line says about every source: `--mirror`, `--keyring`,
/// `--no-verify-signature`.
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// Read every source from here instead of the catalog's mirrors.
    pub mirror: Option<Url>,
    /// Trusted instead of each source's built-in keys.
    pub keyring: Option<Keyring>,
    /// Checksum files are used without checking their signature.
    pub skip_signature: bool,
}

/// One entry's source, resolved once: which catalog describes it, where it is read from and
/// which keys verify it.
#[derive(Clone, Debug)]
pub struct EntrySource {
    pub catalog: Catalog,
    /// The site root discovery reads (always ending in `/`).
    pub mirror: Url,
    /// `None` when signatures are not checked.
    keyring: Option<Keyring>,
}

impl EntrySource {
    /// Resolves `image`'s source: a built-in catalog name or a file relative to the user
    /// catalog; read from `--mirror`, else the user catalog's mirror for it, else its own base
    /// URL; verified with `--keyring`, else the source's built-in keys.
    pub fn resolve(
        image: &ImageSpec,
        user: &UserCatalog,
        catalog_dir: &Path,
        options: &SourceOptions,
    ) -> Result<EntrySource, RunnerError> {
        let looks_like_path = image.source.contains('/') || image.source.ends_with(".toml");
        let catalog = if looks_like_path {
            Catalog::from_path(&catalog_dir.join(&image.source))?
        } else {
            Catalog::builtin(&image.source)?
        };
        let mirror = mirror_url(user, &catalog, options.mirror.as_ref())?;
        let keyring = if options.skip_signature {
            None
        } else {
            Some(keyring_for(&catalog, options.keyring.as_ref())?)
        };
        Ok(EntrySource {
            catalog,
            mirror,
            keyring,
        })
    }

    /// How the checksum files of this source are treated.
    pub fn signature(&self) -> SignaturePolicy<'_> {
        match &self.keyring {
            Some(keyring) => SignaturePolicy::Require(keyring),
            None => SignaturePolicy::Skip,
        }
    }

    /// Discovery of this source's builds through `client`.
    pub fn discovery<'a>(&'a self, client: &'a Client) -> Discovery<'a> {
        Discovery::new(client, &self.catalog, self.mirror.clone())
    }
}

/// The entry once per architecture it names (a containerDisk entry may name several), each
/// copy naming one: what `mirror` walks, so every architecture's files are mirrored.
pub fn per_arch(image: &ImageSpec) -> Vec<ImageSpec> {
    if image.arches.len() <= 1 {
        return vec![image.clone()];
    }
    image
        .arches
        .iter()
        .map(|arch| ImageSpec {
            arches: vec![arch.clone()],
            ..image.clone()
        })
        .collect()
}

/// The discovery query an entry names.
pub fn query(image: &ImageSpec) -> Result<Query, RunnerError> {
    Ok(Query {
        release: image.release.clone(),
        arch: image.arch().to_owned(),
        stream: Stream::from_str(&image.stream)?,
        source: None,
    })
}

/// Where `source` is read from: `--mirror` for every source, else the user catalog's mirror
/// for it, else its own base URL.
fn mirror_url(
    user: &UserCatalog,
    source: &Catalog,
    cli_mirror: Option<&Url>,
) -> Result<Url, RunnerError> {
    let text = match (cli_mirror, user.mirrors.get(&source.name)) {
        (Some(url), _) => return Ok(url.clone()),
        (None, Some(text)) => text,
        (None, None) => return Ok(source.base_url.clone()),
    };
    let mut url = Url::parse(text).map_err(|source_error| RunnerError::MirrorUrl {
        source_name: source.name.clone(),
        text: text.clone(),
        source: source_error,
    })?;
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// The keys trusted for `source`: `--keyring` when given, else the source's built-in keys.
fn keyring_for(source: &Catalog, cli_keyring: Option<&Keyring>) -> Result<Keyring, RunnerError> {
    if let Some(keyring) = cli_keyring {
        return Ok(keyring.clone());
    }
    let texts: Vec<&str> = source.keys.iter().map(|k| k.armored.as_str()).collect();
    Keyring::from_armored_texts(&texts).map_err(|error| RunnerError::Keyring {
        source_name: source.name.clone(),
        source: error,
    })
}

/// The entries a run works on, in catalog order: those named by `--only`, else all. A name
/// that is not in the catalog is refused before anything runs.
pub fn select<'c>(
    catalog: &'c UserCatalog,
    only: &[String],
) -> Result<Vec<&'c ImageSpec>, RunnerError> {
    if let Some(name) = only
        .iter()
        .find(|name| !catalog.images.iter().any(|image| &image.name == *name))
    {
        return Err(RunnerError::UnknownEntry { name: name.clone() });
    }
    Ok(catalog
        .images
        .iter()
        .filter(|image| only.is_empty() || only.contains(&image.name))
        .collect())
}

/// What became of one entry, whatever the command.
pub trait EntryOutcome {
    /// The entry failed (its error is in the outcome).
    fn is_failure(&self) -> bool;
}

/// Why a whole run did not happen, whatever the command: its kind, and whether another run
/// holds the root (the CLI gives that its own exit status).
pub trait RunFailure: std::error::Error {
    fn kind(&self) -> ErrorKind;
    fn is_locked(&self) -> bool;
}

/// One entry's line of a run's summary.
#[derive(Debug, serde::Serialize)]
pub struct EntryReport<O> {
    pub name: String,
    #[serde(flatten)]
    pub outcome: O,
}

/// How many entries of a run failed.
pub fn failed<O: EntryOutcome>(entries: &[EntryReport<O>]) -> usize {
    entries.iter().filter(|e| e.outcome.is_failure()).count()
}

/// Runs `work` for each of `items` on its own task, at most `jobs` at once, and returns the
/// results in the order of `items` (not of completion). A task that panics yields `on_panic`'s
/// value for its item, so one broken entry cannot take the run down.
pub async fn spawn_entries<I, T, F, Fut>(
    items: Vec<I>,
    jobs: usize,
    work: F,
    on_panic: impl Fn(&I, String) -> T,
) -> Vec<T>
where
    I: Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut index_of = std::collections::HashMap::new();
    for (index, item) in items.iter().cloned().enumerate() {
        // The slot is taken here, in the order of `items`, not inside the task: tasks start in
        // whatever order the scheduler picks, and `--jobs 1` must mean one entry after another
        // in catalog order. The semaphore is never closed, so acquiring only waits.
        let permit = permits.clone().acquire_owned().await;
        let future = work(item);
        let handle = set.spawn(async move {
            let _permit = permit;
            future.await
        });
        index_of.insert(handle.id(), index);
    }
    let mut results: Vec<Option<T>> = items.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next_with_id().await {
        let (id, value) = match joined {
            Ok((id, value)) => (id, value),
            Err(error) => {
                let index = index_of[&error.id()];
                (error.id(), on_panic(&items[index], error.to_string()))
            }
        };
        results[index_of[&id]] = Some(value);
    }
    // Every task was joined once, so every slot is filled.
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_job_runs_entries_one_after_another_in_catalog_order() {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let items: Vec<usize> = (0..64).collect();
        let work = |item: usize| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(("start", item));
                tokio::task::yield_now().await;
                log.lock().unwrap().push(("end", item));
                item
            }
        };
        let results = spawn_entries(items.clone(), 1, work, |item, _| *item).await;
        assert_eq!(results, items);
        let expected: Vec<_> = items
            .iter()
            .flat_map(|&item| [("start", item), ("end", item)])
            .collect();
        assert_eq!(*log.lock().unwrap(), expected);
    }

    fn catalog() -> UserCatalog {
        UserCatalog::from_toml_str(
            r#"
output = "/srv/images"
[mirrors]
ubuntu = "http://127.0.0.1:8080/ubuntu"
[[image]]
name = "noble"
release = "noble"
[[image]]
name = "jammy"
release = "jammy"
"#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn only_selects_in_catalog_order_and_refuses_unknown_names() {
        let catalog = catalog();
        let names = |only: &[&str]| -> Vec<String> {
            let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
            select(&catalog, &only)
                .unwrap()
                .iter()
                .map(|i| i.name.clone())
                .collect()
        };
        assert_eq!(names(&[]), ["noble", "jammy"]);
        assert_eq!(names(&["jammy", "noble"]), ["noble", "jammy"]);
        let error = select(&catalog, &["focal".into()]).unwrap_err();
        assert!(matches!(error, RunnerError::UnknownEntry { ref name } if name == "focal"));
        assert_eq!(error.kind(), ErrorKind::Usage);
    }

    #[test]
    fn source_is_read_from_the_cli_mirror_then_the_catalog_mirror() {
        let catalog = catalog();
        let image = &catalog.images[0];
        let options = SourceOptions {
            skip_signature: true,
            ..SourceOptions::default()
        };
        let source = EntrySource::resolve(image, &catalog, Path::new("."), &options).unwrap();
        assert_eq!(source.mirror.as_str(), "http://127.0.0.1:8080/ubuntu/");
        assert!(matches!(source.signature(), SignaturePolicy::Skip));
        let cli = Url::parse("http://127.0.0.1:9/x/").unwrap();
        let options = SourceOptions {
            mirror: Some(cli.clone()),
            ..SourceOptions::default()
        };
        let source = EntrySource::resolve(image, &catalog, Path::new("."), &options).unwrap();
        assert_eq!(source.mirror, cli);
        assert!(matches!(source.signature(), SignaturePolicy::Require(_)));
    }

    #[tokio::test]
    async fn spawned_entries_report_in_item_order_and_survive_a_panic() {
        let results = spawn_entries(
            vec![3u64, 0, 1],
            2,
            |n| async move {
                assert!(n != 0, "boom");
                tokio::time::sleep(std::time::Duration::from_millis(n * 10)).await;
                n.to_string()
            },
            |n, error| format!("{n} failed: {}", error.contains("panicked")),
        )
        .await;
        assert_eq!(results, ["3", "0 failed: true", "1"]);
    }
}
