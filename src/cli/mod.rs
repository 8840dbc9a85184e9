//! The command-line edge: parses arguments, sets up logging and the runtime, runs a command and
//! turns its outcome into an exit status.

/// `println!` for stdout that ends the program quietly when stdout is closed (`| head -1`),
/// as Unix tools do, instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for stdout, with `outln!`'s handling of a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

mod args;
mod bake;
mod docs;
mod fetch;
mod help;
mod image;
mod mirror;
mod prepare;
mod progress;
mod push;
mod qemu;
mod runs;
mod seed;
mod sync;
mod upload;

use std::io::IsTerminal;

use clap::FromArgMatches;
use cloudimg::pipeline::Error;
use tracing_subscriber::EnvFilter;

pub use args::Cli;

/// Runs the command line and returns the process exit status.
pub fn run() -> i32 {
    let parsed = help::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => {
                    // The arguments did not parse, so `--json` is looked for by hand.
                    if std::env::args_os().any(|arg| arg == "--json") {
                        let message = error.kind().as_str().unwrap_or("invalid arguments");
                        print_error_json(cloudimg::ErrorKind::Usage, message);
                    }
                    cloudimg::ErrorKind::Usage.exit_code()
                }
            };
        }
    };
    init_tracing(cli.global.quiet, cli.global.verbose, cli.global.log_format);
    let json = cli.global.json;
    match dispatch(cli) {
        Ok(status) => status,
        Err(error) => {
            let message = cloudimg::error::chain(&error);
            tracing::error!("{message}");
            if json {
                print_error_json(error.kind(), &message);
            }
            error.kind().exit_code()
        }
    }
}

/// With `--json`, a failure is also an object on stdout, so scripts reading stdout learn what
/// happened: `{"error": {"kind", "message", "exit_status"}}`.
fn print_error_json(kind: cloudimg::ErrorKind, message: &str) {
    print_json(&serde_json::json!({
        "error": {
            "kind": kind.name(),
            "message": message,
            "exit_status": kind.exit_code(),
        }
    }));
}

fn dispatch(cli: Cli) -> Result<i32, Error> {
    use args::Command;
    let global = cli.global;
    match cli.command {
        Command::List(args) => fetch::list(&global, args),
        Command::Fetch(args) => fetch::fetch(&global, args),
        Command::Prepare(args) => prepare::prepare(&global, args),
        Command::Info(args) => image::info(&global, args),
        Command::Convert(args) => image::convert(&global, args),
        Command::Check(args) => image::check(&global, args),
        Command::Compare(args) => image::compare(&global, args),
        Command::Measure(args) => image::measure(&global, args),
        Command::Create(args) => image::create(&global, args),
        Command::Resize(args) => image::resize(&global, args),
        Command::Seed(args) => seed::seed(&global, args),
        Command::Bake(args) => bake::bake(&global, args),
        Command::Sync(args) => sync::sync(&global, args),
        Command::Upload(args) => upload::upload(&global, args),
        Command::Mirror(args) => mirror::mirror(&global, args),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
        Command::Push(args) => push::push(&global, args),
    }
}

/// Log lines go to stderr: `-q` errors only, default info, `-v` debug, `-vv` trace. `RUST_LOG`
/// overrides. Text lines on a terminal are short and untimed; text lines to anything else (cron
/// mail, a log file, journald) start with a timestamp; JSON lines always carry one.
fn init_tracing(quiet: bool, verbose: u8, format: args::LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("cloudimg={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        args::LogFormat::Json => builder.json().init(),
        args::LogFormat::Text if std::io::stderr().is_terminal() => builder
            .with_ansi(std::env::var_os("NO_COLOR").is_none())
            .without_time()
            .init(),
        args::LogFormat::Text => builder.with_ansi(false).init(),
    }
}

/// Writes a value as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(error) => tracing::error!("cannot serialise output: {error}"),
    }
}

/// Writes to stdout; a reader that went away (EPIPE) ends the program with status 0 and no
/// message, any other failure is logged once.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        tracing::error!("cannot write to stdout: {error}");
    }
}
