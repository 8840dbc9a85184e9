//! Catalog patterns: `releases/{version}/`, `{codename}-server-cloudimg-{arch}`.
//!
//! A pattern is literal text with `{name}` placeholders. Expansion is a pure function; which
//! placeholders a field may use is checked when the catalog is loaded.

use std::cmp::Ordering;
use std::fmt;

/// A placeholder a pattern may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// The series number: `24.04` (Ubuntu), `12` (Debian).
    Version,
    /// The release code name: `noble`, `bookworm`.
    Codename,
    /// The source's architecture name: `amd64`.
    Arch,
    /// One build: `20240821`, `20240821.1`, `20240717-1811`.
    Serial,
    /// The image variant a file kind belongs to: Debian's `genericcloud`, `nocloud`.
    Variant,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Placeholder> {
        match name {
            "version" => Some(Placeholder::Version),
            "codename" => Some(Placeholder::Codename),
            "arch" => Some(Placeholder::Arch),
            "serial" => Some(Placeholder::Serial),
            "variant" => Some(Placeholder::Variant),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Placeholder::Version => "version",
            Placeholder::Codename => "codename",
            Placeholder::Arch => "arch",
            Placeholder::Serial => "serial",
            Placeholder::Variant => "variant",
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

/// The values to substitute; a placeholder whose value is `None` cannot be expanded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vars<'a> {
    pub version: Option<&'a str>,
    pub codename: Option<&'a str>,
    pub arch: Option<&'a str>,
    pub serial: Option<&'a str>,
    pub variant: Option<&'a str>,
}

impl<'a> Vars<'a> {
    fn get(&self, placeholder: Placeholder) -> Option<&'a str> {
        match placeholder {
            Placeholder::Version => self.version,
            Placeholder::Codename => self.codename,
            Placeholder::Arch => self.arch,
            Placeholder::Serial => self.serial,
            Placeholder::Variant => self.variant,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern {pattern:?}: unknown placeholder {{{name}}}")]
    UnknownPlaceholder { pattern: String, name: String },
    #[error("pattern {pattern:?}: unbalanced brace at byte {offset}")]
    Unbalanced { pattern: String, offset: usize },
    #[error("pattern {pattern:?}: no value for {placeholder}")]
    Missing {
        pattern: String,
        placeholder: Placeholder,
    },
}

/// One piece of a parsed pattern.
enum Piece<'p> {
    Literal(&'p str),
    Slot(Placeholder),
}

fn pieces(pattern: &str) -> Result<Vec<Piece<'_>>, PatternError> {
    let mut out = Vec::new();
    let mut rest = pattern;
    let mut offset = 0;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                out.push(Piece::Literal(rest));
                break;
            }
            Some(at) => {
                if rest[at..].starts_with('}') {
                    return Err(PatternError::Unbalanced {
                        pattern: pattern.to_owned(),
                        offset: offset + at,
                    });
                }
                if at > 0 {
                    out.push(Piece::Literal(&rest[..at]));
                }
                let after = &rest[at + 1..];
                let close = after.find('}').ok_or_else(|| PatternError::Unbalanced {
                    pattern: pattern.to_owned(),
                    offset: offset + at,
                })?;
                let name = &after[..close];
                let placeholder = Placeholder::from_name(name).ok_or_else(|| {
                    PatternError::UnknownPlaceholder {
                        pattern: pattern.to_owned(),
                        name: name.to_owned(),
                    }
                })?;
                out.push(Piece::Slot(placeholder));
                let consumed = at + 1 + close + 1;
                offset += consumed;
                rest = &rest[consumed..];
            }
        }
    }
    Ok(out)
}

/// The placeholders a pattern uses, in order; fails on unknown names or stray braces.
pub fn placeholders(pattern: &str) -> Result<Vec<Placeholder>, PatternError> {
    Ok(pieces(pattern)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Slot(placeholder) => Some(placeholder),
            Piece::Literal(_) => None,
        })
        .collect())
}

/// Substitutes every placeholder of `pattern`.
pub fn expand(pattern: &str, vars: &Vars<'_>) -> Result<String, PatternError> {
    let mut out = String::with_capacity(pattern.len() + 32);
    for piece in pieces(pattern)? {
        match piece {
            Piece::Literal(text) => out.push_str(text),
            Piece::Slot(placeholder) => {
                out.push_str(vars.get(placeholder).ok_or(PatternError::Missing {
                    pattern: pattern.to_owned(),
                    placeholder,
                })?)
            }
        }
    }
    Ok(out)
}

/// Orders release versions component by component: `9.10 < 16.04 < 24.04`, `11 < 12`.
/// Numeric components compare as numbers, anything else as text (after numbers).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_every_placeholder() {
        let vars = Vars {
            version: Some("24.04"),
            codename: Some("noble"),
            arch: Some("amd64"),
            serial: Some("20240821"),
            variant: None,
        };
        assert_eq!(
            expand("ubuntu-{version}-server-cloudimg-{arch}", &vars).unwrap(),
            "ubuntu-24.04-server-cloudimg-amd64"
        );
        assert_eq!(
            expand("{codename}/{serial}/", &vars).unwrap(),
            "noble/20240821/"
        );
        assert_eq!(expand("", &vars).unwrap(), "");
    }

    #[test]
    fn variant_fills_debian_file_names() {
        let vars = Vars {
            version: Some("12"),
            arch: Some("amd64"),
            serial: Some("20240717-1811"),
            variant: Some("genericcloud"),
            ..Vars::default()
        };
        assert_eq!(
            expand("debian-{version}-{variant}-{arch}-{serial}", &vars).unwrap(),
            "debian-12-genericcloud-amd64-20240717-1811"
        );
        // One letter off is not a placeholder.
        assert!(matches!(
            placeholders("{varient}"),
            Err(PatternError::UnknownPlaceholder { name, .. }) if name == "varient"
        ));
    }

    #[test]
    fn missing_value_is_reported() {
        let vars = Vars {
            codename: Some("noble"),
            ..Vars::default()
        };
        assert_eq!(
            expand("releases/{version}/", &vars),
            Err(PatternError::Missing {
                pattern: "releases/{version}/".to_owned(),
                placeholder: Placeholder::Version
            })
        );
    }

    #[test]
    fn unknown_placeholder_is_rejected() {
        assert!(matches!(
            placeholders("{codname}/"),
            Err(PatternError::UnknownPlaceholder { name, .. }) if name == "codname"
        ));
    }

    #[test]
    fn stray_braces_are_rejected() {
        assert!(matches!(
            placeholders("a{version"),
            Err(PatternError::Unbalanced { offset: 1, .. })
        ));
        assert!(matches!(
            placeholders("a}b"),
            Err(PatternError::Unbalanced { offset: 1, .. })
        ));
    }

    #[test]
    fn placeholders_are_listed_in_order() {
        assert_eq!(
            placeholders("{codename}-x-{arch}").unwrap(),
            vec![Placeholder::Codename, Placeholder::Arch]
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("9.10", "16.04"), Ordering::Less);
        assert_eq!(compare_versions("16.04", "16.04"), Ordering::Equal);
        assert_eq!(compare_versions("24.04", "16.10"), Ordering::Greater);
        assert_eq!(compare_versions("12", "11"), Ordering::Greater);
        assert_eq!(compare_versions("sid", "13"), Ordering::Greater);
    }
}
