//! Releases and serials: what a user names, and how to find it.
//!
//! A release is known by code name (`noble`), version (`24.04`) or, from simplestreams, an alias
//! (`lts`, `n`). A serial is one build: `YYYYMMDD`, optionally followed by the catalog's separator
//! and a counter (`20240821.1` for Ubuntu, `20240717-1811` for Debian); `current/` and `release/`
//! are aliases, not serials.

use std::cmp::Ordering;

use crate::catalog::{compare_versions, ReleaseSpec};

/// A release of the distribution.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Release {
    /// Lower-case code name: `noble`.
    pub codename: String,
    /// Series number: `24.04`.
    pub version: String,
    /// Short title: `24.04 LTS`.
    pub title: String,
    /// The code name in words: `Noble Numbat`.
    pub codename_title: Option<String>,
    pub supported: bool,
    /// End of support (`2029-05-31`), when the source says.
    pub eol: Option<String>,
    /// Other names the source accepts (`lts`, `n`, `default`), lower case.
    pub aliases: Vec<String>,
}

/// Marker the listings put after a release past its end of life.
const END_OF_LIFE_MARKER: &str = "END OF LIFE";

/// Reads a release from a listing row: the folder name and its Description, e.g. `focal/` +
/// `Ubuntu Server 20.04 LTS (Focal Fossa) daily builds`, or `22.04/` + `… (Jammy Jellyfish)
/// released builds`. `None` for rows that are not releases (`docs/`, `server/`).
pub fn release_from_description(folder: &str, description: &str) -> Option<Release> {
    let mut words = description.split_whitespace();
    let version = words.by_ref().find(|w| looks_like_version(w))?.to_owned();
    let lts = words.next() == Some("LTS");
    let codename_title = description
        .split_once('(')
        .and_then(|(_, after)| after.split_once(')'))
        .map(|(inside, _)| inside.trim().to_owned())
        .filter(|inside| !inside.is_empty());
    let folder_is_codename =
        !folder.is_empty() && folder.chars().all(|c| c.is_ascii_lowercase()) && folder != version;
    let codename = if folder_is_codename {
        folder.to_owned()
    } else {
        codename_title
            .as_deref()?
            .split_whitespace()
            .next()?
            .to_ascii_lowercase()
    };
    Some(Release {
        codename,
        title: if lts {
            format!("{version} LTS")
        } else {
            version.clone()
        },
        version,
        codename_title,
        supported: !description.contains(END_OF_LIFE_MARKER),
        eol: None,
        aliases: Vec::new(),
    })
}

/// A release as the catalog declares it (sites whose listings carry no descriptions).
pub fn from_declared(spec: &ReleaseSpec) -> Release {
    Release {
        codename: spec.codename.clone(),
        version: spec.version.clone(),
        title: spec.title.clone().unwrap_or_else(|| spec.version.clone()),
        codename_title: None,
        supported: spec.supported,
        eol: spec.eol.clone(),
        aliases: spec
            .aliases
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect(),
    }
}

/// `24.04`, `12`: digits with at most one dot between digits.
fn looks_like_version(word: &str) -> bool {
    let mut parts = word.split('.');
    let all_digits =
        |p: &str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    matches!((parts.next(), parts.next(), parts.next()),
        (Some(major), minor, None) if all_digits(major) && minor.is_none_or(all_digits))
}

/// Orders releases oldest first by version.
pub fn sort_releases(releases: &mut [Release]) {
    releases.sort_by(|a, b| compare_versions(&a.version, &b.version));
}

/// Finds a release by code name, version or alias, case-insensitively. Exact code names and
/// versions win over aliases; an alias several releases share (`n`: natty and noble) names the
/// newest. `lts` and `latest` also work without aliases: the newest LTS, the newest release.
pub fn resolve<'r>(releases: &'r [Release], wanted: &str) -> Option<&'r Release> {
    let wanted = wanted.trim().to_ascii_lowercase();
    let newest = |matches: &dyn Fn(&Release) -> bool| {
        releases
            .iter()
            .filter(|r| matches(r))
            .max_by(|a, b| compare_versions(&a.version, &b.version))
    };
    newest(&|r| r.codename.eq_ignore_ascii_case(&wanted) || r.version == wanted)
        .or_else(|| newest(&|r| r.aliases.contains(&wanted)))
        .or_else(|| match wanted.as_str() {
            "lts" => newest(&|r| r.title.ends_with("LTS")),
            "latest" => newest(&|_| true),
            _ => None,
        })
}

/// Whether `text` is a serial: 8 digits of date, optionally `separator` and 1–9 digits.
pub fn is_serial(text: &str, separator: char) -> bool {
    serial_key(text, separator).is_some()
}

