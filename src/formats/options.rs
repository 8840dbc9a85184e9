//! qemu-img style `-o key=value,key=value` creation options.
//!
//! Each writer takes the keys it understands with the typed getters and then calls
//! [`Options::reject_unknown`], so a misspelt option is an error instead of being ignored.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::FormatError;

#[derive(Debug, Default)]
pub struct Options {
    values: BTreeMap<String, String>,
    taken: RefCell<BTreeSet<String>>,
    /// Worker threads a writer may use for compression (`convert -m`); 0 means every core.
    threads: usize,
}

impl Clone for Options {
    fn clone(&self) -> Options {
        Options {
            values: self.values.clone(),
            taken: RefCell::new(BTreeSet::new()),
            threads: self.threads,
        }
    }
}

impl Options {
    /// Parses `a=1,b=2`; as in qemu-img, `,,` stands for a literal comma. Repeated `-o`
    /// arguments can be joined with `,` before parsing.
    pub fn parse(text: &str) -> Result<Options, FormatError> {
        let mut options = Options::default();
        let mut item = String::new();
        let mut chars = text.chars().peekable();
        let mut items = Vec::new();
        while let Some(c) = chars.next() {
            if c == ',' {
                if chars.peek() == Some(&',') {
                    chars.next();
                    item.push(',');
                } else {
                    items.push(std::mem::take(&mut item));
                }
            } else {
                item.push(c);
            }
        }
        items.push(item);
        for item in items.into_iter().filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
                // qemu accepts a bare flag as "on".
                None => (item.trim().to_owned(), "on".to_owned()),
            };
            options.values.insert(key, value);
        }
        Ok(options)
    }

    /// Sets a key as if it had been given with `-o` (used for `-c`, presets).
    pub fn set(&mut self, key: &str, value: &str) {
        self.values.insert(key.to_owned(), value.to_owned());
    }

    /// Limits compression workers (`convert -m N`).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
    }

    /// How many worker threads a writer should use for compression.
    pub fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The raw string value of `key`, marking it as understood.
    pub fn get(&self, key: &str) -> Option<&str> {
        let value = self.values.get(key)?;
        self.taken.borrow_mut().insert(key.to_owned());
        Some(value.as_str())
    }

    /// A value that must be one of `choices`.
    pub fn choice<'a>(
        &self,
        key: &str,
        choices: &[&'a str],
    ) -> Result<Option<&'a str>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(value))
                .copied()
                .map(Some)
                .ok_or_else(|| {
                    invalid(
                        key,
                        value,
                        format!("expected one of {}", choices.join(", ")),
                    )
                }),
        }
    }

    /// `on|off|true|false|yes|no`.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "on" | "true" | "yes" | "1" => Ok(Some(true)),
                "off" | "false" | "no" | "0" => Ok(Some(false)),
                _ => Err(invalid(key, value, "expected on or off")),
            },
        }
    }

    /// A byte size with an optional K/M/G/T suffix.
    pub fn size(&self, key: &str) -> Result<Option<u64>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => parse_size(value)
                .map(Some)
                .ok_or_else(|| invalid(key, value, "expected a size such as 65536, 64K or 2M")),
        }
    }

    /// A plain unsigned integer (decimal, or hex with 0x).
    pub fn number(&self, key: &str) -> Result<Option<u64>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => {
                let parsed = match value.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).ok(),
                    None => value.parse().ok(),
                };
                parsed
                    .map(Some)
                    .ok_or_else(|| invalid(key, value, "expected a number"))
            }
        }
    }

    /// Fails on the first key no getter asked for.
    pub fn reject_unknown(&self, format: &str) -> Result<(), FormatError> {
        let taken = self.taken.borrow();
        match self.values.iter().find(|(k, _)| !taken.contains(*k)) {
            None => Ok(()),
            Some((key, value)) => Err(invalid(key, value, format!("not an option of {format}"))),
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> FormatError {
    FormatError::InvalidOption {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `512`, `64K`, `2.5G`, `8G`, `1T` (binary multiples, as qemu-img). `B` is bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => return None,
    };
    if number.contains('.') {
        let value: f64 = number.parse().ok()?;
        let bytes = value * (1u64 << shift) as f64;
        (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then(|| bytes.round() as u64)
    } else {
        number.parse::<u64>().ok()?.checked_mul(1 << shift)
    }
}

/// One creation option as `-o help` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHelp {
    pub name: &'static str,
    /// qemu's type words: `str`, `size`, `num`, `bool (on/off)`.
    pub kind: &'static str,
    pub help: &'static str,
}

const fn option(name: &'static str, kind: &'static str, help: &'static str) -> OptionHelp {
    OptionHelp { name, kind, help }
}

const BOOL: &str = "bool (on/off)";

/// The `-o` options each writer accepts, sorted by name as qemu-img sorts them.
pub fn help(format: super::DiskFormat) -> &'static [OptionHelp] {
    use super::DiskFormat;
    match format {
        DiskFormat::Raw => {
            const OPTIONS: &[OptionHelp] = &[option(
                "preallocation",
                "str",
                "Preallocation mode (allowed values: off, falloc, full)",
            )];
            OPTIONS
        }
        DiskFormat::Qcow2 => {
            const OPTIONS: &[OptionHelp] = &[
                option("cluster_size", "size", "qcow2 cluster size"),
                option(
                    "compat",
                    "str",
                    "Compatibility level (v2 [0.10] or v3 [1.1])",
                ),
                option(
                    "compression_type",
                    "str",
                    "Compression method used for image cluster compression (zlib, zstd)",
                ),
                option(
                    "lazy_refcounts",
                    BOOL,
                    "Postpone refcount updates (only off: cloudimg writes refcounts eagerly)",
                ),
                option(
                    "preallocation",
                    "str",
                    "Preallocation mode (allowed values: off, metadata, falloc, full)",
                ),
                option(
                    "refcount_bits",
                    "num",
                    "Width of a reference count entry in bits (16)",
                ),
            ];
            OPTIONS
        }
        DiskFormat::Vmdk => {
            const OPTIONS: &[OptionHelp] = &[
                option(
                    "adapter_type",
                    "str",
                    "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or \
                 legacyESX",
                ),
                option(
                    "cid",
                    "str",
                    "Content ID, up to 8 hex digits (default: random)",
                ),
                option("compat6", BOOL, "VMDK version 6 image"),
                option("hwversion", "str", "VMDK hardware version"),
                option(
                    "stream_layout",
                    "str",
                    "streamOptimized layout: vmware (default; grain directory at the end) or qemu",
                ),
                option(
                    "subformat",
                    "str",
                    "VMDK flat extent format, can be one of {monolithicSparse (default) | \
                 monolithicFlat | streamOptimized}",
                ),
                option("toolsversion", "str", "VMware guest tools version"),
                option(
                    "zeroed_grain",
                    BOOL,
                    "Enable efficient zero writes using the zeroed-grain GTE feature",
                ),
            ];
            OPTIONS
        }
        DiskFormat::Vhd => {
            const OPTIONS: &[OptionHelp] = &[
                option(
                    "azure",
                    BOOL,
                    "Azure's layout: fixed, force_size, size rounded up to a MiB",
                ),
                option(
                    "force_size",
                    BOOL,
                    "Force disk size calculation to use the actual size specified, rather than \
                 using the nearest CHS-based calculation",
                ),
                option(
                    "subformat",
                    "str",
                    "Type of virtual hard disk format. Supported formats are {dynamic (default) | \
                 fixed}",
                ),
                option(
                    "timestamp",
                    "num",
                    "Footer timestamp, seconds since 2000-01-01 (reproducible output)",
                ),
                option("uuid", "str", "Footer unique id (reproducible output)"),
            ];
            OPTIONS
        }
        DiskFormat::Vhdx => {
            const OPTIONS: &[OptionHelp] = &[
                option(
                    "block_size",
                    "size",
                    "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.",
                ),
                option(
                    "block_state_zero",
                    BOOL,
                    "Force use of payload blocks of type 'ZERO'. Non-standard, but default.",
                ),
                option("log_size", "size", "Log size; min 1MB."),
                option(
                    "subformat",
                    "str",
                    "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.",
                ),
            ];
            OPTIONS
        }
        DiskFormat::Vdi => {
            const OPTIONS: &[OptionHelp] =
                &[option("static", BOOL, "VDI static (pre-allocated) image")];
            OPTIONS
        }
    }
}

/// Whether options ask for the list instead (`-o help`, `-o ?`).
pub fn wants_help(text: &str) -> bool {
    text.split(',')
        .any(|item| matches!(item.trim(), "help" | "?"))
}

/// `-o help` as qemu-img prints it.
pub fn render_help(format: super::DiskFormat) -> String {
    let mut out = format!("Supported {} options:\n", format.qemu_name());
    for option in help(format) {
        let name = format!("{}=<{}>", option.name, option.kind);
        out.push_str(&format!("  {name:<22} - {}\n", option.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_escaped_commas_and_bare_flags() {
        let o = Options::parse("subformat=streamOptimized,name=a,,b,lazy").unwrap();
        assert_eq!(o.get("subformat"), Some("streamOptimized"));
        assert_eq!(o.get("name"), Some("a,b"));
        assert_eq!(o.flag("lazy").unwrap(), Some(true));
        o.reject_unknown("vmdk").unwrap();
    }

    #[test]
    fn unread_key_is_rejected() {
        let o = Options::parse("cluster_size=64K,bogus=1").unwrap();
        assert_eq!(o.size("cluster_size").unwrap(), Some(65536));
        assert!(
            matches!(o.reject_unknown("qcow2"), Err(FormatError::InvalidOption { key, .. }) if key == "bogus")
        );
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("2.5G"), Some(5 << 29));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999999999T"), None);
    }

    #[test]
    fn help_is_asked_with_help_or_question_mark() {
        assert!(wants_help("help"));
        assert!(wants_help("subformat=fixed,?"));
        assert!(!wants_help("subformat=help-me"));
    }

    #[test]
    fn help_lists_options_as_qemu_img_does() {
        assert_eq!(
            render_help(crate::formats::DiskFormat::Vdi),
            "Supported vdi options:\n  static=<bool (on/off)> - VDI static (pre-allocated) image\n"
        );
    }
}
