//! Progress reporting, injected by the caller.
//!
//! The library announces work through [`Reporter`]; the CLI decides how it looks (an indicatif
//! bar on a TTY, periodic log lines under cron, nothing with `-q`). Operations that run at once
//! (the entries of `sync --jobs N`) each get their own reporter from [`Reporter::operation`].

use std::sync::Arc;

/// Receives progress of one long operation (a download, a conversion, an upload).
pub trait Reporter: Send + Sync {
    /// A new operation starts. `total` is the expected byte count when known; `already` is how
    /// much was done before (a resumed download).
    fn start(&self, label: &str, total: Option<u64>, already: u64);
    /// `bytes` more bytes were processed.
    fn advance(&self, bytes: u64);
    /// The operation ended (successfully or not).
    fn finish(&self);
    /// A reporter for one of several operations running at once, named `id` (a `sync` entry):
    /// its own bar on a terminal, its log lines naming `id`. `None`, the default, means this
    /// reporter can show only one operation and is shared.
    fn operation(&self, _id: &str) -> Option<Arc<dyn Reporter>> {
        None
    }
}

/// A reporter that shows nothing (`-q`, tests, library users who don't care).
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn start(&self, _label: &str, _total: Option<u64>, _already: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}
