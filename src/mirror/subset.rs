//! Simplestreams for a mirror: the upstream products document cut down to the products,
//! versions and items the mirror holds, merged across runs, with the index that points at it.
//!
//! Pure functions over `serde_json::Value`, so fields this crate does not model (`md5`, `label`,
//! `pubname`, `support_eol`, …) pass through untouched.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The products of a document (`products` object), or an empty map.
pub fn products_of(document: &Value) -> Map<String, Value> {
    document
        .get("products")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The key of the product of `release` (code name) on `arch`.
pub fn find_product<'d>(document: &'d Value, release: &str, arch: &str) -> Option<&'d str> {
    document
        .get("products")?
        .as_object()?
        .iter()
        .find(|(_, product)| {
            product.get("release").and_then(Value::as_str) == Some(release)
                && product.get("arch").and_then(Value::as_str) == Some(arch)
        })
        .map(|(key, _)| key.as_str())
}

/// The last segment of an item's `path`: the file name the mirror stores.
fn item_file_name(item: &Value) -> Option<&str> {
    item.get("path")?.as_str()?.rsplit('/').next()
}

/// `product` with only the versions named in `files` (serial → file names held) and, in each,
/// only the items whose file is held. `None` when nothing is left.
pub fn subset_product(
    product: &Value,
    files: &BTreeMap<String, BTreeSet<String>>,
) -> Option<Value> {
    let mut product = product.clone();
    let versions = product.get_mut("versions")?.as_object_mut()?;
    versions.retain(|serial, version| {
        let Some(held) = files.get(serial) else {
            return false;
        };
        let Some(items) = version.get_mut("items").and_then(Value::as_object_mut) else {
            return false;
        };
        items.retain(|_, item| item_file_name(item).is_some_and(|name| held.contains(name)));
        !items.is_empty()
    });
    (!versions.is_empty()).then_some(product)
}

