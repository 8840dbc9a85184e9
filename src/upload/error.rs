//! Why an upload failed, with the facts (URL, image id, expected and actual values).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;

use crate::container::ContainerError;
use crate::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Missing or contradictory settings (no endpoint, no credentials, unknown cloud…).
    #[error(transparent)]
    Settings(#[from] Settings),
    /// A CA file (`--cacert`, `OS_CACERT`, clouds.yaml `cacert`) that cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::fetch::TlsError),
    #[error("{path}: cannot {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed clouds.yaml")]
    CloudsYaml {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A metadata file that cannot be read or does not parse.
    #[error(transparent)]
    Metadata(#[from] ContainerError),
    #[error("cannot set up the HTTP client")]
    Setup {
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: request failed")]
    Network {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    #[error("PUT {url}: the server took nothing for {timeout:?} (after {received} bytes)")]
    Stalled {
        url: String,
        timeout: Duration,
        received: u64,
    },
    #[error("{method} {url}: HTTP {status}: {message}")]
    Status {
        method: Method,
        url: String,
        status: u16,
        message: String,
    },
    #[error("gave up after {attempts} attempt(s)")]
    GaveUp {
        method: Method,
        url: String,
        attempts: u32,
        #[source]
        last: Box<UploadError>,
    },
    #[error("{method} {url}: response larger than the {limit}-byte limit")]
    TooLarge {
        method: Method,
        url: String,
        limit: u64,
    },
    #[error("{method} {url}: unexpected response: {reason}")]
    BadResponse {
        method: Method,
        url: String,
        reason: String,
    },
    /// Keystone refused the credentials.
    #[error("{url}: authentication failed (HTTP {status}): {message}")]
    AuthFailed {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "no {service} endpoint with interface {interface}{} in the service catalog \
         (offered: {offered}); pass --glance URL",
        region.as_deref().map(|r| format!(" in region {r}")).unwrap_or_default()
    )]
    NoEndpoint {
        service: &'static str,
        interface: String,
        region: Option<String>,
        offered: String,
    },
    /// Glance refused the bytes: format inspection (415, "failed safety checks"), quota, …
    #[error("{name}: Glance refused the image data (HTTP {status}): {message} (image {image_id})")]
    Refused {
        name: String,
        image_id: String,
        status: u16,
        message: String,
    },
    /// The artifact no longer matches its metadata file.
    #[error(
        "{path}: {what} is {actual} but its metadata says {expected}; the file changed since \
         its metadata was written"
    )]
    FileChanged {
        path: PathBuf,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// Glance stored something other than what was sent.
    #[error("image {image_id} ({name}): Glance reports {what} {actual}, expected {expected}")]
    Mismatch {
        name: String,
        image_id: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("image {image_id} ({name}): import failed: {reason}")]
    ImportFailed {
        name: String,
        image_id: String,
        reason: String,
    },
    #[error("image {image_id} ({name}): still {status} after {waited:?}; left in place")]
    ImportTimeout {
        name: String,
        image_id: String,
        status: String,
        waited: Duration,
    },
    #[error("the Glance server does not offer the {method} import method (offered: {offered})")]
    MethodUnavailable { method: String, offered: String },
    /// An image of the same name holds other bytes: a second one would make the name
    /// ambiguous (`openstack image show NAME` fails, scripts pick either).
    #[error(
        "{name}: Glance already has an image of this name with other content (image {image_id}, \
         {what} {theirs}, ours {ours}); not creating a second one: give this artifact another \
         name, or pass --allow-duplicates"
    )]
    NameTaken {
        name: String,
        image_id: String,
        what: &'static str,
        theirs: String,
        ours: String,
    },
}

