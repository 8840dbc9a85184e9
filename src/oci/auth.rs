//! Registry credentials and the challenges that ask for them.
//!
//! Credentials come from the containers auth files, in the order of containers-auth.json(5):
//! `$REGISTRY_AUTH_FILE` alone when set, else `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, then Docker's `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`. In each, the most specific key wins (`host/ns/repo`, then `host/ns`,
//! then `host`); the first file with a match is used. Credential helpers are not run.
//!
//! A `401` carries `WWW-Authenticate`: `Basic` means send the credentials on every request;
//! `Bearer realm=…,service=…,scope=…` means fetch a token from the realm (with the credentials,
//! if any) and send that. [`Challenge::parse`] reads the header; the token request itself is in
//! [`super::registry`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::upload::Secret;
use crate::ErrorKind;

/// Largest auth file read: real ones are a few KiB.
const AUTH_FILE_LIMIT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: cannot read the registry auth file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a containers auth file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// The registry wants credentials and none were found.
    #[error("{registry} asks for credentials and none are configured for it (podman login / docker login, or REGISTRY_AUTH_FILE)")]
    NoCredentials { registry: String },
    /// The registry refused the credentials given.
    #[error("{registry} refused the credentials from {source_file}")]
    Refused {
        registry: String,
        source_file: String,
    },
    #[error("{registry}: cannot answer the challenge {header:?}")]
    BadChallenge { registry: String, header: String },
}

impl AuthError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::Read { .. } => ErrorKind::Other,
            AuthError::Malformed { .. }
            | AuthError::NoCredentials { .. }
            | AuthError::Refused { .. }
            | AuthError::BadChallenge { .. } => ErrorKind::Usage,
        }
    }
}

/// A user name and password for one registry, and the file they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    pub origin: PathBuf,
}

impl Credentials {
    /// The `Authorization` value for HTTP basic authentication.
    pub fn basic(&self) -> Secret {
        let pair = format!("{}:{}", self.username, self.password.expose());
        Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    }
}

/// Where auth files are looked for, from the environment (injected for tests).
#[derive(Clone, Debug, Default)]
pub struct AuthFiles {
    pub files: Vec<PathBuf>,
}

impl AuthFiles {
    /// The files of containers-auth.json(5), from this process's environment.
    pub fn from_env() -> AuthFiles {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        AuthFiles::from_vars(
            var("REGISTRY_AUTH_FILE"),
            var("XDG_RUNTIME_DIR"),
            var("HOME"),
            var("DOCKER_CONFIG"),
        )
    }

    fn from_vars(
        auth_file: Option<PathBuf>,
        runtime_dir: Option<PathBuf>,
        home: Option<PathBuf>,
        docker_config: Option<PathBuf>,
    ) -> AuthFiles {
        if let Some(file) = auth_file {
            return AuthFiles { files: vec![file] };
        }
        let mut files = Vec::new();
        if let Some(dir) = runtime_dir {
            files.push(dir.join("containers/auth.json"));
        }
        if let Some(home) = &home {
            files.push(home.join(".config/containers/auth.json"));
        }
        match (docker_config, &home) {
            (Some(dir), _) => files.push(dir.join("config.json")),
            (None, Some(home)) => files.push(home.join(".docker/config.json")),
            (None, None) => {}
        }
        AuthFiles { files }
    }

