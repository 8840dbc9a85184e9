//! qemu-img's output layouts, so scripts written for qemu-img read cloudimg's output unchanged.
//!
//! Pure functions from facts to text: `info` (JSON as qemu-img 10 prints it: the image node with
//! its `children` file nodes, `format-specific` as `{type, data}`, `dirty-flag`; and the human
//! form line for line), `check` (qemu's `ImageCheck` fields and messages). serde_json's maps
//! sort their keys, so [`Ordered`] prints them in qemu-img's order instead (one rank list serves
//! every layout: the orders never conflict); sizes in the human form are rounded as qemu's
//! `size_to_str` rounds them. The tests in `tests/qemu_img.rs` compare both forms with
//! qemu-img's on the same images.

use std::path::Path;

use cloudimg::formats::{CheckReport, DiskFormat, ImageInfo};
use serde_json::{json, Map, Value};

/// Keys in the order qemu-img prints them, across `info`, `check` and `measure` output; other
/// keys (cloudimg's own, such as an archive's `entry`) follow, sorted.
const KEY_ORDER: &[&str] = &[
    "children",
    "name",
    "info",
    "image-end-offset",
    "total-clusters",
    "corruptions",
    "check-errors",
    "leaks",
    "leaks-fixed",
    "corruptions-fixed",
    "allocated-clusters",
    "fragmented-clusters",
    "compressed-clusters",
    "compressed",
    "bitmaps",
    "required",
    "fully-allocated",
    "virtual-size",
    "filename",
    "cluster-size",
    "format",
    "actual-size",
    "format-specific",
    "type",
    "data",
    "dirty-flag",
    // qcow2's format-specific data.
    "compat",
    "compression-type",
    "lazy-refcounts",
    "refcount-bits",
    "corrupt",
    "extended-l2",
    // vmdk's.
    "cid",
    "parent-cid",
    "create-type",
    "extents",
];

/// A map's entries in qemu-img's order.
fn qemu_order(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let rank = |key: &str| {
        KEY_ORDER
            .iter()
            .position(|k| *k == key)
            .unwrap_or(KEY_ORDER.len())
    };
    let mut entries: Vec<_> = map.iter().collect();
    // Stable: keys of equal rank (unknown ones) keep the map's sorted order.
    entries.sort_by_key(|(key, _)| rank(key));
    entries
}

/// Serialises a JSON value with every object's keys in qemu-img's order.
pub struct Ordered<'a>(pub &'a Value);

impl serde::Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in qemu_order(map) {
                    out.serialize_entry(key, &Ordered(value))?;
                }
                out.end()
            }
            Value::Array(list) => {
                let mut out = serializer.serialize_seq(Some(list.len()))?;
                for value in list {
                    out.serialize_element(&Ordered(value))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// One file under an image node: what qemu-img calls a protocol node (`file`, `extents.N`).
#[derive(Clone, Debug)]
pub struct FileNode {
    /// The child's name: `file`, or `extents.0` for a VMDK's separate extent file.
    pub name: String,
    pub filename: String,
    /// The file's length in bytes, rounded up to a whole sector as qemu reports it.
    pub length: u64,
    /// Bytes the file occupies on disk (holes excluded).
    pub actual: u64,
}

impl FileNode {
    /// Reads a file's length and allocation; `None` if it cannot be examined.
    pub fn of(name: &str, path: &Path) -> Option<FileNode> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileNode {
            name: name.to_owned(),
            filename: path.display().to_string(),
            // qemu counts files in whole sectors.
            length: meta.len().next_multiple_of(SECTOR),
            actual: meta.blocks() * BLOCK,
        })
    }

    fn json(&self) -> Value {
        json!({
            "children": [],
            "virtual-size": self.length,
            "filename": self.filename,
            "format": "file",
            "actual-size": self.actual,
            "format-specific": { "type": "file", "data": {} },
            "dirty-flag": false,
        })
    }
}

/// `st_blocks` counts 512-byte units.
const BLOCK: u64 = 512;
/// qemu's block layer sizes files in sectors.
const SECTOR: u64 = 512;

/// The file nodes of an image at `path`: its extent files first (as qemu lists them), then the
/// image file itself.
pub fn file_nodes(path: &Path, info: &ImageInfo) -> Vec<FileNode> {
    let mut nodes: Vec<FileNode> = info
        .extent_files
        .iter()
        .enumerate()
        .filter_map(|(i, extent)| FileNode::of(&format!("extents.{i}"), extent))
        .collect();
    nodes.extend(FileNode::of("file", path));
    nodes
}

/// `qemu-img info --output=json`.
pub fn info_json(info: &ImageInfo, filename: &str, nodes: &[FileNode]) -> Value {
    let mut map = Map::new();
    map.insert(
        "children".into(),
        nodes
            .iter()
            .map(|node| json!({ "name": node.name, "info": node.json() }))
            .collect::<Vec<_>>()
            .into(),
    );
    map.insert("virtual-size".into(), info.virtual_size.into());
    map.insert("filename".into(), filename.into());
    if let Some(cluster) = info.cluster_size.filter(|&c| c > 0) {
        map.insert("cluster-size".into(), cluster.into());
    }
    map.insert("format".into(), info.format.qemu_name().into());
    if !nodes.is_empty() {
        map.insert("actual-size".into(), actual_size(nodes).into());
    }
    if !info.format_specific.is_empty() {
        map.insert(
            "format-specific".into(),
            json!({
                "type": info.format.qemu_name(),
                "data": Value::Object(info.format_specific.clone()),
            }),
        );
    }
    map.insert("dirty-flag".into(), false.into());
    Value::Object(map)
}

