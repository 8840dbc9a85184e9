//! Glance's words: the `disk_format` and `container_format` values of an image record, and the
//! aki/ari/ami bundle, as types.
//!
//! This room is below everything that speaks of Glance images — the catalog model, `container`
//! (the vocabulary's rules), `pipeline` (the plan), `upload` and `mirror` — and depends on
//! nothing, so none of them needs another to name a format. The words are Glance's exactly
//! (`glance/common/config.py` `disk_formats`, `container_formats`), parsed case-insensitively
//! and always written in lower case. `containerdisk` is cloudimg's own word (a KubeVirt
//! containerDisk for registries), not a Glance one.

use std::fmt;
use std::str::FromStr;

/// A word that is not one of Glance's (or cloudimg's) for that field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} {word:?}; expected one of: {expected}")]
pub struct UnknownWord {
    /// `disk format` or `container format`.
    pub field: &'static str,
    pub word: String,
    pub expected: &'static str,
}

/// Glance's `disk_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
#[value(rename_all = "lower")]
pub enum DiskFormat {
    Ami,
    Ari,
    Aki,
    Vhd,
    Vhdx,
    Vmdk,
    Raw,
    Qcow2,
    Vdi,
    Iso,
    Ploop,
}

/// Glance's `container_format`, plus cloudimg's `containerdisk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
#[value(rename_all = "lower")]
pub enum ContainerFormat {
    /// No container: the file is the disk.
    Bare,
    /// An OVF descriptor beside its disk files.
    Ovf,
    /// An OVF package in one tar archive.
    Ova,
    /// Amazon kernel image.
    Aki,
    /// Amazon ramdisk image.
    Ari,
    /// Amazon machine image (root file system).
    Ami,
    /// A KubeVirt containerDisk: an OCI image whose layer holds `disk/<name>` (cloudimg's word,
    /// for registries; Glance's own `docker` is something else).
    #[value(name = "containerdisk")]
    ContainerDisk,
}

/// One image of an Amazon-style set, whose disk and container words are the same
/// (Glance requires it): the kernel (aki), the ramdisk (ari), the machine image (ami) that
/// names the other two by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Amazon {
    Kernel,
    Ramdisk,
    Machine,
}

const DISK_WORDS: &str = "ami, ari, aki, vhd, vhdx, vmdk, raw, qcow2, vdi, iso, ploop";
const CONTAINER_WORDS: &str = "bare, ovf, ova, aki, ari, ami, containerdisk";

impl DiskFormat {
    pub const ALL: [DiskFormat; 11] = [
        DiskFormat::Ami,
        DiskFormat::Ari,
        DiskFormat::Aki,
        DiskFormat::Vhd,
        DiskFormat::Vhdx,
        DiskFormat::Vmdk,
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vdi,
        DiskFormat::Iso,
        DiskFormat::Ploop,
    ];

    /// Glance's word.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Ami => "ami",
            DiskFormat::Ari => "ari",
            DiskFormat::Aki => "aki",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Iso => "iso",
            DiskFormat::Ploop => "ploop",
        }
    }

    /// The member of an Amazon set this word names, if any.
    pub fn amazon(self) -> Option<Amazon> {
        match self {
            DiskFormat::Aki => Some(Amazon::Kernel),
            DiskFormat::Ari => Some(Amazon::Ramdisk),
            DiskFormat::Ami => Some(Amazon::Machine),
            _ => None,
        }
    }
}

impl ContainerFormat {
    /// Every variant, in the order the CLI lists them.
    pub const ALL: [ContainerFormat; 7] = [
        ContainerFormat::Bare,
        ContainerFormat::Ovf,
        ContainerFormat::Ova,
        ContainerFormat::Aki,
        ContainerFormat::Ari,
        ContainerFormat::Ami,
        ContainerFormat::ContainerDisk,
    ];

    /// Glance's word (cloudimg's for `containerdisk`).
    pub fn name(self) -> &'static str {
        match self {
            ContainerFormat::Bare => "bare",
            ContainerFormat::Ovf => "ovf",
            ContainerFormat::Ova => "ova",
            ContainerFormat::Aki => "aki",
            ContainerFormat::Ari => "ari",
            ContainerFormat::Ami => "ami",
            ContainerFormat::ContainerDisk => "containerdisk",
        }
    }

    /// The member of an Amazon set this word names, if any.
    pub fn amazon(self) -> Option<Amazon> {
        match self {
            ContainerFormat::Aki => Some(Amazon::Kernel),
            ContainerFormat::Ari => Some(Amazon::Ramdisk),
            ContainerFormat::Ami => Some(Amazon::Machine),
            _ => None,
        }
    }
}