    /// Credentials for `registry`/`repository`, from the first file that has some.
    pub fn lookup(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Option<Credentials>, AuthError> {
        for path in &self.files {
            let Some(file) = read_auth_file(path)? else {
                continue;
            };
            if let Some(credentials) = file.lookup(path, registry, repository)? {
                return Ok(Some(credentials));
            }
            if file.cred_helpers.contains_key(registry) || file.creds_store.is_some() {
                tracing::warn!(file = %path.display(), registry,
                    "credential helpers are not run by cloudimg; store the credentials in the file");
            }
        }
        Ok(None)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// `None` when the file does not exist.
fn read_auth_file(path: &Path) -> Result<Option<AuthFile>, AuthError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(AUTH_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > AUTH_FILE_LIMIT {
        return Err(AuthError::Malformed {
            path: path.to_owned(),
            reason: format!("larger than {AUTH_FILE_LIMIT} bytes"),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AuthError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// An `auths` key without Docker's historical decorations: `https://host/v1/` → `host`.
fn normalise_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.trim_end_matches('/');
    key.strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key)
}

impl AuthFile {
    fn lookup(
        &self,
        path: &Path,
        registry: &str,
        repository: &str,
    ) -> Result<Option<Credentials>, AuthError> {
        // Most specific first: host/a/b/c, host/a/b, host/a, host.
        let mut candidates = vec![registry.to_owned()];
        let mut prefix = registry.to_owned();
        for component in repository.split('/') {
            prefix.push('/');
            prefix.push_str(component);
            candidates.push(prefix.clone());
        }
        for candidate in candidates.iter().rev() {
            let entry = self
                .auths
                .iter()
                .find(|(key, _)| normalise_key(key) == candidate.as_str());
            if let Some((_, AuthEntry { auth: Some(auth) })) = entry {
                return decode(path, candidate, auth).map(Some);
            }
        }
        Ok(None)
    }
}

fn decode(path: &Path, key: &str, auth: &str) -> Result<Credentials, AuthError> {
    let malformed = |reason: &str| AuthError::Malformed {
        path: path.to_owned(),
        reason: format!("auths[{key:?}].auth: {reason}"),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| malformed("not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| malformed("not user:password"))?;
    Ok(Credentials {
        username: username.to_owned(),
        password: Secret::new(password),
        origin: path.to_owned(),
    })
}

/// A parsed `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"` (quoted values may
    /// hold commas; parameter names are case-insensitive).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parameters(rest)?;
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            }),
            _ => None,
        }
    }
}

/// `a="x, y", b=z` → {a: "x, y", b: "z"}; `None` when malformed.
fn parameters(text: &str) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(params);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        chars.next()?; // '='
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_a_comma_in_the_scope() {
        let header = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:lab/noble:pull,push""#;
        assert_eq!(
            Challenge::parse(header),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:lab/noble:pull,push".into()),
            })
        );
    }

    #[test]
    fn basic_challenge_and_garbage() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=\"x\""), None);
        assert_eq!(Challenge::parse("Bearer realm=\"unterminated"), None);
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    fn auth_file(dir: &Path, name: &str, json: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn the_most_specific_key_of_the_first_matching_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        // dXNlcjpwYXNz = user:pass, bGFiOnNlY3JldDpjb2xvbg== = lab:secret:colon
        let first = auth_file(
            dir.path(),
            "a.json",
            r#"{"auths": {"other:5000": {"auth": "dXNlcjpwYXNz"}}}"#,
        );
        let second = auth_file(
            dir.path(),
            "b.json",
            r#"{"auths": {"https://reg:5000/v1/": {"auth": "dXNlcjpwYXNz"},
                          "reg:5000/lab": {"auth": "bGFiOnNlY3JldDpjb2xvbg=="}}}"#,
        );
        let files = AuthFiles {
            files: vec![dir.path().join("absent.json"), first, second.clone()],
        };
        let found = files.lookup("reg:5000", "lab/noble").unwrap().unwrap();
        assert_eq!(found.username, "lab");
        assert_eq!(found.password, Secret::new("secret:colon"));
        assert_eq!(found.origin, second);
        let found = files.lookup("reg:5000", "other/noble").unwrap().unwrap();
        assert_eq!(found.username, "user");
        assert_eq!(files.lookup("nowhere", "x").unwrap(), None);
    }

    #[test]
    fn registry_auth_file_alone_is_used_when_set() {
        let files = AuthFiles::from_vars(
            Some("/a.json".into()),
            Some("/run/user/0".into()),
            Some("/root".into()),
            None,
        );
        assert_eq!(files.files, vec![PathBuf::from("/a.json")]);
        let files =
            AuthFiles::from_vars(None, Some("/run/user/0".into()), Some("/root".into()), None);
        assert_eq!(
            files.files,
            vec![
                PathBuf::from("/run/user/0/containers/auth.json"),
                PathBuf::from("/root/.config/containers/auth.json"),
                PathBuf::from("/root/.docker/config.json"),
            ]
        );
    }

    #[test]
    fn malformed_entries_are_reported_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = auth_file(
            dir.path(),
            "a.json",
            r#"{"auths": {"reg": {"auth": "!!"}}}"#,
        );
        let files = AuthFiles { files: vec![path] };
        let error = files.lookup("reg", "x").unwrap_err();
        assert!(matches!(error, AuthError::Malformed { .. }), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Usage);
    }

    #[test]
    fn basic_header_encodes_user_and_password() {
        let credentials = Credentials {
            username: "user".into(),
            password: Secret::new("pass"),
            origin: PathBuf::new(),
        };
        assert_eq!(credentials.basic(), Secret::new("Basic dXNlcjpwYXNz"));
    }
}
