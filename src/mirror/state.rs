//! Which files of the tree each catalog entry keeps, remembered between runs.
//!
//! Entries share serial folders (two arches, or a qcow2 and an OVA entry of the same release
//! both keep the same `disk1.img`), and `--only` runs see only some entries. So a file beyond one
//! entry's `keep` is removed only when no entry claims it: the entries of this run claim what they
//! keep now, the others what they kept last time, and entries gone from the catalog nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{read_own, write_atomic, MirrorError};

/// The state file, inside the work area.
const STATE_FILE: &str = "state.json";

/// Files (relative to the mirror root, `/`-separated) claimed per entry name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct State {
    #[serde(default)]
    pub entries: BTreeMap<String, BTreeSet<String>>,
    /// Simplestreams roots written (root → index file, relative to it), all re-checked after
    /// retention even when no entry of the run uses them.
    #[serde(default)]
    pub roots: BTreeMap<String, String>,
}

/// What one entry of this run keeps, and what it would drop.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryFiles {
    /// The entry's files in the serials it keeps.
    pub claims: BTreeSet<String>,
    /// The entry's files in serials beyond `keep`.
    pub candidates: BTreeSet<String>,
}

impl State {
    pub(crate) fn load(work: &Path) -> Result<State, MirrorError> {
        let path = work.join(STATE_FILE);
        let Some(bytes) = read_own(&path).map_err(super::io_error(&path))? else {
            return Ok(State::default());
        };
        serde_json::from_slice(&bytes).map_err(|source| MirrorError::OwnJson { path, source })
    }

    pub(crate) fn save(&self, work: &Path) -> Result<(), MirrorError> {
        let path = work.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| MirrorError::OwnJson {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }

    /// The next state and the files to remove, by the entry that gave them up.
    ///
    /// `catalog` names every entry of the catalog; `run` the entries this run resolved (a
    /// failing entry keeps its earlier claims by not being in `run`).
    pub(crate) fn plan(
        &self,
        catalog: &BTreeSet<String>,
        run: &BTreeMap<String, EntryFiles>,
    ) -> (State, BTreeMap<String, BTreeSet<String>>) {
        let mut next = State {
            roots: self.roots.clone(),
            ..State::default()
        };
        let mut candidates: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, files) in &self.entries {
            match run.get(name) {
                // Files it no longer keeps (a changed kind, a lower keep) may go.
                Some(now) => {
                    candidates
                        .entry(name.clone())
                        .or_default()
                        .extend(files.difference(&now.claims).cloned());
                }
                None if catalog.contains(name) => {
                    next.entries.insert(name.clone(), files.clone());
                }
                None => {
                    candidates
                        .entry(name.clone())
                        .or_default()
                        .extend(files.iter().cloned());
                }
            }
        }
        for (name, files) in run {
            next.entries.insert(name.clone(), files.claims.clone());
            candidates
                .entry(name.clone())
                .or_default()
                .extend(files.candidates.iter().cloned());
        }
        let kept: BTreeSet<&String> = next.entries.values().flatten().collect();
        for files in candidates.values_mut() {
            files.retain(|file| !kept.contains(file));
        }
        candidates.retain(|_, files| !files.is_empty());
        (next, candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[&str]) -> BTreeSet<String> {
        files.iter().map(|f| f.to_string()).collect()
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        set(names)
    }

    #[test]
    fn a_file_another_entry_keeps_is_not_removed() {
        // qcow2 keeps 1 serial, ova keeps 2: both use the same disk1.img of serial 1.
        let run = BTreeMap::from([
            (
                "qcow2".to_owned(),
                EntryFiles {
                    claims: set(&["s2/disk.img"]),
                    candidates: set(&["s1/disk.img"]),
                },
            ),
            (
                "ova".to_owned(),
                EntryFiles {
                    claims: set(&["s2/disk.img", "s1/disk.img"]),
                    candidates: set(&[]),
                },
            ),
        ]);
        let (next, removals) = State::default().plan(&names(&["qcow2", "ova"]), &run);
        assert!(removals.is_empty(), "{removals:?}");
        assert_eq!(next.entries["ova"], set(&["s1/disk.img", "s2/disk.img"]));
    }

    #[test]
    fn entries_outside_the_run_keep_their_claims_and_removed_ones_lose_them() {
        let previous = State {
            entries: BTreeMap::from([
                ("other".to_owned(), set(&["s1/arm64.img"])),
                ("gone".to_owned(), set(&["s1/old.img", "s1/arm64.img"])),
                (
                    "noble".to_owned(),
                    set(&["s1/amd64.img", "s1/amd64.tar.gz"]),
                ),
            ]),
            ..State::default()
        };
        let run = BTreeMap::from([(
            "noble".to_owned(),
            EntryFiles {
                claims: set(&["s2/amd64.img"]),
                candidates: set(&["s1/amd64.img", "s1/arm64.img"]),
            },
        )]);
        let (next, removals) = previous.plan(&names(&["other", "noble"]), &run);
        assert_eq!(next.entries.keys().collect::<Vec<_>>(), ["noble", "other"]);
        assert_eq!(removals["gone"], set(&["s1/old.img"]));
        // The tarball it no longer keeps goes too; other's arm64 image stays.
        assert_eq!(removals["noble"], set(&["s1/amd64.img", "s1/amd64.tar.gz"]));
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), State::default());
        let state = State {
            entries: BTreeMap::from([("a".to_owned(), set(&["x/y.img"]))]),
            roots: BTreeMap::from([("releases/".to_owned(), "streams/v1/index.json".to_owned())]),
        };
        state.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), state);
    }
}
