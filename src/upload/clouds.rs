//! `clouds.yaml`: the named clouds of the OpenStack client configuration (`OS_CLOUD`).
//!
//! Only what an upload needs is read: `auth` (password, token or application credential),
//! `auth_type`, `region_name`, `interface`, an image endpoint override, and the TLS settings
//! `cacert` and `verify`. A `secure.yaml` beside the `clouds.yaml` (where operators keep the
//! passwords) is merged into it key by key, its values winning, as the OpenStack client does.
//! Unknown keys are ignored; vendor profiles are not supported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Settings, UploadError};

#[derive(Debug, Default, serde::Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, Cloud>,
}

/// One entry under `clouds:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Cloud {
    #[serde(default)]
    pub auth: CloudAuth,
    pub auth_type: Option<String>,
    pub region_name: Option<String>,
    pub interface: Option<String>,
    /// Bypasses the catalog, like `--glance`.
    pub image_endpoint_override: Option<String>,
    /// A CA bundle (PEM) for Keystone and Glance.
    pub cacert: Option<String>,
    /// `false` turns certificate verification off (warned).
    pub verify: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct CloudAuth {
    pub auth_url: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password: Option<String>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    /// Applies to user and project when their own domain is not given.
    pub domain_name: Option<String>,
    pub domain_id: Option<String>,
    pub token: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_secret: Option<String>,
}

/// Where `clouds.yaml` is looked for, in order: `$OS_CLIENT_CONFIG_FILE`, the current
/// directory, the user's configuration directory, `/etc/openstack`.
pub fn search_path(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(file) = env("OS_CLIENT_CONFIG_FILE").filter(|v| !v.is_empty()) {
        paths.push(PathBuf::from(file));
    }
    paths.push(PathBuf::from("clouds.yaml"));
    let config_home = env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")));
    if let Some(dir) = config_home {
        paths.push(dir.join("openstack/clouds.yaml"));
    }
    paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    paths
}

/// The file beside `clouds.yaml` that holds its secrets.
const SECURE_FILE: &str = "secure.yaml";

/// The cloud called `name` from the first existing file of `paths` (as the OpenStack client
/// does: later files are not consulted), with `secure.yaml` from the same folder merged in.
pub fn load(name: &str, paths: &[PathBuf]) -> Result<Cloud, UploadError> {
    for path in paths {
        let Some(mut clouds) = read_yaml(path)? else {
            continue;
        };
        let secure_path = path.with_file_name(SECURE_FILE);
        if let Some(secure) = read_yaml(&secure_path)? {
            merge(&mut clouds, secure);
        }
        let file: CloudsFile =
            serde_yaml_ng::from_value(clouds).map_err(|source| UploadError::CloudsYaml {
                path: path.clone(),
                source,
            })?;
        return file.clouds.get(name).cloned().ok_or_else(|| {
            Settings::UnknownCloud {
                path: path.clone(),
                name: name.to_owned(),
                defined: file.clouds.keys().cloned().collect(),
            }
            .into()
        });
    }
    Err(Settings::NoCloudsYaml {
        name: name.to_owned(),
        searched: paths.to_vec(),
    }
    .into())
}

/// A YAML file as a value; `None` when it does not exist.
fn read_yaml(path: &Path) -> Result<Option<serde_yaml_ng::Value>, UploadError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(UploadError::io(path, "read", e)),
    };
    parse(&text)
        .map(Some)
        .map_err(|source| UploadError::CloudsYaml {
            path: path.to_owned(),
            source,
        })
}

/// Merges `over` into `base`: mappings key by key, recursively; anything else replaced.
fn merge(base: &mut serde_yaml_ng::Value, over: serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn parse(text: &str) -> Result<serde_yaml_ng::Value, serde_yaml_ng::Error> {
    // An empty file is an empty configuration, not an error.
    if text.trim().is_empty() {
        return Ok(serde_yaml_ng::Value::Mapping(Default::default()));
    }
    serde_yaml_ng::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUDS: &str = "\
clouds:
  devstack:
    auth:
      auth_url: http://keystone.example:5000/v3
      username: demo
      password: secret
      project_name: demo
      user_domain_name: Default
      project_domain_id: default
    region_name: RegionOne
    interface: internal
    identity_api_version: 3
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://cloud.example:5000
      application_credential_id: abc
      application_credential_secret: xyz
";

    #[test]
    fn named_cloud_is_read_with_auth_region_and_interface() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(&path, CLOUDS).unwrap();
        let cloud = load("devstack", &[dir.path().join("absent.yaml"), path.clone()]).unwrap();
        assert_eq!(
            cloud.auth.auth_url.as_deref(),
            Some("http://keystone.example:5000/v3")
        );
        assert_eq!(cloud.auth.username.as_deref(), Some("demo"));
        assert_eq!(cloud.auth.project_domain_id.as_deref(), Some("default"));
        assert_eq!(cloud.region_name.as_deref(), Some("RegionOne"));
        assert_eq!(cloud.interface.as_deref(), Some("internal"));
        let appcred = load("appcred", &[path]).unwrap();
        assert_eq!(
            appcred.auth_type.as_deref(),
            Some("v3applicationcredential")
        );
        assert_eq!(
            appcred.auth.application_credential_secret.as_deref(),
            Some("xyz")
        );
    }

    #[test]
    fn unknown_cloud_names_the_file_and_the_clouds_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(&path, CLOUDS).unwrap();
        let error = load("prod", &[path]).unwrap_err().to_string();
        assert!(error.contains("no cloud named \"prod\""), "{error}");
        assert!(error.contains("appcred, devstack"), "{error}");
    }

    #[test]
    fn only_the_first_existing_file_counts() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.yaml");
        let second = dir.path().join("b.yaml");
        std::fs::write(&first, "clouds: {}\n").unwrap();
        std::fs::write(&second, CLOUDS).unwrap();
        assert!(load("devstack", &[first, second]).is_err());
    }

    #[test]
    fn malformed_yaml_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(&path, "clouds: [unclosed\n").unwrap();
        let error = load("x", std::slice::from_ref(&path)).unwrap_err();
        assert!(matches!(error, UploadError::CloudsYaml { .. }), "{error:?}");
        assert!(error.to_string().contains("clouds.yaml"));
    }

    #[test]
    fn secure_yaml_beside_clouds_yaml_fills_in_secrets_and_tls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(&path, CLOUDS).unwrap();
        std::fs::write(
            dir.path().join("secure.yaml"),
            "clouds:\n  devstack:\n    auth:\n      password: from-secure\n    cacert: /etc/ca.pem\n    verify: false\n",
        )
        .unwrap();
        let cloud = load("devstack", &[path]).unwrap();
        assert_eq!(cloud.auth.password.as_deref(), Some("from-secure"));
        // Keys secure.yaml does not have are kept.
        assert_eq!(cloud.auth.username.as_deref(), Some("demo"));
        assert_eq!(cloud.cacert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(cloud.verify, Some(false));
    }

    #[test]
    fn search_path_prefers_the_explicit_file_then_cwd_then_home_then_etc() {
        let env = |key: &str| match key {
            "OS_CLIENT_CONFIG_FILE" => Some("/tmp/mine.yaml".to_owned()),
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        assert_eq!(
            search_path(&env),
            vec![
                PathBuf::from("/tmp/mine.yaml"),
                PathBuf::from("clouds.yaml"),
                PathBuf::from("/home/u/.config/openstack/clouds.yaml"),
                PathBuf::from("/etc/openstack/clouds.yaml"),
            ]
        );
    }
}
