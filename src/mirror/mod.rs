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

pub mod listing;
mod state;
pub mod subset;

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
            MirrorError::Io { .. } | MirrorError::OwnJson { .. } => ErrorKind::Other,
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
        results.push((image.name.clone(), run.entry(image).await));
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
        let format = image.disk_format.to_ascii_lowercase();
        let amazon = matches!(format.as_str(), "ami" | "aki" | "ari");
        let mut folder = Vec::new();
        // aki and ari are the kernel and ramdisk alone, unless a file is asked for too.
        if !matches!(format.as_str(), "aki" | "ari") || image.file.is_some() {
            let kind = pipeline::upstream_kind(source, &format, image.file.as_deref()).ok_or_else(
                || {
                    pipeline::Error::Usage(format!(
                        "{}: catalog {} has no default file kind; set `file`",
                        image.name, source.name
                    ))
                },
            )?;
            folder.push(kind);
        }
        if format == "ami" && !folder.iter().any(|k| k == "tar.gz") {
            folder.push("tar.gz".to_owned());
        }
        let unpacked = if amazon {
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

impl Run<'_> {
    async fn entry(&mut self, image: &ImageSpec) -> Result<EntryDone, MirrorError> {
        let resolved =
            EntrySource::resolve(image, self.catalog, self.catalog_dir, &self.options.source)?;
        let source = &resolved.catalog;
        self.bookkeeping.insert(source.checksums.file.clone());
        if let Signature::Published { file, .. } = &source.signature {
            self.bookkeeping.insert(file.clone());
        }
        let query = runner::query(image)?;
        let stream = query.stream;
        let spec = source
            .stream(stream.name())
            .ok_or_else(|| IndexError::StreamNotInCatalog {
                catalog: source.name.clone(),
                stream,
            })?;
        if let Some(simplestreams) = &spec.simplestreams {
            self.roots
                .entry(simplestreams.root.clone())
                .or_default()
                .index
                .clone_from(&simplestreams.index);
        }
        let entry = Entry {
            source,
            spec,
            discovery: resolved.discovery(self.client),
            kinds: Kinds::of(image, source)?,
        };
        let keep = self.catalog.keep_for(image).max(1);
        // The release is resolved once for all the serials kept.
        let listings = entry.discovery.newest_listings(&query, keep).await?;
        let serials: Vec<String> = listings.iter().map(|(serial, _)| serial.clone()).collect();
        let policy = resolved.signature();
        let mut reports = Vec::new();
        let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut newest: Option<Listing> = None;
        // A serial that fails does not stop the others: the tree's aliases, retention and
        // simplestreams still follow what did arrive, and the entry then reports the failure.
        let mut failure = None;
        for (serial, listing) in listings {
            let placed = match listing {
                Ok(listing) => match self.mirror_serial(&entry, &listing, &policy).await {
                    Ok(placed) => {
                        newest.get_or_insert(listing);
                        placed
                    }
                    Err(error) => {
                        failure.get_or_insert(error);
                        continue;
                    }
                },
                Err(error) => {
                    failure.get_or_insert(error.into());
                    continue;
                }
            };
            held.insert(
                serial,
                placed
                    .iter()
                    .filter_map(|f| f.path.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect(),
            );
            reports.extend(placed);
        }
        let Some(listing) = newest else {
            return Err(failure.unwrap_or_else(|| {
                IndexError::NoSerials {
                    url: entry.discovery.mirror().clone(),
                    release: image.release.clone(),
                }
                .into()
            }));
        };
        let release_rel = release_rel(entry.spec, &listing.release)?;
        let release_dir = self
            .dir
            .join(safe_relative(&release_rel, "release folder")?);
        let mut files = EntryFiles::default();
        let mut candidate_serials = BTreeMap::new();
        let separator = source.serial_separator;
        for (serial, folder) in serial_folders(&release_dir, &entry.spec.serial_dir, separator)? {
            let folder_rel = format!("{}/{folder}", release_rel.trim_end_matches('/'));
            for own in &own_files(&entry, &listing, &serial)? {
                let rel = format!("{folder_rel}/{own}");
                if !serials.contains(&serial) {
                    if std::fs::symlink_metadata(self.dir.join(&rel)).is_ok() {
                        candidate_serials.insert(rel.clone(), serial.clone());
                        files.candidates.insert(rel);
                    }
                } else if held.contains_key(&serial) {
                    if self.dir.join(&rel).is_file() {
                        files.claims.insert(rel);
                    }
                } else {
                    // Kept but failed this run: what it held before stays claimed.
                    let claimed = self
                        .previous
                        .entries
                        .get(&image.name)
                        .is_some_and(|claims| claims.contains(&rel));
                    if claimed {
                        files.claims.insert(rel);
                    }
                }
            }
        }
        if listing.source == SourceKind::Streams {
            self.record_streams(&entry, &listing, &held).await?;
        }
        self.read_upstream_pages(&entry, &listing).await;
        Ok(EntryDone {
            serials,
            reports,
            files,
            candidate_serials,
            alias: AliasPlace {
                release_dir,
                name: entry
                    .spec
                    .alias_dir
                    .as_deref()
                    .map(|alias| safe_name(alias.trim_end_matches('/')).map(str::to_owned))
                    .transpose()?,
                serial_dir: entry.spec.serial_dir.clone(),
                separator,
            },
            failure,
        })
    }

    /// Fetches, verifies and places one serial's files and checksum files.
    async fn mirror_serial(
        &mut self,
        entry: &Entry<'_>,
        listing: &Listing,
        policy: &SignaturePolicy<'_>,
    ) -> Result<Vec<FileReport>, MirrorError> {
        let serial_rel = serial_rel(entry.spec, &listing.release, &listing.serial)?;
        let serial_path = safe_relative(&serial_rel, "serial folder")?;
        let target = self.dir.join(&serial_path);
        // A new folder appears whole; an existing one is updated file by file (each rename is
        // atomic, and the files already there stay valid meanwhile).
        let staged = !target.is_dir();
        let base = if staged {
            self.dir.join(WORK_DIR).join("staging").join(&serial_path)
        } else {
            target.clone()
        };
        let source = entry.source;
        let sums = pipeline::verified_sums(self.client, source, listing, policy).await?;
        let mut reports = Vec::new();
        for kind in &entry.kinds.folder {
            let file = listing.file(kind)?;
            let expected = pipeline::digest_from_sums(source, listing, file, &sums.text)?;
            let rel = serial_path.join(safe_name(&file.name)?);
            reports.push(self.place(file, &base, &rel, expected).await?);
        }
        self.write_sums(source, listing, &base, &sums, policy)
            .await?;
        if let Some(first) = entry.kinds.unpacked.first() {
            let sub = source
                .kind(first)
                .and_then(|kind| kind.dir.clone())
                .unwrap_or_default();
            let sub_path = safe_relative(&sub, "sub-folder")?;
            let (sub_listing, _) = pipeline::unpacked_file(&entry.discovery, listing, first)?;
            let sub_sums =
                pipeline::verified_sums(self.client, source, &sub_listing, policy).await?;
            for kind in &entry.kinds.unpacked {
                let (sub_listing, file) = pipeline::unpacked_file(&entry.discovery, listing, kind)?;
                let expected =
                    pipeline::digest_from_sums(source, &sub_listing, &file, &sub_sums.text)?;
                let rel = serial_path.join(&sub_path).join(safe_name(&file.name)?);
                reports.push(
                    self.place(&file, &base.join(&sub_path), &rel, expected)
                        .await?,
                );
            }
            self.write_sums(
                source,
                &sub_listing,
                &base.join(&sub_path),
                &sub_sums,
                policy,
            )
            .await?;
        }
        if staged {
            let parent = target.parent().unwrap_or(self.dir);
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
            std::fs::rename(&base, &target).map_err(io_error(&target))?;
        }
        let downloads = self.dir.join(WORK_DIR).join("downloads").join(&serial_path);
        let _ = std::fs::remove_dir_all(downloads);
        if listing.source == SourceKind::Streams {
            self.link_stream_folder(entry, listing, &serial_rel)?;
        }
        Ok(reports)
    }

    /// Puts the verified bytes of `file` at `base/<name>`: kept when already right, else
    /// downloaded into the work area (resumable) and renamed in.
    async fn place(
        &self,
        file: &crate::index::FileEntry,
        base: &Path,
        rel: &Path,
        expected: FileDigest,
    ) -> Result<FileReport, MirrorError> {
        let name = rel.file_name().unwrap_or_default();
        let dest = base.join(name);
        let present = {
            let path = dest.clone();
            let algorithm = expected.algorithm();
            tokio::task::spawn_blocking(move || digest_of(&path, algorithm))
                .await
                .map_err(|e| MirrorError::Io {
                    path: base.to_owned(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(io_error(&dest))?
        };
        if let Some((digest, size)) = present.filter(|(digest, _)| *digest == expected) {
            tracing::debug!(path = %rel.display(), "already mirrored");
            return Ok(FileReport {
                path: rel.to_owned(),
                digest,
                size,
                transferred: 0,
                up_to_date: true,
            });
        }
        let work = self.dir.join(WORK_DIR).join("downloads").join(rel);
        let done = self
            .client
            .download(
                &Download {
                    url: file.url.clone(),
                    dest: work.clone(),
                    expected_digest: Some(expected),
                    expected_size: file.size.filter(|_| file.size_exact),
                },
                self.reporter,
            )
            .await
            .map_err(pipeline::Error::from)?;
        std::fs::create_dir_all(base).map_err(io_error(base))?;
        std::fs::rename(&work, &dest).map_err(io_error(&dest))?;
        tracing::info!(path = %rel.display(), digest = %done.digest, "mirrored");
        Ok(FileReport {
            path: rel.to_owned(),
            digest: done.digest,
            size: done.size,
            transferred: done.transferred,
            up_to_date: false,
        })
    }

    /// Writes the folder's checksum file and signature as fetched, and MD5SUMS with its
    /// signature when the folder has them (only once that signature verifies, unless checks
    /// are skipped).
    async fn write_sums(
        &self,
        source: &Catalog,
        listing: &Listing,
        base: &Path,
        sums: &VerifiedSums,
        policy: &SignaturePolicy<'_>,
    ) -> Result<(), MirrorError> {
        std::fs::create_dir_all(base).map_err(io_error(base))?;
        write_atomic(&base.join(safe_name(&source.checksums.file)?), &sums.text)?;
        if let Signature::Published { file, .. } = &source.signature {
            // Skipped checks still copy the signature, for the mirror's clients to verify.
            let signature = match (&sums.signature, &listing.signature_url) {
                (Some(bytes), _) => Some(bytes.clone()),
                (None, Some(url)) => self
                    .client
                    .get_optional_document(url)
                    .await
                    .map_err(pipeline::Error::from)?,
                (None, None) => None,
            };
            let path = base.join(safe_name(file)?);
            match signature {
                Some(signature) => write_atomic(&path, &signature)?,
                // A signature of earlier checksums would fail every client.
                None => remove_if_present(&path)?,
            }
        }
        if source.checksums.file == MD5SUMS {
            return Ok(());
        }
        let url = |name: &str| {
            listing
                .dir_url
                .join(name)
                .map_err(|source| IndexError::Url {
                    base: listing.dir_url.clone(),
                    path: name.to_owned(),
                    source,
                })
        };
        let fetch = |url: Url| async move {
            self.client
                .get_optional_document(&url)
                .await
                .map_err(pipeline::Error::from)
        };
        // Whatever is not mirrored now must not stay from an earlier run: old checksums could
        // contradict the files.
        let (md5_path, signature_path) = (base.join(MD5SUMS), base.join(MD5SUMS_SIGNATURE));
        let Some(md5sums) = fetch(url(MD5SUMS)?).await? else {
            remove_if_present(&md5_path)?;
            return remove_if_present(&signature_path);
        };
        let signature = fetch(url(MD5SUMS_SIGNATURE)?).await?;
        if let SignaturePolicy::Require(keyring) = policy {
            let verified = signature
                .as_ref()
                .is_some_and(|sig| keyring.verify_detached(&md5sums, sig).is_ok());
            if !verified {
                tracing::warn!(url = %listing.dir_url, "MD5SUMS has no good signature; not mirrored");
                remove_if_present(&md5_path)?;
                return remove_if_present(&signature_path);
            }
        }
        write_atomic(&md5_path, &md5sums)?;
        match signature {
            Some(signature) => write_atomic(&signature_path, &signature),
            None => remove_if_present(&signature_path),
        }
    }

    /// Makes the folder simplestreams names (`releases/server/releases/noble/release-X/`) lead
    /// to the stored one (`releases/24.04/release-X/`) when they differ, as a relative symlink.
    fn link_stream_folder(
        &self,
        entry: &Entry<'_>,
        listing: &Listing,
        serial_rel: &str,
    ) -> Result<(), MirrorError> {
        let Some(stream_rel) = entry
            .discovery
            .mirror()
            .make_relative(&listing.dir_url)
            .filter(|rel| !rel.starts_with("../") && !rel.contains('%'))
        else {
            tracing::debug!(url = %listing.dir_url, "simplestreams folder outside the mirror; not linked");
            return Ok(());
        };
        let stream_path = safe_relative(&stream_rel, "simplestreams folder")?;
        let serial_path = safe_relative(serial_rel, "serial folder")?;
        if stream_path.starts_with(&serial_path) || serial_path.starts_with(&stream_path) {
            return Ok(());
        }
        let depth = stream_path.components().count().saturating_sub(1);
        let target = Path::new(&"../".repeat(depth)).join(&serial_path);
        let link = self.dir.join(&stream_path);
        match std::fs::symlink_metadata(&link) {
            Ok(meta) if meta.is_symlink() => {
                if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
                    return Ok(());
                }
            }
            Ok(_) => {
                tracing::warn!(path = %link.display(), "a real folder where a simplestreams link belongs; left alone");
                return Ok(());
            }
            Err(_) => {}
        }
        replace_symlink(&target, &link)
    }

    /// Removes a file of the tree given up by every entry, then the folders that held only it
    /// and their checksum files and pages (aliases and folders of other entries stop this).
    fn remove(&self, rel: &str) -> Result<(), MirrorError> {
        let path = self.dir.join(safe_relative(rel, "retained file")?);
        remove_if_present(&path)?;
        let mut folder = path.parent();
        while let Some(current) = folder.filter(|f| *f != self.dir && f.starts_with(self.dir)) {
            match holds_content(current, &self.bookkeeping) {
                Ok(true) => break,
                Ok(false) => std::fs::remove_dir_all(current).map_err(io_error(current))?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(current)(error)),
            }
            folder = current.parent();
        }
        Ok(())
    }

    /// Adds the entry's mirrored versions and items to the subset of its simplestreams root.
    async fn record_streams(
        &mut self,
        entry: &Entry<'_>,
        listing: &Listing,
        held: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(), MirrorError> {
        let Some(simplestreams) = &entry.spec.simplestreams else {
            return Ok(());
        };
        let join = |base: &Url, path: &str| {
            base.join(path).map_err(|source| IndexError::Url {
                base: base.clone(),
                path: path.to_owned(),
                source,
            })
        };
        let root = join(entry.discovery.mirror(), &simplestreams.root)?;
        let index_url = join(&root, &simplestreams.index)?;
        let streams_error = |url: &Url| {
            let url = url.clone();
            move |source| IndexError::Streams {
                url,
                source: Box::new(source),
            }
        };
        let index_bytes = self
            .client
            .get_document(&index_url)
            .await
            .map_err(pipeline::Error::from)?;
        let entries = streams::parse_index(&index_bytes).map_err(streams_error(&index_url))?;
        let index_entry = streams::entry_for_datatype(&entries, &simplestreams.datatype)
            .map_err(streams_error(&index_url))?
            .clone();
        let index: Value = serde_json::from_slice(&index_bytes)
            .map_err(|e| streams_error(&index_url)(streams::StreamsError::Json(e)))?;
        let products_url =
            streams::resolve_path(&root, &index_entry.path).map_err(streams_error(&index_url))?;
        safe_relative(&index_entry.path, "products file")?;
        if !self.products_docs.contains_key(&products_url) {
            let bytes = self
                .client
                .get_document(&products_url)
                .await
                .map_err(pipeline::Error::from)?;
            let document: Value = serde_json::from_slice(&bytes)
                .map_err(|e| streams_error(&products_url)(streams::StreamsError::Json(e)))?;
            self.products_docs.insert(products_url.clone(), document);
        }
        let document = &self.products_docs[&products_url];
        let Some(key) = subset::find_product(document, &listing.release.codename, &listing.arch)
        else {
            return Ok(());
        };
        let Some(product) = subset::subset_product(&document["products"][key], held) else {
            return Ok(());
        };
        let key = key.to_owned();
        // The document's own fields without its (large) products.
        let shell: Map<String, Value> = document
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(field, _)| *field != "products")
            .map(|(field, value)| (field.clone(), value.clone()))
            .collect();
        let shell = Value::Object(shell);
        let state = self.roots.entry(simplestreams.root.clone()).or_default();
        let update = state.update.get_or_insert_with(|| RootUpdate {
            index_entry: index["index"][&index_entry.content_id].clone(),
            content_id: index_entry.content_id.clone(),
            products_path: index_entry.path.clone(),
            shell,
            products: Map::new(),
        });
        let mut one = Map::new();
        one.insert(key, product);
        subset::merge_products(&mut update.products, one);
        Ok(())
    }

    /// Reads the upstream pages on the way to the serial folder for their Description column
    /// (release names, which HTML discovery needs). Best effort: a mirror without pages
    /// still gets a release description made from what discovery knows.
    async fn read_upstream_pages(&mut self, entry: &Entry<'_>, listing: &Listing) {
        let Ok(serial_rel) = serial_rel(entry.spec, &listing.release, &listing.serial) else {
            return;
        };
        let mut folders = vec![String::new()];
        let mut prefix = String::new();
        for segment in serial_rel.split('/').filter(|s| !s.is_empty()) {
            prefix.push_str(segment);
            prefix.push('/');
            folders.push(prefix.clone());
        }
        for folder in folders {
            let Ok(url) = entry.discovery.mirror().join(&folder) else {
                continue;
            };
            if !self.listings_read.insert(url.clone()) {
                continue;
            }
            let rows = match self.client.get_document(&url).await {
                Ok(bytes) => html::parse_listing(&bytes).unwrap_or_default(),
                Err(error) => {
                    tracing::debug!(url = %url, "no upstream page: {error}");
                    continue;
                }
            };
            let key = folder.trim_end_matches('/').to_owned();
            for row in rows {
                if let Some(description) = row.description {
                    self.descriptions
                        .insert((key.clone(), row.name), description);
                }
            }
        }
        // The release row must name the release for HTML discovery to find it.
        let releases_dir = entry.spec.releases_dir.trim_end_matches('/').to_owned();
        let Ok(release_rel) = release_rel(entry.spec, &listing.release) else {
            return;
        };
        let below = release_rel
            .strip_prefix(&entry.spec.releases_dir)
            .unwrap_or(&release_rel);
        let Some(folder) = below.split('/').find(|s| !s.is_empty()) else {
            return;
        };
        self.descriptions
            .entry((releases_dir, folder.to_owned()))
            .or_insert_with(|| release_description(&listing.release, &entry.spec.title));
    }

    /// Writes each touched root's products file and index: the upstream subset merged into
    /// what the mirror already lists, less anything whose file is no longer there.
    fn write_streams(&self) -> Result<(), MirrorError> {
        for (root_rel, state) in &self.roots {
            let root = self
                .dir
                .join(safe_relative(root_rel, "simplestreams root")?);
            let index_path = root.join(safe_relative(&state.index, "simplestreams index")?);
            let existing_index = read_own_json(&index_path)?;
            let (content_id, index_entry, products_path, shell, mut products) = match &state.update
            {
                Some(update) => {
                    let path = root.join(safe_relative(&update.products_path, "products file")?);
                    let mut products = read_own_json(&path)?
                        .map(|doc| subset::products_of(&doc))
                        .unwrap_or_default();
                    subset::merge_products(&mut products, update.products.clone());
                    (
                        update.content_id.clone(),
                        update.index_entry.clone(),
                        path,
                        update.shell.clone(),
                        products,
                    )
                }
                None => {
                    // Nothing new from upstream: re-check what the mirror lists against what
                    // it holds, after pruning.
                    let Some((content_id, index_entry)) = existing_index
                        .as_ref()
                        .and_then(|index| index.get("index")?.as_object()?.iter().next())
                        .map(|(id, entry)| (id.clone(), entry.clone()))
                    else {
                        continue;
                    };
                    let Some(path) = index_entry.get("path").and_then(Value::as_str) else {
                        continue;
                    };
                    let path = root.join(safe_relative(path, "products file")?);
                    let Some(document) = read_own_json(&path)? else {
                        continue;
                    };
                    let products = subset::products_of(&document);
                    (content_id, index_entry, path, document, products)
                }
            };
            subset::retain_present(&mut products, |path| {
                safe_relative(path, "item").is_ok_and(|rel| root.join(rel).is_file())
            });
            let index = subset::index_document(&index_entry, &content_id, &products);
            let document = subset::products_document(&shell, products);
            let pretty = |value: &Value| {
                serde_json::to_vec_pretty(value).map_err(|source| MirrorError::OwnJson {
                    path: products_path.clone(),
                    source,
                })
            };
            write_atomic(&products_path, &pretty(&document)?)?;
            write_atomic(&index_path, &pretty(&index)?)?;
        }
        Ok(())
    }
}

/// The release folder, relative to the mirror root: `releases/24.04/`.
fn release_rel(spec: &StreamSpec, release: &Release) -> Result<String, MirrorError> {
    let vars = Vars {
        version: Some(&release.version),
        codename: Some(&release.codename),
        ..Vars::default()
    };
    Ok(pattern::expand(&spec.release_dir, &vars).map_err(IndexError::from)?)
}

/// The serial folder, relative to the mirror root: `releases/24.04/release-20240821/`.
fn serial_rel(spec: &StreamSpec, release: &Release, serial: &str) -> Result<String, MirrorError> {
    let vars = Vars {
        serial: Some(serial),
        ..Vars::default()
    };
    let folder = pattern::expand(&spec.serial_dir, &vars).map_err(IndexError::from)?;
    Ok(format!("{}{folder}", release_rel(spec, release)?))
}

/// A Description HTML discovery reads as `release`, for mirrors whose upstream has no pages.
fn release_description(release: &Release, stream_title: &str) -> String {
    let codename = release
        .codename_title
        .clone()
        .unwrap_or_else(|| release.codename.clone());
    format!("{} ({codename}) {stream_title}", release.title)
}

/// Points a release folder's alias (`release/`, `current/`) at its newest serial folder, or
/// removes it when none is left.
fn point_alias(place: &AliasPlace) -> Result<(), MirrorError> {
    let Some(alias) = &place.name else {
        return Ok(());
    };
    let link = place.release_dir.join(alias);
    let folders = serial_folders(&place.release_dir, &place.serial_dir, place.separator)?;
    let mut serials: Vec<String> = folders.iter().map(|(s, _)| s.clone()).collect();
    sort_serials_newest_first(&mut serials, place.separator);
    let newest = serials
        .first()
        .and_then(|serial| folders.iter().find(|(s, _)| s == serial))
        .map(|(_, folder)| folder);
    match newest {
        Some(folder) => {
            if std::fs::read_link(&link).ok().as_deref() != Some(Path::new(folder)) {
                replace_symlink(Path::new(folder), &link)?;
            }
        }
        None => remove_if_present(&link)?,
    }
    Ok(())
}

/// The entry's files inside any of its serial folders (`/`-separated, relative to the folder),
/// as the catalog names them for this release and arch.
fn own_files(
    entry: &Entry<'_>,
    listing: &Listing,
    serial: &str,
) -> Result<Vec<String>, MirrorError> {
    // Some sources name files after the build too (Debian's `…-{serial}`).
    let vars = Vars {
        version: Some(&listing.release.version),
        codename: Some(&listing.release.codename),
        arch: Some(&listing.arch),
        serial: Some(serial),
        variant: None,
    };
    let mut files = Vec::new();
    for ftype in entry.kinds.folder.iter().chain(&entry.kinds.unpacked) {
        let Some(kind) = entry.source.kind(ftype) else {
            continue;
        };
        let Some(name) = entry
            .source
            .file_name(entry.spec, kind, &vars)
            .map_err(IndexError::from)?
        else {
            continue;
        };
        let sub = kind.dir.as_deref().unwrap_or("");
        safe_relative(sub, "sub-folder")?;
        files.push(format!("{sub}{}", safe_name(&name)?));
    }
    Ok(files)
}

/// The serial folders (serial, folder name) under a release folder: real folders only, so
/// aliases are not counted.
fn serial_folders(
    release_dir: &Path,
    serial_dir: &str,
    separator: char,
) -> Result<Vec<(String, String)>, MirrorError> {
    let (before, after) = serial_dir
        .split_once("{serial}")
        .unwrap_or((serial_dir, ""));
    let reading = match std::fs::read_dir(release_dir) {
        Ok(reading) => reading,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(release_dir)(error)),
    };
    let mut folders = Vec::new();
    for item in reading {
        let item = item.map_err(io_error(release_dir))?;
        if !item.file_type().map_err(io_error(release_dir))?.is_dir() {
            continue;
        }
        let name = item.file_name().to_string_lossy().into_owned();
        let slashed = format!("{name}/");
        let serial = slashed
            .strip_prefix(before)
            .and_then(|rest| rest.strip_suffix(after));
        if let Some(serial) = serial.filter(|s| is_serial(s, separator)) {
            folders.push((serial.to_owned(), name));
        }
    }
    Ok(folders)
}

/// Whether a folder holds anything but checksum files, signatures, pages and hidden files:
/// an image, a link (an alias), or such a folder.
fn holds_content(folder: &Path, bookkeeping: &BTreeSet<String>) -> std::io::Result<bool> {
    for item in std::fs::read_dir(folder)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let kind = item.file_type()?;
        if kind.is_dir() {
            if holds_content(&item.path(), bookkeeping)? {
                return Ok(true);
            }
        } else if !name.starts_with('.') && !bookkeeping.contains(&name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A relative folder or file path from a catalog or an upstream document, as a path that stays
/// under the mirror root: no empty, `.`, `..` or hidden segments, no absolute paths.
fn safe_relative(text: &str, what: &'static str) -> Result<PathBuf, MirrorError> {
    let unsafe_path = || MirrorError::UnsafePath {
        what,
        value: text.to_owned(),
    };
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    let mut path = PathBuf::new();
    if trimmed.is_empty() {
        return Ok(path);
    }
    for segment in trimmed.split('/') {
        path.push(safe_name(segment).map_err(|_| unsafe_path())?);
    }
    Ok(path)
}

/// One path segment from an upstream document: a plain, visible name.
fn safe_name(name: &str) -> Result<&str, MirrorError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name != INDEX_PAGE
        && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(name)
    } else {
        Err(MirrorError::UnsafePath {
            what: "file name",
            value: name.to_owned(),
        })
    }
}

/// The digest and size of a file, `None` when it does not exist.
fn digest_of(
    path: &Path,
    algorithm: DigestAlgorithm,
) -> std::io::Result<Option<(FileDigest, u64)>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut hasher = ContentHasher::new(algorithm);
    let size = crate::io::hashing::hash_reader(&mut file, &mut hasher)?;
    Ok(Some((crate::io::hashing::finish(hasher), size)))
}

