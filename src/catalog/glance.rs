//! The `[glance]` section of a source catalog: the Glance image properties every artifact of the
//! source carries, and presets of extra properties for the hypervisor a disk format targets.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Glance defaults of a source.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlanceSpec {
    /// Minimum RAM in MiB Glance should demand of a flavor (`min_ram`).
    #[serde(default)]
    pub min_ram: u64,
    /// Properties of every image (`os_distro`, `os_admin_user`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Extra properties per target, picked by name or by disk format.
    #[serde(default)]
    pub presets: Vec<GlancePreset>,
}

/// Properties that make an image boot well on one kind of hypervisor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlancePreset {
    pub name: String,
    /// Disk formats this preset applies to when none is named.
    #[serde(default)]
    pub disk_formats: Vec<String>,
    pub properties: BTreeMap<String, String>,
}

impl GlanceSpec {
    /// A preset by name, case-insensitively.
    pub fn preset(&self, name: &str) -> Option<&GlancePreset> {
        self.presets
            .iter()
            .find(|preset| preset.name.eq_ignore_ascii_case(name))
    }

    /// The first preset that lists `disk_format`, if any.
    pub fn preset_for_disk_format(&self, disk_format: &str) -> Option<&GlancePreset> {
        self.presets.iter().find(|preset| {
            preset
                .disk_formats
                .iter()
                .any(|known| known.eq_ignore_ascii_case(disk_format))
        })
    }

    /// Checks names are unique and property keys look like Glance's (`[a-z0-9_:.-]`).
    pub(super) fn validate(&self) -> Result<(), super::Invalid> {
        let valid_key = |key: &str| {
            !key.is_empty()
                && key.len() <= 255
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:.-".contains(c))
        };
        let keys = self
            .properties
            .keys()
            .chain(self.presets.iter().flat_map(|p| p.properties.keys()));
        for key in keys {
            if !valid_key(key) {
                return Err(super::Invalid::new(
                    "glance",
                    "property",
                    key,
                    "letters, digits, '_', ':', '.', '-'",
                ));
            }
        }
        for (index, preset) in self.presets.iter().enumerate() {
            if self.presets[..index]
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case(&preset.name))
            {
                return Err(super::Invalid::new(
                    format!("glance preset {:?}", preset.name),
                    "name",
                    &preset.name,
                    "defined twice",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> GlanceSpec {
        toml::from_str(text).unwrap()
    }

    const SAMPLE: &str = r#"
        min_ram = 512
        properties = { os_distro = "ubuntu" }
        [[presets]]
        name = "kvm"
        disk_formats = ["qcow2", "raw"]
        properties = { hw_disk_bus = "scsi" }
        [[presets]]
        name = "vmware"
        disk_formats = ["vmdk"]
        properties = { vmware_adaptertype = "lsiLogic" }
    "#;

    #[test]
    fn presets_are_found_by_name_and_by_disk_format() {
        let spec = spec(SAMPLE);
        assert!(spec.validate().is_ok());
        assert_eq!(spec.preset("KVM").map(|p| p.name.as_str()), Some("kvm"));
        assert_eq!(
            spec.preset_for_disk_format("vmdk").map(|p| p.name.as_str()),
            Some("vmware")
        );
        assert!(spec.preset_for_disk_format("vdi").is_none());
    }

    #[test]
    fn property_key_with_a_space_is_refused() {
        let spec = spec("properties = { \"os distro\" = \"ubuntu\" }");
        assert_eq!(spec.validate().unwrap_err().value, "os distro");
    }

    #[test]
    fn duplicate_preset_names_are_refused() {
        let spec = spec(
            "[[presets]]\nname = \"kvm\"\nproperties = {}\n\
             [[presets]]\nname = \"KVM\"\nproperties = {}\n",
        );
        assert!(spec.validate().is_err());
    }
}
