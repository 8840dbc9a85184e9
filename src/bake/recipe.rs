//! A bake recipe, and the cloud-config it becomes.
//!
//! A recipe is cloud-init: optional user data (any `#cloud-config`), plus shorthands that
//! compose into it — SSH keys and a password hash for a user, packages, commands run in order,
//! files copied in, a hostname. The same recipe comes from command-line options or from a TOML
//! file (paths relative to the file), and both can be combined.
//!
//! [`compose`] merges the shorthands into the user's mapping (appending to lists, never
//! replacing the user's entries) and adds cloudimg's own final stage: the first `runcmd` entry
//! starts, as a transient systemd unit, a script that waits for `cloud-init status --wait`
//! (cleaning from `runcmd` itself would race cloud-init's final stage), reports the result on
//! the console, generalises the guest (`cloud-init clean --logs --seed`, an empty machine-id, no
//! SSH host keys, logs and history emptied), trims, and powers off. Each `--run` command is
//! wrapped so that the first failure stops the others and is reported with its index and
//! status — cloud-init itself only sees the status of the last line of its `runcmd` script.
//! SSH host keys are limited to Ed25519 (`ssh_genkeytypes`) unless the user says otherwise: the
//! keys are deleted anyway, and RSA generation costs seconds under emulation. For the same
//! reason GRUB's install device is given rather than probed, and the root partition is not
//! grown when the bake does not grow the disk (`spare_first_boot_work`).
//!
//! One model, two front ends: `bake`'s options and a TOML recipe file (`bake --recipe`,
//! `prepare --bake`, a catalog's `[image.bake]`) both fill a [`RecipeSpec`]; [`RecipeSpec::load`]
//! reads and checks it into a [`Recipe`]. Besides what goes into the guest, a recipe carries how
//! its guest runs ([`MachineOptions`]: disk size, memory, CPUs, timeout, boot test, network),
//! each unset value taking `bake`'s default. A recipe's digest ([`Recipe::digest`]) covers what
//! changes the result — the composed cloud-config and the disk size — so `sync` rebakes when,
//! and only when, it changes.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};

use super::qemu::Network;
use super::validate::{self, ValidationError, CLOUD_CONFIG_HEADER};

/// Largest SSH public key file read (a few keys; real ones are under 1 KiB each).
const MAX_KEY_FILE: u64 = 64 * 1024;
/// Largest recipe or user-data file read; the seed bounds the total anyway.
const MAX_TEXT_FILE: u64 = crate::container::iso::MAX_SEED_BYTES;
/// Longest user name useradd accepts.
const MAX_USER_NAME: usize = 32;
/// Longest host name label (RFC 1123).
const MAX_HOSTNAME: usize = 63;
/// Most guest memory a recipe may ask for (1 TiB), and most CPUs: beyond is a typo.
const MAX_MEMORY_MIB: u64 = 1 << 20;
const MAX_CPUS: u32 = 1024;

/// Where a wrapped `--run` command records its failure inside the guest (tmpfs, gone at boot).
const FAILED_FILE: &str = "/run/cloudimg-bake.failed";

/// The guest's name for the bake's disk: the first virtio disk (the seed is the second).
const BAKE_DISK: &str = "/dev/vda";

/// The transient systemd unit that runs cloudimg's final stage.
const FINAL_UNIT: &str = "cloudimg-bake";

/// Prints a marker on the console. The prefix is assembled by printf, so the script's own text
/// never contains a complete marker (see `console`).
const SAY: &str = r#"n=$1
say() { printf 'cloudimg-bake:%s:%s\n' "$n" "$*" > /dev/console 2>/dev/null; }
stop() { sync; systemctl poweroff || poweroff -f; exit 0; }
status() { cloud-init status --long 2>&1 | tr '\n' ' ' | cut -c1-600; }
cloud-init status --wait >/dev/null 2>&1
rc=$?
say phase:checking
"#;

/// cloudimg's final stage in the bake boot; `$1` is the nonce.
const BAKE_STAGE: &str = r#"if [ -s /run/cloudimg-bake.failed ]; then
  say "result:run-failed:$(head -c 64 /run/cloudimg-bake.failed)"; stop
