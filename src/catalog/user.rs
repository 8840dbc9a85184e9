//! User catalogs: the images a `cloudimg sync` keeps current (`catalogs/examples/lab.toml`).
//!
//! A user catalog names what to maintain — release, arch, stream, file kind, Glance formats —
//! and where to publish it; the source catalogs (`ubuntu`, `debian`, or a file) say how to find
//! it upstream.

use crate::glance::{ContainerFormat, DiskFormat};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{CatalogError, STREAM_NAMES};
use crate::bake::recipe::{RecipeError, RecipeSpec};

/// Largest user catalog accepted; real ones are a few KiB.
const MAX_USER_CATALOG_BYTES: u64 = 1 << 20;

/// How an image is retired by `sync`: hidden from listings (still bootable), deactivated (no
/// longer downloadable or bootable, admin only), or deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Retire {
    #[default]
    Hide,
    Deactivate,
    Delete,
}

/// One Glance that new serials are uploaded to, and how old ones are retired there. A catalog
/// names one (`[glance]`) or several (`[[glance]]`, each with a `name`); each is independent.
///
/// Credentials: `cloud` names a cloud of `clouds.yaml`; otherwise the `OS_*`-style fields
/// (`auth_url`, `username`, `password`, `project_name`, …). With neither, a single target uses
/// the process environment as the `openstack` client does; named targets never borrow it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlanceConfig {
    /// How summaries, `--target` and logs call this Glance; default `glance`.
    #[serde(default)]
    pub name: Option<String>,
    /// Image API endpoint; default from the environment (`OS_IMAGE_URL`, Keystone's catalog).
    #[serde(default)]
    pub url: Option<String>,
    /// A cloud of `clouds.yaml` (as `OS_CLOUD`).
    #[serde(default)]
    pub cloud: Option<String>,
    /// Catalog region (as `OS_REGION_NAME`).
    #[serde(default)]
    pub region: Option<String>,
    /// Catalog interface (as `OS_INTERFACE`): `public`, `internal` or `admin`.
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub auth_url: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub project_name: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub user_domain_name: Option<String>,
    #[serde(default)]
    pub project_domain_name: Option<String>,
    #[serde(default)]
    pub application_credential_id: Option<String>,
    #[serde(default)]
    pub application_credential_secret: Option<String>,
    /// What becomes of the images of pruned serials: `hide` (default), `deactivate`, `delete`.
    #[serde(default)]
    pub retire: Retire,
    /// Glance visibility of uploaded images.
    #[serde(default)]
    pub visibility: Option<String>,
}

/// An OCI registry that the catalog's containerDisk entries (`container_format =
/// "containerdisk"`) are pushed to, each to `<url>/<entry name>`, tagged `<release>-<serial>`,
/// `<release>` and `latest` (moved last); serial tags beyond the entry's `keep` are removed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// How summaries and logs call this registry.
    pub name: String,
    /// `docker://REGISTRY/NAMESPACE` (the repository is this plus the entry's name).
    pub url: String,
    /// Plain HTTP (a lab registry without TLS).
    #[serde(default)]
    pub insecure: bool,
}

/// The name of a Glance target when the catalog gives none.
pub const DEFAULT_GLANCE_NAME: &str = "glance";

impl GlanceConfig {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_GLANCE_NAME)
    }

    /// Whether the target names its own credentials (a cloud or `OS_*`-style fields) rather
    /// than taking them from the process environment.
    pub fn has_own_credentials(&self) -> bool {
        self.cloud.is_some() || self.auth_url.is_some() || self.application_credential_id.is_some()
    }

    /// The target's settings under the `OS_*` names the OpenStack client reads.
    pub fn os_variables(&self) -> Vec<(&'static str, &str)> {
        [
            ("OS_CLOUD", &self.cloud),
            ("OS_IMAGE_URL", &self.url),
            ("OS_REGION_NAME", &self.region),
            ("OS_INTERFACE", &self.interface),
            ("OS_AUTH_URL", &self.auth_url),
            ("OS_USERNAME", &self.username),
            ("OS_PASSWORD", &self.password),
            ("OS_PROJECT_NAME", &self.project_name),
            ("OS_PROJECT_ID", &self.project_id),
            ("OS_USER_DOMAIN_NAME", &self.user_domain_name),
            ("OS_PROJECT_DOMAIN_NAME", &self.project_domain_name),
            (
                "OS_APPLICATION_CREDENTIAL_ID",
                &self.application_credential_id,
            ),
            (
                "OS_APPLICATION_CREDENTIAL_SECRET",
                &self.application_credential_secret,
            ),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_deref().map(|value| (key, value)))
        .collect()
    }
}