/// Sort key of a serial: (date, counter).
fn serial_key(text: &str, separator: char) -> Option<(u32, u64)> {
    let digits = |s: &str, max: usize| {
        (!s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (date, counter) = match text.split_once(separator) {
        Some((date, counter)) => (date, Some(counter)),
        None => (text, None),
    };
    let date = u32::try_from(digits(date, 8)?)
        .ok()
        .filter(|_| date.len() == 8)?;
    let counter = match counter {
        Some(counter) => digits(counter, 9)? + 1,
        None => 0,
    };
    Some((date, counter))
}

/// Orders serials newest first (by date, then counter: `20240821.1` after `20240821`); invalid
/// serials sort last.
pub fn sort_serials_newest_first(serials: &mut [String], separator: char) {
    serials.sort_by(
        |a, b| match (serial_key(a, separator), serial_key(b, separator)) {
            (Some(x), Some(y)) => y.cmp(&x),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.cmp(b),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(codename: &str, version: &str, title: &str, aliases: &[&str]) -> Release {
        Release {
            codename: codename.into(),
            version: version.into(),
            title: title.into(),
            codename_title: None,
            supported: true,
            eol: None,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn daily_row_description_gives_the_release() {
        let r = release_from_description(
            "focal",
            "Ubuntu Server 20.04 LTS (Focal Fossa) daily builds",
        )
        .unwrap();
        assert_eq!(r.codename, "focal");
        assert_eq!(r.version, "20.04");
        assert_eq!(r.title, "20.04 LTS");
        assert_eq!(r.codename_title.as_deref(), Some("Focal Fossa"));
        assert!(r.supported);
    }

    #[test]
    fn numeric_folder_takes_codename_from_the_words() {
        let r = release_from_description(
            "22.04",
            "Ubuntu Server 22.04 LTS (Jammy Jellyfish) released builds",
        )
        .unwrap();
        assert_eq!(r.codename, "jammy");
        let r = release_from_description("19.10", "Ubuntu Server 19.10 (Eoan Ermine) daily builds")
            .unwrap();
        assert_eq!(r.title, "19.10");
        assert_eq!(r.codename, "eoan");
    }

    #[test]
    fn end_of_life_marker_clears_supported() {
        let r = release_from_description(
            "precise",
            "Ubuntu Server 12.04 LTS (Precise Pangolin) daily builds [END OF LIFE - for reference only]",
        )
        .unwrap();
        assert!(!r.supported);
    }

    #[test]
    fn non_release_rows_are_not_releases() {
        assert_eq!(
            release_from_description("daily", "Daily image builds"),
            None
        );
        assert_eq!(
            release_from_description("server", "Ubuntu Server Cloud Image Builds"),
            None
        );
        // A numeric folder without code-name words cannot be named.
        assert_eq!(
            release_from_description("22.04", "Ubuntu 22.04 builds"),
            None
        );
    }

    #[test]
    fn resolution_prefers_exact_names_then_aliases() {
        let releases = vec![
            release("natty", "11.04", "11.04", &["11.04", "n", "natty"]),
            release("jammy", "22.04", "22.04 LTS", &[]),
            release(
                "noble",
                "24.04",
                "24.04 LTS",
                &["24.04", "n", "noble", "lts"],
            ),
            release("oracular", "24.10", "24.10", &[]),
        ];
        let name = |w| resolve(&releases, w).map(|r| r.codename.as_str());
        assert_eq!(name("NOBLE"), Some("noble"));
        assert_eq!(name("22.04"), Some("jammy"));
        assert_eq!(name("n"), Some("noble"));
        assert_eq!(name("lts"), Some("noble"));
        assert_eq!(name("latest"), Some("oracular"));
        assert_eq!(name("24"), None);
        assert_eq!(name("plucky"), None);
        // Without aliases, "lts" is the newest LTS by title.
        assert_eq!(resolve(&releases[1..2], "lts").unwrap().codename, "jammy");
    }

    #[test]
    fn serials_are_dates_with_optional_counter() {
        assert!(is_serial("20240821", '.'));
        assert!(is_serial("20240821.1", '.'));
        assert!(is_serial("20240717-1811", '-'));
        assert!(!is_serial("20240717-1811", '.'));
        assert!(!is_serial("current", '.'));
        assert!(!is_serial("2024082", '.'));
        assert!(!is_serial("20240821.", '.'));
        assert!(!is_serial("202408211", '.'));
        assert!(!is_serial("20240821.1234567890", '.'));
    }

    #[test]
    fn serials_sort_newest_first_with_counters_numeric() {
        let mut serials: Vec<String> = ["20240717-999", "20240717-1811", "20240101-5", "junk"]
            .map(String::from)
            .to_vec();
        sort_serials_newest_first(&mut serials, '-');
        assert_eq!(
            serials,
            ["20240717-1811", "20240717-999", "20240101-5", "junk"]
        );
        let mut serials: Vec<String> = ["20240809", "20240821", "20240821.1"]
            .map(String::from)
            .to_vec();
        sort_serials_newest_first(&mut serials, '.');
        assert_eq!(serials, ["20240821.1", "20240821", "20240809"]);
    }
}
