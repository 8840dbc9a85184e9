//! `cloudimg mirror`: a verified copy of part of an upstream site, for air-gapped labs.
//!
//! For each user-catalog entry the newest `keep` serials are fetched and verified (signature of
//! the checksum file, then each file's digest) and stored under the same relative paths as
//! upstream, with the folder's checksum files and signatures byte for byte. Then the tree gets
//! what a client needs to discover it: Apache-style `index.html` pages for every folder, the
//! `release/`/`current/` aliases and the simplestreams index and products file of the subset.
//! Any static web server can serve the result, and cloudimg reads it as `--mirror`.
//!
//! Nothing unverified reaches the tree: downloads land in the hidden work area
//! (`.cloudimg-mirror/`) and are renamed in once verified; a new serial folder is assembled in
//! staging and renamed in whole; documents are written under hidden temporary names and
//! renamed. Serials beyond `keep` lose the entry's files unless another entry keeps them
//! (`state`), and a folder left without images is removed. A failing entry is reported and the
//! others go on.

mod entry;
pub mod listing;
mod pages;
mod preview;
mod products;
mod serial;
mod state;
pub mod subset;
mod tree;

use entry::*;
use pages::*;
pub use preview::{preview, PlannedFile, PlannedOutcome, Preview};
use tree::*;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use url::Url;

use crate::catalog::user::{ImageSpec, UserCatalog};
use crate::catalog::{
    pattern, Catalog, CatalogError, DigestAlgorithm, Signature, StreamSpec, Vars,
};
use crate::fetch::{Client, Download};
use crate::glance::Amazon;
use crate::index::release::{is_serial, sort_serials_newest_first, Release};
use crate::index::{html, streams, Discovery, IndexError, Listing, SourceKind};
use crate::io::hashing::ContentHasher;
use crate::io::progress::Reporter;
use crate::pipeline::{self, SignaturePolicy, VerifiedSums};
use crate::runner::{self, EntryOutcome, EntrySource, LockSpec, RunnerError, SourceOptions};
use crate::verify::digest::FileDigest;
use crate::ErrorKind;
use state::{EntryFiles, State};

/// The hidden work area in the mirror root: downloads in progress and staged serial folders.
pub const WORK_DIR: &str = ".cloudimg-mirror";
/// The lock file in the mirror root that keeps two runs apart.
pub const LOCK_FILE: &str = ".cloudimg-mirror.lock";
const LOCK: LockSpec = LockSpec {
    file: LOCK_FILE,
    command: "mirror run",
    hint: "",
};
/// The page a static server shows for a folder.
const INDEX_PAGE: &str = "index.html";
/// A checksum file the real site publishes beside SHA256SUMS; copied with its signature.
const MD5SUMS: &str = "MD5SUMS";
const MD5SUMS_SIGNATURE: &str = "MD5SUMS.gpg";
/// Largest document of our own read back from the tree (listing pages, streams JSON).
const MAX_OWN_DOCUMENT: u64 = streams::MAX_STREAMS_BYTES as u64;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
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
    /// Work on a blocking thread that panicked.
    #[error(transparent)]
    Task(#[from] crate::io::blocking::TaskFailed),
    #[error("{what} {value:?} cannot name a place inside the mirror")]
    UnsafePath { what: &'static str, value: String },
    #[error("{path}: unusable simplestreams document of this mirror")]
    OwnJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl MirrorError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            MirrorError::Catalog(error) => error.kind(),
            MirrorError::Pipeline(error) => error.kind(),
            MirrorError::Runner(error) => error.kind(),
            // Names come from upstream documents: one that escapes is not to be trusted.
            MirrorError::UnsafePath { .. } => ErrorKind::Integrity,
            MirrorError::Io { .. } | MirrorError::OwnJson { .. } | MirrorError::Task(_) => {
                ErrorKind::Other
            }
        }
    }
}

impl runner::RunFailure for MirrorError {
    fn kind(&self) -> ErrorKind {
        MirrorError::kind(self)
    }

    fn is_locked(&self) -> bool {
        matches!(self, MirrorError::Runner(error) if error.is_locked())
    }
}

impl From<pipeline::Error> for MirrorError {
    fn from(error: pipeline::Error) -> MirrorError {
        MirrorError::Pipeline(Box::new(error))
    }
}

