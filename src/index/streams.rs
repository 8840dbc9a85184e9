//! Simplestreams (`streams/v1/`): the index and a products file.
//!
//! `index.json` maps content ids to products files by datatype (`image-downloads`); the
//! products file holds, per product (`com.ubuntu.cloud:server:24.04:amd64`), its release facts
//! and `versions` → serial → `items` → ftype → {path, sha256, size}. Item paths are relative to
//! the stream root (the folder holding `streams/`), e.g. `server/releases/noble/release-20240821/…`
//! under `releases/`.

use std::collections::BTreeMap;

use serde::Deserialize;
use url::Url;

use crate::verify::digest::Sha256Digest;

/// Upper bound for a simplestreams document (the released products file is about 0.5 MiB): the
/// network's document limit, so a document fetched whole is never refused here.
pub const MAX_STREAMS_BYTES: usize = crate::fetch::DOCUMENT_LIMIT as usize;

/// The only index format understood.
const INDEX_FORMAT: &str = "index:1.0";
/// The only products format understood.
const PRODUCTS_FORMAT: &str = "products:1.0";

#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("document is {size} bytes, more than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("not a simplestreams document")]
    Json(#[source] serde_json::Error),
    #[error("format {found:?}, expected {expected:?}")]
    Format {
        found: String,
        expected: &'static str,
    },
    #[error("no index entry has datatype {datatype:?}")]
    NoDatatype { datatype: String },
    #[error("product {product}, serial {serial}, item {item}: {reason}")]
    BadItem {
        product: String,
        serial: String,
        item: String,
        reason: String,
    },
    #[error("path {path:?} does not stay under {root}")]
    PathEscapes { path: String, root: Url },
}

#[derive(Deserialize)]
struct RawIndex {
    format: String,
    index: BTreeMap<String, RawIndexEntry>,
}

#[derive(Deserialize)]
struct RawIndexEntry {
    datatype: String,
    path: String,
    format: Option<String>,
}

/// One entry of `index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub content_id: String,
    pub datatype: String,
    /// The products file, relative to the stream root.
    pub path: String,
}

/// Parses `index.json`.
pub fn parse_index(bytes: &[u8]) -> Result<Vec<IndexEntry>, StreamsError> {
    check_size(bytes)?;
    let raw: RawIndex = serde_json::from_slice(bytes).map_err(StreamsError::Json)?;
    if raw.format != INDEX_FORMAT {
        return Err(StreamsError::Format {
            found: raw.format,
            expected: INDEX_FORMAT,
        });
    }
    Ok(raw
        .index
        .into_iter()
        .filter(|(_, entry)| entry.format.as_deref().is_none_or(|f| f == PRODUCTS_FORMAT))
        .map(|(content_id, entry)| IndexEntry {
            content_id,
            datatype: entry.datatype,
            path: entry.path,
        })
        .collect())
}

/// The products file of a datatype (the first content id in order when several share it).
pub fn entry_for_datatype<'e>(
    entries: &'e [IndexEntry],
    datatype: &str,
) -> Result<&'e IndexEntry, StreamsError> {
    entries
        .iter()
        .find(|entry| entry.datatype == datatype)
        .ok_or_else(|| StreamsError::NoDatatype {
            datatype: datatype.to_owned(),
        })
}

#[derive(Deserialize)]
struct RawProducts {
    content_id: String,
    datatype: String,
    format: String,
    products: BTreeMap<String, RawProduct>,
}

#[derive(Deserialize)]
struct RawProduct {
    release: String,
    version: String,
    arch: String,
    release_title: Option<String>,
    release_codename: Option<String>,
    supported: Option<bool>,
    support_eol: Option<String>,
    aliases: Option<String>,
    #[serde(default)]
    versions: BTreeMap<String, RawVersion>,
}

#[derive(Deserialize)]
struct RawVersion {
    label: Option<String>,
    pubname: Option<String>,
    #[serde(default)]
    items: BTreeMap<String, RawItem>,
}

