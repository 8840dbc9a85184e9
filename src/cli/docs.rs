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