impl From<IndexError> for MirrorError {
    fn from(error: IndexError) -> MirrorError {
        pipeline::Error::from(error).into()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> MirrorError + '_ {
    move |source| MirrorError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How a run behaves.
#[derive(Default)]
pub struct MirrorOptions {
    /// Only these entries (by name); all when empty.
    pub only: Vec<String>,
    /// `--mirror` (the upstream of every source), `--keyring`, `--no-verify-signature` (the
    /// checksum files' signatures are copied but not checked).
    pub source: SourceOptions,
}

/// One file the mirror holds for an entry.
#[derive(Debug, serde::Serialize)]
pub struct FileReport {
    /// Relative to the mirror root.
    pub path: PathBuf,
    /// In the algorithm of the source's checksum file.
    pub digest: FileDigest,
    pub size: u64,
    /// Bytes received in this run (0 when the mirror already had the file).
    pub transferred: u64,
    pub up_to_date: bool,
}

/// What happened to one entry.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    Mirrored {
        /// Newest first.
        serials: Vec<String>,
        /// Serials whose files of this entry were removed (beyond `keep`).
        pruned: Vec<String>,
        files: Vec<FileReport>,
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
    pub dir: PathBuf,
    pub entries: Vec<EntryReport>,
}

impl Summary {
    pub fn failed(&self) -> usize {
        runner::failed(&self.entries)
    }
}

/// Mirrors the entries of `catalog` into `dir`. Errors of single entries are in the summary;
/// `Err` means the run could not start (lock, `--only`) or could not write the indices.
pub async fn mirror(
    client: &Client,
    catalog: &UserCatalog,
    catalog_dir: &Path,
    dir: &Path,
    options: &MirrorOptions,
    reporter: &dyn Reporter,
) -> Result<Summary, MirrorError> {
    let selected = runner::select(catalog, &options.only)?;
    let _lock = runner::lock_root(dir, LOCK, false).await?;
    let work = dir.join(WORK_DIR);
    let previous = State::load(&work)?;
    let mut run = Run {
        client,
        catalog,
        catalog_dir,
        dir,
        options,
        reporter,
        previous: &previous,
        descriptions: HashMap::new(),
        listings_read: HashSet::new(),
        products_docs: HashMap::new(),
        roots: BTreeMap::new(),
        bookkeeping: [
            INDEX_PAGE,
            "SHA256SUMS",
            "SHA256SUMS.gpg",
            MD5SUMS,
            MD5SUMS_SIGNATURE,
        ]
        .map(String::from)
        .into(),
    };
    let mut results = Vec::new();
    for image in selected {
        results.push((image.name.clone(), run.entry_every_arch(image).await));
    }
    // Retention over all entries at once: a file goes only when no entry keeps it.
    let files: BTreeMap<String, EntryFiles> = results
        .iter()
        .filter_map(|(name, result)| Some((name.clone(), result.as_ref().ok()?.files.clone())))
        .collect();
    let names: BTreeSet<String> = catalog.images.iter().map(|i| i.name.clone()).collect();
    let (mut next, removals) = previous.plan(&names, &files);
    for (root, index) in &previous.roots {
        run.roots
            .entry(root.clone())
            .or_default()
            .index
            .clone_from(index);
    }
    next.roots = run
        .roots
        .iter()
        .map(|(root, state)| (root.clone(), state.index.clone()))
        .collect();
    let mut pruned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, paths) in &removals {
        let serial_of = results
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, result)| result.as_ref().ok())
            .map(|done| &done.candidate_serials);
        for path in paths {
            run.remove(path)?;
            tracing::info!(image = %name, path, "pruned");
            if let Some(serial) = serial_of.and_then(|serials| serials.get(path)) {
                pruned
                    .entry(name.clone())
                    .or_default()
                    .insert(serial.clone());
            }
        }
    }
    next.save(&work)?;
    let mut entries = Vec::new();
    for (name, result) in results {
        let outcome = match result {
            Ok(done) => {
                point_alias(&done.alias)?;
                match done.failure {
                    None => {
                        let pruned = pruned.remove(&name).unwrap_or_default();
                        tracing::info!(image = %name, serials = ?done.serials, pruned = pruned.len(), "mirrored");
                        let mut pruned: Vec<String> = pruned.into_iter().collect();
                        sort_serials_newest_first(&mut pruned, done.alias.separator);
                        Outcome::Mirrored {
                            serials: done.serials,
                            pruned,
                            files: done.reports,
                        }
                    }
                    Some(error) => failed(&name, &error),
                }
            }
            Err(error) => failed(&name, &error),
        };
        entries.push(EntryReport { name, outcome });
    }
    run.write_streams()?;
    let dir_owned = dir.to_owned();
    let descriptions = std::mem::take(&mut run.descriptions);
    tokio::task::spawn_blocking(move || write_pages(&dir_owned, "", &descriptions))
        .await
        .map_err(|e| MirrorError::Io {
            path: dir.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })??;
    Ok(Summary {
        dir: dir.to_owned(),
        entries,
    })
}

fn failed(name: &str, error: &MirrorError) -> Outcome {
    let text = crate::error::chain(error);
    tracing::error!(image = %name, "{text}");
    Outcome::Failed { error: text }
}

