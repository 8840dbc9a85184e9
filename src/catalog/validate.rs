//! Validation of a source catalog at load time: one small check per part of the file (identity,
//! signature and keys, architectures, streams, kinds, releases), each refusing with an
//! [`Invalid`] that names the entry, the field, the value and the rule it breaks. Discovery
//! never meets a pattern that was not checked here.

use url::Url;

use super::pattern::{self, Placeholder};
use super::STREAM_NAMES;
use super::{Catalog, FileKind, FileRole, RawCatalog, RawSignature, Signature, StreamSpec};

/// A catalog value that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{entry}: {field} {value:?}: {rule}")]
pub struct Invalid {
    /// The part of the catalog: `catalog`, `stream "daily"`, `kind "disk1.img"`, `release
    /// "noble"`, `key "…"`, `arch "…"`, `glance`.
    pub entry: String,
    /// The field within it (`base_url`, `serial_dir`, `suffixes`…).
    pub field: String,
    /// The value as written (empty when the field is missing).
    pub value: String,
    /// What the value must be.
    pub rule: String,
}

impl Invalid {
    pub fn new(
        entry: impl Into<String>,
        field: impl Into<String>,
        value: impl Into<String>,
        rule: impl Into<String>,
    ) -> Invalid {
        Invalid {
            entry: entry.into(),
            field: field.into(),
            value: value.into(),
            rule: rule.into(),
        }
    }
}

use Placeholder::{Arch as A, Codename as C, Serial as S, Variant as W, Version as V};

/// Checks a parsed catalog and builds the [`Catalog`] discovery uses.
pub(super) fn validate(raw: RawCatalog) -> Result<Catalog, Invalid> {
    let (base_url, serial_separator) = check_identity(&raw)?;
    raw.glance.validate()?;
    let signature = check_signature(&raw.signature)?;
    if matches!(signature, Signature::Published { .. }) && raw.keys.is_empty() {
        return Err(Invalid::new(
            "catalog",
            "keys",
            "",
            "a published signature needs at least one key",
        ));
    }
    check_keys(&raw)?;
    check_arches(&raw)?;
    check_streams(&raw)?;
    check_kinds(&raw.kinds)?;
    if let Some(default) = &raw.default_kind {
        if !raw.kinds.iter().any(|k| &k.ftype == default) {
            return Err(Invalid::new(
                "catalog",
                "default_kind",
                default,
                "not one of the kinds",
            ));
        }
    }
    check_releases(&raw)?;
    Ok(Catalog {
        name: raw.name,
        title: raw.title,
        base_url,
        serial_separator,
        default_kind: raw.default_kind,
        checksums: raw.checksums,
        signature,
        keys: raw.keys,
        arches: raw.arches,
        releases: raw.releases,
        streams: raw.streams,
        kinds: raw.kinds,
        glance: raw.glance,
    })
}

/// The catalog's name, site, serial separator and checksum file.
fn check_identity(raw: &RawCatalog) -> Result<(Url, char), Invalid> {
    let catalog =
        |field: &str, value: &str, rule: &str| Invalid::new("catalog", field, value, rule);
    let name_ok = !raw.name.is_empty()
        && raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !name_ok {
        return Err(catalog("name", &raw.name, "letters, digits and '-' only"));
    }
    let base_url = Url::parse(&raw.base_url)
        .map_err(|e| catalog("base_url", &raw.base_url, &e.to_string()))?;
    if !matches!(base_url.scheme(), "https" | "http") || !raw.base_url.ends_with('/') {
        return Err(catalog(
            "base_url",
            &raw.base_url,
            "must be an http(s) URL ending with '/'",
        ));
    }
    let mut separator = raw.serial_separator.chars();
    let serial_separator = match (separator.next(), separator.next()) {
        (Some(c), None) if c.is_ascii_punctuation() => c,
        _ => {
            return Err(catalog(
                "serial_separator",
                &raw.serial_separator,
                "one punctuation character",
            ))
        }
    };
    let file = &raw.checksums.file;
    if file.is_empty() || file.contains('/') {
        return Err(catalog("checksums.file", file, "a plain file name"));
    }
    Ok((base_url, serial_separator))
}

/// Whether the checksum file is signed, and where the signature is.
fn check_signature(raw: &RawSignature) -> Result<Signature, Invalid> {
    match raw {
        RawSignature {
            published: false,
            file: None,
            format: None,
        } => Ok(Signature::NotPublished),
        RawSignature {
            published: false,
            file,
            ..
        } => Err(Invalid::new(
            "signature",
            "file",
            file.clone().unwrap_or_default(),
            "an unpublished signature has no file or format",
        )),
        RawSignature {
            published: true,
            file: Some(file),
            format: Some(format),
        } if !file.is_empty() && !file.contains('/') => Ok(Signature::Published {
            file: file.clone(),
            format: *format,
        }),
        RawSignature { file, .. } => Err(Invalid::new(
            "signature",
            "file",
            file.clone().unwrap_or_default(),
            "a published signature needs a plain file name and a format",
        )),
    }
}