/// Adds `update` to `existing`: a product's fields come from the update, its versions are the
/// union, and within a version present in both the items are the union (the update's win).
pub fn merge_products(existing: &mut Map<String, Value>, update: Map<String, Value>) {
    for (key, mut product) in update {
        let old_versions = existing
            .remove(&key)
            .and_then(|mut old| old.get_mut("versions").map(Value::take))
            .and_then(|versions| match versions {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .unwrap_or_default();
        if let Some(versions) = product.get_mut("versions").and_then(Value::as_object_mut) {
            for (serial, mut old_version) in old_versions {
                match versions.get_mut(&serial) {
                    None => {
                        versions.insert(serial, old_version);
                    }
                    Some(new_version) => {
                        let old_items = old_version
                            .get_mut("items")
                            .and_then(Value::as_object_mut)
                            .map(std::mem::take)
                            .unwrap_or_default();
                        if let Some(items) =
                            new_version.get_mut("items").and_then(Value::as_object_mut)
                        {
                            for (ftype, item) in old_items {
                                items.entry(ftype).or_insert(item);
                            }
                        }
                    }
                }
            }
        }
        existing.insert(key, product);
    }
}

/// Drops the items whose `path` (relative to the stream root) is not `present`, then the
/// versions left without items and the products left without versions.
pub fn retain_present(products: &mut Map<String, Value>, present: impl Fn(&str) -> bool) {
    products.retain(|_, product| {
        let Some(versions) = product.get_mut("versions").and_then(Value::as_object_mut) else {
            return false;
        };
        versions.retain(|_, version| {
            let Some(items) = version.get_mut("items").and_then(Value::as_object_mut) else {
                return false;
            };
            items.retain(|_, item| {
                item.get("path")
                    .and_then(Value::as_str)
                    .is_some_and(&present)
            });
            !items.is_empty()
        });
        !versions.is_empty()
    });
}

/// The products document: `shell`'s fields (content id, datatype, format, …) with `products`.
pub fn products_document(shell: &Value, products: Map<String, Value>) -> Value {
    let mut document = match shell {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    document.insert("products".into(), Value::Object(products));
    Value::Object(document)
}

/// `index.json` with one entry, `content_id`: the upstream entry's fields (path, datatype,
/// format, updated) with the product list of the subset.
pub fn index_document(
    upstream_entry: &Value,
    content_id: &str,
    products: &Map<String, Value>,
) -> Value {
    let mut entry = match upstream_entry {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    entry.insert(
        "products".into(),
        Value::Array(products.keys().cloned().map(Value::String).collect()),
    );
    let updated = entry.get("updated").cloned();
    let mut index = Map::new();
    index.insert(content_id.to_owned(), Value::Object(entry));
    let mut document = Map::new();
    document.insert("format".into(), Value::String("index:1.0".into()));
    document.insert("index".into(), Value::Object(index));
    if let Some(updated) = updated {
        document.insert("updated".into(), updated);
    }
    Value::Object(document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::streams;

    const EXCERPT: &str = include_str!("../../tests/data/ubuntu/streams/excerpt-noble-amd64.json");

    fn held(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(serial, names)| {
                (
                    serial.to_string(),
                    names.iter().map(|n| n.to_string()).collect(),
                )
            })
            .collect()
    }

    fn excerpt() -> Value {
        serde_json::from_str(EXCERPT).unwrap()
    }

    #[test]
    fn the_subset_keeps_only_held_serials_and_files_and_still_parses() {
        let document = excerpt();
        let key = find_product(&document, "noble", "amd64")
            .unwrap()
            .to_owned();
        let product = &document["products"][&key];
        let subset = subset_product(
            product,
            &held(&[("20240821", &["ubuntu-24.04-server-cloudimg-amd64.img"])]),
        )
        .unwrap();
        let mut products = Map::new();
        products.insert(key.clone(), subset);
        let written = products_document(&document, products);
        let parsed = streams::parse_products(&serde_json::to_vec(&written).unwrap()).unwrap();
        let product = parsed.find("noble", "amd64").unwrap();
        assert_eq!(product.versions.keys().collect::<Vec<_>>(), ["20240821"]);
        let items = &product.versions["20240821"].items;
        assert_eq!(items.keys().collect::<Vec<_>>(), ["disk1.img"]);
        // Unmodelled fields pass through.
        let version = &written["products"][&key]["versions"]["20240821"];
        assert!(version["items"]["disk1.img"]["md5"].is_string());
        assert_eq!(
            written["products"][&key]["release_title"],
            document["products"][&key]["release_title"]
        );
    }

    #[test]
    fn nothing_held_is_no_product() {
        let document = excerpt();
        let key = find_product(&document, "noble", "amd64").unwrap();
        let product = &document["products"][key];
        assert!(subset_product(product, &held(&[("19990101", &["x.img"])])).is_none());
        assert!(subset_product(product, &held(&[("20240821", &["other.img"])])).is_none());
        assert!(find_product(&document, "noble", "s390x").is_none());
    }

    fn product(versions: Value) -> Value {
        serde_json::json!({"release": "noble", "arch": "amd64", "title": "new", "versions": versions})
    }

    #[test]
    fn merging_unions_versions_and_items_and_takes_the_update_fields() {
        let mut existing = Map::new();
        existing.insert(
            "p".into(),
            serde_json::json!({"title": "old", "versions": {
                "1": {"items": {"disk1.img": {"path": "a/1/x.img"}, "tar.gz": {"path": "a/1/x.tar.gz"}}},
                "0": {"items": {"disk1.img": {"path": "a/0/x.img"}}}}}),
        );
        let mut update = Map::new();
        update.insert(
            "p".into(),
            product(serde_json::json!({
                "2": {"items": {"disk1.img": {"path": "a/2/x.img"}}},
                "1": {"items": {"disk1.img": {"path": "a/1/new.img"}}}})),
        );
        merge_products(&mut existing, update);
        let merged = &existing["p"];
        assert_eq!(merged["title"], "new");
        let versions = merged["versions"].as_object().unwrap();
        assert_eq!(versions.keys().collect::<Vec<_>>(), ["0", "1", "2"]);
        assert_eq!(versions["1"]["items"]["disk1.img"]["path"], "a/1/new.img");
        assert_eq!(versions["1"]["items"]["tar.gz"]["path"], "a/1/x.tar.gz");
    }

    #[test]
    fn absent_files_drop_items_then_versions_then_products() {
        let mut products = Map::new();
        products.insert(
            "kept".into(),
            product(serde_json::json!({
                "1": {"items": {"disk1.img": {"path": "here.img"}, "tar.gz": {"path": "gone.tar.gz"}}},
                "0": {"items": {"disk1.img": {"path": "gone.img"}}}})),
        );
        products.insert(
            "dropped".into(),
            product(serde_json::json!({"0": {"items": {"disk1.img": {"path": "gone.img"}}}})),
        );
        retain_present(&mut products, |path| path == "here.img");
        assert_eq!(products.keys().collect::<Vec<_>>(), ["kept"]);
        let versions = products["kept"]["versions"].as_object().unwrap();
        assert_eq!(versions.keys().collect::<Vec<_>>(), ["1"]);
        assert_eq!(
            versions["1"]["items"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["disk1.img"]
        );
    }

    #[test]
    fn the_index_lists_the_subset_and_parses() {
        let entry = serde_json::json!({"datatype": "image-downloads", "format": "products:1.0",
            "path": "streams/v1/c.json", "products": ["a", "b", "c"], "updated": "then"});
        let mut products = Map::new();
        products.insert("b".into(), Value::Null);
        let index = index_document(&entry, "c", &products);
        assert_eq!(index["index"]["c"]["products"], serde_json::json!(["b"]));
        assert_eq!(index["updated"], "then");
        let parsed = streams::parse_index(&serde_json::to_vec(&index).unwrap()).unwrap();
        assert_eq!(parsed[0].path, "streams/v1/c.json");
        assert_eq!(parsed[0].datatype, "image-downloads");
    }
}