/// qemu sums the allocation of every file of the image.
fn actual_size(nodes: &[FileNode]) -> u64 {
    nodes.iter().map(|node| node.actual).sum()
}

/// `qemu-img info` (human form).
pub fn info_human(info: &ImageInfo, filename: &str, nodes: &[FileNode]) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("image: {filename}"));
    line(format!("file format: {}", info.format.qemu_name()));
    line(format!(
        "virtual size: {} ({} bytes)",
        size_to_str(info.virtual_size),
        info.virtual_size
    ));
    if !nodes.is_empty() {
        line(format!("disk size: {}", size_to_str(actual_size(nodes))));
    }
    if let Some(cluster) = info.cluster_size.filter(|&c| c > 0) {
        line(format!("cluster_size: {cluster}"));
    }
    if !info.format_specific.is_empty() {
        out.push_str("Format specific information:\n");
        dump_dict(&mut out, 1, &info.format_specific);
    }
    for node in nodes {
        out.push_str(&format!(
            "Child node '/{}':\n    filename: {}\n    protocol type: file\n    \
             file length: {} ({} bytes)\n    disk size: {}\n",
            node.name,
            node.filename,
            size_to_str(node.length),
            node.length,
            size_to_str(node.actual)
        ));
    }
    out
}

/// qemu's `dump_qdict`: keys with dashes as spaces, composites on their own indented lines.
fn dump_dict(out: &mut String, indent: usize, map: &Map<String, Value>) {
    for (key, value) in qemu_order(map) {
        let key = key.replace('-', " ");
        dump_entry(out, indent, &key, value);
    }
}

/// qemu's `dump_qlist`: items named `[i]`.
fn dump_list(out: &mut String, indent: usize, list: &[Value]) {
    for (i, value) in list.iter().enumerate() {
        dump_entry(out, indent, &format!("[{i}]"), value);
    }
}

fn dump_entry(out: &mut String, indent: usize, label: &str, value: &Value) {
    let pad = " ".repeat(indent * 4);
    match value {
        Value::Object(map) => {
            out.push_str(&format!("{pad}{label}:\n"));
            dump_dict(out, indent + 1, map);
        }
        Value::Array(list) => {
            out.push_str(&format!("{pad}{label}:\n"));
            dump_list(out, indent + 1, list);
        }
        Value::String(text) => out.push_str(&format!("{pad}{label}: {text}\n")),
        Value::Null => out.push_str(&format!("{pad}{label}: null\n")),
        other => out.push_str(&format!("{pad}{label}: {other}\n")),
    }
}

/// qemu's `size_to_str`: binary units, three significant digits (`%0.3g`), and the next unit
/// from 1000 of the current one on ("1000 KiB" reads "0.977 MiB").
pub fn size_to_str(bytes: u64) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let scaled = bytes as f64 / (1000.0 / 1024.0);
    // frexp's exponent: the i with 2^(i-1) <= scaled < 2^i.
    let exponent = if scaled < 1.0 {
        0
    } else {
        scaled.log2().floor() as i32 + 1
    };
    let unit = (((exponent - 1).max(0)) / 10).min(SUFFIXES.len() as i32 - 1) as usize;
    let value = bytes as f64 / (1u64 << (unit * 10)) as f64;
    format!("{} {}B", format_g3(value), SUFFIXES[unit])
}

/// C's `%0.3g` for 0 <= value < 1000 (the range `size_to_str` produces; larger values never
/// reach it, smaller ones only as 0).
fn format_g3(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    // Round to three significant digits first: the rounding may carry into a new digit.
    let digits = value.abs().log10().floor() as i32;
    let decimals = (2 - digits).max(0) as usize;
    let mut text = format!("{value:.decimals$}");
    let rounded: f64 = text.parse().unwrap_or(value);
    let new_digits = rounded.abs().log10().floor() as i32;
    if new_digits != digits {
        let decimals = (2 - new_digits).max(0) as usize;
        text = format!("{rounded:.decimals$}");
    }
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    text
}

/// What a check changed, for qemu-img's `-r` report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixed {
    pub leaks: u64,
    pub corruptions: u64,
}

/// Whether qemu-img reports cluster statistics for this format (it does for qcow2 only).
fn has_cluster_stats(format: DiskFormat) -> bool {
    format == DiskFormat::Qcow2
}

