//! The help every command shares a layout for: the command's own options, then the global
//! options (their own heading, set in `args`), then the command's exit codes, added here from
//! one table so that `--help`, the man pages and the README say the same.

use clap::CommandFactory;

use super::args::Cli;

/// Lines of the exit-code table, shared by the commands they apply to.
const SUCCESS: &str = "  0   success";
const OTHER: &str = "  1   any other failure (local I/O, malformed input, ...)";
const USAGE: &str =
    "  2   usage error (bad option, unknown release, arch, serial or file kind, unreadable format)";
const INTEGRITY: &str = "  3   integrity failure (checksum mismatch, bad or missing signature)";
const NETWORK: &str = "  4   network or server failure after retries";

/// Where `--help` lists the options every command takes.
const GLOBAL_HEADING: &str = "Global options";

/// The exit codes of the command `name`, as its `--help` lists them.
pub fn exit_codes(name: &str) -> String {
    let lines: Vec<&str> = match name {
        "list" => vec![SUCCESS, OTHER, USAGE, NETWORK],
        "fetch" => vec![SUCCESS, OTHER, USAGE, INTEGRITY, NETWORK],
        "prepare" => vec![
            SUCCESS,
            OTHER,
            "  2   usage error; with --upload also credentials Keystone refuses",
            "  3   integrity failure (checksum, signature; Glance stored different bytes)",
            "  4   network or server failure after retries (also a failed Glance import)",
            "  5   --upload: some Glance targets failed (the others have the images)",
            "  7   --upload: an image of that name with other content is in Glance",
        ],
        "sync" | "mirror" => vec![
            SUCCESS,
            OTHER,
            USAGE,
            INTEGRITY,
            NETWORK,
            "  5   some entries failed (the others were done; see the summary)",
            "  6   another run holds the output root",
        ],
        "upload" => vec![
            SUCCESS,
            "  1   Glance refused the bytes (format inspection), or another failure",
            "  2   usage error, no Glance endpoint, credentials refused",
            "  3   the file changed since its metadata was written, or Glance stored other bytes",
            "  4   network or server failure after retries, or a failed import",
            "  5   some Glance targets failed (the others have the images)",
            "  7   an image of that name with other content is in Glance (--allow-duplicates)",
        ],
        "push" => vec![
            SUCCESS,
            OTHER,
            "  2   usage error, or credentials a registry refuses",
            "  3   a registry storing other bytes than were sent",
            NETWORK,
        ],
        "check" => vec![
            "  0   no errors were found (as qemu-img check)",
            "  1   the check could not be completed (unreadable or malformed image)",
            "  2   corruptions were found",
            "  3   leaked clusters were found, but no corruptions",
            "  63  the format has no checks (raw)",
        ],
        "compare" => vec![
            "  0   the images are identical (as qemu-img compare)",
            "  1   the images differ",
            "  2   an error (unreadable image, bad option)",
        ],
        _ => vec![SUCCESS, OTHER, USAGE],
    };
    format!("Exit codes:\n{}", lines.join("\n"))
}

/// The full command definition: the derive's, with the global options under their own heading
/// and each subcommand's exit codes after its own closing notes.
pub fn command() -> clap::Command {
    let mut command = Cli::command().mut_args(|arg| {
        if arg.is_global_set() {
            arg.help_heading(GLOBAL_HEADING)
        } else {
            arg
        }
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(&name, |sub| {
            let codes = exit_codes(&name);
            let text = match sub.get_after_help() {
                Some(notes) => format!("{notes}\n\n{codes}"),
                None => codes,
            };
            sub.after_help(text)
        });
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_and_command_is_described() {
        let command = command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        for sub in command.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(format!("command {}", sub.get_name()));
            }
            for arg in sub.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{} {}", sub.get_name(), arg.get_id()));
                }
            }
        }
        for arg in command.get_arguments() {
            if arg.get_help().is_none() && !arg.is_hide_set() {
                missing.push(format!("global {}", arg.get_id()));
            }
        }
        assert!(missing.is_empty(), "undescribed: {missing:?}");
    }

    #[test]
    fn every_command_lists_its_exit_codes_and_groups_global_options() {
        let mut command = command();
        // Building propagates the global options into every subcommand.
        command.build();
        for sub in command.get_subcommands_mut() {
            if sub.get_name() == "help" {
                continue;
            }
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains("Exit codes:\n  0"),
                "{}: {help}",
                sub.get_name()
            );
            assert!(
                help.contains("Global options:"),
                "{}: {help}",
                sub.get_name()
            );
        }
        assert!(exit_codes("mirror").contains("  5 "));
        assert!(exit_codes("check").contains("  63 "));
    }
}
