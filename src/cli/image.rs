//! `info`, `convert`, `check`, `create`, `resize`: the image commands, with qemu-img's
//! vocabulary.

use cloudimg::formats::options::parse_size;
use cloudimg::formats::qcow2::RepairMode;
use cloudimg::formats::{self, DiskFormat, Options};
use cloudimg::pipeline::{Error, Usage};

use super::args::{
    CheckArgs, CompareArgs, ConvertArgs, CreateArgs, Global, InfoArgs, MeasureArgs, OutputArg,
    RepairArg, ResizeArgs,
};
use super::{print_json, progress, qemu};

/// The disk formats the image commands read and write, as named in messages.
const DISK_FORMATS: &str = "raw, qcow2, vmdk, vhd (vpc), vhdx or vdi";

/// What a size argument looks like, as said in messages.
const SIZE: &str = "a size such as 64M or 1.5G";

/// The disk format `name` (qemu-img's names and ours), or a usage error listing them.
pub(super) fn disk_format(name: &str) -> Result<DiskFormat, Error> {
    DiskFormat::from_name(name).ok_or_else(|| {
        Usage::UnknownFormat {
            name: name.to_owned(),
            expected: DISK_FORMATS,
        }
        .into()
    })
}

/// A size argument (`64M`, `1.5G`, bytes), or a usage error naming it.
fn size(option: &'static str, text: &str) -> Result<u64, Error> {
    parse_size(text).ok_or_else(|| bad_size(option, text))
}

fn bad_size(option: &'static str, text: &str) -> Error {
    Usage::BadValue {
        option,
        value: text.to_owned(),
        expected: SIZE,
    }
    .into()
}

fn optional_format(name: &Option<String>) -> Result<Option<DiskFormat>, Error> {
    name.as_deref().map(disk_format).transpose()
}

/// `-o help` or `-o ?` in any of the `-o` arguments.
fn wants_help(values: &[String]) -> bool {
    values.iter().any(|v| formats::options::wants_help(v))
}

/// Joins repeated `-o` arguments the way qemu-img does.
fn options(values: &[String]) -> Result<Options, Error> {
    Ok(Options::parse(&values.join(","))?)
}

pub fn info(global: &Global, args: InfoArgs) -> Result<i32, Error> {
    let reader = formats::open(&args.file, optional_format(&args.format)?)?;
    let info = reader.info();
    let filename = args.file.display().to_string();
    let nodes = qemu::file_nodes(&args.file, &info);
    if json_output(global, args.output) {
        print_json(&qemu::Ordered(&qemu::info_json(&info, &filename, &nodes)));
    } else {
        out!("{}", qemu::info_human(&info, &filename, &nodes));
    }
    Ok(0)
}

/// `--output=json`, or the global `--json`.
fn json_output(global: &Global, output: OutputArg) -> bool {
    global.json || output == OutputArg::Json
}

pub fn convert(global: &Global, args: ConvertArgs) -> Result<i32, Error> {
    let source_format = optional_format(&args.format)?;
    let target_format = disk_format(&args.output_format)?;
    if wants_help(&args.options) {
        out!("{}", formats::options::render_help(target_format));
        return Ok(0);
    }
    let mut options = options(&args.options)?;
    if args.compress {
        if target_format != DiskFormat::Qcow2 {
            return Err(Usage::Conflict {
                option: "-c".into(),
                other: format!("-O {target_format}"),
                why: format!(
                    "-c compresses qcow2 output; for {target_format} pick a compressed \
                     subformat (vmdk: -o subformat=streamOptimized)"
                ),
            }
            .into());
        }
        options.set("compress", "on");
    }
    if args.azure {
        if target_format != DiskFormat::Vhd {
            return Err(Usage::Conflict {
                option: "--azure".into(),
                other: format!("-O {target_format}"),
                why: "--azure applies to -O vhd".into(),
            }
            .into());
        }
        options.set("azure", "on");
    }
    options.set_threads(args.threads);
    let reporter = progress::convert_reporter(global.quiet, args.progress);
    let (Some(source), Some(destination)) = (&args.source, &args.destination) else {
        return Err(Usage::Missing {
            needed_by: "convert",
            what: "SOURCE and DESTINATION",
        }
        .into());
    };
    let source = formats::convert::Source::File {
        path: source,
        format: source_format,
    };
    let output = formats::convert::Output {
        path: destination,
        format: target_format,
        options: &options,
    };
    let stats = formats::convert::convert_file(source, output, None, reporter.as_ref())?;
    if global.json {
        print_json(&stats);
    }
    Ok(0)
}

/// qemu-img check's status for a format without checks.
const EXIT_NO_CHECKS: i32 = 63;