/// Writes `bytes` to a hidden temporary name beside `path`, then renames it over `path`. Same
/// bytes already there are left alone, so reruns keep modification times (and `rsync` of the
/// tree to the lab side has nothing to do).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    // Unchanged documents keep their mtime, so rsync and conditional requests see no change.
    if read_own(path).ok().flatten().as_deref() == Some(bytes) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    crate::io::publish::write(path, bytes).map_err(io_error(path))
}

fn remove_if_present(path: &Path) -> Result<(), MirrorError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io_error(path)(error)),
        _ => Ok(()),
    }
}

/// (Re)points the symlink `link` at `target`, atomically (a new link renamed over the old).
fn replace_symlink(target: &Path, link: &Path) -> Result<(), MirrorError> {
    let parent = link.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    crate::io::publish::replace_symlink(target, link).map_err(io_error(link))
}

/// A JSON document this tool wrote earlier; `None` when absent.
fn read_own_json(path: &Path) -> Result<Option<Value>, MirrorError> {
    let Some(bytes) = read_own(path).map_err(io_error(path))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| MirrorError::OwnJson {
            path: path.to_owned(),
            source,
        })
}

/// A file of the tree, size-bounded; `None` when absent.
fn read_own(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut bytes = Vec::new();
    file.take(MAX_OWN_DOCUMENT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_OWN_DOCUMENT {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_OWN_DOCUMENT} bytes"
        )));
    }
    Ok(Some(bytes))
}