/// What the user must give or change before anything is sent (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Settings {
    #[error("{path}: no cloud named {name:?} (OS_CLOUD); it defines: {}", defined.join(", "))]
    UnknownCloud {
        path: PathBuf,
        name: String,
        defined: Vec<String>,
    },
    #[error(
        "OS_CLOUD={name} but no clouds.yaml was found (looked at {})",
        list(searched)
    )]
    NoCloudsYaml {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error(
        "no Glance endpoint: pass --glance URL (or OS_IMAGE_URL), or configure Keystone with \
         OS_AUTH_URL or OS_CLOUD"
    )]
    NoGlance,
    #[error(
        "{auth_url} is set as the auth URL but no user is: set OS_USERNAME and OS_PASSWORD, \
         OS_APPLICATION_CREDENTIAL_ID and _SECRET, or OS_TOKEN"
    )]
    NoUser { auth_url: String },
    #[error("no password for the Keystone user at {auth_url}: set OS_PASSWORD")]
    NoPassword { auth_url: String },
    #[error("invalid {what} {value:?}")]
    BadUrl {
        what: String,
        value: String,
        #[source]
        source: url::ParseError,
    },
    #[error("{0}: no *{METADATA_SUFFIX} file in this directory", METADATA_SUFFIX = crate::container::glance::METADATA_SUFFIX)]
    NoMetadata(PathBuf),
    /// An `ami`'s kernel or ramdisk link naming a file with no metadata beside it.
    #[error("{metadata}: links to {linked}, but {expected} does not exist")]
    MissingLink {
        metadata: PathBuf,
        linked: String,
        expected: PathBuf,
    },
    #[error("{metadata}: artifact {file:?} is not a plain file name")]
    NotPlainName { metadata: PathBuf, file: String },
    /// An `ami` whose kernel or ramdisk was not uploaded first.
    #[error("{metadata}: {file} must be uploaded before it")]
    OutOfOrder { metadata: PathBuf, file: String },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl UploadError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            UploadError::Tls(e) => e.kind(),
            UploadError::Settings(_)
            | UploadError::CloudsYaml { .. }
            | UploadError::AuthFailed { .. }
            | UploadError::NoEndpoint { .. }
            | UploadError::MethodUnavailable { .. } => ErrorKind::Usage,
            UploadError::Metadata(e) => e.kind(),
            UploadError::Io { .. } | UploadError::Setup { .. } | UploadError::Refused { .. } => {
                ErrorKind::Other
            }
            // Credentials or policy: the caller must change something.
            UploadError::Status {
                status: 401 | 403, ..
            } => ErrorKind::Usage,
            UploadError::Status { status, .. }
                if !crate::fetch::retry::status_is_transient(*status) =>
            {
                ErrorKind::Other
            }
            UploadError::Network { .. }
            | UploadError::Timeout { .. }
            | UploadError::Stalled { .. }
            | UploadError::Status { .. }
            | UploadError::GaveUp { .. }
            | UploadError::TooLarge { .. }
            | UploadError::BadResponse { .. }
            | UploadError::ImportFailed { .. }
            | UploadError::ImportTimeout { .. } => ErrorKind::Network,
            UploadError::FileChanged { .. } | UploadError::Mismatch { .. } => ErrorKind::Integrity,
            UploadError::NameTaken { .. } => ErrorKind::NameTaken,
        }
    }

    pub(crate) fn io(path: &Path, action: &'static str, source: std::io::Error) -> UploadError {
        UploadError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }

    /// Whether trying again may succeed: connection trouble, timeouts, stalls, 408, 429, 5xx.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            UploadError::Status { status, .. } => crate::fetch::retry::status_is_transient(*status),
            UploadError::Network { source, .. } => !(source.is_builder() || source.is_redirect()),
            UploadError::Timeout { .. } | UploadError::Stalled { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status of a final answer, looking through retries.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            UploadError::Status { status, .. } => Some(*status),
            UploadError::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small_enough_to_return_by_value() {
        // Clippy's result_large_err limit.
        assert!(std::mem::size_of::<UploadError>() <= 128);
    }

    #[test]
    fn kinds_follow_the_exit_code_contract() {
        let mismatch = UploadError::Mismatch {
            name: "n".into(),
            image_id: "i".into(),
            what: "checksum",
            expected: "a".into(),
            actual: "b".into(),
        };
        assert_eq!(mismatch.kind(), ErrorKind::Integrity);
        let gave_up = UploadError::GaveUp {
            method: Method::GET,
            url: "http://127.0.0.1:1/v2/images".into(),
            attempts: 1,
            last: Box::new(UploadError::Status {
                method: Method::GET,
                url: "http://127.0.0.1:1/v2/images".into(),
                status: 503,
                message: String::new(),
            }),
        };
        assert_eq!(gave_up.kind(), ErrorKind::Network);
        assert_eq!(gave_up.status(), Some(503));
        assert_eq!(
            UploadError::Settings(Settings::NoGlance).kind(),
            ErrorKind::Usage
        );
    }
}
