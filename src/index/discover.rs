//! The discovery driver: releases, serials and the files of one build, from a mirror.
//!
//! Two sources describe the same builds. Simplestreams (`<root>/streams/v1/`) gives exact sizes
//! and digests in two documents; the HTML listings (`releases/` → `release-<serial>/`) give the
//! serial folders, and each folder's checksum file names the files that exist (the listing adds
//! approximate sizes). By default a stream's simplestreams metadata is used when it has the
//! release, the listings otherwise (old daily releases, mirrors without `streams/`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::str::FromStr;

use bytes::Bytes;
use tracing::debug;
use url::Url;

use super::release::{self, Release};
use super::streams::{self, Product, Products};
use super::{html, sums, IndexError};
use crate::catalog::{pattern, Arch, Catalog, Signature, StreamSpec, Vars, STREAM_NAMES};
use crate::fetch::{Client, FetchError};
use crate::verify::digest::{Sha256Digest, Sha512Digest};

/// How many known serials an "unknown serial" error quotes.
const SERIALS_QUOTED: usize = 8;

/// Where documents come from: the HTTP client in the program, a fixed map in tests.
pub trait DocumentSource: Sync {
    /// A small document (listing, checksum file, JSON), size-bounded by the implementation.
    fn get_document(&self, url: &Url) -> impl Future<Output = Result<Bytes, FetchError>> + Send;
}

impl DocumentSource for Client {
    fn get_document(&self, url: &Url) -> impl Future<Output = Result<Bytes, FetchError>> + Send {
        Client::get_document(self, url)
    }
}

/// A stream of builds (the CLI's `--stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    Released,
    Daily,
    Minimal,
    MinimalDaily,
}

impl Stream {
    pub const ALL: [Stream; 4] = [
        Stream::Released,
        Stream::Daily,
        Stream::Minimal,
        Stream::MinimalDaily,
    ];

    /// The name used on the command line and in catalogs.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Released => "released",
            Stream::Daily => "daily",
            Stream::Minimal => "minimal",
            Stream::MinimalDaily => "minimal-daily",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stream {
    type Err = IndexError;

    fn from_str(text: &str) -> Result<Stream, IndexError> {
        Stream::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| IndexError::UnknownStream {
                name: text.to_owned(),
                known: STREAM_NAMES.join(", "),
            })
    }
}

/// Which documents describe the builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Apache listings plus the checksum file.
    Html,
    /// Simplestreams index and products file.
    Streams,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Html => "html",
            SourceKind::Streams => "streams",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SourceKind {
    type Err = IndexError;

    fn from_str(text: &str) -> Result<SourceKind, IndexError> {
        [SourceKind::Html, SourceKind::Streams]
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| IndexError::UnknownSource {
                name: text.to_owned(),
            })
    }
}

/// What the user asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Code name, version or alias (`noble`, `24.04`, `lts`), any case.
    pub release: String,
    /// The source's name (`amd64`) or the Glance name (`x86_64`).
    pub arch: String,
    pub stream: Stream,
    /// `None`: simplestreams when the stream has the release there, else the listings.
    pub source: Option<SourceKind>,
}

/// One published file of a build.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileEntry {
    pub name: String,
    /// The simplestreams ftype (`disk1.img`); look it up with [`Catalog::kind`].
    pub ftype: Option<String>,
    pub url: Url,
    pub size: Option<u64>,
    /// `false` when `size` is a listing's rounded figure.
    pub size_exact: bool,
    /// From simplestreams, or from the (not yet signature-checked) checksum file.
    pub sha256: Option<Sha256Digest>,
    /// From a SHA-512 checksum file (Debian's, unsigned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha512: Option<Sha512Digest>,
}

/// The files of one build of one release on one arch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    pub release: Release,
    pub stream: Stream,
    /// The source's arch name (`amd64`).
    pub arch: String,
    pub serial: String,
    /// The build's folder.
    pub dir_url: Url,
    /// By name.
    pub files: Vec<FileEntry>,
    /// The checksum file (`SHA256SUMS`) of the folder.
    pub sums_url: Url,
    /// Its detached signature; `None` when the source publishes none.
    pub signature_url: Option<Url>,
    pub source: SourceKind,
}

