//! Checks cloud-init user data before it goes into a seed: `cloudimg seed` and `cloudimg bake`
//! refuse what cloud-init would ignore or choke on, so a broken recipe is an error on the host,
//! not a guest that boots and does nothing.
//!
//! What is checked, in order: UTF-8; the first line names a user-data kind cloud-init knows
//! (`#cloud-config`, a `#!` script, `#include`, `#cloud-boothook`, a MIME multipart); for
//! `#cloud-config`, the YAML parses to a mapping (or to nothing), the keys cloudimg composes
//! with have the shape cloud-init expects, and top-level keys that no cloud-init module reads
//! are reported as warnings (a typo such as `packges` would otherwise be silently ignored).
//! Meta-data and network configuration are checked to be YAML mappings.

use serde_yaml_ng::{Mapping, Value};

/// The header that makes user data a cloud-config document.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

/// First-line prefixes of the other user-data kinds cloud-init accepts, checked as opaque.
const OTHER_HEADERS: [&str; 5] = [
    "#!",
    "#include",
    "#cloud-boothook",
    "#part-handler",
    "Content-Type: multipart/",
];

/// Top-level keys read by cloud-init's modules and its base configuration (cloud-init 22.4
/// to 24.x). Anything else is reported as unknown.
const KNOWN_KEYS: &[&str] = &[
    "allow_public_ssh_keys",
    "ansible",
    "apk_repos",
    "apt",
    "apt_pipelining",
    "apt_reboot_if_required",
    "apt_update",
    "apt_upgrade",
    "autoinstall",
    "bootcmd",
    "byobu_by_default",
    "ca-certs",
    "ca_certs",
    "chef",
    "chpasswd",
    "cloud_config_modules",
    "cloud_final_modules",
    "cloud_init_modules",
    "create_hostname_file",
    "datasource",
    "datasource_list",
    "debug",
    "device_aliases",
    "disable_ec2_metadata",
    "disable_root",
    "disable_root_opts",
    "disk_setup",
    "drivers",
    "fan",
    "final_message",
    "fqdn",
    "fs_setup",
    "groups",
    "growpart",
    "grub-dpkg",
    "grub_dpkg",
    "hostname",
    "keyboard",
    "keys_to_console",
    "landscape",
    "locale",
    "locale_configfile",
    "lxd",
    "manage_etc_hosts",
    "manage_resolv_conf",
    "mcollective",
    "merge_how",
    "merge_type",
    "mount_default_fields",
    "mounts",
    "network",
    "no_ssh_fingerprints",
    "ntp",
    "output",
    "package_reboot_if_required",
    "package_update",
    "package_upgrade",
    "packages",
    "password",
    "phone_home",
    "power_state",
    "prefer_fqdn_over_hostname",
    "preserve_hostname",
    "puppet",
    "random_seed",
    "reporting",
    "resize_rootfs",
    "resolv_conf",
    "rh_subscription",
    "rsyslog",
    "runcmd",
    "salt_minion",
    "snap",
    "spacewalk",
    "ssh",
    "ssh_authorized_keys",
    "ssh_deletekeys",
    "ssh_fp_console_blacklist",
    "ssh_genkeytypes",
    "ssh_import_id",
    "ssh_key_console_blacklist",
    "ssh_keys",
    "ssh_publish_hostkeys",
    "ssh_pwauth",
    "ssh_quiet_keygen",
    "swap",
    "system_info",
    "timezone",
    "ubuntu_advantage",
    "ubuntu_drivers",
    "ubuntu_pro",
    "updates",
    "user",
    "users",
    "vendor_data",
    "wireguard",
    "write_files",
    "yum_repo_dir",
    "yum_repos",
    "zypper",
];

/// Keys whose value must be a list (cloudimg appends to several of them).
const LIST_KEYS: [&str; 6] = [
    "bootcmd",
    "packages",
    "runcmd",
    "ssh_authorized_keys",
    "users",
    "write_files",
];

