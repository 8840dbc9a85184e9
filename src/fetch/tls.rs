//! Whose certificates are trusted, in one place for every HTTP client (mirror, Glance and
//! Keystone, OCI registries).
//!
//! Trusted by default: the system's store (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set, read by rustls-native-certs) and the built-in web roots (webpki-roots),
//! so a mirror, Keystone or Glance behind a private CA works as soon as the CA is where `curl`
//! would look. On top of that, PEM bundles named by the user (`--cacert`, `OS_CACERT`,
//! clouds.yaml `cacert`) are added; they are read once, when the configuration is made, so a bad
//! file is a usage error before any request. Turning verification off (`--insecure`,
//! clouds.yaml `verify: false`) is possible but said loudly every time a client is built.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::client::USER_AGENT;
use super::ClientConfig;
use crate::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read the CA certificates")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM file of CA certificates")]
    NotPem {
        path: PathBuf,
        #[source]
        source: Option<reqwest::Error>,
    },
}

impl TlsError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TlsError::Read { .. } | TlsError::NotPem { .. } => ErrorKind::Usage,
        }
    }
}

/// Certificate verification settings shared by every client.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// CA certificates trusted besides the system's and the built-in ones, with their file.
    extra_roots: Vec<(PathBuf, Vec<reqwest::Certificate>)>,
    /// Why verification is off (`--insecure`, `clouds.yaml verify: false`); `None`: on.
    insecure: Option<String>,
}

impl TlsConfig {
    /// Trusts the CA certificates of a PEM file (one or several certificates).
    pub fn add_ca_file(&mut self, path: &Path) -> Result<(), TlsError> {
        let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let certificates =
            reqwest::Certificate::from_pem_bundle(&bytes).map_err(|source| TlsError::NotPem {
                path: path.to_owned(),
                source: Some(source),
            })?;
        if certificates.is_empty() {
            return Err(TlsError::NotPem {
                path: path.to_owned(),
                source: None,
            });
        }
        self.extra_roots.push((path.to_owned(), certificates));
        Ok(())
    }

    /// Turns certificate verification off; `reason` names the setting that asked for it.
    pub fn disable_verification(&mut self, reason: &str) {
        self.insecure = Some(reason.to_owned());
    }

    pub fn verifies(&self) -> bool {
        self.insecure.is_none()
    }

    /// The files whose certificates are trusted on top of the system's.
    pub fn ca_files(&self) -> impl Iterator<Item = &Path> {
        self.extra_roots.iter().map(|(path, _)| path.as_path())
    }
}

/// The one way an HTTP client is made: user agent, connect timeout, proxies from the
/// environment (reqwest's default), and the trust settings of `config.tls`. No overall timeout:
/// a multi-GiB transfer may take an hour; callers bound stalls per chunk instead.
pub fn http_builder(config: &ClientConfig) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(config.connect_timeout)
        .tls_built_in_root_certs(true);
    for (_, certificates) in &config.tls.extra_roots {
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate.clone());
        }
    }
    if let Some(reason) = &config.tls.insecure {
        warn!(
            "TLS certificate verification is OFF ({reason}): any server can impersonate the \
             mirror, Keystone or Glance; use --cacert with your CA instead"
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = TlsConfig::default().add_ca_file(&path).unwrap_err();
        assert!(matches!(error, TlsError::NotPem { .. }), "{error:?}");
        assert!(error.to_string().contains("ca.pem"));
        assert_eq!(error.kind(), ErrorKind::Usage);
        let missing = TlsConfig::default()
            .add_ca_file(&dir.path().join("absent.pem"))
            .unwrap_err();
        assert!(matches!(missing, TlsError::Read { .. }));
    }

    #[test]
    fn verification_is_on_unless_turned_off() {
        let mut tls = TlsConfig::default();
        assert!(tls.verifies());
        tls.disable_verification("--insecure");
        assert!(!tls.verifies());
        assert!(http_builder(&ClientConfig {
            tls,
            ..ClientConfig::default()
        })
        .build()
        .is_ok());
    }
}
