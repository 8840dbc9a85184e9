//! What `sync` and `mirror` share at the edge: the source options from the global flags, the
//! summary (JSON, or one line per entry) and the exit status of a run.

use cloudimg::pipeline::Error;
use cloudimg::runner::{self, EntryOutcome, EntryReport, SourceOptions};

use super::args::Global;
use super::fetch::Context;
use super::print_json;

/// Some entries failed; the others were done.
pub const EXIT_SOME_FAILED: i32 = 5;
/// Another run holds the root's lock.
pub const EXIT_LOCKED: i32 = 6;

/// `--mirror` (or CLOUDIMG_MIRROR) for every source, `--keyring`, `--no-verify-signature`.
pub(super) fn source_options(
    global: &Global,
    context: &Context,
    skip_signature: bool,
) -> Result<SourceOptions, Error> {
    Ok(SourceOptions {
        mirror: global.mirror.is_some().then(|| context.mirror.clone()),
        keyring: match &global.keyring {
            Some(_) => Some(context.keyring(global)?),
            None => None,
        },
        skip_signature,
    })
}

/// The exit status of a run that could not start: [`EXIT_LOCKED`] when another run holds the
/// root, else the error's kind.
pub(super) fn not_started(error: &dyn runner::RunFailure) -> i32 {
    tracing::error!("{}", cloudimg::error::chain(error));
    if error.is_locked() {
        EXIT_LOCKED
    } else {
        error.kind().exit_code()
    }
}

/// Prints a finished run (`summary` as JSON, or one line per entry made by `line`) and returns
/// its exit status: [`EXIT_SOME_FAILED`] when any entry failed.
pub(super) fn finished<S: serde::Serialize, O: EntryOutcome>(
    global: &Global,
    summary: &S,
    entries: &[EntryReport<O>],
    line: impl Fn(&O) -> String,
) -> i32 {
    if global.json {
        print_json(summary);
    } else if !global.quiet {
        for entry in entries {
            outln!("{:<24} {}", entry.name, line(&entry.outcome));
        }
    }
    if runner::failed(entries) > 0 {
        EXIT_SOME_FAILED
    } else {
        0
    }
}