/// `[glance]` (one table) or `[[glance]]` (several).
fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<GlanceConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Box<GlanceConfig>),
        Many(Vec<GlanceConfig>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(config) => vec![*config],
        OneOrMany::Many(configs) => configs,
    })
}

/// One image to keep current.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Folder name under the output root, and the Glance image name prefix.
    pub name: String,
    /// A built-in source catalog name or a catalog file path.
    #[serde(default = "default_source")]
    pub source: String,
    /// Codename, version, `lts` or `latest`.
    pub release: String,
    /// `arch = "amd64"`, or for a containerDisk entry several, `arch = ["amd64", "arm64"]`:
    /// one OCI image index with a manifest per architecture, all of the same serial.
    #[serde(
        rename = "arch",
        default = "default_arches",
        deserialize_with = "one_or_many_arches"
    )]
    pub arches: Vec<String>,
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Upstream kind (simplestreams ftype); default `disk1.img`, `tar.gz` for ami.
    #[serde(default)]
    pub file: Option<String>,
    /// Glance's words (case-insensitive in the file).
    #[serde(default = "default_disk_format")]
    pub disk_format: DiskFormat,
    #[serde(default = "default_container_format")]
    pub container_format: ContainerFormat,
    /// Conversion options, as qemu-img's `-o` (`"preallocation=metadata,compat=1.1"`).
    #[serde(default)]
    pub options: Option<String>,
    /// Serials kept; default the catalog's `keep`.
    #[serde(default)]
    pub keep: Option<usize>,
    /// Glance properties applied after the source catalog's.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Minimum RAM in MiB.
    #[serde(default)]
    pub min_ram: Option<u64>,
    /// Upload to the catalog's Glance targets (default true when there are some).
    #[serde(default)]
    pub upload: Option<bool>,
    /// Command run (by `sh -c`) after a new serial is published; overrides the catalog's.
    #[serde(default)]
    pub hook: Option<String>,
    /// `[image.bake]`: bake each new serial with this recipe before converting it.
    #[serde(default)]
    pub bake: Option<BakeConfig>,
}

/// `[image.bake]`: the keys of a recipe file inline, or `recipe = "path"` naming one; paths
/// are relative to the catalog's folder. Unknown keys are refused, named, when the catalog is
/// read.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "toml::Table")]
pub enum BakeConfig {
    File(PathBuf),
    Inline(Box<RecipeSpec>),
}

/// The key of `[image.bake]` that names a recipe file.
const RECIPE_FILE_KEY: &str = "recipe";

impl TryFrom<toml::Table> for BakeConfig {
    type Error = String;

    fn try_from(table: toml::Table) -> Result<BakeConfig, String> {
        match table.get(RECIPE_FILE_KEY) {
            Some(toml::Value::String(path)) if table.len() == 1 => {
                Ok(BakeConfig::File(PathBuf::from(path)))
            }
            Some(toml::Value::String(_)) => Err(format!(
                "bake: `{RECIPE_FILE_KEY}` names a recipe file; give the other keys in it, or \
                 drop `{RECIPE_FILE_KEY}` and give them all here"
            )),
            Some(_) => Err(format!("bake: `{RECIPE_FILE_KEY}` must be a file name")),
            None => RecipeSpec::deserialize(toml::Value::Table(table))
                .map(|spec| BakeConfig::Inline(Box::new(spec)))
                .map_err(|error| format!("bake: {}", error.message())),
        }
    }
}