impl Listing {
    /// The file of a kind (`disk1.img`); a kind this build lacks is a usage error.
    pub fn file(&self, ftype: &str) -> Result<&FileEntry, IndexError> {
        self.files
            .iter()
            .find(|f| f.ftype.as_deref() == Some(ftype))
            .ok_or_else(|| IndexError::UnknownFileKind {
                ftype: ftype.to_owned(),
                release: self.release.codename.clone(),
                serial: self.serial.clone(),
                known: self
                    .files
                    .iter()
                    .filter_map(|f| f.ftype.as_deref())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Simplestreams documents of one stream, fetched.
struct StreamsDocs {
    root: Url,
    products_url: Url,
    products: Products,
}

/// Discovers builds on one mirror of one catalog.
pub struct Discovery<'a, D: DocumentSource = Client> {
    source: &'a D,
    catalog: &'a Catalog,
    mirror: Url,
}

impl<'a, D: DocumentSource> Discovery<'a, D> {
    /// `mirror` is the site root (the catalog's `base_url` unless the user chose another); a
    /// missing final `/` is added.
    pub fn new(source: &'a D, catalog: &'a Catalog, mut mirror: Url) -> Discovery<'a, D> {
        if !mirror.path().ends_with('/') {
            let path = format!("{}/", mirror.path());
            mirror.set_path(&path);
        }
        Discovery {
            source,
            catalog,
            mirror,
        }
    }

    pub fn mirror(&self) -> &Url {
        &self.mirror
    }

    /// The releases a stream offers, oldest first.
    pub async fn releases(
        &self,
        stream: Stream,
        source: Option<SourceKind>,
    ) -> Result<Vec<Release>, IndexError> {
        let spec = self.stream_spec(stream)?;
        if source != Some(SourceKind::Html) {
            let required = source.is_some();
            if let Some(docs) = self.streams_docs(stream, spec, required).await? {
                let releases = releases_of_products(&docs.products);
                if !releases.is_empty() {
                    return Ok(releases);
                }
                if required {
                    return Err(IndexError::NoReleases {
                        url: docs.products_url,
                    });
                }
                debug!(url = %docs.products_url, "no products in simplestreams; using the listings");
            }
        }
        self.html_releases(stream, spec).await
    }

    /// The serials of a release on an arch, newest first (aliases such as `current` excluded).
    pub async fn serials(&self, query: &Query) -> Result<Vec<String>, IndexError> {
        let resolved = self.resolve(query).await?;
        self.serials_of(&resolved).await
    }

    /// The files of one build; `serial` `None` is the newest.
    pub async fn listing(
        &self,
        query: &Query,
        serial: Option<&str>,
    ) -> Result<Listing, IndexError> {
        let resolved = self.resolve(query).await?;
        let serials = self.serials_of(&resolved).await?;
        let serial = match serial {
            None => serials.first().cloned(),
            Some(wanted) => serials.iter().find(|s| *s == wanted).cloned(),
        }
        .ok_or_else(|| IndexError::UnknownSerial {
            serial: serial.unwrap_or_default().to_owned(),
            release: resolved.release.codename.clone(),
            known: quote_serials(&serials),
        })?;
        self.listing_of(&resolved, query, serial).await
    }

    /// The newest `count` builds of a release, resolving it once: each serial (newest first)
    /// with its files, or why they could not be listed.
    pub async fn newest_listings(
        &self,
        query: &Query,
        count: usize,
    ) -> Result<Vec<(String, Result<Listing, IndexError>)>, IndexError> {
        let resolved = self.resolve(query).await?;
        let mut serials = self.serials_of(&resolved).await?;
        serials.truncate(count);
        let mut listings = Vec::with_capacity(serials.len());
        for serial in serials {
            let listing = self.listing_of(&resolved, query, serial.clone()).await;
            listings.push((serial, listing));
        }
        Ok(listings)
    }

    /// The files of `serial` of a resolved release.
    async fn listing_of(
        &self,
        resolved: &Resolved<'a>,
        query: &Query,
        serial: String,
    ) -> Result<Listing, IndexError> {
        let (dir_url, files, source) = match &resolved.source {
            ResolvedSource::Streams {
                root,
                products_url,
                product,
            } => {
                let (dir_url, files) = streams_files(root, products_url, product, &serial)?;
                (dir_url, files, SourceKind::Streams)
            }
            ResolvedSource::Html { release_dir } => {
                let (dir_url, files) = self.html_files(resolved, release_dir, &serial).await?;
                (dir_url, files, SourceKind::Html)
            }
        };
        if files.is_empty() {
            return Err(IndexError::NoFiles {
                url: dir_url,
                arch: resolved.arch.name.clone(),
            });
        }
        let sums_url = file_url(&dir_url, &self.catalog.checksums.file)?;
        let signature_url = match &self.catalog.signature {
            Signature::Published { file, .. } => Some(file_url(&dir_url, file)?),
            Signature::NotPublished => None,
        };
        Ok(Listing {
            release: resolved.release.clone(),
            stream: query.stream,
            arch: resolved.arch.name.clone(),
            serial,
            dir_url,
            files,
            sums_url,
            signature_url,
            source,
        })
    }

    /// A file of a kind kept in a sub-folder the checksum file does not cover (the kernel and
    /// initrd in `unpacked/`). Nothing is fetched: the file may not exist for every build, and it
    /// carries no digest.
    pub fn unlisted_file(&self, listing: &Listing, ftype: &str) -> Result<FileEntry, IndexError> {
        let unknown = || IndexError::UnknownFileKind {
            ftype: ftype.to_owned(),
            release: listing.release.codename.clone(),
            serial: listing.serial.clone(),
            known: self
                .catalog
                .kinds
                .iter()
                .filter(|k| k.dir.is_some())
                .map(|k| k.ftype.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let kind = self.catalog.kind(ftype).ok_or_else(unknown)?;
        let Some(dir) = &kind.dir else {
            return Err(unknown());
        };
        let spec = self.stream_spec(listing.stream)?;
        let vars = Vars {
            version: Some(&listing.release.version),
            codename: Some(&listing.release.codename),
            arch: Some(&listing.arch),
            serial: Some(&listing.serial),
            variant: None,
        };
        let name = self
            .catalog
            .file_name(spec, kind, &vars)?
            .ok_or_else(unknown)?;
        Ok(FileEntry {
            url: file_url(&join(&listing.dir_url, dir)?, &name)?,
            name,
            ftype: Some(kind.ftype.clone()),
            size: None,
            size_exact: false,
            sha256: None,
            sha512: None,
        })
    }

    fn stream_spec(&self, stream: Stream) -> Result<&'a StreamSpec, IndexError> {
        self.catalog
            .stream(stream.name())
            .ok_or_else(|| IndexError::StreamNotInCatalog {
                catalog: self.catalog.name.clone(),
                stream,
            })
    }

    async fn fetch(&self, url: &Url) -> Result<Bytes, IndexError> {
        debug!(url = %url, "fetching document");
        self.source
            .get_document(url)
            .await
            .map_err(|source| IndexError::Fetch {
                url: url.clone(),
                source: Box::new(source),
            })
    }

    /// The stream's simplestreams documents. `Ok(None)` when the stream has none and they were
    /// not `required`, or when the index is missing (404) and not required.
    async fn streams_docs(
        &self,
        stream: Stream,
        spec: &StreamSpec,
        required: bool,
    ) -> Result<Option<StreamsDocs>, IndexError> {
        let Some(streams_spec) = &spec.simplestreams else {
            return if required {
                Err(IndexError::NoSimplestreams {
                    catalog: self.catalog.name.clone(),
                    stream,
                })
            } else {
                Ok(None)
            };
        };
        let root = join(&self.mirror, &streams_spec.root)?;
        let index_url = join(&root, &streams_spec.index)?;
        let index = match self.source.get_document(&index_url).await {
            Ok(bytes) => bytes,
            Err(FetchError::Status { status: 404, .. }) if !required => {
                debug!(url = %index_url, "no simplestreams index; using the listings");
                return Ok(None);
            }
            Err(source) => {
                return Err(IndexError::Fetch {
                    url: index_url,
                    source: Box::new(source),
                })
            }
        };
        let parse_error = |url: &Url| {
            let url = url.clone();
            move |source| IndexError::Streams {
                url,
                source: Box::new(source),
            }
        };
        let entries = streams::parse_index(&index).map_err(parse_error(&index_url))?;
        let entry = streams::entry_for_datatype(&entries, &streams_spec.datatype)
            .map_err(parse_error(&index_url))?;
        let products_url =
            streams::resolve_path(&root, &entry.path).map_err(parse_error(&index_url))?;
        let products = streams::parse_products(&self.fetch(&products_url).await?)
            .map_err(parse_error(&products_url))?;
        Ok(Some(StreamsDocs {
            root,
            products_url,
            products,
        }))
    }

    /// The releases the listings show; a source that shows none at all is broken (an empty or
    /// maintenance page), which is its fault, not the user's.
    async fn html_releases(
        &self,
        stream: Stream,
        spec: &StreamSpec,
    ) -> Result<Vec<Release>, IndexError> {
        let url = join(&self.mirror, &spec.releases_dir)?;
        let entries = self.html_listing(&url).await?;
        let releases = if self.catalog.releases.is_empty() {
            described_releases(&entries)
        } else {
            self.declared_releases(stream, spec, &url, &entries).await?
        };
        if releases.is_empty() {
            return Err(IndexError::NoReleases { url });
        }
        Ok(releases)
    }

    /// The catalog's releases that the stream carries and whose folder exists, in the catalog's
    /// order (oldest first). `release_dir` is walked from the releases page one listed folder
    /// at a time (`bookworm/`, then `daily/` in `bookworm/`), so deeper listings are fetched
    /// only for releases the page has.
    async fn declared_releases(
        &self,
        stream: Stream,
        spec: &StreamSpec,
        releases_url: &Url,
        top: &[html::ListingEntry],
    ) -> Result<Vec<Release>, IndexError> {
        let mut releases = Vec::new();
        for declared in &self.catalog.releases {
            if !declared.in_stream(stream.name()) {
                continue;
            }
            let vars = Vars {
                version: Some(&declared.version),
                codename: Some(&declared.codename),
                ..Vars::default()
            };
            let dir = pattern::expand(&spec.release_dir, &vars)?;
            let below = dir.strip_prefix(&spec.releases_dir).unwrap_or(&dir);
            let folders: Vec<&str> = below.split('/').filter(|s| !s.is_empty()).collect();
            let mut url = releases_url.clone();
            let mut deeper: Option<Vec<html::ListingEntry>> = None;
            let mut present = true;
            for (depth, folder) in folders.iter().enumerate() {
                let entries = deeper.as_deref().unwrap_or(top);
                if !entries.iter().any(|e| e.is_dir && e.name == *folder) {
                    debug!(release = %declared.codename, url = %url, folder, "not on this mirror");
                    present = false;
                    break;
                }
                url = join(&url, &format!("{folder}/"))?;
                if depth + 1 < folders.len() {
                    deeper = Some(self.html_listing(&url).await?);
                }
            }
            if present {
                releases.push(release::from_declared(declared));
            }
        }
        Ok(releases)
    }

    async fn html_listing(&self, url: &Url) -> Result<Vec<html::ListingEntry>, IndexError> {
        html::parse_listing(&self.fetch(url).await?).map_err(|source| IndexError::Html {
            url: url.clone(),
            source,
        })
    }

    /// Resolves stream, arch and release, and decides the source.
    async fn resolve(&self, query: &Query) -> Result<Resolved<'a>, IndexError> {
        let spec = self.stream_spec(query.stream)?;
        let arch = self
            .catalog
            .arch(&query.arch)
            .ok_or_else(|| IndexError::UnknownArch {
                arch: query.arch.clone(),
                known: self
                    .catalog
                    .arches
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let unknown = |releases: &[Release]| IndexError::UnknownRelease {
            release: query.release.clone(),
            stream: query.stream,
            known: releases
                .iter()
                .map(|r| format!("{} ({})", r.codename, r.version))
                .collect::<Vec<_>>()
                .join(", "),
        };
        if query.source != Some(SourceKind::Html) {
            let required = query.source == Some(SourceKind::Streams);
            if let Some(docs) = self.streams_docs(query.stream, spec, required).await? {
                let releases = releases_of_products(&docs.products);
                if releases.is_empty() && required {
                    return Err(IndexError::NoReleases {
                        url: docs.products_url,
                    });
                }
                match release::resolve(&releases, &query.release) {
                    Some(found) => {
                        let (found, stream) = (found.clone(), query.stream);
                        let source = settle_product(docs, &found, arch, stream)?;
                        return Ok(Resolved {
                            spec,
                            arch,
                            release: found,
                            source,
                        });
                    }
                    None if required => return Err(unknown(&releases)),
                    None => {
                        debug!(release = %query.release, "not in simplestreams; using the listings")
                    }
                }
            }
        }
        let releases = self.html_releases(query.stream, spec).await?;
        let found = release::resolve(&releases, &query.release)
            .ok_or_else(|| unknown(&releases))?
            .clone();
        let vars = Vars {
            version: Some(&found.version),
            codename: Some(&found.codename),
            ..Vars::default()
        };
        let release_dir = join(&self.mirror, &pattern::expand(&spec.release_dir, &vars)?)?;
        Ok(Resolved {
            spec,
            arch,
            release: found,
            source: ResolvedSource::Html { release_dir },
        })
    }

    async fn serials_of(&self, resolved: &Resolved<'a>) -> Result<Vec<String>, IndexError> {
        let separator = self.catalog.serial_separator;
        let (mut serials, url) = match &resolved.source {
            ResolvedSource::Streams {
                products_url,
                product,
                ..
            } => (
                product
                    .versions
                    .keys()
                    .filter(|s| release::is_serial(s, separator))
                    .cloned()
                    .collect::<Vec<_>>(),
                products_url.clone(),
            ),
            ResolvedSource::Html { release_dir } => {
                let entries = self.html_listing(release_dir).await?;
                let (before, after) = serial_dir_parts(&resolved.spec.serial_dir);
                let serials = entries
                    .iter()
                    .filter(|e| e.is_dir)
                    .filter_map(|e| {
                        let folder = format!("{}/", e.name);
                        let serial = folder.strip_prefix(before)?.strip_suffix(after)?;
                        release::is_serial(serial, separator).then(|| serial.to_owned())
                    })
                    .collect();
                (serials, release_dir.clone())
            }
        };
        if serials.is_empty() {
            return Err(IndexError::NoSerials {
                url,
                release: resolved.release.codename.clone(),
            });
        }
        release::sort_serials_newest_first(&mut serials, separator);
        Ok(serials)
    }

    /// The files of a serial folder: names from the checksum file, sizes from the listing.
    async fn html_files(
        &self,
        resolved: &Resolved<'a>,
        release_dir: &Url,
        serial: &str,
    ) -> Result<(Url, Vec<FileEntry>), IndexError> {
        let serial_vars = Vars {
            serial: Some(serial),
            ..Vars::default()
        };
        let dir_url = join(
            release_dir,
            &pattern::expand(&resolved.spec.serial_dir, &serial_vars)?,
        )?;
        let sizes: HashMap<String, Option<u64>> = self
            .html_listing(&dir_url)
            .await?
            .into_iter()
            .filter(|e| !e.is_dir)
            .map(|e| (e.name, e.approx_size))
            .collect();
        let sums_url = file_url(&dir_url, &self.catalog.checksums.file)?;
        let sums = sums::parse(
            &self.fetch(&sums_url).await?,
            self.catalog.checksums.algorithm,
        )
        .map_err(|source| IndexError::Sums {
            url: sums_url.clone(),
            source: Box::new(source),
        })?;
        let release = &resolved.release;
        let vars = Vars {
            version: Some(&release.version),
            codename: Some(&release.codename),
            arch: Some(&resolved.arch.name),
            serial: Some(serial),
            variant: None,
        };
        let by_name: HashMap<&str, &sums::SumEntry> =
            sums.iter().map(|e| (e.name.as_str(), e)).collect();
        let algorithm = self.catalog.checksums.algorithm;
        let mut files: Vec<FileEntry> = Vec::new();
        // Each kind's name for this build, kept when the checksum file lists it; on a name two
        // kinds share, the first kind wins.
        for kind in self.catalog.kinds.iter().filter(|k| k.dir.is_none()) {
            let Some(name) = self.catalog.file_name(resolved.spec, kind, &vars)? else {
                continue;
            };
            let Some(entry) = by_name.get(name.as_str()) else {
                continue;
            };
            if files.iter().any(|f| f.name == name) {
                continue;
            }
            let digest = entry.file_digest(algorithm);
            files.push(FileEntry {
                url: file_url(&dir_url, &name)?,
                ftype: Some(kind.ftype.clone()),
                size: sizes.get(&name).copied().flatten(),
                size_exact: false,
                sha256: digest.and_then(|d| d.sha256()),
                sha512: digest.and_then(|d| d.sha512()),
                name,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((dir_url, files))
    }
}

/// A query with its release, arch and source settled.
struct Resolved<'a> {
    spec: &'a StreamSpec,
    arch: &'a Arch,
    release: Release,
    source: ResolvedSource,
}

enum ResolvedSource {
    Streams {
        root: Url,
        products_url: Url,
        product: Box<Product>,
    },
    Html {
        release_dir: Url,
    },
}

/// Keeps the product of a resolved release on the arch, or says which arches it is built for.
fn settle_product(
    docs: StreamsDocs,
    release: &Release,
    arch: &Arch,
    stream: Stream,
) -> Result<ResolvedSource, IndexError> {
    let built_for: Vec<String> = docs
        .products
        .products
        .iter()
        .filter(|p| p.release == release.codename)
        .map(|p| p.arch.clone())
        .collect();
    let product = docs
        .products
        .products
        .into_iter()
        .find(|p| p.release == release.codename && p.arch == arch.name)
        .ok_or_else(|| IndexError::ArchNotBuilt {
            release: release.codename.clone(),
            arch: arch.name.clone(),
            stream,
            known: built_for.join(", "),
        })?;
    Ok(ResolvedSource::Streams {
        root: docs.root,
        products_url: docs.products_url,
        product: Box::new(product),
    })
}

/// The files of a serial in simplestreams, and their folder.
fn streams_files(
    root: &Url,
    products_url: &Url,
    product: &Product,
    serial: &str,
) -> Result<(Url, Vec<FileEntry>), IndexError> {
    let bad_path = |source| IndexError::Streams {
        url: products_url.clone(),
        source: Box::new(source),
    };
    let items = product
        .versions
        .get(serial)
        .map(|v| &v.items)
        .into_iter()
        .flat_map(BTreeMap::values);
    let mut files = Vec::new();
    for item in items {
        files.push(FileEntry {
            name: item.file_name().to_owned(),
            ftype: Some(item.ftype.clone()),
            url: streams::resolve_path(root, &item.path).map_err(bad_path)?,
            size: item.size,
            size_exact: item.size.is_some(),
            sha256: item.sha256,
            sha512: None,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    // The folder of the disk image, else of any file: all items of a serial share one.
    let anchor = files
        .iter()
        .find(|f| f.ftype.as_deref() == Some("disk1.img"))
        .or_else(|| files.first());
    let dir_url = match anchor {
        Some(file) => join(&file.url, "./")?,
        None => products_url.clone(),
    };
    Ok((dir_url, files))
}

/// Releases from the descriptions of a listing's folders (Ubuntu's top page), oldest first.
fn described_releases(entries: &[html::ListingEntry]) -> Vec<Release> {
    let mut releases: Vec<Release> = Vec::new();
    for entry in entries.iter().filter(|e| e.is_dir) {
        let Some(description) = &entry.description else {
            continue;
        };
        if let Some(found) = release::release_from_description(&entry.name, description) {
            if !releases.iter().any(|r| r.codename == found.codename) {
                releases.push(found);
            }
        }
    }
    release::sort_releases(&mut releases);
    releases
}

/// One release per code name, from the products (the first product's facts), oldest first.
fn releases_of_products(products: &Products) -> Vec<Release> {
    let mut releases: Vec<Release> = Vec::new();
    for product in &products.products {
        if releases.iter().any(|r| r.codename == product.release) {
            continue;
        }
        releases.push(Release {
            codename: product.release.clone(),
            version: product.version.clone(),
            title: product
                .release_title
                .clone()
                .unwrap_or_else(|| product.version.clone()),
            codename_title: product.release_codename.clone(),
            supported: product.supported.unwrap_or(true),
            eol: product.support_eol.clone(),
            aliases: product.aliases.clone(),
        });
    }
    release::sort_releases(&mut releases);
    releases
}

/// The text before and after `{serial}` in a serial folder pattern (validated to hold it once).
fn serial_dir_parts(pattern: &str) -> (&str, &str) {
    pattern.split_once("{serial}").unwrap_or((pattern, ""))
}

fn quote_serials(serials: &[String]) -> String {
    let mut text = serials
        .iter()
        .take(SERIALS_QUOTED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if serials.len() > SERIALS_QUOTED {
        text.push_str(", …");
    }
    text
}

fn join(base: &Url, path: &str) -> Result<Url, IndexError> {
    base.join(path).map_err(|source| IndexError::Url {
        base: base.clone(),
        path: path.to_owned(),
        source,
    })
}

/// A file of a folder by name, encoded as one path segment (a name is never read as a scheme
/// or a sub-folder).
fn file_url(dir: &Url, name: &str) -> Result<Url, IndexError> {
    let mut url = dir.clone();
    url.path_segments_mut()
        .map_err(|()| IndexError::Url {
            base: dir.clone(),
            path: name.to_owned(),
            source: url::ParseError::RelativeUrlWithCannotBeABaseBase,
        })?
        .pop_if_empty()
        .push(name);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const MIRROR: &str = "https://mirror.test/";
    const TOP_2020: &str = include_str!("../../tests/data/ubuntu/listings/toplevel-2020.html");
    const NOBLE_20250430: &str =
        include_str!("../../tests/data/ubuntu/listings/noble-daily-20250430.html");
    const SUMS_2026: &str =
        include_str!("../../tests/data/ubuntu/sums/noble-current-20260926/SHA256SUMS");
    const EXCERPT: &str = include_str!("../../tests/data/ubuntu/streams/excerpt-noble-amd64.json");

    /// Shaped like the real `releases/streams/v1/index.json`.
    const RELEASED_INDEX: &str = r#"{"format": "index:1.0", "index": {
        "com.ubuntu.cloud:released:download": {"datatype": "image-downloads",
          "format": "products:1.0",
          "path": "streams/v1/com.ubuntu.cloud:released:download.json"}}}"#;

    /// Documents by URL; anything else is a 404.
    #[derive(Default)]
    struct FakeMirror(HashMap<String, Bytes>);

    impl FakeMirror {
        fn with(mut self, path: &str, body: impl Into<String>) -> FakeMirror {
            self.0
                .insert(format!("{MIRROR}{path}"), Bytes::from(body.into()));
            self
        }
    }

    impl DocumentSource for FakeMirror {
        async fn get_document(&self, url: &Url) -> Result<Bytes, FetchError> {
            self.0
                .get(url.as_str())
                .cloned()
                .ok_or_else(|| FetchError::Status {
                    url: url.clone(),
                    status: 404,
                })
        }
    }

    /// One FancyIndexing folder row, as Apache writes it.
    fn dir_row(name: &str, description: &str) -> String {
        format!(
            "<img src=\"/icons/folder.gif\" alt=\"[DIR]\" width=\"22\" height=\"22\"> \
             <a href=\"{name}\">{name}</a>        2024-08-21 12:00    -   {description}\n"
        )
    }

    fn file_row(name: &str, size: &str) -> String {
        format!(
            "<img src=\"/icons/unknown.gif\" alt=\"[   ]\" width=\"22\" height=\"22\"> \
             <a href=\"{name}\">{name}</a>        2024-08-21 12:00  {size}\n"
        )
    }

    fn page(rows: &[String]) -> String {
        format!(
            "<html><body><pre><img src=\"/icons/blank.gif\" alt=\"Icon \"> \
             <a href=\"?C=N;O=D\">Name</a><hr><img src=\"/icons/back.gif\" alt=\"[PARENTDIR]\"> \
             <a href=\"/\">Parent Directory</a>   -\n{}<hr></pre></body></html>",
            rows.concat()
        )
    }

    /// The daily stream over HTML: the real 2020 top page plus a noble row, the real noble
    /// serial folder, and the real 2026 checksum file (same file names).
    fn daily_html_mirror() -> FakeMirror {
        let noble = dir_row(
            "noble/",
            "Ubuntu Server 24.04 LTS (Noble Numbat) daily builds",
        );
        let top = TOP_2020.replacen("<hr></pre>", &format!("{noble}<hr></pre>"), 1);
        let release_dir = page(&[
            dir_row("20250425/", ""),
            dir_row("20250430/", ""),
            dir_row("current/", ""),
        ]);
        FakeMirror::default()
            .with("", top)
            .with("noble/", release_dir)
            .with("noble/20250430/", NOBLE_20250430)
            .with("noble/20250430/SHA256SUMS", SUMS_2026)
    }

    fn released_streams_mirror() -> FakeMirror {
        FakeMirror::default()
            .with("releases/streams/v1/index.json", RELEASED_INDEX)
            .with(
                "releases/streams/v1/com.ubuntu.cloud:released:download.json",
                EXCERPT,
            )
    }

    fn query(release: &str, arch: &str, stream: Stream, source: Option<SourceKind>) -> Query {
        Query {
            release: release.into(),
            arch: arch.into(),
            stream,
            source,
        }
    }

    fn catalog() -> Catalog {
        Catalog::builtin("ubuntu").unwrap()
    }

    fn mirror() -> Url {
        Url::parse(MIRROR).unwrap()
    }

    #[tokio::test]
    async fn daily_html_listing_names_files_from_the_checksum_file() {
        let (fake, catalog) = (daily_html_mirror(), catalog());
        let discovery = Discovery::new(&fake, &catalog, mirror());
        // No simplestreams on this mirror: the default source falls back to the listings.
        let q = query("24.04", "x86_64", Stream::Daily, None);
        assert_eq!(
            discovery.serials(&q).await.unwrap(),
            ["20250430", "20250425"]
        );
        let listing = discovery.listing(&q, None).await.unwrap();
        assert_eq!(listing.source, SourceKind::Html);
        assert_eq!(listing.serial, "20250430");
        assert_eq!(listing.arch, "amd64");
        assert_eq!(listing.release.codename, "noble");
        assert_eq!(
            listing.dir_url.as_str(),
            "https://mirror.test/noble/20250430/"
        );
        assert_eq!(
            listing.sums_url.as_str(),
            "https://mirror.test/noble/20250430/SHA256SUMS"
        );
        assert_eq!(
            listing.signature_url.as_ref().map(Url::as_str),
            Some("https://mirror.test/noble/20250430/SHA256SUMS.gpg")
        );
        let names: Vec<&str> = listing.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "noble-server-cloudimg-amd64-azure.vhd.manifest",
                "noble-server-cloudimg-amd64-azure.vhd.tar.gz",
                "noble-server-cloudimg-amd64-lxd.tar.xz",
                "noble-server-cloudimg-amd64-root.manifest",
                "noble-server-cloudimg-amd64-root.tar.xz",
                "noble-server-cloudimg-amd64.img",
                "noble-server-cloudimg-amd64.manifest",
                "noble-server-cloudimg-amd64.ova",
                "noble-server-cloudimg-amd64.squashfs",
                "noble-server-cloudimg-amd64.squashfs.manifest",
                "noble-server-cloudimg-amd64.tar.gz",
                "noble-server-cloudimg-amd64.vmdk",
            ]
        );
        let disk = listing.file("disk1.img").unwrap();
        assert_eq!(disk.name, "noble-server-cloudimg-amd64.img");
        assert_eq!(disk.size, Some(584 << 20));
        assert!(!disk.size_exact);
        assert_eq!(
            disk.sha256.unwrap().to_hex(),
            "6a81c37564db9b1ee84e141922625e1d7c5b389b99bb3c572e0243607d5bb4d2"
        );
        let missing = listing.file("disk-kvm.img").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Usage);
        let kernel = discovery.unlisted_file(&listing, "vmlinuz").unwrap();
        assert_eq!(
            kernel.url.as_str(),
            "https://mirror.test/noble/20250430/unpacked/noble-server-cloudimg-amd64-vmlinuz-generic"
        );
        assert_eq!(kernel.sha256, None);
        // A kind of the folder itself is not "unlisted".
        let error = discovery.unlisted_file(&listing, "disk1.img").unwrap_err();
        assert!(error.to_string().contains("vmlinuz, initrd"), "{error}");
    }

    #[tokio::test]
    async fn daily_html_releases_come_from_descriptions() {
        let (fake, catalog) = (daily_html_mirror(), catalog());
        let discovery = Discovery::new(&fake, &catalog, mirror());
        let releases = discovery.releases(Stream::Daily, None).await.unwrap();
        let names: Vec<&str> = releases.iter().map(|r| r.codename.as_str()).collect();
        assert_eq!(
            names,
            ["precise", "trusty", "xenial", "bionic", "eoan", "focal", "groovy", "noble"]
        );
        assert!(!releases[0].supported);
    }

    #[tokio::test]
    async fn unknown_html_serial_is_a_usage_error_quoting_known_ones() {
        let (fake, catalog) = (daily_html_mirror(), catalog());
        let discovery = Discovery::new(&fake, &catalog, mirror());
        let q = query("noble", "amd64", Stream::Daily, Some(SourceKind::Html));
        let error = discovery.listing(&q, Some("current")).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Usage);
        assert!(error.to_string().contains("20250430, 20250425"), "{error}");
    }

    #[tokio::test]
    async fn released_streams_listing_has_exact_sizes_and_digests() {
        let (fake, catalog) = (released_streams_mirror(), catalog());
        let discovery = Discovery::new(&fake, &catalog, Url::parse("https://mirror.test").unwrap());
        let q = query("Noble", "amd64", Stream::Released, None);
        assert_eq!(
            discovery.serials(&q).await.unwrap(),
            ["20240821", "20240809"]
        );
        let listing = discovery.listing(&q, Some("20240809")).await.unwrap();
        assert_eq!(listing.source, SourceKind::Streams);
        assert_eq!(listing.release.title, "24.04 LTS");
        assert_eq!(listing.release.eol.as_deref(), Some("2029-05-31"));
        assert_eq!(
            listing.dir_url.as_str(),
            "https://mirror.test/releases/server/releases/noble/release-20240809/"
        );
        let disk = listing.file("disk1.img").unwrap();
        assert_eq!(
            disk.url.as_str(),
            "https://mirror.test/releases/server/releases/noble/release-20240809/ubuntu-24.04-server-cloudimg-amd64.img"
        );
        assert_eq!(disk.size, Some(585_826_304));
        assert!(disk.size_exact);
        assert_eq!(
            disk.sha256.unwrap().to_hex(),
            "dd8b691b3f0d1e61f01ae0d857dcb3088d1d8bf4148439bd07abc081e4fc31f8"
        );
        assert_eq!(
            listing.sums_url.as_str(),
            "https://mirror.test/releases/server/releases/noble/release-20240809/SHA256SUMS"
        );
    }

    #[tokio::test]
    async fn released_aliases_resolve_through_streams() {
        let (fake, catalog) = (released_streams_mirror(), catalog());
        let discovery = Discovery::new(&fake, &catalog, mirror());
        let listing = discovery
            .listing(&query("lts", "amd64", Stream::Released, None), None)
            .await
            .unwrap();
        assert_eq!(listing.release.codename, "noble");
        assert_eq!(listing.serial, "20240821");
    }

    #[tokio::test]
    async fn unknown_release_lists_known_ones() {
        let (fake, catalog) = (released_streams_mirror(), catalog());
        let discovery = Discovery::new(&fake, &catalog, mirror());
        let q = query(
            "plucky",
            "amd64",
            Stream::Released,
            Some(SourceKind::Streams),
        );
        let error = discovery.serials(&q).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Usage);
        assert!(error.to_string().contains("noble (24.04)"), "{error}");
    }

    #[tokio::test]
    async fn arch_without_product_is_a_usage_error() {
        let (fake, catalog) = (released_streams_mirror(), catalog());
        let discovery = Discovery::new(&fake, &catalog, mirror());
        let error = discovery
            .serials(&query("noble", "s390x", Stream::Released, None))
            .await
            .unwrap_err();
        assert!(matches!(error, IndexError::ArchNotBuilt { .. }), "{error}");
        assert_eq!(error.kind(), ErrorKind::Usage);
        let error = discovery
            .serials(&query("noble", "sparc", Stream::Released, None))
            .await
            .unwrap_err();
        assert!(matches!(error, IndexError::UnknownArch { .. }), "{error}");
    }

    #[tokio::test]
    async fn missing_documents_are_network_errors() {
        let (fake, catalog) = (FakeMirror::default(), catalog());
        let discovery = Discovery::new(&fake, &catalog, mirror());
        // Required simplestreams: the 404 is not hidden by a fallback.
        let q = query(
            "noble",
            "amd64",
            Stream::Released,
            Some(SourceKind::Streams),
        );
        let error = discovery.serials(&q).await.unwrap_err();
        assert!(matches!(error, IndexError::Fetch { .. }), "{error}");
        assert_eq!(error.kind(), ErrorKind::Network);
    }

    #[tokio::test]
    async fn malformed_products_file_is_other() {
        let fake = FakeMirror::default()
            .with("releases/streams/v1/index.json", RELEASED_INDEX)
            .with(
                "releases/streams/v1/com.ubuntu.cloud:released:download.json",
                "{\"format\": ",
            );
        let catalog = catalog();
        let discovery = Discovery::new(&fake, &catalog, mirror());
        let error = discovery
            .releases(Stream::Released, None)
            .await
            .unwrap_err();
        assert!(matches!(error, IndexError::Streams { .. }), "{error}");
        assert_eq!(error.kind(), ErrorKind::Other);
    }

    /// An HTML view of the streams excerpt: `releases/` page, the release folder with both
    /// serials and the `release/` alias, each serial folder and its SHA256SUMS.
    fn released_html_mirror(products: &Products) -> FakeMirror {
        let mut fake = released_streams_mirror().with(
            "releases/",
            page(&[
                dir_row(
                    "24.04/",
                    "Ubuntu Server 24.04 LTS (Noble Numbat) released builds",
                ),
                dir_row(
                    "noble/",
                    "Ubuntu Server 24.04 LTS (Noble Numbat) released builds",
                ),
                dir_row("streams/", ""),
            ]),
        );
        let product = products.find("noble", "amd64").unwrap();
        let mut release_rows = vec![dir_row("release/", "")];
        for (serial, version) in &product.versions {
            release_rows.push(dir_row(&format!("release-{serial}/"), ""));
            let mut rows = vec![file_row("SHA256SUMS", "1.2K")];
            let mut sums = String::new();
            for item in version.items.values() {
                rows.push(file_row(item.file_name(), "1.0M"));
                let digest = item.sha256.unwrap();
                sums.push_str(&format!("{digest} *{}\n", item.file_name()));
            }
            fake = fake
                .with(&format!("releases/24.04/release-{serial}/"), page(&rows))
                .with(&format!("releases/24.04/release-{serial}/SHA256SUMS"), sums);
        }
        fake.with("releases/24.04/", page(&release_rows))
    }

    #[tokio::test]
    async fn html_and_streams_agree_on_serials_and_files() {
        let products = streams::parse_products(EXCERPT.as_bytes()).unwrap();
        let (fake, catalog) = (released_html_mirror(&products), catalog());
        let discovery = Discovery::new(&fake, &catalog, mirror());
        let by = |source| query("24.04", "amd64", Stream::Released, Some(source));
        let html_serials = discovery.serials(&by(SourceKind::Html)).await.unwrap();
        let streams_serials = discovery.serials(&by(SourceKind::Streams)).await.unwrap();
        assert_eq!(html_serials, streams_serials);
        for serial in &html_serials {
            let html = discovery
                .listing(&by(SourceKind::Html), Some(serial))
                .await
                .unwrap();
            let streams = discovery
                .listing(&by(SourceKind::Streams), Some(serial))
                .await
                .unwrap();
            let facts = |listing: &Listing| {
                listing
                    .files
                    .iter()
                    .map(|f| (f.name.clone(), f.ftype.clone(), f.sha256))
                    .collect::<Vec<_>>()
            };
            assert_eq!(facts(&html), facts(&streams));
            assert_eq!(html.release.codename, streams.release.codename);
            assert_eq!(html.release.version, streams.release.version);
            assert_eq!(
                html.dir_url.as_str(),
                format!("https://mirror.test/releases/24.04/release-{serial}/")
            );
        }
    }

    #[test]
    fn stream_and_source_names_parse_and_match_the_catalog() {
        for stream in Stream::ALL {
            assert_eq!(stream.name().parse::<Stream>().unwrap(), stream);
            assert!(STREAM_NAMES.contains(&stream.name()));
        }
        assert_eq!(
            "Minimal-Daily".parse::<Stream>().unwrap(),
            Stream::MinimalDaily
        );
        let error = "weekly".parse::<Stream>().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Usage);
        assert_eq!("HTML".parse::<SourceKind>().unwrap(), SourceKind::Html);
        assert!("ftp".parse::<SourceKind>().is_err());
    }

    /// One table-form row (Debian's Apache 2.4 `HTMLTable`): icon and name both link.
    fn table_row(href: &str, size: &str) -> String {
        format!(
            "<tr class=\"odd\"><td class=\"indexcolicon\"><a href=\"{href}\"><img src=\"/icons2/folder.png\" alt=\"[DIR]\"></a></td>\
             <td class=\"indexcolname\"><a href=\"{href}\">{href}</a></td>\
             <td class=\"indexcollastmod\">2024-07-17 18:11  </td><td class=\"indexcolsize\">{size}</td></tr>\n"
        )
    }

    fn table(rows: &[String]) -> String {
        format!(
            "<table id=\"indexlist\">\n<tr class=\"even\"><td class=\"indexcolicon\"><a href=\"/images/\"><img src=\"/icons2/go-previous.png\" alt=\"[PARENTDIR]\"></a></td>\
             <td class=\"indexcolname\"><a href=\"/images/\">Parent Directory</a></td><td class=\"indexcollastmod\">&nbsp;</td><td class=\"indexcolsize\">  - </td></tr>\n{}</table>",
            rows.concat()
        )
    }

    /// bookworm with two dated builds (one day, counters 999 and 1000) and `latest/`; trixie
    /// listed but without a `daily/` folder.
    fn debian_mirror() -> FakeMirror {
        let serial = "20240717-1000";
        let names = [
            format!("debian-12-genericcloud-amd64-{serial}.qcow2"),
            format!("debian-12-genericcloud-amd64-{serial}.tar.xz"),
            format!("debian-12-nocloud-amd64-{serial}.raw"),
            format!("debian-12-genericcloud-arm64-{serial}.qcow2"),
            // Another release's file in the same folder is nobody's kind here.
            format!("debian-13-genericcloud-amd64-{serial}.qcow2"),
        ];
        let sums: String = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{}  {name}\n", format!("{i:02x}").repeat(64)))
            .collect();
        let mut rows: Vec<String> = names.iter().map(|n| table_row(n, "339M")).collect();
        rows.push(table_row("SHA512SUMS", "1.2K"));
        FakeMirror::default()
            .with(
                "",
                table(&[
                    table_row("bookworm/", "  - "),
                    table_row("sid/", "  - "),
                    table_row("trixie/", "  - "),
                ]),
            )
            .with(
                "bookworm/",
                table(&[
                    table_row("20240717-1000/", "  - "),
                    table_row("20240717-999/", "  - "),
                    table_row("daily/", "  - "),
                    table_row("latest/", "  - "),
                ]),
            )
            .with("sid/", table(&[table_row("daily/", "  - ")]))
            .with("trixie/", table(&[table_row("20250811-2185/", "  - ")]))
            .with(&format!("bookworm/{serial}/"), table(&rows))
            .with(&format!("bookworm/{serial}/SHA512SUMS"), sums)
    }

    #[tokio::test]
    async fn debian_table_listings_give_declared_releases_and_dated_builds() {
        let fake = debian_mirror();
        let catalog = Catalog::builtin("debian").unwrap();
        let discovery = Discovery::new(&fake, &catalog, mirror());
        let codenames =
            |releases: Vec<Release>| releases.into_iter().map(|r| r.codename).collect::<Vec<_>>();
        let released = discovery.releases(Stream::Released, None).await.unwrap();
        assert_eq!(codenames(released), ["bookworm", "trixie"]);
        // trixie/ has no daily/ folder; sid/ has only that.
        let daily = discovery.releases(Stream::Daily, None).await.unwrap();
        assert_eq!(codenames(daily), ["bookworm", "sid"]);

        let q = query("12", "x86_64", Stream::Released, None);
        assert_eq!(
            discovery.serials(&q).await.unwrap(),
            ["20240717-1000", "20240717-999"]
        );
        let listing = discovery.listing(&q, None).await.unwrap();
        assert_eq!(listing.source, SourceKind::Html);
        assert_eq!(listing.signature_url, None);
        assert_eq!(
            listing.sums_url.as_str(),
            "https://mirror.test/bookworm/20240717-1000/SHA512SUMS"
        );
        let kinds: Vec<(&str, &str)> = listing
            .files
            .iter()
            .map(|f| (f.ftype.as_deref().unwrap(), f.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    "genericcloud.qcow2",
                    "debian-12-genericcloud-amd64-20240717-1000.qcow2"
                ),
                (
                    "genericcloud.tar.xz",
                    "debian-12-genericcloud-amd64-20240717-1000.tar.xz"
                ),
                ("nocloud.raw", "debian-12-nocloud-amd64-20240717-1000.raw"),
            ]
        );
        let qcow2 = listing.file("genericcloud.qcow2").unwrap();
        assert_eq!(qcow2.sha256, None);
        assert_eq!(qcow2.sha512.unwrap().to_hex(), "00".repeat(64));
        assert_eq!(qcow2.size, Some(339 << 20));
        let raw = listing.file("nocloud.raw").unwrap();
        assert_eq!(raw.sha512.unwrap().to_hex(), "02".repeat(64));
        // `latest/` is an alias, not a serial.
        let error = discovery.listing(&q, Some("latest")).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Usage);
        // sid is declared for the daily stream only.
        let error = discovery
            .serials(&query("sid", "amd64", Stream::Released, None))
            .await
            .unwrap_err();
        assert!(
            matches!(error, IndexError::UnknownRelease { .. }),
            "{error}"
        );
    }

    #[test]
    fn file_urls_keep_names_in_one_segment() {
        let dir = Url::parse("https://mirror.test/releases/24.04/release-1/").unwrap();
        assert_eq!(
            file_url(&dir, "a:b.json").unwrap().as_str(),
            "https://mirror.test/releases/24.04/release-1/a:b.json"
        );
        assert_eq!(
            file_url(&dir, "x/../y").unwrap().as_str(),
            "https://mirror.test/releases/24.04/release-1/x%2F..%2Fy"
        );
    }
}