/// What an entry did, for retention and reporting once every entry ran.
struct EntryDone {
    /// Newest first.
    serials: Vec<String>,
    reports: Vec<FileReport>,
    files: EntryFiles,
    /// Serial of each retention candidate.
    candidate_serials: BTreeMap<String, String>,
    alias: AliasPlace,
    /// A serial that failed; the others were done.
    failure: Option<MirrorError>,
}

impl EntryDone {
    /// `self` and `other`, two architectures of one entry, as one: their serials, files and
    /// reports together, the first failure.
    fn join(mut self, other: EntryDone) -> EntryDone {
        for serial in other.serials {
            if !self.serials.contains(&serial) {
                self.serials.push(serial);
            }
        }
        sort_serials_newest_first(&mut self.serials, self.alias.separator);
        self.reports.extend(other.reports);
        self.files.claims.extend(other.files.claims);
        self.files.candidates.extend(other.files.candidates);
        self.candidate_serials.extend(other.candidate_serials);
        self.failure = self.failure.or(other.failure);
        self
    }
}

/// Where a release folder's alias lives and what it may point at.
struct AliasPlace {
    release_dir: PathBuf,
    /// `release`, `current`; `None` when the stream has none.
    name: Option<String>,
    serial_dir: String,
    separator: char,
}

/// The upstream kinds an entry keeps: those of the serial folder, and those of its `unpacked/`.
struct Kinds {
    folder: Vec<String>,
    unpacked: Vec<String>,
}

impl Kinds {
    fn of(image: &ImageSpec, source: &Catalog) -> Result<Kinds, MirrorError> {
        let format = image.disk_format;
        let amazon = format.amazon();
        let mut folder = Vec::new();
        // aki and ari are the kernel and ramdisk alone, unless a file is asked for too.
        if matches!(amazon, None | Some(Amazon::Machine)) || image.file.is_some() {
            let kind = pipeline::upstream_kind(source, format, image.file.as_deref()).ok_or_else(
                || {
                    pipeline::Error::from(pipeline::Refusal::EntryWithoutKind {
                        entry: image.name.clone(),
                        catalog: source.name.clone(),
                    })
                },
            )?;
            folder.push(kind);
        }
        if amazon == Some(Amazon::Machine) && !folder.iter().any(|k| k == "tar.gz") {
            folder.push("tar.gz".to_owned());
        }
        let unpacked = if amazon.is_some() {
            vec!["vmlinuz".to_owned(), "initrd".to_owned()]
        } else {
            Vec::new()
        };
        Ok(Kinds { folder, unpacked })
    }
}

/// A simplestreams root touched by this run.
#[derive(Default)]
struct RootState {
    /// The index file, relative to the root.
    index: String,
    update: Option<RootUpdate>,
}

/// The subset of upstream products mirrored in this run, with what is needed to write it.
struct RootUpdate {
    content_id: String,
    /// The upstream index entry (path, datatype, format, updated).
    index_entry: Value,
    /// The products file, relative to the root.
    products_path: String,
    /// The upstream products document without its products.
    shell: Value,
    products: Map<String, Value>,
}

struct Run<'a> {
    client: &'a Client,
    catalog: &'a UserCatalog,
    catalog_dir: &'a Path,
    dir: &'a Path,
    options: &'a MirrorOptions,
    reporter: &'a dyn Reporter,
    /// (folder relative to the root, without `/`; name) → Description, from upstream pages.
    descriptions: HashMap<(String, String), String>,
    listings_read: HashSet<Url>,
    products_docs: HashMap<Url, Value>,
    /// By root, relative to the mirror root (`releases/`).
    roots: BTreeMap<String, RootState>,
    /// The files of the previous run's entries.
    previous: &'a State,
    /// Names of checksum files, signatures and pages: a folder of only these holds no image.
    bookkeeping: BTreeSet<String>,
}

/// One entry being mirrored: its source, discovery and layout.
struct Entry<'e> {
    source: &'e Catalog,
    spec: &'e StreamSpec,
    discovery: Discovery<'e>,
    kinds: Kinds,
}