#[derive(Deserialize)]
struct RawItem {
    ftype: Option<String>,
    path: String,
    sha256: Option<String>,
    md5: Option<String>,
    size: Option<u64>,
}

/// A products file.
#[derive(Clone, Debug)]
pub struct Products {
    pub content_id: String,
    pub datatype: String,
    /// By product id, in id order.
    pub products: Vec<Product>,
}

/// One product: a release on one arch.
#[derive(Clone, Debug)]
pub struct Product {
    /// `com.ubuntu.cloud:server:24.04:amd64`.
    pub id: String,
    /// Code name: `noble`.
    pub release: String,
    /// `24.04`.
    pub version: String,
    pub arch: String,
    /// `24.04 LTS`.
    pub release_title: Option<String>,
    /// `Noble Numbat`.
    pub release_codename: Option<String>,
    pub supported: Option<bool>,
    pub support_eol: Option<String>,
    /// `24.04,n,noble,lts,default`, split.
    pub aliases: Vec<String>,
    /// By serial.
    pub versions: BTreeMap<String, ProductVersion>,
}

/// One serial of a product.
#[derive(Clone, Debug)]
pub struct ProductVersion {
    pub label: Option<String>,
    pub pubname: Option<String>,
    /// By item name (usually the ftype).
    pub items: BTreeMap<String, Item>,
}

/// One file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub ftype: String,
    /// Relative to the stream root; checked to be a plain relative path.
    pub path: String,
    pub sha256: Option<Sha256Digest>,
    pub md5: Option<String>,
    pub size: Option<u64>,
}

impl Item {
    /// The file name: the last path segment.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Parses a products file.
pub fn parse_products(bytes: &[u8]) -> Result<Products, StreamsError> {
    check_size(bytes)?;
    let raw: RawProducts = serde_json::from_slice(bytes).map_err(StreamsError::Json)?;
    if raw.format != PRODUCTS_FORMAT {
        return Err(StreamsError::Format {
            found: raw.format,
            expected: PRODUCTS_FORMAT,
        });
    }
    let mut products = Vec::with_capacity(raw.products.len());
    for (id, product) in raw.products {
        let mut versions = BTreeMap::new();
        for (serial, version) in product.versions {
            let mut items = BTreeMap::new();
            for (name, item) in version.items {
                let bad = |reason: String| StreamsError::BadItem {
                    product: id.clone(),
                    serial: serial.clone(),
                    item: name.clone(),
                    reason,
                };
                check_relative_path(&item.path).map_err(|r| bad(r.to_owned()))?;
                let sha256 = item
                    .sha256
                    .as_deref()
                    .map(str::parse::<Sha256Digest>)
                    .transpose()
                    .map_err(|e| bad(e.to_string()))?;
                let ftype = item.ftype.unwrap_or_else(|| name.clone());
                let parsed = Item {
                    ftype,
                    path: item.path,
                    sha256,
                    md5: item.md5,
                    size: item.size,
                };
                items.insert(name, parsed);
            }
            versions.insert(
                serial,
                ProductVersion {
                    label: version.label,
                    pubname: version.pubname,
                    items,
                },
            );
        }
        products.push(Product {
            id,
            release: product.release,
            version: product.version,
            arch: product.arch,
            release_title: product.release_title,
            release_codename: product.release_codename,
            supported: product.supported,
            support_eol: product.support_eol,
            aliases: product
                .aliases
                .unwrap_or_default()
                .split(',')
                .map(|a| a.trim().to_ascii_lowercase())
                .filter(|a| !a.is_empty())
                .collect(),
            versions,
        });
    }
    Ok(Products {
        content_id: raw.content_id,
        datatype: raw.datatype,
        products,
    })
}

impl Products {
    /// The product of a release (by code name) on an arch.
    pub fn find(&self, codename: &str, arch: &str) -> Option<&Product> {
        self.products
            .iter()
            .find(|p| p.release == codename && p.arch == arch)
    }
}

/// A relative path with no empty, `.` or `..` segment, no scheme, no query. Colons are fine
/// after the first segment (`streams/v1/com.ubuntu.cloud:released:download.json`).
fn check_relative_path(path: &str) -> Result<(), &'static str> {
    let first = path.split('/').next().unwrap_or(path);
    if path.is_empty()
        || path.starts_with('/')
        || path.contains(['\\', '?', '#'])
        || first.contains(':')
    {
        return Err("path must be relative, without scheme, query or backslash");
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("path has an empty, '.' or '..' segment");
    }
    Ok(())
}

