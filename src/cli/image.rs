//! `info`, `convert`, `check`, `create`, `resize`: the image commands, with qemu-img's
//! vocabulary.

use std::path::Path;

use cloudimg::formats::options::parse_size;
use cloudimg::formats::{self, DiskFormat, Options};
use cloudimg::pipeline::Error;

use super::args::{CheckArgs, ConvertArgs, CreateArgs, Global, InfoArgs, ResizeArgs};
use super::{print_json, progress};

fn disk_format(name: &str) -> Result<DiskFormat, Error> {
    DiskFormat::from_name(name).ok_or_else(|| {
        Error::Usage(format!(
            "unknown disk format {name:?}; expected raw, qcow2, vmdk, vhd (vpc), vhdx or vdi"
        ))
    })
}

fn optional_format(name: &Option<String>) -> Result<Option<DiskFormat>, Error> {
    name.as_deref().map(disk_format).transpose()
}

/// Joins repeated `-o` arguments the way qemu-img does.
fn options(values: &[String]) -> Result<Options, Error> {
    Ok(Options::parse(&values.join(","))?)
}

pub fn info(global: &Global, args: InfoArgs) -> Result<i32, Error> {
    let reader = formats::open(&args.file, optional_format(&args.format)?)?;
    let info = reader.info();
    let actual_size = allocated_bytes(&args.file);
    if global.json {
        let mut value = serde_json::to_value(&info).map_err(|e| Error::Usage(e.to_string()))?;
        if let Some(map) = value.as_object_mut() {
            map.insert("filename".into(), args.file.display().to_string().into());
            if let Some(size) = actual_size {
                map.insert("actual-size".into(), size.into());
            }
        }
        print_json(&value);
        return Ok(0);
    }
    println!("image: {}", args.file.display());
    println!("file format: {}", info.format);
    println!(
        "virtual size: {} ({} bytes)",
        human(info.virtual_size),
        info.virtual_size
    );
    if let Some(size) = actual_size {
        println!("disk size: {}", human(size));
    }
    if let Some(cluster) = info.cluster_size {
        println!("cluster_size: {cluster}");
    }
    for (label, value) in [
        ("subformat", &info.subformat),
        ("compat", &info.compat),
        ("compression", &info.compression),
    ] {
        if let Some(value) = value {
            println!("{label}: {value}");
        }
    }
    if !info.format_specific.is_empty() {
        println!("Format specific information:");
        for (key, value) in &info.format_specific {
            match value {
                serde_json::Value::String(text) => println!("    {key}: {text}"),
                other => println!("    {key}: {other}"),
            }
        }
    }
    Ok(0)
}

pub fn convert(global: &Global, args: ConvertArgs) -> Result<i32, Error> {
    let source_format = optional_format(&args.format)?;
    let target_format = disk_format(&args.output_format)?;
    let mut options = options(&args.options)?;
    if args.compress {
        if target_format != DiskFormat::Qcow2 {
            return Err(Error::Usage(format!(
                "-c compresses qcow2 output; for {target_format} pick a compressed subformat \
                 (vmdk: -o subformat=streamOptimized)"
            )));
        }
        options.set("compress", "on");
    }
    if args.azure {
        if target_format != DiskFormat::Vhd {
            return Err(Error::Usage("--azure applies to -O vhd".into()));
        }
        options.set("azure", "on");
    }
    options.set_threads(args.threads);
    let reporter = progress::reporter(global.quiet || !args.progress);
    let stats = formats::convert::convert_file(
        &args.source,
        source_format,
        &args.destination,
        target_format,
        &options,
        reporter.as_ref(),
    )?;
    if global.json {
        print_json(&stats);
    }
    Ok(0)
}

pub fn check(global: &Global, args: CheckArgs) -> Result<i32, Error> {
    let report = formats::check(&args.file, optional_format(&args.format)?)?;
    if global.json {
        print_json(&report);
    } else {
        for problem in &report.corruptions {
            println!("ERROR {problem}");
        }
        for leak in &report.leaks {
            println!("Leaked cluster: {leak}");
        }
        if report.corruptions.is_empty() && report.leaks.is_empty() {
            println!("No errors were found on the image.");
        } else {
            println!(
                "{} errors were found on the image; {} leaked clusters.",
                report.corruptions.len(),
                report.leaks.len()
            );
        }
        if let (Some(allocated), Some(total)) = (report.allocated_clusters, report.total_clusters) {
            println!("{allocated}/{total} clusters are allocated.");
        }
    }
    Ok(report.exit_code())
}

pub fn create(_global: &Global, args: CreateArgs) -> Result<i32, Error> {
    let format = disk_format(&args.format)?;
    let size = parse_size(&args.size)
        .ok_or_else(|| Error::Usage(format!("invalid size {:?}", args.size)))?;
    let options = options(&args.options)?;
    formats::convert::create_blank(&args.file, format, size, &options)?;
    tracing::info!(file = %args.file.display(), format = %format, size, "created");
    Ok(0)
}

pub fn resize(_global: &Global, args: ResizeArgs) -> Result<i32, Error> {
    let format = optional_format(&args.format)?;
    let current = formats::open(&args.file, format)?.virtual_size();
    let new_size = relative_size(current, &args.size)
        .ok_or_else(|| Error::Usage(format!("invalid size {:?}", args.size)))?;
    formats::resize(&args.file, format, new_size, args.shrink)?;
    tracing::info!(file = %args.file.display(), from = current, to = new_size, "resized");
    Ok(0)
}

/// `SIZE`, `+SIZE` or `-SIZE` against the current size.
fn relative_size(current: u64, text: &str) -> Option<u64> {
    if let Some(delta) = text.strip_prefix('+') {
        current.checked_add(parse_size(delta)?)
    } else if let Some(delta) = text.strip_prefix('-') {
        current.checked_sub(parse_size(delta)?)
    } else {
        parse_size(text)
    }
}

/// Bytes the file really occupies on disk (holes excluded), like qemu-img's "disk size".
fn allocated_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.3} {}", UNITS[unit])
            .replace(".000 ", " ")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_sizes_grow_and_shrink_from_current() {
        assert_eq!(relative_size(1 << 30, "+1G"), Some(2 << 30));
        assert_eq!(relative_size(2 << 30, "-1G"), Some(1 << 30));
        assert_eq!(relative_size(1 << 30, "8G"), Some(8 << 30));
        assert_eq!(relative_size(1 << 20, "-2M"), None);
    }

    #[test]
    fn human_sizes_read_like_qemu_img() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 30), "3 GiB");
        assert_eq!(human(1536 << 20), "1.500 GiB");
    }
}