impl<'e> Entry<'e> {
    /// `image` of the source `resolved`, and the query naming its builds: what a run and a dry
    /// run both start from.
    fn new(
        image: &ImageSpec,
        resolved: &'e EntrySource,
        client: &'e Client,
    ) -> Result<(Entry<'e>, crate::index::Query), MirrorError> {
        let source = &resolved.catalog;
        let query = runner::query(image)?;
        let stream = query.stream;
        let spec = source
            .stream(stream.name())
            .ok_or_else(|| IndexError::StreamNotInCatalog {
                catalog: source.name.clone(),
                stream,
            })?;
        let entry = Entry {
            source,
            spec,
            discovery: resolved.discovery(client),
            kinds: Kinds::of(image, source)?,
        };
        Ok((entry, query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_upstream_cannot_leave_the_mirror() {
        assert!(safe_relative("releases/24.04/release-1/", "x").is_ok());
        assert_eq!(safe_relative("", "x").unwrap(), PathBuf::new());
        for bad in [
            "../x",
            "a/../b",
            "/abs",
            "a//b",
            "a/./b",
            ".hidden/x",
            "a\\b",
        ] {
            let error = safe_relative(bad, "x").unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Integrity, "{bad}");
        }
        assert!(safe_name("index.html").is_err());
        assert!(safe_name("SHA256SUMS").is_ok());
    }

    #[test]
    fn ami_entries_keep_the_tarball_and_the_kernel_and_initrd() {
        let ubuntu = Catalog::builtin("ubuntu").unwrap();
        let kinds = |format: &str, file: Option<&str>| {
            let text = format!(
                "output = \"o\"\n[[image]]\nname = \"n\"\nrelease = \"noble\"\n\
                 disk_format = \"{format}\"\n{}",
                file.map(|f| format!("file = \"{f}\"\n"))
                    .unwrap_or_default()
            );
            let image = UserCatalog::from_toml_str(&text, "t").unwrap().images[0].clone();
            Kinds::of(&image, &ubuntu).unwrap()
        };
        let plain = kinds("qcow2", None);
        assert_eq!(
            (plain.folder, plain.unpacked.len()),
            (vec!["disk1.img".to_owned()], 0)
        );
        let ami = kinds("ami", None);
        assert_eq!(ami.folder, ["tar.gz"]);
        assert_eq!(ami.unpacked, ["vmlinuz", "initrd"]);
        assert_eq!(
            kinds("ami", Some("disk1.img")).folder,
            ["disk1.img", "tar.gz"]
        );
        assert_eq!(kinds("vmdk", Some("ova")).folder, ["ova"]);
        let kernel = kinds("aki", None);
        assert!(kernel.folder.is_empty());
        assert_eq!(kernel.unpacked, ["vmlinuz", "initrd"]);
    }

    #[test]
    fn a_made_up_release_description_reads_back_as_the_release() {
        let release = Release {
            codename: "noble".into(),
            version: "24.04".into(),
            title: "24.04 LTS".into(),
            codename_title: Some("Noble Numbat".into()),
            supported: true,
            eol: None,
            aliases: Vec::new(),
        };
        let text = release_description(&release, "released builds");
        let read = crate::index::release::release_from_description("24.04", &text).unwrap();
        assert_eq!(
            (read.codename.as_str(), read.version.as_str()),
            ("noble", "24.04")
        );
    }

    #[test]
    fn pages_list_the_tree_drop_dangling_links_and_keep_descriptions() {
        let root = tempfile::tempdir().unwrap();
        let serial = root.path().join("releases/24.04/release-20240821");
        std::fs::create_dir_all(&serial).unwrap();
        std::fs::write(serial.join("x.img"), b"image").unwrap();
        std::fs::create_dir_all(root.path().join("empty/deeper")).unwrap();
        std::os::unix::fs::symlink(
            "release-20240821",
            root.path().join("releases/24.04/release"),
        )
        .unwrap();
        std::os::unix::fs::symlink("gone", root.path().join("releases/24.04/dangling")).unwrap();
        let mut descriptions = HashMap::new();
        descriptions.insert(
            ("releases".to_owned(), "24.04".to_owned()),
            "Ubuntu Server 24.04 LTS (Noble Numbat) released builds".to_owned(),
        );
        write_pages(root.path(), "", &descriptions).unwrap();
        let read = |rel: &str| {
            html::parse_listing(&std::fs::read(root.path().join(rel).join(INDEX_PAGE)).unwrap())
                .unwrap()
        };
        let names = |rel: &str| {
            read(rel)
                .into_iter()
                .map(|e| (e.name, e.is_dir))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(""), [("releases".to_owned(), true)]);
        assert!(!root.path().join("empty").exists());
        assert_eq!(
            names("releases/24.04"),
            [
                ("release".to_owned(), true),
                ("release-20240821".to_owned(), true)
            ]
        );
        assert!(std::fs::symlink_metadata(root.path().join("releases/24.04/dangling")).is_err());
        assert_eq!(
            read("releases/24.04/release-20240821")[0].approx_size,
            Some(5)
        );
        // A later run without the upstream page keeps the description it wrote.
        write_pages(root.path(), "", &HashMap::new()).unwrap();
        assert_eq!(
            read("releases")[0].description.as_deref(),
            Some("Ubuntu Server 24.04 LTS (Noble Numbat) released builds")
        );
    }
}
