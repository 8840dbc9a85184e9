//! `completions` and `man`: shell completions and manual pages generated from the clap
//! definitions, so they never disagree with `--help`.

use std::path::Path;

use cloudimg::pipeline::Error;

use super::args::{CompletionsArgs, ManArgs};
use super::help;

/// The program name completions and pages are written for.
const BIN: &str = "cloudimg";

pub fn completions(args: CompletionsArgs) -> Result<i32, Error> {
    let mut command = help::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, BIN, &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(0)
}

/// Without `--dir`, `cloudimg.1` on stdout; with it, `cloudimg.1` and one
/// `cloudimg-<command>.1` per subcommand written into the folder.
pub fn man(args: ManArgs) -> Result<i32, Error> {
    let mut command = help::command();
    // Building propagates the global options into each subcommand's page.
    command.build();
    match args.dir {
        None => {
            out!("{}", String::from_utf8_lossy(&render(&command)?));
        }
        Some(dir) => {
            write_page(&dir, &format!("{BIN}.1"), &render(&command)?)?;
            for sub in command.get_subcommands() {
                let name = format!("{BIN}-{}", sub.get_name());
                let sub = sub.clone().name(name.clone());
                write_page(&dir, &format!("{name}.1"), &render(&sub)?)?;
            }
        }
    }
    Ok(0)
}

fn render(command: &clap::Command) -> Result<Vec<u8>, Error> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .map_err(|source| Error::Io {
            path: format!("{}.1", command.get_name()).into(),
            source,
        })?;
    Ok(page)
}

fn write_page(dir: &Path, name: &str, page: &[u8]) -> Result<(), Error> {
    let path = dir.join(name);
    cloudimg::io::publish::write(&path, page).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    tracing::info!(page = %path.display(), "wrote");
    Ok(())
}

/// The README section whose table lists every option of every command; a test keeps it in step
/// with the clap definitions.
#[cfg(test)]
const README_OPTIONS_HEADING: &str = "### Options of each command";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A command's own options as the README spells them: `--long`, or `-s` without a long name.
    /// Positionals, hidden (deprecated) spellings and the global options are left out.
    fn option_words(command: &clap::Command) -> BTreeSet<String> {
        command
            .get_arguments()
            .filter(|arg| !arg.is_positional() && !arg.is_hide_set() && !arg.is_global_set())
            .filter_map(|arg| match (arg.get_long(), arg.get_short()) {
                (Some(long), _) => Some(format!("--{long}")),
                (None, Some(short)) => Some(format!("-{short}")),
                (None, None) => None,
            })
            .collect()
    }

    /// The options of [`option_words`] with their value names, in backticks, for the rows the
    /// failure message proposes.
    fn spelled_options(command: &clap::Command) -> Vec<String> {
        let mut spelled: Vec<(String, String)> = command
            .get_arguments()
            .filter(|arg| !arg.is_positional() && !arg.is_hide_set() && !arg.is_global_set())
            .filter_map(|arg| {
                let word = match (arg.get_long(), arg.get_short()) {
                    (Some(long), _) => format!("--{long}"),
                    (None, Some(short)) => format!("-{short}"),
                    (None, None) => return None,
                };
                let value = if arg.get_action().takes_values() {
                    match arg.get_value_names() {
                        Some(names) => format!(" {}", names[0]),
                        None => format!(" {}", arg.get_id().as_str().to_uppercase()),
                    }
                } else {
                    String::new()
                };
                Some((word.clone(), format!("`{word}{value}`")))
            })
            .collect();
        spelled.sort();
        spelled.into_iter().map(|(_, text)| text).collect()
    }

    /// The `-…` words in backticks of a README table row.
    fn row_words(row: &str) -> BTreeSet<String> {
        row.split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|word| word.split_whitespace().next())
            .filter(|word| word.starts_with('-'))
            .map(str::to_owned)
            .collect()
    }

    /// The README text from `heading` to the next heading.
    fn section<'r>(readme: &'r str, heading: &str) -> &'r str {
        let start = readme
            .find(heading)
            .unwrap_or_else(|| panic!("README lacks {heading:?}"));
        let body = &readme[start + heading.len()..];
        let end = body.find("\n#").unwrap_or(body.len());
        &body[..end]
    }

    #[test]
    fn readme_lists_every_option_of_every_command() {
        let readme = include_str!("../../README.md");
        let table = section(readme, README_OPTIONS_HEADING);
        let command = help::command();
        let mut wrong = Vec::new();
        let mut expected_rows = Vec::new();
        for sub in command.get_subcommands() {
            let name = sub.get_name();
            let options = option_words(sub);
            let spelled = spelled_options(sub);
            let row = format!(
                "| `{name}` | {} |",
                if spelled.is_empty() {
                    "none of its own".to_owned()
                } else {
                    spelled.join(", ")
                }
            );
            expected_rows.push(row);
            let prefix = format!("| `{name}` |");
            let Some(found) = table.lines().find(|line| line.starts_with(&prefix)) else {
                wrong.push(format!("{name}: no row"));
                continue;
            };
            let listed = row_words(found);
            for missing in options.difference(&listed) {
                wrong.push(format!("{name}: {missing} not listed"));
            }
            for extra in listed.difference(&options) {
                wrong.push(format!("{name}: {extra} listed but not an option"));
            }
        }
        // The global options have their own table.
        let globals = section(readme, "### Global options");
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let long = arg.get_long().map(|l| format!("`--{l}"));
            let short = arg.get_short().map(|s| format!("`-{s}"));
            let named = [long, short]
                .into_iter()
                .flatten()
                .any(|word| globals.contains(&word));
            if !named && !arg.is_positional() {
                wrong.push(format!(
                    "global {} not in the Global options table",
                    arg.get_id()
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "README {README_OPTIONS_HEADING} is out of step with the clap definitions: \
             {wrong:#?}\nrows as the definitions give them:\n{}",
            expected_rows.join("\n")
        );
    }
}