impl Amazon {
    /// The disk format word (the container format is the same word).
    pub fn disk_format(self) -> DiskFormat {
        match self {
            Amazon::Kernel => DiskFormat::Aki,
            Amazon::Ramdisk => DiskFormat::Ari,
            Amazon::Machine => DiskFormat::Ami,
        }
    }

    pub fn container_format(self) -> ContainerFormat {
        match self {
            Amazon::Kernel => ContainerFormat::Aki,
            Amazon::Ramdisk => ContainerFormat::Ari,
            Amazon::Machine => ContainerFormat::Ami,
        }
    }

    /// What a kernel or ramdisk image's name ends with when the user named the set.
    pub fn name_suffix(self) -> Option<&'static str> {
        match self {
            Amazon::Kernel => Some("kernel"),
            Amazon::Ramdisk => Some("ramdisk"),
            Amazon::Machine => None,
        }
    }
}

impl FromStr for DiskFormat {
    type Err = UnknownWord;

    fn from_str(word: &str) -> Result<DiskFormat, UnknownWord> {
        DiskFormat::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(word))
            .ok_or_else(|| UnknownWord {
                field: "disk format",
                word: word.to_owned(),
                expected: DISK_WORDS,
            })
    }
}

impl FromStr for ContainerFormat {
    type Err = UnknownWord;

    fn from_str(word: &str) -> Result<ContainerFormat, UnknownWord> {
        ContainerFormat::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(word))
            .ok_or_else(|| UnknownWord {
                field: "container format",
                word: word.to_owned(),
                expected: CONTAINER_WORDS,
            })
    }
}

macro_rules! words {
    ($type:ty) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        /// Case-insensitive, like the command line.
        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let word = String::deserialize(deserializer)?;
                word.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

words!(DiskFormat);
words!(ContainerFormat);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn words_round_trip_case_insensitively_and_print_lower_case() {
        for format in DiskFormat::ALL {
            assert_eq!(
                format.name().to_uppercase().parse::<DiskFormat>(),
                Ok(format)
            );
            let value = format.to_possible_value().unwrap();
            assert_eq!(value.get_name(), format.name());
        }
        for format in ContainerFormat::ALL {
            assert_eq!(
                format.name().to_uppercase().parse::<ContainerFormat>(),
                Ok(format)
            );
            let value = format.to_possible_value().unwrap();
            assert_eq!(value.get_name(), format.name());
        }
        assert_eq!(DiskFormat::ALL.len(), DiskFormat::value_variants().len());
        assert_eq!(
            ContainerFormat::ALL.len(),
            ContainerFormat::value_variants().len()
        );
    }

    #[test]
    fn unknown_words_name_the_field_and_the_choices() {
        let error = "qcow".parse::<DiskFormat>().unwrap_err();
        assert_eq!(error.field, "disk format");
        assert!(error.to_string().contains("qcow2"), "{error}");
        let error = "docker".parse::<ContainerFormat>().unwrap_err();
        assert!(error.to_string().contains("containerdisk"), "{error}");
    }

    #[test]
    fn the_amazon_bundle_uses_one_word_for_both_fields() {
        for part in [Amazon::Kernel, Amazon::Ramdisk, Amazon::Machine] {
            assert_eq!(part.disk_format().name(), part.container_format().name());
            assert_eq!(part.disk_format().amazon(), Some(part));
            assert_eq!(part.container_format().amazon(), Some(part));
        }
        assert_eq!(DiskFormat::Raw.amazon(), None);
    }

    #[test]
    fn serde_uses_the_words() {
        let json = serde_json::to_string(&(DiskFormat::Qcow2, ContainerFormat::ContainerDisk));
        assert_eq!(json.unwrap(), r#"["qcow2","containerdisk"]"#);
        let parsed: DiskFormat = serde_json::from_str(r#""VMDK""#).unwrap();
        assert_eq!(parsed, DiskFormat::Vmdk);
        assert!(serde_json::from_str::<DiskFormat>(r#""vmdk2""#).is_err());
    }
}