fn check_keys(raw: &RawCatalog) -> Result<(), Invalid> {
    for key in &raw.keys {
        let entry = format!("key {:?}", key.name);
        let fingerprint_ok =
            key.fingerprint.len() == 40 && key.fingerprint.chars().all(|c| c.is_ascii_hexdigit());
        if !fingerprint_ok {
            return Err(Invalid::new(
                entry,
                "fingerprint",
                &key.fingerprint,
                "not 40 hex digits",
            ));
        }
        let armored = key
            .armored
            .trim_start()
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----");
        if !armored {
            return Err(Invalid::new(
                entry,
                "armored",
                "",
                "not an armored public key block",
            ));
        }
    }
    Ok(())
}

fn check_arches(raw: &RawCatalog) -> Result<(), Invalid> {
    if raw.arches.is_empty() {
        return Err(Invalid::new(
            "catalog",
            "arches",
            "",
            "at least one architecture",
        ));
    }
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    for (index, arch) in raw.arches.iter().enumerate() {
        let entry = format!("arch {:?}", arch.name);
        for (field, value) in [("name", &arch.name), ("glance", &arch.glance)] {
            if !plain(value) {
                return Err(Invalid::new(
                    entry,
                    field,
                    value,
                    "names must be plain words",
                ));
            }
        }
        if raw.arches[..index].iter().any(|a| a.name == arch.name) {
            return Err(Invalid::new(entry, "name", &arch.name, "listed twice"));
        }
    }
    Ok(())
}

fn check_streams(raw: &RawCatalog) -> Result<(), Invalid> {
    if raw.streams.is_empty() {
        return Err(Invalid::new(
            "catalog",
            "streams",
            "",
            "at least one stream",
        ));
    }
    for (name, stream) in &raw.streams {
        if !STREAM_NAMES.contains(&name.as_str()) {
            return Err(Invalid::new(
                format!("stream {name:?}"),
                "name",
                name,
                format!("not one of {}", STREAM_NAMES.join(", ")),
            ));
        }
        check_stream_dirs(name, stream)?;
        check_stream_file_name(name, stream, &raw.kinds)?;
    }
    Ok(())
}

/// The folder patterns of stream `name`.
fn check_stream_dirs(name: &str, stream: &StreamSpec) -> Result<(), Invalid> {
    let entry = format!("stream {name:?}");
    let dirs: [(&str, &str, &[Placeholder]); 3] = [
        ("releases_dir", &stream.releases_dir, &[]),
        ("release_dir", &stream.release_dir, &[V, C]),
        ("serial_dir", &stream.serial_dir, &[S]),
    ];
    for (field, text, allowed) in dirs {
        check_dir(&entry, field, text)?;
        check_pattern(&entry, field, text, allowed)?;
    }
    if !pattern::placeholders(&stream.serial_dir).is_ok_and(|p| p == [S]) {
        return Err(Invalid::new(
            entry,
            "serial_dir",
            &stream.serial_dir,
            "must contain {serial} once",
        ));
    }
    if let Some(alias) = &stream.alias_dir {
        check_dir(&entry, "alias_dir", alias)?;
        check_pattern(&entry, "alias_dir", alias, &[])?;
    }
    if let Some(streams) = &stream.simplestreams {
        check_dir(&entry, "simplestreams.root", &streams.root)?;
        let index_ok = !streams.index.is_empty()
            && !streams.index.starts_with('/')
            && !streams.index.split('/').any(|s| s == "..");
        if !index_ok || streams.datatype.is_empty() {
            return Err(Invalid::new(
                entry,
                "simplestreams.index",
                &streams.index,
                "a relative index path and a datatype",
            ));
        }
    }
    Ok(())
}

