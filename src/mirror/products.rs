//! The simplestreams subset: the upstream products of what was mirrored, merged into what the
//! mirror already lists, less anything whose file is gone.

use super::*;

impl Run<'_> {
    /// Adds the entry's mirrored versions and items to the subset of its simplestreams root.
    pub(super) async fn record_streams(
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

    /// Writes each touched root's products file and index: the upstream subset merged into
    /// what the mirror already lists, less anything whose file is no longer there.
    pub(super) fn write_streams(&self) -> Result<(), MirrorError> {
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