impl BakeConfig {
    /// The recipe, read from its file or taken inline, paths made relative to `catalog_dir`.
    pub fn spec(&self, catalog_dir: &Path) -> Result<RecipeSpec, RecipeError> {
        match self {
            BakeConfig::File(path) => RecipeSpec::from_file(&catalog_dir.join(path)),
            BakeConfig::Inline(spec) => Ok(spec.as_ref().clone().relative_to(catalog_dir)),
        }
    }
}

fn default_source() -> String {
    "ubuntu".to_owned()
}
/// The architecture of an entry that names none.
pub const DEFAULT_ARCH: &str = "amd64";

fn default_arches() -> Vec<String> {
    vec![DEFAULT_ARCH.to_owned()]
}

/// `arch = "amd64"` or `arch = ["amd64", "arm64"]`.
fn one_or_many_arches<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(arch) => vec![arch],
        OneOrMany::Many(arches) => arches,
    })
}

impl ImageSpec {
    /// The entry's architecture: the first when a containerDisk entry names several (its
    /// serial decides the others').
    pub fn arch(&self) -> &str {
        self.arches.first().map_or(DEFAULT_ARCH, String::as_str)
    }

    /// Checks the `arch` list: at least one, no repeats, several only for a containerDisk (a
    /// Glance image has one architecture: one entry per architecture there).
    fn check_arches(&self) -> Result<(), String> {
        let name = &self.name;
        if self.arches.is_empty() {
            return Err(format!("image {name:?}: arch = [] names no architecture"));
        }
        for (index, arch) in self.arches.iter().enumerate() {
            if self.arches[..index]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(arch))
            {
                return Err(format!("image {name:?}: arch {arch:?} is named twice"));
            }
        }
        let containerdisk = ContainerFormat::ContainerDisk;
        if self.arches.len() > 1 && self.container_format != containerdisk {
            return Err(format!(
                "image {name:?}: several architectures need container_format = \"{containerdisk}\" \
                 (one image index); a Glance image has one, so declare one entry per architecture"
            ));
        }
        Ok(())
    }
}

fn default_stream() -> String {
    "released".to_owned()
}
fn default_disk_format() -> DiskFormat {
    DiskFormat::Qcow2
}
fn default_container_format() -> ContainerFormat {
    ContainerFormat::Bare
}
fn default_keep() -> usize {
    2
}

/// A parsed, validated user catalog.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCatalog {
    /// Publish root: `<output>/<name>/<serial>/`, `<output>/<name>/current`.
    pub output: PathBuf,
    /// Serials kept per image.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Mirror URL per source name, instead of the source catalog's `base_url`.
    #[serde(default)]
    pub mirrors: BTreeMap<String, String>,
    /// Command run (by `sh -c`) after any image publishes a new serial.
    #[serde(default)]
    pub hook: Option<String>,
    /// Glance targets, each independent.
    #[serde(default, deserialize_with = "one_or_many")]
    pub glance: Vec<GlanceConfig>,
    /// OCI registries for containerDisk entries, each independent.
    #[serde(default)]
    pub registry: Vec<RegistryConfig>,
    #[serde(rename = "image")]
    pub images: Vec<ImageSpec>,
}

impl UserCatalog {
    /// Reads and validates a user catalog; a relative `output` is relative to the file.
    pub fn from_path(path: &Path) -> Result<UserCatalog, CatalogError> {
        let read_error = |source| CatalogError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut text = String::new();
        file.take(MAX_USER_CATALOG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if text.len() as u64 > MAX_USER_CATALOG_BYTES {
            return Err(CatalogError::TooLarge {
                path: path.to_owned(),
                size: text.len() as u64,
                limit: MAX_USER_CATALOG_BYTES,
            });
        }
        let origin = path.display().to_string();
        let mut catalog = UserCatalog::from_toml_str(&text, &origin)?;
        if catalog.output.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            catalog.output = base.join(&catalog.output);
        }
        Ok(catalog)
    }

