//! The `cloudimg` binary: everything lives in the library and `cli`.

// Errors carry their facts (URLs, paths, digests) by value; they are the cold path, so their
// size does not matter.
#![allow(clippy::result_large_err)]

mod cli;

fn main() {
    std::process::exit(cli::run());
}
