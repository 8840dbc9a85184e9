//! One serial: its checksum files fetched and verified, each file placed (kept when already
//! right, else downloaded in the work area and renamed in), staged folders renamed in whole.

use super::*;

impl Run<'_> {
    /// Fetches, verifies and places one serial's files and checksum files.
    pub(super) async fn mirror_serial(
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
            crate::io::publish::rename_durably(&base, &target)
                .map_err(|e| io_error(&target)(e.into()))?;
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
    pub(super) async fn place(
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
        // Placing the verified file is blocking work: off the async workers.
        let (base, placed) = (base.to_owned(), dest.clone());
        crate::io::blocking::run(&dest, move || {
            std::fs::create_dir_all(&base).map_err(io_error(&base))?;
            crate::io::publish::rename_durably(&work, &placed)
                .map_err(|e| io_error(&placed)(e.into()))
        })
        .await?;
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
    pub(super) async fn write_sums(
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
    pub(super) fn link_stream_folder(
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
}

/// The digest and size of a file, `None` when it does not exist.
pub(super) fn digest_of(
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
