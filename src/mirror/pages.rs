//! Apache-style `index.html` pages for every folder, with the Description column HTML
//! discovery reads release names from.

use super::*;

impl Run<'_> {
    /// Reads the upstream pages on the way to the serial folder for their Description column
    /// (release names, which HTML discovery needs). Best effort: a mirror without pages
    /// still gets a release description made from what discovery knows.
    pub(super) async fn read_upstream_pages(&mut self, entry: &Entry<'_>, listing: &Listing) {
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
}

/// A Description HTML discovery reads as `release`, for mirrors whose upstream has no pages.
pub(super) fn release_description(release: &Release, stream_title: &str) -> String {
    let codename = release
        .codename_title
        .clone()
        .unwrap_or_else(|| release.codename.clone());
    format!("{} ({codename}) {stream_title}", release.title)
}

/// Writes `index.html` in the folder `rel` of `root` and every real folder below it, from what
/// is on disk; removes dangling links and folders left empty. Descriptions come from
/// `descriptions`, else from the page being replaced. Returns whether the folder lists anything.
pub(super) fn write_pages(
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