/// Writes `index.html` in the folder `rel` of `root` and every real folder below it, from what
/// is on disk; removes dangling links and folders left empty. Descriptions come from
/// `descriptions`, else from the page being replaced. Returns whether the folder lists anything.
fn write_pages(
    root: &Path,
    rel: &str,
    descriptions: &HashMap<(String, String), String>,
) -> Result<bool, MirrorError> {
    let dir = root.join(rel);
    let page = dir.join(INDEX_PAGE);
    let previous: HashMap<String, String> = read_own(&page)
        .ok()
        .flatten()
        .and_then(|bytes| html::parse_listing(&bytes).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|row| Some((row.name, row.description?)))
        .collect();
    let mut rows = Vec::new();
    for item in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
        let item = item.map_err(io_error(&dir))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == INDEX_PAGE {
            continue;
        }
        let path = item.path();
        let is_link = item.file_type().map_err(io_error(&path))?.is_symlink();
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(error) if is_link && error.kind() == std::io::ErrorKind::NotFound => {
                // A link to a pruned folder.
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            Err(error) => return Err(io_error(&path)(error)),
        };
        if meta.is_dir() && !is_link {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if !write_pages(root, &child, descriptions)? {
                std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
                continue;
            }
        }
        let description = descriptions
            .get(&(rel.to_owned(), name.clone()))
            .or_else(|| previous.get(&name))
            .cloned();
        rows.push(listing::Row {
            date: listing::listing_date(meta.modified().unwrap_or(std::time::UNIX_EPOCH)),
            size: (!meta.is_dir()).then_some(meta.len()),
            is_dir: meta.is_dir(),
            description,
            name,
        });
    }
    // Apache's default order: by name, byte-wise.
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    if rows.is_empty() && !rel.is_empty() {
        return Ok(false);
    }
    let title = format!("Index of /{rel}{}", if rel.is_empty() { "" } else { "/" });
    write_atomic(
        &page,
        listing::render(&title, !rel.is_empty(), &rows).as_bytes(),
    )?;
    Ok(true)
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