/// The file-name pattern of stream `name`: exactly one of `file_prefix` and `file_name`, with
/// `{arch}`, and a `{variant}` only when every plain kind names its variant.
fn check_stream_file_name(
    name: &str,
    stream: &StreamSpec,
    kinds: &[FileKind],
) -> Result<(), Invalid> {
    let entry = format!("stream {name:?}");
    let (field, text, allowed): (_, _, &[Placeholder]) =
        match (&stream.file_prefix, &stream.file_name) {
            (Some(prefix), None) => ("file_prefix", prefix, &[V, C, A]),
            (None, Some(name)) => ("file_name", name, &[V, C, A, S, W]),
            _ => {
                return Err(Invalid::new(
                    entry,
                    "file_prefix",
                    "",
                    "exactly one of file_prefix and file_name",
                ))
            }
        };
    check_pattern(&entry, field, text, allowed)?;
    let used = pattern::placeholders(text).unwrap_or_default();
    if !used.contains(&A) {
        return Err(Invalid::new(entry, field, text, "must contain {arch}"));
    }
    if text.contains('/') {
        return Err(Invalid::new(entry, field, text, "a file name, without '/'"));
    }
    if used.contains(&W) {
        if let Some(kind) = kinds
            .iter()
            .find(|k| k.dir.is_none() && k.variant.is_none())
        {
            return Err(Invalid::new(
                format!("kind {:?}", kind.ftype),
                "variant",
                "",
                format!("{entry} {field} needs a variant"),
            ));
        }
    }
    Ok(())
}

fn check_kinds(kinds: &[FileKind]) -> Result<(), Invalid> {
    for (index, kind) in kinds.iter().enumerate() {
        let entry = format!("kind {:?}", kind.ftype);
        if kind.ftype.is_empty() || kinds[..index].iter().any(|k| k.ftype == kind.ftype) {
            return Err(Invalid::new(
                entry,
                "ftype",
                &kind.ftype,
                "empty or listed twice",
            ));
        }
        check_kind(&entry, kind)?;
    }
    Ok(())
}

fn check_kind(entry: &str, kind: &FileKind) -> Result<(), Invalid> {
    if kind.suffixes.is_empty() {
        return Err(Invalid::new(entry, "suffixes", "", "at least one suffix"));
    }
    if let Some(era) = kind
        .suffixes
        .iter()
        .find(|era| era.suffix.is_empty() || era.suffix.contains('/'))
    {
        return Err(Invalid::new(
            entry,
            "suffix",
            &era.suffix,
            "suffixes are non-empty, without '/'",
        ));
    }
    if let Some(dir) = &kind.dir {
        check_dir(entry, "dir", dir)?;
    }
    if kind.role == FileRole::Disk && kind.disk_format.is_none() {
        return Err(Invalid::new(
            entry,
            "disk_format",
            "",
            "a disk needs a disk_format",
        ));
    }
    if let Some(variant) = &kind.variant {
        let plain = !variant.is_empty()
            && variant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(Invalid::new(
                entry,
                "variant",
                variant,
                "variant must be a plain word",
            ));
        }
    }
    Ok(())
}

fn check_releases(raw: &RawCatalog) -> Result<(), Invalid> {
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    for (index, release) in raw.releases.iter().enumerate() {
        let entry = format!("release {:?}", release.codename);
        let lower = release
            .codename
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !word(&release.codename) || !lower || !word(&release.version) {
            return Err(Invalid::new(
                entry,
                "codename",
                &release.codename,
                "a lower-case code name and a plain version",
            ));
        }
        let twice = raw.releases[..index]
            .iter()
            .any(|r| r.codename == release.codename || r.version == release.version);
        if twice {
            return Err(Invalid::new(
                entry,
                "codename",
                &release.codename,
                "listed twice",
            ));
        }
        if let Some(stream) = release
            .streams
            .iter()
            .flatten()
            .find(|stream| !raw.streams.contains_key(*stream))
        {
            return Err(Invalid::new(
                entry,
                "streams",
                stream,
                format!("the catalog has no {stream:?} stream"),
            ));
        }
    }
    Ok(())
}

/// Checks that a pattern uses only the placeholders it can be given.
fn check_pattern(
    entry: &str,
    field: &str,
    text: &str,
    allowed: &[Placeholder],
) -> Result<(), Invalid> {
    let used =
        pattern::placeholders(text).map_err(|e| Invalid::new(entry, field, text, e.to_string()))?;
    match used.iter().find(|p| !allowed.contains(p)) {
        Some(bad) => Err(Invalid::new(
            entry,
            field,
            text,
            format!("{bad} is not available here"),
        )),
        None => Ok(()),
    }
}

/// A relative folder path: empty or ending with `/`, no `..`, no leading `/`, no scheme.
fn check_dir(entry: &str, field: &str, text: &str) -> Result<(), Invalid> {
    let relative =
        !text.starts_with('/') && !text.contains("://") && !text.split('/').any(|s| s == "..");
    if relative && (text.is_empty() || text.ends_with('/')) {
        Ok(())
    } else {
        Err(Invalid::new(
            entry,
            field,
            text,
            "must be a relative folder ending with '/'",
        ))
    }
}