fi
if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then say "result:cloud-init-error:$(status)"; stop; fi
[ "$rc" -eq 0 ] || say "warning:cloud-init reported recoverable errors: $(status)"
say phase:generalising
cloud-init clean --logs --seed >/dev/null 2>&1 || { say "result:cloud-init-error:cloud-init clean failed"; stop; }
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /var/lib/systemd/random-seed
rm -f /var/lib/dhcp/*.leases /root/.bash_history /home/*/.bash_history
: > /etc/machine-id
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then rm -f /var/lib/dbus/machine-id; fi
journalctl --rotate >/dev/null 2>&1; journalctl --vacuum-time=1s >/dev/null 2>&1
rm -f /var/log/*.gz /var/log/*.[0-9] /var/log/*/*.gz /var/log/*/*.[0-9]
find /var/log -type f ! -path '/var/log/journal/*' -exec truncate -s 0 {} + 2>/dev/null
say phase:trimming
fstrim --all >/dev/null 2>&1 || fstrim / >/dev/null 2>&1
sync
say result:ok
stop
"#;

/// cloudimg's final stage in the boot test: report the instance id cloud-init came up with.
const BOOT_TEST_STAGE: &str = r#"if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then say "result:cloud-init-error:$(status)"; stop; fi
say "result:ok:$(cat /var/lib/cloud/data/instance-id 2>/dev/null)"
stop
"#;

/// Why a recipe could not be read or composed.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes or more is more than the {limit} a recipe file may hold")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// The TOML parser's message (the source) names an unknown key and where it is.
    #[error("{path}: not a valid recipe")]
    Toml {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: no SSH public key in the file")]
    NoKey { path: PathBuf },
    #[error("a recipe gives either `user_data` (a file) or `cloud_config` (inline), not both")]
    TwoUserData,
    #[error(
        "user data sets `power_state`: cloudimg bake powers the guest off itself, after \
         generalising; remove it"
    )]
    PowerState,
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("cannot write the composed cloud-config")]
    Serialise(#[source] serde_yaml_ng::Error),
}

/// A recipe as written: file names and values, before anything is read.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeSpec {
    /// A `#cloud-config` file.
    pub user_data: Option<PathBuf>,
    /// A `#cloud-config` document inline (TOML recipes only).
    pub cloud_config: Option<String>,
    /// The user the keys and password are for; default: the image's default user.
    pub user: Option<String>,
    /// Public key files.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<PathBuf>,
    /// A crypt(3) hash (`$6$…`, `$y$…`), never a clear-text password.
    pub password_hash: Option<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    /// Shell commands, run in order; the first failure stops the bake.
    #[serde(default)]
    pub run: Vec<String>,
    /// `LOCAL:GUEST[:MODE]`.
    #[serde(default)]
    pub write_files: Vec<String>,
    pub hostname: Option<String>,
    /// Grow the disk to this size first: bytes, or a size with a K, M, G or T suffix.
    pub disk_size: Option<Scalar>,
    /// Guest memory in MiB.
    pub memory: Option<u64>,
    pub cpus: Option<u32>,
    /// Per boot: seconds, or `90s`, `20m`, `1h`.
    pub timeout: Option<Scalar>,
    /// Boot the result once more as a new instance before publishing it (default true).
    pub boot_test: Option<bool>,
    /// Load the image's kernel directly for the bake boot (default true); `false` boots it
    /// through the firmware and the image's boot loader, as the boot test always does.
    pub direct_kernel: Option<bool>,
    /// `user` (default), `restricted` (a NIC, no traffic out) or `none`.
    pub network: Option<String>,
    /// QEMU `guestfwd` rules (`tcp:10.0.2.100:80-tcp:127.0.0.1:8080`): what a restricted
    /// guest may reach on the host.
    #[serde(default)]
    pub guestfwd: Vec<String>,
}

/// A TOML value written either as an integer or as a string (`disk_size = 4294967296` or
/// `disk_size = "4G"`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Integer(u64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Integer(value) => value.to_string(),
            Scalar::Text(text) => text.clone(),
        }
    }
}

/// How a recipe's guest runs; `None` takes `bake`'s default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineOptions {
    /// Bytes.
    pub disk_size: Option<u64>,
    pub memory_mib: Option<u64>,
    pub cpus: Option<u32>,
    pub timeout: Option<std::time::Duration>,
    pub boot_test: Option<bool>,
    pub direct_kernel: Option<bool>,
    pub network: Option<Network>,
    pub guestfwd: Vec<String>,
}

impl RecipeSpec {
    /// Reads a TOML recipe; relative paths in it are made relative to its folder.
    pub fn from_file(path: &Path) -> Result<RecipeSpec, RecipeError> {
        let bytes = read_bounded(path, MAX_TEXT_FILE)?;
        RecipeSpec::parse(&bytes, path)
    }

    /// Parses the TOML recipe `bytes` read from `path`; relative paths in it are made relative
    /// to the folder of `path`. Unknown keys are refused, named.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<RecipeSpec, RecipeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| RecipeError::Invalid {
            what: "recipe",
            value: path.display().to_string(),
            reason: "not UTF-8 text",
        })?;
        let spec: RecipeSpec = toml::from_str(text).map_err(|source| RecipeError::Toml {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        Ok(spec.relative_to(path.parent().unwrap_or(Path::new("."))))
    }

    /// The recipe with its relative file names made relative to `base` (the folder of the file
    /// that held it).
    pub fn relative_to(mut self, base: &Path) -> RecipeSpec {
        let spec = &mut self;
        if let Some(user_data) = &mut spec.user_data {
            *user_data = base.join(&*user_data);
        }
        for key in &mut spec.ssh_authorized_keys {
            *key = base.join(&*key);
        }
        for spec_file in &mut spec.write_files {
            if !spec_file.starts_with('/') {
                *spec_file = format!("{}/{spec_file}", base.display());
            }
        }
        self
    }

    /// This recipe followed by `more` (command-line shorthands after a recipe file): lists are
    /// concatenated, single values from `more` win.
    pub fn and(mut self, more: RecipeSpec) -> RecipeSpec {
        self.user_data = more.user_data.or(self.user_data);
        self.cloud_config = more.cloud_config.or(self.cloud_config);
        self.user = more.user.or(self.user);
        self.ssh_authorized_keys.extend(more.ssh_authorized_keys);
        self.password_hash = more.password_hash.or(self.password_hash);
        self.packages.extend(more.packages);
        self.run.extend(more.run);
        self.write_files.extend(more.write_files);
        self.hostname = more.hostname.or(self.hostname);
        self.disk_size = more.disk_size.or(self.disk_size);
        self.memory = more.memory.or(self.memory);
        self.cpus = more.cpus.or(self.cpus);
        self.timeout = more.timeout.or(self.timeout);
        self.boot_test = more.boot_test.or(self.boot_test);
        self.direct_kernel = more.direct_kernel.or(self.direct_kernel);
        self.network = more.network.or(self.network);
        self.guestfwd.extend(more.guestfwd);
        self
    }

    /// Reads every file the recipe names and checks every value.
    pub fn load(&self) -> Result<Recipe, RecipeError> {
        let user_data = match (&self.user_data, &self.cloud_config) {
            (Some(_), Some(_)) => return Err(RecipeError::TwoUserData),
            (Some(path), None) => Some(read_bounded(path, MAX_TEXT_FILE)?),
            (None, Some(text)) => Some(text.clone().into_bytes()),
            (None, None) => None,
        };
        if let Some(user) = &self.user {
            check_user(user)?;
        }
        let mut ssh_keys = Vec::new();
        for path in &self.ssh_authorized_keys {
            ssh_keys.extend(read_keys(path)?);
        }
        if let Some(hash) = &self.password_hash {
            check_password_hash(hash)?;
        }
        for package in &self.packages {
            check_word("package", package)?;
        }
        for command in &self.run {
            if command.trim().is_empty() {
                return Err(invalid("--run command", command, "is empty"));
            }
        }
        let files = self
            .write_files
            .iter()
            .map(|spec| GuestFile::load(spec))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(hostname) = &self.hostname {
            check_hostname(hostname)?;
        }
        let machine = self.machine()?;
        Ok(Recipe {
            user_data,
            user: self.user.clone(),
            ssh_keys,
            password_hash: self.password_hash.clone(),
            packages: self.packages.clone(),
            run: self.run.clone(),
            files,
            hostname: self.hostname.clone(),
            machine,
        })
    }

    /// The machine options, checked.
    fn machine(&self) -> Result<MachineOptions, RecipeError> {
        let disk_size = self
            .disk_size
            .as_ref()
            .map(|value| {
                let text = value.text();
                crate::formats::options::parse_size(&text)
                    .filter(|&size| size > 0)
                    .ok_or_else(|| {
                        invalid("disk size", &text, "expected bytes or a size such as 4G")
                    })
            })
            .transpose()?;
        if let Some(memory) = self.memory {
            if memory == 0 || memory > MAX_MEMORY_MIB {
                return Err(invalid(
                    "memory",
                    &memory.to_string(),
                    "expected MiB between 1 and 1048576",
                ));
            }
        }
        if let Some(cpus) = self.cpus {
            if cpus == 0 || cpus > MAX_CPUS {
                return Err(invalid(
                    "cpus",
                    &cpus.to_string(),
                    "expected between 1 and 1024",
                ));
            }
        }
        let timeout = self
            .timeout
            .as_ref()
            .map(|value| {
                let text = value.text();
                super::parse_duration(&text)
                    .ok_or_else(|| invalid("timeout", &text, "expected e.g. 900, 90s, 20m, 1h"))
            })
            .transpose()?;
        let network = self
            .network
            .as_deref()
            .map(|word| {
                network_from_word(word)
                    .ok_or_else(|| invalid("network", word, "expected user, restricted or none"))
            })
            .transpose()?;
        for rule in &self.guestfwd {
            super::qemu::check_guestfwd(rule)
                .map_err(|reason| invalid("guestfwd", rule, reason))?;
        }
        if network == Some(Network::None) && !self.guestfwd.is_empty() {
            return Err(invalid(
                "guestfwd",
                &self.guestfwd[0],
                "needs a network; it is `none`",
            ));
        }
        Ok(MachineOptions {
            disk_size,
            memory_mib: self.memory,
            cpus: self.cpus,
            timeout,
            boot_test: self.boot_test,
            direct_kernel: self.direct_kernel,
            network,
            guestfwd: self.guestfwd.clone(),
        })
    }
}

/// A recipe's `network` word.
pub fn network_from_word(word: &str) -> Option<Network> {
    match word {
        "user" => Some(Network::User),
        "restricted" => Some(Network::Restricted),
        "none" => Some(Network::None),
        _ => None,
    }
}

/// A file copied into the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFile {
    /// Absolute path in the guest.
    pub path: String,
    pub content: Vec<u8>,
    /// Octal permissions, e.g. `0644`.
    pub mode: Option<String>,
}

impl GuestFile {
    /// Reads `LOCAL:GUEST[:MODE]`; LOCAL may itself contain colons, GUEST may not.
    fn load(spec: &str) -> Result<GuestFile, RecipeError> {
        let (rest, mode) = match spec.rsplit_once(':') {
            Some((rest, mode)) if is_mode(mode) => (rest, Some(mode.to_owned())),
            _ => (spec, None),
        };
        let Some((local, guest)) = rest.rsplit_once(':') else {
            return Err(invalid(
                "--write-file",
                spec,
                "expected LOCAL:GUEST or LOCAL:GUEST:MODE",
            ));
        };
        if local.is_empty() || !guest.starts_with('/') || guest.contains('\n') {
            return Err(invalid(
                "--write-file",
                spec,
                "expected LOCAL:GUEST[:MODE] with an absolute GUEST path",
            ));
        }
        let content = read_bounded(Path::new(local), MAX_TEXT_FILE)?;
        Ok(GuestFile {
            path: guest.to_owned(),
            content,
            mode,
        })
    }
}

fn is_mode(text: &str) -> bool {
    (3..=4).contains(&text.len()) && text.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

/// Everything a bake puts into the guest, read and checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipe {
    pub user_data: Option<Vec<u8>>,
    pub user: Option<String>,
    pub ssh_keys: Vec<String>,
    pub password_hash: Option<String>,
    pub packages: Vec<String>,
    pub run: Vec<String>,
    pub files: Vec<GuestFile>,
    pub hostname: Option<String>,
    /// How the guest runs (not part of the cloud-config).
    pub machine: MachineOptions,
}

/// What the seed of one boot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub user_data: Vec<u8>,
    pub meta_data: Vec<u8>,
    /// Warnings about the user's cloud-config (unknown keys).
    pub warnings: Vec<String>,
}

impl Recipe {
    /// SHA-256 of what makes the result: the composed cloud-config without the per-run nonce
    /// (so the same recipe always has the same digest), then the disk size when one is asked
    /// for. Memory, CPUs, timeout, boot test and network change how the guest runs, not what it
    /// becomes, and are left out.
    pub fn digest(&self) -> Result<String, RecipeError> {
        let seed = compose(self, "")?;
        let mut hasher = Sha256::new();
        hasher.update(&seed.user_data);
        if let Some(size) = self.machine.disk_size {
            hasher.update(format!("\0disk_size={size}").as_bytes());
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// The seed of the bake boot: the user's cloud-config, the shorthands, cloudimg's final stage.
pub fn compose(recipe: &Recipe, nonce: &str) -> Result<Seed, RecipeError> {
    let (mut config, warnings) = match &recipe.user_data {
        Some(bytes) => validate::cloud_config(bytes)?,
        None => (Mapping::new(), Vec::new()),
    };
    if config.contains_key("power_state") {
        return Err(RecipeError::PowerState);
    }
    add_user(&mut config, recipe);
    if !recipe.packages.is_empty() {
        append(&mut config, "packages", recipe.packages.iter().map(string));
        config
            .entry(string("package_update"))
            .or_insert(Value::Bool(true));
    }
    append(
        &mut config,
        "write_files",
        recipe.files.iter().map(write_file),
    );
    if let Some(hostname) = &recipe.hostname {
        config.insert(string("hostname"), string(hostname));
    }
    config
        .entry(string("ssh_genkeytypes"))
        .or_insert_with(fastest_host_key);
    config
        .entry(string("ssh_deletekeys"))
        .or_insert(Value::Bool(true));
    spare_first_boot_work(&mut config, recipe.machine.disk_size.is_some());
    let mut runcmd = vec![final_stage(BAKE_STAGE, nonce)];
    runcmd.extend(take_list(&mut config, "runcmd"));
    runcmd.extend(
        recipe
            .run
            .iter()
            .enumerate()
            .map(|(index, command)| Value::String(wrap_run(index, command))),
    );
    config.insert(string("runcmd"), Value::Sequence(runcmd));
    Ok(Seed {
        user_data: render(&config)?,
        meta_data: format!("instance-id: cloudimg-bake-{nonce}\n").into_bytes(),
        warnings,
    })
}

/// The seed of the boot test: a new instance id, and only the stage that reports it.
pub fn boot_test(nonce: &str) -> Result<Seed, RecipeError> {
    let mut config = Mapping::new();
    config.insert(string("ssh_genkeytypes"), fastest_host_key());
    spare_first_boot_work(&mut config, false);
    config.insert(
        string("runcmd"),
        Value::Sequence(vec![final_stage(BOOT_TEST_STAGE, nonce)]),
    );
    Ok(Seed {
        user_data: render(&config)?,
        meta_data: format!("instance-id: {}\n", boot_test_instance_id(nonce)).into_bytes(),
        warnings: Vec::new(),
    })
}

/// Settles, for cloud-init, what it would otherwise probe at every first boot, where the answer
/// is known and the probe costs seconds under emulation; each instance made from the image
/// probes again as a new instance (these modules run once per instance), and the user's own
/// settings win.
/// - GRUB's install device (`grub_dpkg`, ~2 s of `grub-probe`): the bake's disk is the first
///   virtio disk, `/dev/vda`, which is what the probe finds there.
/// - Growing the root partition (`growpart`, `resize_rootfs`), unless the bake grows the disk:
///   the partition already fills it.
fn spare_first_boot_work(config: &mut Mapping, disk_grown: bool) {
    if !config.contains_key("grub_dpkg") && !config.contains_key("grub-dpkg") {
        let mut grub = Mapping::new();
        grub.insert(string("grub-pc/install_devices"), string(BAKE_DISK));
        config.insert(string("grub_dpkg"), Value::Mapping(grub));
    }
    if !disk_grown {
        let mut growpart = Mapping::new();
        growpart.insert(string("mode"), string("off"));
        config
            .entry(string("growpart"))
            .or_insert(Value::Mapping(growpart));
        config
            .entry(string("resize_rootfs"))
            .or_insert(Value::Bool(false));
    }
}

/// Only an Ed25519 host key (milliseconds, where RSA takes seconds under emulation): the keys
/// are deleted when generalising, and cloud-init's schema wants at least one type.
fn fastest_host_key() -> Value {
    Value::Sequence(vec![string("ed25519")])
}

/// The instance id the boot test's guest must report.
pub fn boot_test_instance_id(nonce: &str) -> String {
    format!("cloudimg-boot-test-{nonce}")
}

fn render(config: &Mapping) -> Result<Vec<u8>, RecipeError> {
    let yaml = serde_yaml_ng::to_string(config).map_err(RecipeError::Serialise)?;
    Ok(format!("{CLOUD_CONFIG_HEADER}\n{yaml}").into_bytes())
}

/// The `runcmd` entry (a list: cloud-init quotes each word) that starts a final stage.
fn final_stage(stage: &str, nonce: &str) -> Value {
    let script = format!("{SAY}{stage}");
    Value::Sequence(
        [
            "systemd-run",
            &format!("--unit={FINAL_UNIT}"),
            "--no-block",
            "--quiet",
            "/bin/sh",
            "-c",
            &script,
            FINAL_UNIT,
            nonce,
        ]
        .into_iter()
        .map(string)
        .collect(),
    )
}

/// A `--run` command that runs only when no earlier one failed, and records its own failure.
fn wrap_run(index: usize, command: &str) -> String {
    format!(
        "[ -e {FAILED_FILE} ] || sh -c {} || echo \"{index} $?\" > {FAILED_FILE}",
        shell_quote(command)
    )
}

/// Single-quotes `text` for sh.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn add_user(config: &mut Mapping, recipe: &Recipe) {
    let keys = || Value::Sequence(recipe.ssh_keys.iter().map(string).collect());
    match &recipe.user {
        Some(name) => {
            let mut user = Mapping::new();
            user.insert(string("name"), string(name));
            user.insert(string("shell"), string("/bin/bash"));
            user.insert(string("sudo"), string("ALL=(ALL) NOPASSWD:ALL"));
            user.insert(string("groups"), string("sudo"));
            if !recipe.ssh_keys.is_empty() {
                user.insert(string("ssh_authorized_keys"), keys());
            }
            if let Some(hash) = &recipe.password_hash {
                user.insert(string("hashed_passwd"), string(hash));
                user.insert(string("lock_passwd"), Value::Bool(false));
            }
            // A `users` list replaces the image's default user unless it names `default`.
            if !matches!(config.get("users"), Some(Value::Sequence(_))) {
                config.insert(string("users"), Value::Sequence(vec![string("default")]));
            }
            append(config, "users", std::iter::once(Value::Mapping(user)));
        }
        None => append(
            config,
            "ssh_authorized_keys",
            recipe.ssh_keys.iter().map(string),
        ),
    }
}

fn write_file(file: &GuestFile) -> Value {
    let mut entry = Mapping::new();
    entry.insert(string("path"), string(&file.path));
    entry.insert(string("encoding"), string("b64"));
    entry.insert(
        string("content"),
        string(base64::engine::general_purpose::STANDARD.encode(&file.content)),
    );
    entry.insert(string("owner"), string("root:root"));
    if let Some(mode) = &file.mode {
        entry.insert(
            string("permissions"),
            string(format!("0{}", mode.trim_start_matches('0'))),
        );
    }
    Value::Mapping(entry)
}

/// Removes and returns the list under `key` (validation made sure it is one).
fn take_list(config: &mut Mapping, key: &str) -> Vec<Value> {
    match config.remove(key) {
        Some(Value::Sequence(items)) => items,
        _ => Vec::new(),
    }
}

/// Appends `items` to the list under `key`, creating it; nothing when `items` is empty.
fn append(config: &mut Mapping, key: &str, items: impl Iterator<Item = Value>) {
    let mut items = items.peekable();
    if items.peek().is_none() {
        return;
    }
    let mut list = take_list(config, key);
    list.extend(items);
    config.insert(string(key), Value::Sequence(list));
}

fn string(text: impl AsRef<str>) -> Value {
    Value::String(text.as_ref().to_owned())
}

fn invalid(what: &'static str, value: &str, reason: &'static str) -> RecipeError {
    RecipeError::Invalid {
        what,
        value: value.to_owned(),
        reason,
    }
}

/// Reads at most `limit` bytes of `path`; more is an error. Read through `take`, not sized by
/// the metadata: a device or a FIFO named in a recipe (`/dev/zero`) reports no size.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, RecipeError> {
    use std::io::Read;
    let read_error = |source| RecipeError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let size = bytes.len() as u64;
    if size > limit {
        return Err(RecipeError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        });
    }
    Ok(bytes)
}

/// The key lines of an authorized_keys-style file (comments and blank lines dropped).
fn read_keys(path: &Path) -> Result<Vec<String>, RecipeError> {
    let bytes = read_bounded(path, MAX_KEY_FILE)?;
    let text = String::from_utf8(bytes).map_err(|_| RecipeError::NoKey {
        path: path.to_owned(),
    })?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(RecipeError::NoKey {
            path: path.to_owned(),
        });
    }
    Ok(keys)
}

fn check_user(name: &str) -> Result<(), RecipeError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
    if !first_ok || !rest_ok || name.len() > MAX_USER_NAME {
        return Err(invalid(
            "user name",
            name,
            "must be 1 to 32 characters among a-z, 0-9, _ and -, starting with a letter or _",
        ));
    }
    Ok(())
}

fn check_password_hash(hash: &str) -> Result<(), RecipeError> {
    // crypt(3) hashes start with `$id$` (yescrypt `$y$`, SHA-512 `$6$`, …); anything else is
    // most likely a clear-text password, which must not end up in an image or a process list.
    let ok = hash.starts_with('$')
        && hash.len() > 3
        && hash[1..].contains('$')
        && !hash.contains(|c: char| c.is_whitespace() || c == ':');
    if !ok {
        return Err(RecipeError::Invalid {
            what: "password hash",
            value: "(not shown)".into(),
            reason: "must be a crypt(3) hash such as `$6$…` (mkpasswd -m sha-512), not a password",
        });
    }
    Ok(())
}

fn check_word(what: &'static str, word: &str) -> Result<(), RecipeError> {
    if word.is_empty() || word.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(invalid(what, word, "must be one word"));
    }
    Ok(())
}

fn check_hostname(name: &str) -> Result<(), RecipeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_HOSTNAME
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        return Err(invalid(
            "hostname",
            name,
            "must be 1 to 63 characters among A-Z, a-z, 0-9 and -, not starting or ending with -",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(seed: &Seed) -> Mapping {
        let text = std::str::from_utf8(&seed.user_data).unwrap();
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn shorthands_compose_with_the_users_cloud_config() {
        let recipe = Recipe {
            user_data: Some(b"#cloud-config\nruncmd: [echo user]\nusers: [default]\n".to_vec()),
            user: Some("lab".into()),
            ssh_keys: vec!["ssh-ed25519 AAAA lab@host".into()],
            packages: vec!["htop".into()],
            run: vec!["echo 'it''s' > /x".into()],
            files: vec![GuestFile {
                path: "/etc/motd".into(),
                content: b"hello\n".to_vec(),
                mode: Some("644".into()),
            }],
            hostname: Some("golden".into()),
            ..Recipe::default()
        };
        let seed = compose(&recipe, "abc").unwrap();
        let config = parsed(&seed);
        let runcmd = config["runcmd"].as_sequence().unwrap();
        // cloudimg's stage first, then the user's, then the wrapped --run.
        assert_eq!(runcmd.len(), 3);
        let stage = runcmd[0].as_sequence().unwrap();
        assert_eq!(stage[0].as_str(), Some("systemd-run"));
        assert_eq!(stage.last().unwrap().as_str(), Some("abc"));
        assert_eq!(runcmd[1].as_str(), Some("echo user"));
        assert!(runcmd[2]
            .as_str()
            .unwrap()
            .contains(r"sh -c 'echo '\''it'\'''\''s'\'' > /x'"));
        let users = config["users"].as_sequence().unwrap();
        assert_eq!(users[0].as_str(), Some("default"));
        assert_eq!(users[1]["name"].as_str(), Some("lab"));
        assert_eq!(
            users[1]["ssh_authorized_keys"][0].as_str(),
            Some("ssh-ed25519 AAAA lab@host")
        );
        assert_eq!(config["packages"][0].as_str(), Some("htop"));
        assert_eq!(config["package_update"].as_bool(), Some(true));
        assert_eq!(
            config["write_files"][0]["content"].as_str(),
            Some("aGVsbG8K")
        );
        assert_eq!(
            config["write_files"][0]["permissions"].as_str(),
            Some("0644")
        );
        assert_eq!(config["hostname"].as_str(), Some("golden"));
        assert_eq!(config["ssh_genkeytypes"][0].as_str(), Some("ed25519"));
        assert_eq!(seed.meta_data, b"instance-id: cloudimg-bake-abc\n");
    }

    #[test]
    fn first_boot_probes_are_settled_unless_the_user_or_a_grown_disk_says_otherwise() {
        let config = parsed(&compose(&Recipe::default(), "n").unwrap());
        assert_eq!(
            config["grub_dpkg"]["grub-pc/install_devices"].as_str(),
            Some("/dev/vda")
        );
        assert_eq!(config["growpart"]["mode"].as_str(), Some("off"));
        assert_eq!(config["resize_rootfs"].as_bool(), Some(false));
        let test = parsed(&boot_test("n").unwrap());
        assert_eq!(test["grub_dpkg"], config["grub_dpkg"]);
        assert_eq!(test["growpart"], config["growpart"]);

        // A grown disk is grown by cloud-init; the user's own settings win, under either of
        // the module's two names.
        let mut recipe = Recipe {
            user_data: Some(b"#cloud-config\ngrub-dpkg: {enabled: false}\n".to_vec()),
            ..Recipe::default()
        };
        recipe.machine.disk_size = Some(8 << 30);
        let config = parsed(&compose(&recipe, "n").unwrap());
        assert!(config.get("grub_dpkg").is_none(), "{config:?}");
        assert_eq!(config["grub-dpkg"]["enabled"].as_bool(), Some(false));
        assert!(config.get("growpart").is_none());
        assert!(config.get("resize_rootfs").is_none());
        let recipe = Recipe {
            user_data: Some(b"#cloud-config\ngrowpart: {mode: auto}\n".to_vec()),
            ..Recipe::default()
        };
        let config = parsed(&compose(&recipe, "n").unwrap());
        assert_eq!(config["growpart"]["mode"].as_str(), Some("auto"));
    }

    #[test]
    fn without_a_user_keys_go_to_the_default_user() {
        let recipe = Recipe {
            ssh_keys: vec!["ssh-ed25519 AAAA".into()],
            ..Recipe::default()
        };
        let config = parsed(&compose(&recipe, "n").unwrap());
        assert!(config.get("users").is_none());
        assert_eq!(
            config["ssh_authorized_keys"][0].as_str(),
            Some("ssh-ed25519 AAAA")
        );
    }

    #[test]
    fn the_script_never_contains_a_whole_marker() {
        let seed = compose(&Recipe::default(), "n0nce").unwrap();
        let text = String::from_utf8(seed.user_data).unwrap();
        assert!(!text.contains("cloudimg-bake:n0nce:"), "{text}");
    }

    #[test]
    fn power_state_is_refused() {
        let recipe = Recipe {
            user_data: Some(b"#cloud-config\npower_state: {mode: reboot}\n".to_vec()),
            ..Recipe::default()
        };
        assert!(matches!(
            compose(&recipe, "n"),
            Err(RecipeError::PowerState)
        ));
    }

    #[test]
    fn digest_ignores_the_nonce_and_follows_the_recipe() {
        let one = Recipe {
            run: vec!["true".into()],
            ..Recipe::default()
        };
        let two = Recipe {
            run: vec!["false".into()],
            ..Recipe::default()
        };
        assert_eq!(one.digest().unwrap(), one.digest().unwrap());
        assert_ne!(one.digest().unwrap(), two.digest().unwrap());
    }

    #[test]
    fn clear_text_passwords_are_refused() {
        assert!(check_password_hash("$6$salt$hash").is_ok());
        assert!(check_password_hash("hunter2").is_err());
        assert!(check_password_hash("$6 $salt").is_err());
    }

    #[test]
    fn write_file_specs() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("motd");
        std::fs::write(&local, b"hi").unwrap();
        let file = GuestFile::load(&format!("{}:/etc/motd:0600", local.display())).unwrap();
        assert_eq!(
            (file.path.as_str(), file.mode.as_deref()),
            ("/etc/motd", Some("0600"))
        );
        let file = GuestFile::load(&format!("{}:/etc/motd", local.display())).unwrap();
        assert_eq!(file.mode, None);
        assert!(GuestFile::load(&format!("{}:etc/motd", local.display())).is_err());
        assert!(GuestFile::load("nothing").is_err());
    }

    #[test]
    fn toml_recipe_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.pub"), "ssh-ed25519 AAAA k\n").unwrap();
        let path = dir.path().join("recipe.toml");
        std::fs::write(
            &path,
            "user = \"lab\"\nssh_authorized_keys = [\"key.pub\"]\nrun = [\"true\"]\n",
        )
        .unwrap();
        let recipe = RecipeSpec::from_file(&path).unwrap().load().unwrap();
        assert_eq!(recipe.ssh_keys, vec!["ssh-ed25519 AAAA k".to_owned()]);
        std::fs::write(&path, "usr = \"lab\"\n").unwrap();
        assert!(matches!(
            RecipeSpec::from_file(&path),
            Err(RecipeError::Toml { .. })
        ));
    }

    /// A recipe with every key, as a user writes it.
    const FULL_RECIPE: &[u8] = b"cloud_config = '''
#cloud-config
runcmd: [echo inline]
'''
user = \"lab\"
packages = [\"htop\"]
run = [\"echo one\", \"echo two\"]
hostname = \"golden\"
disk_size = \"4G\"
memory = 1024
cpus = 1
timeout = \"20m\"
boot_test = false
direct_kernel = false
network = \"restricted\"
";

    fn parse(bytes: &[u8]) -> Result<RecipeSpec, RecipeError> {
        RecipeSpec::parse(bytes, Path::new("/lab/recipe.toml"))
    }

    /// `bytes` with the first `from` replaced by `to` (the same length: one byte differs).
    fn flip(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = bytes
            .windows(from.len())
            .position(|window| window == from)
            .expect("in the recipe");
        let mut out = bytes.to_vec();
        out[at..at + to.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn a_toml_recipe_carries_every_bake_option() {
        let spec = parse(FULL_RECIPE).unwrap();
        assert_eq!(spec.user.as_deref(), Some("lab"));
        assert_eq!(spec.run, vec!["echo one".to_owned(), "echo two".to_owned()]);
        let recipe = spec.load().unwrap();
        assert_eq!(
            recipe.user_data.as_deref(),
            Some(&b"#cloud-config\nruncmd: [echo inline]\n"[..])
        );
        assert_eq!(
            recipe.machine,
            MachineOptions {
                disk_size: Some(4 << 30),
                memory_mib: Some(1024),
                cpus: Some(1),
                timeout: Some(std::time::Duration::from_secs(1200)),
                boot_test: Some(false),
                direct_kernel: Some(false),
                network: Some(Network::Restricted),
                guestfwd: Vec::new(),
            }
        );
        // Integers are accepted where a size or a duration is expected.
        let recipe = parse(b"disk_size = 1048576\ntimeout = 90\n")
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(recipe.machine.disk_size, Some(1 << 20));
        assert_eq!(
            recipe.machine.timeout,
            Some(std::time::Duration::from_secs(90))
        );
        // Nothing said: every default is left to bake.
        assert_eq!(
            parse(b"").unwrap().load().unwrap().machine,
            MachineOptions::default()
        );
    }

    #[test]
    fn one_wrong_byte_in_a_recipe_is_refused_and_named() {
        // An unknown key: the error names it, and the file.
        let error = parse(&flip(FULL_RECIPE, b"user =", b"usar =")).unwrap_err();
        assert!(matches!(error, RecipeError::Toml { .. }), "{error:?}");
        let text = crate::error::chain(&error);
        assert!(text.contains("usar"), "{text}");
        assert!(text.contains("/lab/recipe.toml"), "{text}");
        let error = parse(&flip(FULL_RECIPE, b"cpus", b"cpu_")).unwrap_err();
        assert!(crate::error::chain(&error).contains("cpu_"), "{error:?}");
        // Values of the wrong type or out of range.
        for (from, to) in [
            (&b"false"[..], &b"fals\""[..]),
            (b"cpus = 1", b"cpus = 0"),
            (b"memory = 1024", b"memory = 0024"),
            (b"\"4G\"", b"\"4Q\""),
            (b"\"20m\"", b"\"20d\""),
            (b"\"restricted\"", b"\"restrictex\""),
            (b"\"golden\"", b"\"-olden\""),
            (b"\"lab\"", b"\"Lab\""),
        ] {
            let loaded = parse(&flip(FULL_RECIPE, from, to)).and_then(|spec| spec.load());
            assert!(
                matches!(
                    loaded,
                    Err(RecipeError::Invalid { .. } | RecipeError::Toml { .. })
                ),
                "{} -> {}: {loaded:?}",
                String::from_utf8_lossy(from),
                String::from_utf8_lossy(to)
            );
        }
        // Not UTF-8.
        assert!(matches!(
            parse(b"user = \"l\xffb\"\n"),
            Err(RecipeError::Invalid { .. })
        ));
    }

    #[test]
    fn command_line_values_win_over_the_recipe_file() {
        let file = parse(FULL_RECIPE).unwrap();
        let cli = RecipeSpec {
            cpus: Some(4),
            run: vec!["echo three".into()],
            ..RecipeSpec::default()
        };
        let merged = file.and(cli);
        assert_eq!(merged.cpus, Some(4));
        assert_eq!(merged.memory, Some(1024));
        assert_eq!(merged.run.len(), 3);
    }

    #[test]
    fn the_digest_follows_the_disk_size_but_not_the_machine() {
        let base = parse(b"run = [\"true\"]\n").unwrap().load().unwrap();
        let mut faster = base.clone();
        faster.machine.cpus = Some(8);
        faster.machine.boot_test = Some(false);
        assert_eq!(base.digest().unwrap(), faster.digest().unwrap());
        let mut bigger = base.clone();
        bigger.machine.disk_size = Some(8 << 30);
        assert_ne!(base.digest().unwrap(), bigger.digest().unwrap());
    }

    #[test]
    fn a_device_named_as_a_file_is_read_only_up_to_the_limit() {
        let spec = parse(b"user_data = \"/dev/zero\"\n").unwrap();
        assert!(matches!(spec.load(), Err(RecipeError::TooLarge { .. })));
    }

    #[test]
    fn the_example_recipe_is_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("catalogs/examples/golden.recipe.toml");
        let recipe = RecipeSpec::from_file(&path).unwrap().load().unwrap();
        assert_eq!(recipe.user.as_deref(), Some("lab"));
        assert!(check_recipe_composes(&recipe));
    }

    fn check_recipe_composes(recipe: &Recipe) -> bool {
        compose(recipe, "n").is_ok()
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(check_user("lab").is_ok());
        assert!(check_user("Lab").is_err());
        assert!(check_hostname("golden-1").is_ok());
        assert!(check_hostname("-golden").is_err());
        assert!(check_word("package", "a b").is_err());
    }
}
