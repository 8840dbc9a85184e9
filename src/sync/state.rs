//! `ROOT/.cloudimg-state.json`: what each sync published, from which upstream bytes.
//!
//! The tree itself (serial folders, `current`, each artifact's metadata) is the truth readers
//! use; the state file is the record an operator audits and the next run reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::SyncError;
use crate::verify::digest::FileDigest;

/// The state file's name in the output root.
pub const STATE_FILE: &str = ".cloudimg-state.json";
/// Bumped when the layout changes incompatibly.
const STATE_VERSION: u32 = 1;
/// A state file larger than this is not ours.
const MAX_STATE_BYTES: u64 = 16 << 20;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub version: u32,
    pub images: BTreeMap<String, ImageState>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageState {
    pub current: Option<String>,
    pub serials: BTreeMap<String, SerialRecord>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SerialRecord {
    /// Seconds since the Unix epoch.
    pub published_at: u64,
    pub upstream: Vec<UpstreamRecord>,
    pub artifacts: Vec<ArtifactRecord>,
    /// Glance image ids, once uploaded.
    #[serde(default)]
    pub glance_ids: Vec<String>,
    /// The folder of `ROOT/.downloads/` holding the serial's upstream files: kept while the
    /// serial is current, so a rebuild (or another entry of the same build) downloads nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_cache: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UpstreamRecord {
    pub url: String,
    /// `sha256:<hex>` or `sha512:<hex>`, as the source publishes.
    #[serde(with = "digest_text")]
    pub digest: FileDigest,
    pub size: u64,
    /// Fingerprint of the key that signed the checksums; `None` when the source signs nothing.
    pub signed_by: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ArtifactRecord {
    /// Relative to the serial folder.
    pub path: PathBuf,
    pub disk_format: String,
    pub container_format: String,
    pub size: u64,
    pub sha256: String,
    pub sha512: String,
    pub md5: String,
}

/// Digests as `algorithm:hex` text, so the record says which one it is.
mod digest_text {
    use crate::catalog::DigestAlgorithm;
    use crate::verify::digest::FileDigest;

    pub fn serialize<S: serde::Serializer>(digest: &FileDigest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!(
            "{}:{}",
            digest.algorithm().name(),
            digest.to_hex()
        ))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FileDigest, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        let invalid = || serde::de::Error::custom(format!("not an algorithm:hex digest: {text:?}"));
        let (algorithm, hex_text) = text.split_once(':').ok_or_else(invalid)?;
        let algorithm = match algorithm {
            "sha256" => DigestAlgorithm::Sha256,
            "sha512" => DigestAlgorithm::Sha512,
            _ => return Err(invalid()),
        };
        let bytes = hex::decode(hex_text).map_err(|_| invalid())?;
        FileDigest::from_bytes(algorithm, &bytes).ok_or_else(invalid)
    }
}

impl State {
    /// The state of `root`; empty when there is none yet.
    pub fn load(root: &Path) -> Result<State, SyncError> {
        let path = root.join(STATE_FILE);
        let text = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_STATE_BYTES => {
                return Err(SyncError::BadState {
                    path,
                    reason: format!("larger than {MAX_STATE_BYTES} bytes"),
                })
            }
            Ok(_) => std::fs::read_to_string(&path).map_err(|source| SyncError::Io {
                path: path.clone(),
                source,
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: STATE_VERSION,
                    ..State::default()
                })
            }
            Err(source) => return Err(SyncError::Io { path, source }),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| SyncError::BadState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(SyncError::BadState {
                path,
                reason: format!(
                    "version {} (this cloudimg writes {STATE_VERSION})",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Writes the state under a temporary name, fsyncs it and renames it into place.
    pub fn save(&self, root: &Path) -> Result<(), SyncError> {
        let path = root.join(STATE_FILE);
        let io = |source| SyncError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        crate::io::publish::write(&path, (text + "\n").as_bytes()).map_err(io)
    }

    /// The download-cache folders of every image's current serial.
    pub fn current_download_caches(&self) -> impl Iterator<Item = &str> {
        self.images.values().filter_map(|image| {
            let current = image.current.as_ref()?;
            image.serials.get(current)?.download_cache.as_deref()
        })
    }

    /// Records a newly published serial as current and forgets pruned ones.
    pub fn record(&mut self, image: &str, serial: &str, record: SerialRecord, pruned: &[String]) {
        let entry = self.images.entry(image.to_owned()).or_default();
        entry.serials.insert(serial.to_owned(), record);
        entry.current = Some(serial.to_owned());
        for serial in pruned {
            entry.serials.remove(serial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SerialRecord {
        SerialRecord {
            published_at: 1,
            upstream: vec![UpstreamRecord {
                url: "https://mirror.test/x.img".into(),
                digest: FileDigest::from_bytes(
                    crate::catalog::DigestAlgorithm::Sha512,
                    &[0xab; 64],
                )
                .unwrap(),
                size: 3,
                signed_by: None,
            }],
            artifacts: Vec::new(),
            glance_ids: Vec::new(),
            download_cache: None,
        }
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let root = tempfile::tempdir().unwrap();
        let mut state = State::load(root.path()).unwrap();
        state.record("noble", "20240821", record(), &[]);
        state.record("noble", "20241004", record(), &["20240821".to_owned()]);
        state.save(root.path()).unwrap();
        let again = State::load(root.path()).unwrap();
        let noble = &again.images["noble"];
        assert_eq!(noble.current.as_deref(), Some("20241004"));
        assert_eq!(noble.serials.keys().collect::<Vec<_>>(), ["20241004"]);
        let text = std::fs::read_to_string(root.path().join(STATE_FILE)).unwrap();
        assert!(
            text.contains(&format!("\"sha512:{}\"", "ab".repeat(64))),
            "{text}"
        );
        assert_eq!(
            noble.serials["20241004"].upstream[0].digest,
            record().upstream[0].digest
        );
    }

    #[test]
    fn garbage_state_is_an_error_not_a_fresh_start() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            State::load(root.path()),
            Err(SyncError::BadState { .. })
        ));
    }
}
