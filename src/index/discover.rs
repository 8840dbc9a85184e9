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
use crate::verify::digest::Sha256Digest;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// The files of one build of one release on one arch.
#[derive(Clone, Debug, PartialEq, Eq)]
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
            let docs = self.streams_docs(stream, spec, source.is_some()).await?;
            if let Some(docs) = docs {
                return Ok(releases_of_products(&docs.products));
            }
        }
        self.html_releases(spec).await
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
                let (dir_url, files) = self.html_files(&resolved, release_dir, &serial).await?;
                (dir_url, files, SourceKind::Html)
            }
        };
        if files.is_empty() {
            return Err(IndexError::NoFiles {
                url: dir_url,
                release: resolved.release.codename.clone(),
                arch: resolved.arch.name.clone(),
                serial,
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
                source,
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
                    source,
                })
            }
        };
        let parse_error = |url: &Url| {
            let url = url.clone();
            move |source| IndexError::Streams { url, source }
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

    async fn html_releases(&self, spec: &StreamSpec) -> Result<Vec<Release>, IndexError> {
        let url = join(&self.mirror, &spec.releases_dir)?;
        let entries = self.html_listing(&url).await?;
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
                match release::resolve(&releases, &query.release) {
                    Some(found) => {
                        let built_for: Vec<String> = docs
                            .products
                            .products
                            .iter()
                            .filter(|p| p.release == found.codename)
                            .map(|p| p.arch.clone())
                            .collect();
                        let StreamsDocs {
                            root,
                            products_url,
                            products,
                        } = docs;
                        let product = products
                            .products
                            .into_iter()
                            .find(|p| p.release == found.codename && p.arch == arch.name)
                            .ok_or_else(|| IndexError::ArchNotBuilt {
                                release: found.codename.clone(),
                                arch: arch.name.clone(),
                                stream: query.stream,
                                known: built_for.join(", "),
                            })?;
                        return Ok(Resolved {
                            spec,
                            arch,
                            release: found.clone(),
                            source: ResolvedSource::Streams {
                                root,
                                products_url,
                                product,
                            },
                        });
                    }
                    None if required => return Err(unknown(&releases)),
                    None => {
                        debug!(release = %query.release, "not in simplestreams; using the listings")
                    }
                }
            }
        }
        let releases = self.html_releases(spec).await?;
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
            source,
        })?;
        let release = &resolved.release;
        let prefix = pattern::expand(
            &resolved.spec.file_prefix,
            &Vars {
                version: Some(&release.version),
                codename: Some(&release.codename),
                arch: Some(&resolved.arch.name),
                serial: None,
            },
        )?;
        let mut files = Vec::new();
        for entry in sums {
            let Some(remainder) = entry.name.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let Some(kind) = self
                .catalog
                .kind_for_remainder(remainder, Some(&release.version))
            else {
                continue;
            };
            files.push(FileEntry {
                url: file_url(&dir_url, &entry.name)?,
                ftype: Some(kind.ftype.clone()),
                size: sizes.get(&entry.name).copied().flatten(),
                size_exact: false,
                sha256: entry.sha256(),
                name: entry.name,
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
        product: Product,
    },
    Html {
        release_dir: Url,
    },
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
        source,
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