/// Why user data, meta-data or a network configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("{what} is not UTF-8 text")]
    NotText { what: &'static str },
    #[error(
        "{what} starts with {first_line:?}; cloud-init reads `#cloud-config` YAML, a `#!` \
         script, `#include`, `#cloud-boothook`, `#part-handler` or a MIME multipart"
    )]
    UnknownKind {
        what: &'static str,
        first_line: String,
    },
    #[error("{what} must be `#cloud-config` YAML here, not {kind}")]
    NotCloudConfig { what: &'static str, kind: String },
    #[error("{what} is not valid YAML")]
    Yaml {
        what: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{what} must be a YAML mapping of keys to values, not {found}")]
    NotMapping {
        what: &'static str,
        found: &'static str,
    },
    #[error("{what}: `{key}` must be a list, not {found}")]
    NotList {
        what: &'static str,
        key: String,
        found: &'static str,
    },
    #[error("{what}: entry {index} of `write_files` has no `path`")]
    WriteFileWithoutPath { what: &'static str, index: usize },
}

/// What kind of user data a document is, from its first line.
#[derive(Clone, Debug, PartialEq)]
pub enum UserData {
    /// `#cloud-config`: the parsed top-level mapping (empty when the document is).
    CloudConfig(Mapping),
    /// A script, include list, boothook or multipart: passed through unchecked.
    Other(String),
}

/// A document that passed, with the warnings to show.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub user_data: UserData,
    /// Unknown top-level keys, one message each.
    pub warnings: Vec<String>,
}

/// Checks user data as `cloudimg seed` takes it: any kind cloud-init reads.
pub fn user_data(bytes: &[u8]) -> Result<Checked, ValidationError> {
    const WHAT: &str = "user data";
    let text = std::str::from_utf8(bytes).map_err(|_| ValidationError::NotText { what: WHAT })?;
    let first_line = text.lines().next().unwrap_or("").trim_end();
    if first_line == CLOUD_CONFIG_HEADER {
        let mapping = mapping(WHAT, text)?;
        check_shapes(WHAT, &mapping)?;
        let warnings = unknown_keys(&mapping);
        return Ok(Checked {
            user_data: UserData::CloudConfig(mapping),
            warnings,
        });
    }
    match OTHER_HEADERS
        .iter()
        .find(|header| first_line.starts_with(**header))
    {
        Some(header) => Ok(Checked {
            user_data: UserData::Other((*header).to_owned()),
            warnings: Vec::new(),
        }),
        None => Err(ValidationError::UnknownKind {
            what: WHAT,
            first_line: first_line.chars().take(60).collect(),
        }),
    }
}

/// Checks user data that cloudimg composes with its own: it must be `#cloud-config`.
pub fn cloud_config(bytes: &[u8]) -> Result<(Mapping, Vec<String>), ValidationError> {
    let checked = user_data(bytes)?;
    match checked.user_data {
        UserData::CloudConfig(mapping) => Ok((mapping, checked.warnings)),
        UserData::Other(kind) => Err(ValidationError::NotCloudConfig {
            what: "user data",
            kind: format!("a `{kind}` document"),
        }),
    }
}

/// Checks NoCloud meta-data or a network configuration: a YAML mapping.
pub fn yaml_mapping(what: &'static str, bytes: &[u8]) -> Result<Mapping, ValidationError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ValidationError::NotText { what })?;
    mapping(what, text)
}

fn mapping(what: &'static str, text: &str) -> Result<Mapping, ValidationError> {
    let value: Value =
        serde_yaml_ng::from_str(text).map_err(|source| ValidationError::Yaml { what, source })?;
    match value {
        Value::Mapping(mapping) => Ok(mapping),
        Value::Null => Ok(Mapping::new()),
        other => Err(ValidationError::NotMapping {
            what,
            found: type_name(&other),
        }),
    }
}

/// The keys cloudimg appends to, and `write_files` entries, have cloud-init's shape.
fn check_shapes(what: &'static str, mapping: &Mapping) -> Result<(), ValidationError> {
    for key in LIST_KEYS {
        match mapping.get(key) {
            None | Some(Value::Sequence(_)) | Some(Value::Null) => {}
            Some(other) => {
                return Err(ValidationError::NotList {
                    what,
                    key: key.to_owned(),
                    found: type_name(other),
                })
            }
        }
    }
    if let Some(Value::Sequence(files)) = mapping.get("write_files") {
        for (index, file) in files.iter().enumerate() {
            if file.get("path").and_then(Value::as_str).is_none() {
                return Err(ValidationError::WriteFileWithoutPath { what, index });
            }
        }
    }
    Ok(())
}

fn unknown_keys(mapping: &Mapping) -> Vec<String> {
    mapping
        .keys()
        .filter_map(|key| match key.as_str() {
            Some(name) if KNOWN_KEYS.contains(&name) => None,
            Some(name) => Some(format!(
                "user data: unknown top-level key `{name}`; no cloud-init module reads it"
            )),
            None => Some(format!(
                "user data: top-level key {key:?} is not a string; cloud-init ignores it"
            )),
        })
        .collect()
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_config_parses_to_its_mapping() {
        let checked =
            user_data(b"#cloud-config\npackages: [htop]\nruncmd:\n  - echo hi\n").unwrap();
        let UserData::CloudConfig(mapping) = checked.user_data else {
            panic!("not cloud-config")
        };
        assert_eq!(mapping.len(), 2);
        assert!(checked.warnings.is_empty());
    }

    #[test]
    fn an_empty_cloud_config_is_valid() {
        let (mapping, warnings) = cloud_config(b"#cloud-config\n").unwrap();
        assert!(mapping.is_empty() && warnings.is_empty());
    }

    #[test]
    fn header_is_required() {
        // One byte off the header: `#cloud-confi` then `g` missing.
        let error = user_data(b"#cloud-confi\npackages: [htop]\n").unwrap_err();
        assert!(
            matches!(error, ValidationError::UnknownKind { .. }),
            "{error}"
        );
        assert!(matches!(
            user_data(b"packages: [htop]\n").unwrap_err(),
            ValidationError::UnknownKind { .. }
        ));
    }

    #[test]
    fn scripts_pass_for_seed_but_not_for_bake() {
        let checked = user_data(b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(checked.user_data, UserData::Other("#!".into()));
        assert!(matches!(
            cloud_config(b"#!/bin/sh\necho hi\n").unwrap_err(),
            ValidationError::NotCloudConfig { .. }
        ));
    }

    #[test]
    fn broken_yaml_is_refused() {
        let error = user_data(b"#cloud-config\nruncmd: [echo hi\n").unwrap_err();
        assert!(matches!(error, ValidationError::Yaml { .. }), "{error}");
    }

    #[test]
    fn a_list_at_top_level_is_refused() {
        let error = user_data(b"#cloud-config\n- packages\n").unwrap_err();
        assert!(
            matches!(error, ValidationError::NotMapping { .. }),
            "{error}"
        );
    }

    #[test]
    fn runcmd_must_be_a_list() {
        let error = user_data(b"#cloud-config\nruncmd: echo hi\n").unwrap_err();
        assert!(
            matches!(&error, ValidationError::NotList { key, .. } if key == "runcmd"),
            "{error}"
        );
    }

    #[test]
    fn write_files_entries_need_a_path() {
        let error = user_data(b"#cloud-config\nwrite_files:\n  - content: x\n").unwrap_err();
        assert!(matches!(
            error,
            ValidationError::WriteFileWithoutPath { index: 0, .. }
        ));
    }

    #[test]
    fn unknown_keys_are_warned_about() {
        let checked = user_data(b"#cloud-config\npackges: [htop]\nhostname: a\n").unwrap();
        assert_eq!(checked.warnings.len(), 1);
        assert!(
            checked.warnings[0].contains("packges"),
            "{:?}",
            checked.warnings
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        assert!(matches!(
            user_data(b"#cloud-config\n\xff\n").unwrap_err(),
            ValidationError::NotText { .. }
        ));
    }

    #[test]
    fn meta_data_must_be_a_mapping() {
        assert!(yaml_mapping("meta-data", b"instance-id: a\n").is_ok());
        assert!(yaml_mapping("meta-data", b"- a\n").is_err());
    }
}
