//! One entry: its serials discovered once, each mirrored, and what it now holds in the tree
//! (claims and retention candidates, by the catalog's file names).

use super::*;

impl Run<'_> {
    /// The entry for each architecture it names ([`runner::per_arch`]), as one entry: an
    /// architecture that fails is the entry's failure, while what the others mirrored stays
    /// claimed.
    pub(super) async fn entry_every_arch(
        &mut self,
        image: &ImageSpec,
    ) -> Result<EntryDone, MirrorError> {
        let mut copies = runner::per_arch(image).into_iter();
        let first = copies.next().unwrap_or_else(|| image.clone());
        let mut joined = self.entry(&first).await;
        for one in copies {
            let next = self.entry(&one).await;
            joined = match (joined, next) {
                (Ok(done), Ok(next)) => Ok(done.join(next)),
                (Ok(mut done), Err(error)) | (Err(error), Ok(mut done)) => {
                    done.failure.get_or_insert(error);
                    Ok(done)
                }
                (Err(error), Err(_)) => Err(error),
            };
        }
        joined
    }

    pub(super) async fn entry(&mut self, image: &ImageSpec) -> Result<EntryDone, MirrorError> {
        let resolved =
            EntrySource::resolve(image, self.catalog, self.catalog_dir, &self.options.source)?;
        let (entry, query) = Entry::new(image, &resolved, self.client)?;
        let (source, spec) = (entry.source, entry.spec);
        self.bookkeeping.insert(source.checksums.file.clone());
        if let Signature::Published { file, .. } = &source.signature {
            self.bookkeeping.insert(file.clone());
        }
        if let Some(simplestreams) = &spec.simplestreams {
            self.roots
                .entry(simplestreams.root.clone())
                .or_default()
                .index
                .clone_from(&simplestreams.index);
        }
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
}

/// The release folder, relative to the mirror root: `releases/24.04/`.
pub(super) fn release_rel(spec: &StreamSpec, release: &Release) -> Result<String, MirrorError> {
    let vars = Vars {
        version: Some(&release.version),
        codename: Some(&release.codename),
        ..Vars::default()
    };
    Ok(pattern::expand(&spec.release_dir, &vars).map_err(IndexError::from)?)
}

/// The serial folder, relative to the mirror root: `releases/24.04/release-20240821/`.
pub(super) fn serial_rel(
    spec: &StreamSpec,
    release: &Release,
    serial: &str,
) -> Result<String, MirrorError> {
    let vars = Vars {
        serial: Some(serial),
        ..Vars::default()
    };
    let folder = pattern::expand(&spec.serial_dir, &vars).map_err(IndexError::from)?;
    Ok(format!("{}{folder}", release_rel(spec, release)?))
}

/// The entry's files inside any of its serial folders (`/`-separated, relative to the folder),
/// as the catalog names them for this release and arch.
pub(super) fn own_files(
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
pub(super) fn serial_folders(
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
