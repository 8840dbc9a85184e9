//! `measure`: the size a conversion will need, as `qemu-img measure` computes it.
//!
//! Only qcow2 and raw outputs can be measured (qemu-img measures no other format). For qcow2,
//! `fully-allocated` is the data plus every table a fully allocated image needs (qemu's
//! `qcow2_calc_prealloc_size`: header, L2 and L1 tables, and refcount blocks and table found as
//! a fixed point), and `required` swaps the data for the clusters the source really holds; both
//! follow qemu's formulas, so the figures are qemu-img's. Raw needs the virtual size either way.

use super::{DiskFormat, DiskReader, Extent, FormatError, Options};

/// Bytes per L1 entry and per refcount table entry.
const ENTRY: u64 = 8;
/// Bytes per L2 entry, standard and extended.
const L2_ENTRY: u64 = 8;
const L2_ENTRY_EXTENDED: u64 = 16;
/// qemu-img's defaults for a new qcow2.
const DEFAULT_CLUSTER: u64 = 64 << 10;
const DEFAULT_REFCOUNT_BITS: u64 = 16;
/// qemu rounds a `--size` for raw to whole sectors.
const SECTOR: u64 = 512;
/// Larger virtual sizes are refused rather than overflow the arithmetic (qemu's own qcow2
/// limit is far below: 2^56 bytes of L1 reach with 2 MiB clusters).
const MAX_SIZE: u64 = 1 << 62;

/// `qemu-img measure`'s two figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Measure {
    /// Bytes the converted image needs.
    pub required: u64,
    /// Bytes it needs when every cluster is allocated.
    #[serde(rename = "fully-allocated")]
    pub fully_allocated: u64,
}

/// What is measured: an image, or a blank one of a virtual size (`--size`).
pub enum Source<'a> {
    Image(&'a mut dyn DiskReader),
    Size(u64),
}

/// Measures a conversion of `source` to `format` with `options` (qemu-img's `-o` names).
pub fn measure(
    source: Source<'_>,
    format: DiskFormat,
    options: &Options,
) -> Result<Measure, FormatError> {
    let size = match &source {
        Source::Image(reader) => reader.virtual_size(),
        Source::Size(size) => *size,
    };
    if size > MAX_SIZE {
        return Err(FormatError::InvalidOption {
            key: "size".into(),
            value: size.to_string(),
            reason: format!("larger than {MAX_SIZE} bytes"),
        });
    }
    match format {
        DiskFormat::Raw => {
            options.choice("preallocation", &["off", "falloc", "full"])?;
            options.reject_unknown("raw")?;
            let size = match source {
                Source::Image(reader) => reader.virtual_size(),
                Source::Size(size) => size.next_multiple_of(SECTOR),
            };
            Ok(Measure {
                required: size,
                fully_allocated: size,
            })
        }
        DiskFormat::Qcow2 => measure_qcow2(source, options),
        other => Err(FormatError::Unsupported {
            path: format!("(-O {other})").into(),
            what: format!("measuring {other} output (qemu-img measures qcow2 and raw)"),
        }),
    }
}

fn measure_qcow2(source: Source<'_>, options: &Options) -> Result<Measure, FormatError> {
    let cluster = options.size("cluster_size")?.unwrap_or(DEFAULT_CLUSTER);
    if !cluster.is_power_of_two() || !(512..=2 << 20).contains(&cluster) {
        return Err(FormatError::InvalidOption {
            key: "cluster_size".into(),
            value: cluster.to_string(),
            reason: "must be a power of two between 512 and 2M".into(),
        });
    }
    let refcount_bits = options
        .number("refcount_bits")?
        .unwrap_or(DEFAULT_REFCOUNT_BITS);
    if !refcount_bits.is_power_of_two() || refcount_bits > 64 {
        return Err(FormatError::InvalidOption {
            key: "refcount_bits".into(),
            value: refcount_bits.to_string(),
            reason: "must be a power of two up to 64".into(),
        });
    }
    let extended_l2 = options.flag("extended_l2")?.unwrap_or(false);
    let prealloc = options.choice("preallocation", &["off", "metadata", "falloc", "full"])?;
    // Accepted for the command line's sake; they change no size.
    options.choice("compat", &["0.10", "1.1", "v2", "v3"])?;
    options.choice("compression_type", &["zlib", "zstd"])?;
    options.flag("lazy_refcounts")?;
    options.reject_unknown("qcow2")?;
    let (virtual_size, data) = match source {
        Source::Image(reader) => {
            let size = reader.virtual_size();
            (size, allocated_clusters_bytes(reader, cluster)?)
        }
        Source::Size(size) => (size, 0),
    };
    let aligned = virtual_size.next_multiple_of(cluster);
    let required_data = match prealloc {
        Some("falloc") | Some("full") => aligned,
        _ => data,
    };
    let fully_allocated = prealloc_size(
        virtual_size,
        cluster,
        refcount_bits.trailing_zeros(),
        extended_l2,
    );
    Ok(Measure {
        required: fully_allocated - aligned + required_data,
        fully_allocated,
    })
}