/// Resolves a path of the stream against the stream root URL (which ends with `/`); the result
/// must stay under the root.
pub fn resolve_path(root: &Url, path: &str) -> Result<Url, StreamsError> {
    let escapes = || StreamsError::PathEscapes {
        path: path.to_owned(),
        root: root.clone(),
    };
    check_relative_path(path).map_err(|_| escapes())?;
    let url = root.join(path).map_err(|_| escapes())?;
    if url.as_str().starts_with(root.as_str()) {
        Ok(url)
    } else {
        Err(escapes())
    }
}

fn check_size(bytes: &[u8]) -> Result<(), StreamsError> {
    if bytes.len() > MAX_STREAMS_BYTES {
        return Err(StreamsError::TooLarge {
            size: bytes.len(),
            limit: MAX_STREAMS_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASED: &[u8] = include_bytes!(
        "../../tests/data/ubuntu/streams/com.ubuntu.cloud-released-download-2024-08-22.json"
    );
    const EXCERPT: &[u8] =
        include_bytes!("../../tests/data/ubuntu/streams/excerpt-noble-amd64.json");

    /// Shaped like the real `releases/streams/v1/index.json` (two content ids).
    const INDEX: &str = r#"{
      "format": "index:1.0",
      "updated": "Thu, 22 Aug 2024 03:28:23 +0000",
      "index": {
        "com.ubuntu.cloud:released:aws": {
          "datatype": "image-ids", "format": "products:1.0",
          "path": "streams/v1/com.ubuntu.cloud:released:aws.json", "products": []
        },
        "com.ubuntu.cloud:released:download": {
          "datatype": "image-downloads", "format": "products:1.0",
          "path": "streams/v1/com.ubuntu.cloud:released:download.json",
          "products": ["com.ubuntu.cloud:server:24.04:amd64"]
        }
      }
    }"#;

    #[test]
    fn index_points_at_the_downloads_file() {
        let entries = parse_index(INDEX.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        let entry = entry_for_datatype(&entries, "image-downloads").unwrap();
        assert_eq!(entry.content_id, "com.ubuntu.cloud:released:download");
        assert_eq!(
            entry.path,
            "streams/v1/com.ubuntu.cloud:released:download.json"
        );
        assert!(matches!(
            entry_for_datatype(&entries, "image-things"),
            Err(StreamsError::NoDatatype { .. })
        ));
    }

    #[test]
    fn index_of_another_format_is_rejected() {
        let text = INDEX.replace("index:1.0", "index:2.0");
        assert!(matches!(
            parse_index(text.as_bytes()),
            Err(StreamsError::Format { .. })
        ));
    }

    #[test]
    fn real_released_file_has_16_products() {
        let products = parse_products(RELEASED).unwrap();
        assert_eq!(products.content_id, "com.ubuntu.cloud:released:download");
        assert_eq!(products.datatype, "image-downloads");
        assert_eq!(products.products.len(), 16);
        let noble = products.find("noble", "amd64").unwrap();
        assert_eq!(noble.id, "com.ubuntu.cloud:server:24.04:amd64");
        assert_eq!(noble.version, "24.04");
        assert_eq!(noble.release_title.as_deref(), Some("24.04 LTS"));
        assert_eq!(noble.release_codename.as_deref(), Some("Noble Numbat"));
        assert_eq!(noble.supported, Some(true));
        assert_eq!(noble.support_eol.as_deref(), Some("2029-05-31"));
        assert_eq!(noble.aliases, ["24.04", "n", "noble", "lts", "default"]);
        assert_eq!(noble.versions.len(), 13);
        let focal = products.find("focal", "armhf").unwrap();
        assert_eq!(focal.versions.len(), 147);
        let lucid = products.find("lucid", "amd64").unwrap();
        assert_eq!(lucid.supported, Some(false));
        let disk = &lucid.versions["20150427"].items["disk1.img"];
        assert_eq!(
            disk.file_name(),
            "ubuntu-10.04-server-cloudimg-amd64-disk1.img"
        );
    }

    #[test]
    fn excerpt_items_carry_path_digest_and_size() {
        let products = parse_products(EXCERPT).unwrap();
        let noble = products.find("noble", "amd64").unwrap();
        assert_eq!(
            noble.versions.keys().collect::<Vec<_>>(),
            ["20240809", "20240821"]
        );
        let version = &noble.versions["20240809"];
        assert_eq!(version.label.as_deref(), Some("release"));
        let disk = &version.items["disk1.img"];
        assert_eq!(disk.ftype, "disk1.img");
        assert_eq!(
            disk.path,
            "server/releases/noble/release-20240809/ubuntu-24.04-server-cloudimg-amd64.img"
        );
        assert_eq!(
            disk.sha256.unwrap().to_hex(),
            "dd8b691b3f0d1e61f01ae0d857dcb3088d1d8bf4148439bd07abc081e4fc31f8"
        );
        assert_eq!(disk.size, Some(585_826_304));
    }

    #[test]
    fn item_paths_resolve_under_the_stream_root() {
        let root = Url::parse("https://cloud-images.ubuntu.com/releases/").unwrap();
        let url = resolve_path(
            &root,
            "server/releases/noble/release-20240809/ubuntu-24.04-server-cloudimg-amd64.img",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://cloud-images.ubuntu.com/releases/server/releases/noble/release-20240809/ubuntu-24.04-server-cloudimg-amd64.img"
        );
        for bad in [
            "../x.img",
            "/x.img",
            "https://evil/x.img",
            "a//b",
            "a/./b",
            "//evil/x",
        ] {
            assert!(resolve_path(&root, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escaping_item_path_is_rejected() {
        let text = String::from_utf8(EXCERPT.to_vec()).unwrap().replacen(
            "server/releases/noble/release-20240809/",
            "../../",
            1,
        );
        assert!(matches!(
            parse_products(text.as_bytes()),
            Err(StreamsError::BadItem { .. })
        ));
    }

    #[test]
    fn bad_item_digest_is_rejected() {
        let text = String::from_utf8(EXCERPT.to_vec()).unwrap().replacen(
            "dd8b691b3f0d1e61f01ae0d857dcb3088d1d8bf4148439bd07abc081e4fc31f8",
            "dd8b691b3f0d1e61f01ae0d857dcb3088d1d8bf4148439bd07abc081e4fc31f",
            1,
        );
        let error = parse_products(text.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("20240809"), "{error}");
    }

    #[test]
    fn truncated_document_is_a_json_error() {
        assert!(matches!(
            parse_products(&EXCERPT[..EXCERPT.len() / 2]),
            Err(StreamsError::Json(_))
        ));
    }

    #[test]
    fn corrupted_documents_never_panic() {
        let mut rejected = 0;
        for text in crate::index::corruptions(EXCERPT, 600) {
            if parse_products(&text).is_err() {
                rejected += 1;
            }
        }
        assert!(rejected > 100, "{rejected}");
    }

    #[test]
    fn oversized_document_is_rejected() {
        let big = vec![b' '; MAX_STREAMS_BYTES + 1];
        assert!(matches!(
            parse_products(&big),
            Err(StreamsError::TooLarge { .. })
        ));
    }
}
