//! `docker://REGISTRY/REPOSITORY[:TAG]`, the destination words skopeo and podman use.
//!
//! The registry part is required (no implicit Docker Hub: a lab pushes to its own registry);
//! repository components and tags follow the distribution spec's grammar.

use std::fmt;

use super::OciError;

/// The transport prefix, as skopeo spells it.
pub const TRANSPORT: &str = "docker://";
/// Longest tag (distribution spec).
const MAX_TAG: usize = 128;
/// Longest repository name, registry included (distribution spec).
const MAX_NAME: usize = 255;

/// A registry repository and, optionally, a tag in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// `path/to/repo`.
    pub repository: String,
    pub tag: Option<String>,
}

impl Reference {
    /// Parses `docker://host[:port]/repo[:tag]` (the `docker://` prefix may be left out).
    pub fn parse(text: &str) -> Result<Reference, OciError> {
        let bad = |reason: &str| OciError::invalid("registry reference", text, reason);
        let rest = text.strip_prefix(TRANSPORT).unwrap_or(text);
        if rest.contains('@') {
            return Err(bad("digest references cannot be pushed to; name a tag"));
        }
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected REGISTRY/REPOSITORY[:TAG]"))?;
        if !is_registry(registry) {
            return Err(bad(
                "the registry must be a host name or address, with an optional port",
            ));
        }
        // A ':' after the last '/' separates the tag.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (path, None),
        };
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(bad("the name is longer than 255 characters"));
        }
        if repository.is_empty() || !repository.split('/').all(is_component) {
            return Err(bad(
                "repository components are lowercase letters and digits, separated by '.', '_', \
                 '__' or '-'",
            ));
        }
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
        })
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), OciError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= MAX_TAG {
        Ok(())
    } else {
        Err(OciError::invalid(
            "tag",
            tag,
            "tags are 1 to 128 of letters, digits, '_', '.', '-', not starting with '.' or '-'",
        ))
    }
}

fn is_registry(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        // A bracketed IPv6 literal keeps its colons.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (text, None),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_component(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(b) {
            if !(separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|s| s == b'-'))
            {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_repository_and_tag_are_split() {
        let r = Reference::parse("docker://127.0.0.1:5000/lab/ubuntu:noble-20240821").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "lab/ubuntu");
        assert_eq!(r.tag.as_deref(), Some("noble-20240821"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/lab/ubuntu:noble-20240821");
        let untagged = Reference::parse("registry.example.org/vm/noble").unwrap();
        assert_eq!(untagged.tag, None);
        assert_eq!(untagged.repository, "vm/noble");
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "docker://ubuntu",
            "docker://host/Upper",
            "docker://host/a//b",
            "docker://host/repo:-tag",
            "docker://host/repo@sha256:00",
            "docker://ho st/repo",
            "docker://host:port/repo",
            "docker://host/../etc",
            "docker://host/repo:",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn components_allow_the_spec_separators_only() {
        assert!(is_component("a.b_c__d-e---f"));
        assert!(!is_component("a___b"));
        assert!(!is_component("-a"));
        assert!(!is_component("a."));
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        assert!(check_tag("latest").is_ok());
        assert!(check_tag("noble-20240821.1").is_ok());
        assert!(check_tag(".x").is_err());
        assert!(check_tag(&"a".repeat(129)).is_err());
    }
}