/// The bytes of whole clusters that hold data in the source, counted as qemu counts them:
/// each data run extended to the end of its last cluster, plus its offset into its first.
fn allocated_clusters_bytes(reader: &mut dyn DiskReader, cluster: u64) -> Result<u64, FormatError> {
    let size = reader.virtual_size();
    let mut offset = 0;
    let mut required = 0;
    while offset < size {
        let mapping = reader.map(offset)?;
        let mut len = mapping.len.min(size - offset);
        if mapping.extent == Extent::Data {
            len = (offset + len).next_multiple_of(cluster) - offset;
            required += offset % cluster + len;
        }
        offset += len;
    }
    Ok(required)
}

/// qemu's `qcow2_calc_prealloc_size`: a fully allocated image of `total` bytes.
pub fn prealloc_size(total: u64, cluster: u64, refcount_order: u32, extended_l2: bool) -> u64 {
    let aligned = total.next_multiple_of(cluster);
    let l2_entry = if extended_l2 {
        L2_ENTRY_EXTENDED
    } else {
        L2_ENTRY
    };
    // Header cluster.
    let mut meta = cluster;
    // L2 tables.
    let l2_entries = (aligned / cluster).next_multiple_of(cluster / l2_entry);
    meta += l2_entries * l2_entry;
    // L1 table.
    let l1_entries = (l2_entries * l2_entry / cluster).next_multiple_of(cluster / ENTRY);
    meta += l1_entries * ENTRY;
    meta += refcount_metadata_size((meta + aligned) / cluster, cluster, refcount_order);
    meta + aligned
}

/// qemu's `qcow2_refcount_metadata_size`: the refcount blocks and table that count `clusters`
/// clusters and themselves, found as a fixed point.
fn refcount_metadata_size(clusters: u64, cluster: u64, refcount_order: u32) -> u64 {
    let blocks_per_table_cluster = cluster / ENTRY;
    let refcounts_per_block = cluster * 8 / (1 << refcount_order);
    let (mut table, mut blocks, mut n) = (0u64, 0u64, 0u64);
    loop {
        let last = n;
        blocks = (clusters + table + blocks).div_ceil(refcounts_per_block);
        table = blocks.div_ceil(blocks_per_table_cluster);
        n = clusters + blocks + table;
        if n == last {
            break;
        }
    }
    (blocks + table) * cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qcow2_figures_are_qemu_img_s() {
        // `qemu-img measure --size 1G -O qcow2`: 393216 required, 1074135040 fully allocated.
        let measure = measure(
            Source::Size(1 << 30),
            DiskFormat::Qcow2,
            &Options::default(),
        )
        .unwrap();
        assert_eq!(
            measure,
            Measure {
                required: 393_216,
                fully_allocated: 1_074_135_040
            }
        );
        // 48 MiB + 12 KiB: 50724864 fully allocated (qemu-img measure -O qcow2).
        assert_eq!(prealloc_size(50_343_936, 65536, 4, false), 50_724_864);
    }

    #[test]
    fn raw_needs_the_virtual_size() {
        let measure = measure(Source::Size(1000), DiskFormat::Raw, &Options::default()).unwrap();
        assert_eq!(measure.required, 1024);
        assert_eq!(measure.fully_allocated, 1024);
    }

    #[test]
    fn other_formats_and_unknown_options_are_refused() {
        assert!(measure(Source::Size(1 << 20), DiskFormat::Vdi, &Options::default()).is_err());
        let options = Options::parse("subformat=fixed").unwrap();
        assert!(measure(Source::Size(1 << 20), DiskFormat::Qcow2, &options).is_err());
    }
}