    pub fn from_toml_str(text: &str, origin: &str) -> Result<UserCatalog, CatalogError> {
        let catalog: UserCatalog = toml::from_str(text).map_err(|source| CatalogError::Parse {
            origin: origin.to_owned(),
            source,
        })?;
        catalog.validate().map_err(|reason| CatalogError::Invalid {
            origin: origin.to_owned(),
            reason,
        })?;
        Ok(catalog)
    }

    /// Serials kept for `image`.
    pub fn keep_for(&self, image: &ImageSpec) -> usize {
        image.keep.unwrap_or(self.keep)
    }

    /// The hook for `image`: its own, else the catalog's.
    pub fn hook_for<'a>(&'a self, image: &'a ImageSpec) -> Option<&'a str> {
        image.hook.as_deref().or(self.hook.as_deref())
    }

    fn validate(&self) -> Result<(), String> {
        if self.output.as_os_str().is_empty() {
            return Err("output: an empty path".into());
        }
        if self.images.is_empty() {
            return Err("no [[image]] entries".into());
        }
        for (index, image) in self.images.iter().enumerate() {
            check_image_name(&image.name)?;
            image.check_arches()?;
            if self.images[..index].iter().any(|i| i.name == image.name) {
                return Err(format!("image {:?} is declared twice", image.name));
            }
            if !STREAM_NAMES.contains(&image.stream.as_str()) {
                return Err(format!(
                    "image {:?}: stream {:?}; expected one of {}",
                    image.name,
                    image.stream,
                    STREAM_NAMES.join(", ")
                ));
            }
            if image.bake.is_some() && image.disk_format.amazon().is_some() {
                return Err(format!(
                    "image {:?}: [image.bake] makes a disk image, not a {} kernel, ramdisk or \
                     machine image set",
                    image.name, image.disk_format
                ));
            }
            if image.bake.is_some() && image.arches.len() > 1 {
                return Err(format!(
                    "image {:?}: [image.bake] bakes one architecture; give the entry one arch",
                    image.name
                ));
            }
            if self.keep_for(image) == 0 {
                return Err(format!(
                    "image {:?}: keep must be at least 1 (the current serial)",
                    image.name
                ));
            }
        }
        if self.keep == 0 {
            return Err("keep must be at least 1 (the current serial)".into());
        }
        for (index, target) in self.registry.iter().enumerate() {
            check_image_name(&target.name).map_err(|e| format!("registry target: {e}"))?;
            let other_names = self.glance.iter().map(GlanceConfig::name);
            let mut earlier = self.registry[..index].iter().map(|t| t.name.as_str());
            if earlier.any(|n| n == target.name) || other_names.clone().any(|n| n == target.name) {
                return Err(format!("target {:?} is declared twice", target.name));
            }
            if !target.url.starts_with("docker://") {
                return Err(format!(
                    "registry {:?}: url {:?} must start with docker://",
                    target.name, target.url
                ));
            }
        }
        for (index, target) in self.glance.iter().enumerate() {
            if self.glance.len() > 1 && target.name.is_none() {
                return Err("several [[glance]] targets: each needs a name".into());
            }
            check_image_name(target.name()).map_err(|e| format!("glance target: {e}"))?;
            if self.glance[..index]
                .iter()
                .any(|t| t.name() == target.name())
            {
                return Err(format!(
                    "glance target {:?} is declared twice",
                    target.name()
                ));
            }
        }
        Ok(())
    }
}

