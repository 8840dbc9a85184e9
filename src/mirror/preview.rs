//! `mirror --dry-run`: which serials each entry would hold, which of their files would be
//! fetched (the others are in the tree already) and which older serials would lose the entry's
//! files. Only upstream index documents and the tree are read: no lock, no work area, no file
//! written.

use super::*;

/// One file of a kept serial.
#[derive(Debug, serde::Serialize)]
pub struct PlannedFile {
    /// Relative to the mirror root.
    pub path: PathBuf,
    /// Its upstream URL, where the listing names it (files of `unpacked/` are found at fetch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What a run would do for one entry.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum PlannedOutcome {
    WouldMirror {
        /// Newest first.
        serials: Vec<String>,
        /// Files not in the tree yet.
        would_fetch: Vec<PlannedFile>,
        /// Files of the kept serials already in the tree (a run verifies them).
        present: usize,
        /// Serials beyond `keep` holding files of this entry (another entry may still keep
        /// a shared file).
        would_prune: Vec<String>,
    },
    Failed {
        error: String,
    },
}

impl EntryOutcome for PlannedOutcome {
    fn is_failure(&self) -> bool {
        matches!(self, PlannedOutcome::Failed { .. })
    }
}

/// A dry run of [`mirror`]: one report per selected entry.
#[derive(Debug, serde::Serialize)]
pub struct Preview {
    pub dir: PathBuf,
    pub dry_run: bool,
    pub entries: Vec<runner::EntryReport<PlannedOutcome>>,
}

/// What [`mirror`] would do; reads only.
pub async fn preview(
    client: &Client,
    catalog: &UserCatalog,
    catalog_dir: &Path,
    dir: &Path,
    options: &MirrorOptions,
) -> Result<Preview, MirrorError> {
    let selected = runner::select(catalog, &options.only)?;
    let mut entries = Vec::new();
    for image in selected {
        let outcome =
            match preview_every_arch(client, catalog, catalog_dir, dir, options, image).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    let text = crate::error::chain(&error);
                    tracing::error!(image = %image.name, "{text}");
                    PlannedOutcome::Failed { error: text }
                }
            };
        entries.push(runner::EntryReport {
            name: image.name.clone(),
            outcome,
        });
    }
    Ok(Preview {
        dir: dir.to_owned(),
        dry_run: true,
        entries,
    })
}

/// The entry for each architecture it names ([`runner::per_arch`]), as one plan.
async fn preview_every_arch(
    client: &Client,
    catalog: &UserCatalog,
    catalog_dir: &Path,
    dir: &Path,
    options: &MirrorOptions,
    image: &ImageSpec,
) -> Result<PlannedOutcome, MirrorError> {
    let mut joined: Option<PlannedOutcome> = None;
    for one in runner::per_arch(image) {
        let next = preview_entry(client, catalog, catalog_dir, dir, options, &one).await?;
        joined = Some(match joined {
            Some(done) => done.join(next),
            None => next,
        });
    }
    Ok(joined.unwrap_or(PlannedOutcome::WouldMirror {
        serials: Vec::new(),
        would_fetch: Vec::new(),
        present: 0,
        would_prune: Vec::new(),
    }))
}

impl PlannedOutcome {
    /// Two architectures' plans of one entry as one: serials in the order found, files and
    /// counts together.
    fn join(self, other: PlannedOutcome) -> PlannedOutcome {
        match (self, other) {
            (
                PlannedOutcome::WouldMirror {
                    mut serials,
                    mut would_fetch,
                    present,
                    mut would_prune,
                },
                PlannedOutcome::WouldMirror {
                    serials: more_serials,
                    would_fetch: more_fetch,
                    present: more_present,
                    would_prune: more_prune,
                },
            ) => {
                for serial in more_serials {
                    if !serials.contains(&serial) {
                        serials.push(serial);
                    }
                }
                would_fetch.extend(more_fetch);
                for serial in more_prune {
                    if !would_prune.contains(&serial) {
                        would_prune.push(serial);
                    }
                }
                PlannedOutcome::WouldMirror {
                    serials,
                    would_fetch,
                    present: present + more_present,
                    would_prune,
                }
            }
            (failed @ PlannedOutcome::Failed { .. }, _) | (_, failed) => failed,
        }
    }
}

async fn preview_entry(
    client: &Client,
    catalog: &UserCatalog,
    catalog_dir: &Path,
    dir: &Path,
    options: &MirrorOptions,
    image: &ImageSpec,
) -> Result<PlannedOutcome, MirrorError> {
    let resolved = EntrySource::resolve(image, catalog, catalog_dir, &options.source)?;
    let (entry, query) = Entry::new(image, &resolved, client)?;
    let (source, spec) = (entry.source, entry.spec);
    let keep = catalog.keep_for(image).max(1);
    let listings = entry.discovery.newest_listings(&query, keep).await?;
    let mut serials = Vec::new();
    let mut would_fetch = Vec::new();
    let mut present = 0;
    let mut newest: Option<Listing> = None;
    for (serial, listing) in listings {
        let listing = listing?;
        let folder = serial_rel(spec, &listing.release, &serial)?;
        for own in own_files(&entry, &listing, &serial)? {
            let rel = format!("{folder}{own}");
            let path = safe_relative(&rel, "file")?;
            if is_file(&dir.join(&path)).await {
                present += 1;
                continue;
            }
            let name = own.rsplit('/').next().unwrap_or(&own);
            let url = listing
                .files
                .iter()
                .find(|file| file.name == name)
                .map(|file| file.url.to_string());
            would_fetch.push(PlannedFile { path, url });
        }
        serials.push(serial);
        newest.get_or_insert(listing);
    }
    let mut would_prune = Vec::new();
    if let Some(listing) = &newest {
        let release_rel = release_rel(spec, &listing.release)?;
        let release_dir = dir.join(safe_relative(&release_rel, "release folder")?);
        let (folder_dir, pattern) = (release_dir.clone(), spec.serial_dir.clone());
        let separator = source.serial_separator;
        let folders =
            tokio::task::spawn_blocking(move || serial_folders(&folder_dir, &pattern, separator))
                .await
                .map_err(|error| MirrorError::Io {
                    path: release_dir.clone(),
                    source: std::io::Error::other(error.to_string()),
                })??;
        for (serial, folder) in folders {
            if serials.contains(&serial) {
                continue;
            }
            for own in own_files(&entry, listing, &serial)? {
                if is_file(&release_dir.join(&folder).join(own)).await {
                    would_prune.push(serial);
                    break;
                }
            }
        }
        sort_serials_newest_first(&mut would_prune, source.serial_separator);
    }
    Ok(PlannedOutcome::WouldMirror {
        serials,
        would_fetch,
        present,
        would_prune,
    })
}

/// Whether `path` is a regular file (asked without blocking the async worker).
async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|meta| meta.is_file())
}