pub fn check(global: &Global, args: CheckArgs) -> Result<i32, Error> {
    let format = formats::disk_format_of(&args.file, optional_format(&args.format)?)?;
    if format == DiskFormat::Raw {
        eprintln!("cloudimg: This image format does not support checks");
        return Ok(EXIT_NO_CHECKS);
    }
    let mut fixed = qemu::Fixed::default();
    if let Some(mode) = args.repair {
        let mode = match mode {
            RepairArg::Leaks => RepairMode::Leaks,
            RepairArg::All => RepairMode::All,
        };
        let repaired = formats::repair(&args.file, Some(format), mode)?;
        fixed = qemu::Fixed {
            leaks: repaired.leaks_fixed,
            corruptions: repaired.corruptions_fixed,
        };
    }
    let report = formats::check(&args.file, Some(format))?;
    // Each finding on stderr, as qemu's drivers print them.
    for problem in &report.corruptions {
        eprintln!("{problem}");
    }
    for leak in &report.leaks {
        eprintln!("{leak}");
    }
    let filename = args.file.display().to_string();
    if json_output(global, args.output) {
        print_json(&qemu::Ordered(&qemu::check_json(
            &report, &filename, format, fixed,
        )));
    } else if !global.quiet {
        out!("{}", qemu::check_human(&report, format, fixed));
    }
    Ok(report.exit_code())
}

/// qemu-img compare's status when an image cannot be compared (2, also for bad options).
const EXIT_COMPARE_ERROR: i32 = 2;

/// `compare`: 0 identical, 1 different, 2 error, with qemu-img's messages on stdout.
pub fn compare(global: &Global, args: CompareArgs) -> Result<i32, Error> {
    use formats::compare::Comparison;
    let result = (|| -> Result<Comparison, Error> {
        let mut first = formats::open(&args.first, optional_format(&args.format)?)?;
        let mut second = formats::open(&args.second, optional_format(&args.second_format)?)?;
        let reporter = progress::convert_reporter(global.quiet, args.progress);
        Ok(formats::compare::compare(
            first.as_mut(),
            second.as_mut(),
            args.strict,
            reporter.as_ref(),
        )?)
    })();
    let comparison = match result {
        Ok(comparison) => comparison,
        Err(error) => {
            tracing::error!("{}", cloudimg::error::chain(&error));
            return Ok(EXIT_COMPARE_ERROR);
        }
    };
    let say = |text: &str| {
        if !global.quiet {
            outln!("{text}");
        }
    };
    let warn_size = |differ: bool| {
        if differ {
            say("Warning: Image size mismatch!");
        }
    };
    Ok(match comparison {
        Comparison::Identical { sizes_differ } => {
            warn_size(sizes_differ);
            say("Images are identical.");
            0
        }
        Comparison::ContentMismatch {
            offset,
            sizes_differ,
        } => {
            warn_size(sizes_differ);
            say(&format!("Content mismatch at offset {offset}!"));
            1
        }
        Comparison::SizeMismatch => {
            say("Strict mode: Image size mismatch!");
            1
        }
        Comparison::AllocationMismatch { offset } => {
            say(&format!(
                "Strict mode: Offset {offset} block status mismatch!"
            ));
            1
        }
    })
}

/// `measure`: qemu-img's figures, in its human or JSON layout.
pub fn measure(global: &Global, args: MeasureArgs) -> Result<i32, Error> {
    use formats::measure::Source;
    let format = disk_format(&args.output_format)?;
    if wants_help(&args.options) {
        out!("{}", formats::options::render_help(format));
        return Ok(0);
    }
    let options = options(&args.options)?;
    let mut reader;
    let source = match (&args.size, &args.file) {
        (Some(size), _) => Source::Size(self::size("--size", size)?),
        (None, Some(file)) => {
            reader = formats::open(file, optional_format(&args.format)?)?;
            Source::Image(reader.as_mut())
        }
        (None, None) => {
            return Err(Usage::Missing {
                needed_by: "measure",
                what: "FILE or --size",
            }
            .into())
        }
    };
    let measure = formats::measure::measure(source, format, &options)?;
    if json_output(global, args.output) {
        let value = serde_json::to_value(measure).map_err(Error::Json)?;
        print_json(&qemu::Ordered(&value));
    } else {
        outln!("required size: {}", measure.required);
        outln!("fully allocated size: {}", measure.fully_allocated);
    }
    Ok(0)
}

pub fn create(_global: &Global, args: CreateArgs) -> Result<i32, Error> {
    let format = disk_format(&args.format)?;
    if wants_help(&args.options) {
        out!("{}", formats::options::render_help(format));
        return Ok(0);
    }
    let (Some(file), Some(size)) = (&args.file, &args.size) else {
        return Err(Usage::Missing {
            needed_by: "create",
            what: "FILE and SIZE",
        }
        .into());
    };
    let size = self::size("SIZE", size)?;
    let options = options(&args.options)?;
    formats::convert::create_blank(file, format, size, &options)?;
    tracing::info!(file = %file.display(), format = %format, size, "created");
    Ok(0)
}

pub fn resize(_global: &Global, args: ResizeArgs) -> Result<i32, Error> {
    let format = optional_format(&args.format)?;
    let current = formats::open(&args.file, format)?.virtual_size();
    let new_size =
        relative_size(current, &args.size).ok_or_else(|| bad_size("SIZE", &args.size))?;
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
}