/// `qemu-img check --output=json`: zero counts are left out, as qemu leaves them.
pub fn check_json(report: &CheckReport, filename: &str, format: DiskFormat, fixed: Fixed) -> Value {
    let mut map = Map::new();
    let mut put = |key: &str, value: Option<u64>| {
        if let Some(value) = value.filter(|&v| v != 0) {
            map.insert(key.into(), value.into());
        }
    };
    let stats = has_cluster_stats(format);
    put("image-end-offset", report.image_end_offset);
    put("total-clusters", report.total_clusters.filter(|_| stats));
    put("corruptions", Some(report.corruption_count()));
    map.insert("check-errors".into(), 0.into());
    let mut put = |key: &str, value: Option<u64>| {
        if let Some(value) = value.filter(|&v| v != 0) {
            map.insert(key.into(), value.into());
        }
    };
    put("leaks", Some(report.leak_count()));
    put("leaks-fixed", Some(fixed.leaks));
    put("corruptions-fixed", Some(fixed.corruptions));
    put(
        "allocated-clusters",
        report.allocated_clusters.filter(|_| stats),
    );
    put(
        "fragmented-clusters",
        report.fragmented_clusters.filter(|_| stats),
    );
    put(
        "compressed-clusters",
        report.compressed_clusters.filter(|_| stats),
    );
    map.insert("filename".into(), filename.into());
    map.insert("format".into(), format.qemu_name().into());
    Value::Object(map)
}

/// `qemu-img check` (human form, stdout): the summary; the individual findings go to stderr.
pub fn check_human(report: &CheckReport, format: DiskFormat, fixed: Fixed) -> String {
    let mut out = String::new();
    if fixed.leaks != 0 || fixed.corruptions != 0 {
        out.push_str(&format!(
            "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    \
             {} corruptions\n\nDouble checking the fixed image now...\n",
            fixed.leaks, fixed.corruptions
        ));
    }
    let (corruptions, leaks) = (report.corruption_count(), report.leak_count());
    if corruptions == 0 && leaks == 0 {
        out.push_str("No errors were found on the image.\n");
    }
    if corruptions != 0 {
        out.push_str(&format!(
            "\n{corruptions} errors were found on the image.\nData may be corrupted, or further \
             writes to the image may corrupt it.\n"
        ));
    }
    if leaks != 0 {
        out.push_str(&format!(
            "\n{leaks} leaked clusters were found on the image.\nThis means waste of disk space, \
             but no harm to data.\n"
        ));
    }
    if has_cluster_stats(format) {
        if let (Some(total), Some(allocated)) = (report.total_clusters, report.allocated_clusters) {
            if total != 0 && allocated != 0 {
                let percent =
                    |part: Option<u64>, whole: u64| part.unwrap_or(0) as f64 * 100.0 / whole as f64;
                out.push_str(&format!(
                    "{allocated}/{total} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed \
                     clusters\n",
                    percent(Some(allocated), total),
                    percent(report.fragmented_clusters, allocated),
                    percent(report.compressed_clusters, allocated),
                ));
            }
        }
    }
    if let Some(end) = report.image_end_offset.filter(|&end| end != 0) {
        out.push_str(&format!("Image end offset: {end}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_as_qemu_size_to_str() {
        for (bytes, text) in [
            (0, "0 B"),
            (512, "512 B"),
            (999, "999 B"),
            (1000, "0.977 KiB"),
            (2560, "2.5 KiB"),
            (196 << 10, "196 KiB"),
            (3_411_968, "3.25 MiB"),
            (3_149_824, "3 MiB"),
            (3_153_920, "3.01 MiB"),
            (50_343_936, "48 MiB"),
            (50_724_864, "48.4 MiB"),
            (1 << 30, "1 GiB"),
            (1023 << 20, "0.999 GiB"),
        ] {
            assert_eq!(size_to_str(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn format_specific_dumps_nested_values_like_qemu() {
        let mut data = Map::new();
        data.insert(
            "extents".into(),
            json!([{ "format": "", "compressed": true }]),
        );
        data.insert("parent-cid".into(), 4294967295u64.into());
        let mut out = String::new();
        dump_dict(&mut out, 1, &data);
        assert_eq!(
            out,
            "    parent cid: 4294967295\n    extents:\n        [0]:\n            \
             compressed: true\n            format: \n"
        );
    }

    #[test]
    fn check_json_leaves_zero_counts_out() {
        let report = CheckReport::default();
        let value = check_json(&report, "x.vdi", DiskFormat::Vdi, Fixed::default());
        assert_eq!(
            serde_json::to_string(&Ordered(&value)).unwrap(),
            r#"{"check-errors":0,"filename":"x.vdi","format":"vdi"}"#
        );
        let report = CheckReport {
            leaks: vec!["Leaked cluster 6 refcount=1 reference=0".into()],
            total_clusters: Some(160),
            allocated_clusters: Some(1),
            image_end_offset: Some(458752),
            ..CheckReport::default()
        };
        let value = check_json(&report, "l.qcow2", DiskFormat::Qcow2, Fixed::default());
        // qemu-img 10's order for the same facts.
        assert_eq!(
            serde_json::to_string(&Ordered(&value)).unwrap(),
            r#"{"image-end-offset":458752,"total-clusters":160,"check-errors":0,"leaks":1,"allocated-clusters":1,"filename":"l.qcow2","format":"qcow2"}"#
        );
    }
}