/// Image names become folder names and Glance name prefixes: keep them to a safe alphabet, so
/// no entry can write outside the output root.
fn check_image_name(name: &str) -> Result<(), String> {
    let safe = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if safe {
        Ok(())
    } else {
        Err(format!(
            "image name {name:?}: 1 to 100 letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        output = "/srv/cloudimg"      # publish root
        keep = 2                      # serials kept per image

        [[image]]
        name = "noble-amd64"
        source = "ubuntu"
        release = "noble"
        arch = "amd64"
        stream = "released"
        file = "disk1.img"
        disk_format = "qcow2"
        container_format = "bare"
    "#;

    #[test]
    fn the_documented_shape_parses_as_written() {
        let catalog = UserCatalog::from_toml_str(MINIMAL, "test").unwrap();
        assert_eq!(catalog.output, PathBuf::from("/srv/cloudimg"));
        assert_eq!(catalog.keep, 2);
        let image = &catalog.images[0];
        assert_eq!(image.name, "noble-amd64");
        assert_eq!(image.file.as_deref(), Some("disk1.img"));
        assert_eq!(catalog.keep_for(image), 2);
        assert!(catalog.glance.is_empty());
    }

    #[test]
    fn defaults_fill_a_terse_entry() {
        let catalog = UserCatalog::from_toml_str(
            "output = \"out\"\n[[image]]\nname = \"n\"\nrelease = \"lts\"\n",
            "test",
        )
        .unwrap();
        let image = &catalog.images[0];
        assert_eq!(
            (image.source.as_str(), image.arch(), image.stream.as_str()),
            ("ubuntu", "amd64", "released")
        );
        assert_eq!(
            (image.disk_format, image.container_format),
            (DiskFormat::Qcow2, ContainerFormat::Bare)
        );
        assert_eq!(catalog.keep, 2);
    }

    #[test]
    fn a_containerdisk_entry_may_name_several_architectures() {
        let entry = |arch: &str, container: &str| {
            format!(
                "output = \"out\"\n[[image]]\nname = \"n\"\nrelease = \"noble\"\n\
                 arch = {arch}\ncontainer_format = \"{container}\"\n"
            )
        };
        let several = entry(r#"["amd64", "arm64"]"#, "containerdisk");
        let catalog = UserCatalog::from_toml_str(&several, "test").unwrap();
        assert_eq!(catalog.images[0].arches, ["amd64", "arm64"]);
        assert_eq!(catalog.images[0].arch(), "amd64");
        let one = UserCatalog::from_toml_str(&entry(r#""arm64""#, "bare"), "test").unwrap();
        assert_eq!(one.images[0].arches, ["arm64"]);
        for (arch, container) in [
            (r#"["amd64", "arm64"]"#, "bare"),
            (r#"["amd64", "AMD64"]"#, "containerdisk"),
            ("[]", "containerdisk"),
        ] {
            let error = UserCatalog::from_toml_str(&entry(arch, container), "test").unwrap_err();
            assert!(
                matches!(error, CatalogError::Invalid { .. }),
                "{arch} {container}: {error}"
            );
        }
    }

    #[test]
    fn an_image_name_with_a_slash_is_refused() {
        let text = MINIMAL.replace("noble-amd64", "../escape");
        let error = UserCatalog::from_toml_str(&text, "test").unwrap_err();
        assert!(error.to_string().contains("test"), "{error}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = format!("{MINIMAL}\n[[image]]\nname = \"noble-amd64\"\nrelease = \"jammy\"\n");
        assert!(UserCatalog::from_toml_str(&text, "test").is_err());
    }

    #[test]
    fn keep_zero_is_refused() {
        let text = MINIMAL.replace("keep = 2", "keep = 0");
        assert!(UserCatalog::from_toml_str(&text, "test").is_err());
    }

    #[test]
    fn unknown_stream_is_refused() {
        let text = MINIMAL.replace("\"released\"", "\"weekly\"");
        assert!(UserCatalog::from_toml_str(&text, "test").is_err());
    }

    #[test]
    fn image_bake_is_a_recipe_inline_or_a_file() {
        let text = format!(
            "{MINIMAL}\n[image.bake]\nuser = \"lab\"\nrun = [\"true\"]\nboot_test = false\n"
        );
        let catalog = UserCatalog::from_toml_str(&text, "test").unwrap();
        let Some(BakeConfig::Inline(spec)) = &catalog.images[0].bake else {
            panic!("no inline recipe");
        };
        assert_eq!(spec.user.as_deref(), Some("lab"));
        assert_eq!(spec.boot_test, Some(false));
        let text = format!("{MINIMAL}\n[image.bake]\nrecipe = \"golden.recipe.toml\"\n");
        let catalog = UserCatalog::from_toml_str(&text, "test").unwrap();
        let bake = catalog.images[0].bake.as_ref().unwrap();
        assert_eq!(bake, &BakeConfig::File(PathBuf::from("golden.recipe.toml")));
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalogs/examples");
        let spec = bake.spec(&examples).unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("golden"));
    }

    #[test]
    fn image_bake_refuses_unknown_keys_by_name_and_mixed_forms() {
        // One byte off: `usar` for `user`.
        let text = format!("{MINIMAL}\n[image.bake]\nusar = \"lab\"\n");
        let error = UserCatalog::from_toml_str(&text, "test").unwrap_err();
        let text = crate::error::chain(&error);
        assert!(text.contains("usar"), "{text}");
        let text =
            format!("{MINIMAL}\n[image.bake]\nrecipe = \"golden.recipe.toml\"\nuser = \"lab\"\n");
        assert!(UserCatalog::from_toml_str(&text, "test").is_err());
        let text = format!("{MINIMAL}\n[image.bake]\nrecipe = 1\n");
        assert!(UserCatalog::from_toml_str(&text, "test").is_err());
        // One architecture per baked entry.
        let text = format!("{MINIMAL}\n[image.bake]\nrun = [\"true\"]\n")
            .replace("arch = \"amd64\"", "arch = [\"amd64\", \"arm64\"]")
            .replace("\"bare\"", "\"containerdisk\"");
        let error = UserCatalog::from_toml_str(&text, "test").unwrap_err();
        assert!(
            error.to_string().contains("one arch")
                || crate::error::chain(&error).contains("one arch"),
            "{error}"
        );
        // A kernel/ramdisk set cannot be baked.
        let text = format!("{MINIMAL}\n[image.bake]\nrun = [\"true\"]\n")
            .replace("disk_format = \"qcow2\"", "disk_format = \"ami\"");
        assert!(UserCatalog::from_toml_str(&text, "test").is_err());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../catalogs/examples/lab.toml");
        let catalog = UserCatalog::from_toml_str(text, "lab.toml").unwrap();
        assert_eq!(catalog.images.len(), 4);
    }

    #[test]
    fn retire_policy_words() {
        let text = format!("{MINIMAL}\n[glance]\nretire = \"deactivate\"\n");
        let catalog = UserCatalog::from_toml_str(&text, "test").unwrap();
        assert_eq!(catalog.glance[0].retire, Retire::Deactivate);
        assert_eq!(catalog.glance[0].name(), DEFAULT_GLANCE_NAME);
    }

    #[test]
    fn several_glance_targets_each_with_a_name() {
        let text = format!(
            "{MINIMAL}\n[[glance]]\nname = \"dev\"\ncloud = \"dev\"\nregion = \"RegionOne\"\n\
             [[glance]]\nname = \"prod\"\nauth_url = \"https://keystone:5000/v3\"\n\
             username = \"u\"\npassword = \"p\"\nproject_name = \"lab\"\nretire = \"delete\"\n"
        );
        let catalog = UserCatalog::from_toml_str(&text, "test").unwrap();
        assert_eq!(catalog.glance.len(), 2);
        assert_eq!(catalog.glance[0].name(), "dev");
        assert_eq!(
            catalog.glance[0].os_variables(),
            vec![("OS_CLOUD", "dev"), ("OS_REGION_NAME", "RegionOne")]
        );
        assert!(catalog.glance[1].has_own_credentials());
        assert_eq!(catalog.glance[1].retire, Retire::Delete);
        let unnamed = text.replace("name = \"prod\"\n", "");
        assert!(UserCatalog::from_toml_str(&unnamed, "test").is_err());
        let twice = text.replace("\"prod\"", "\"dev\"");
        assert!(UserCatalog::from_toml_str(&twice, "test").is_err());
    }
}
