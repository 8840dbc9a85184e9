//! The error classes the CLI turns into exit codes.
//!
//! Every module has its own `thiserror` enum carrying the facts; each answers `kind()` with a
//! `match`, so exit codes never depend on downcasting or message text.

/// What went wrong, as far as the caller's exit status is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong: unknown release, bad option value, impossible combination.
    Usage,
    /// Bytes did not match a checksum, or a signature did not verify.
    Integrity,
    /// The network or the server failed, after retries.
    Network,
    /// Anything else: local I/O, malformed input files, bugs.
    Other,
    /// `bake`: a recipe command (`--run`) failed.
    BakeRecipe,
    /// `bake`: cloud-init reported an error, or the guest stopped without a result.
    BakeCloudInit,
    /// `bake`: the guest did not power off within `--timeout`.
    BakeTimeout,
    /// `bake`: the baked image did not boot as a new instance.
    BakeBootTest,
    /// `bake`: QEMU is not installed.
    QemuMissing,
    /// Ctrl-C: the work was stopped and cleaned up.
    Interrupted,
}

impl ErrorKind {
    /// The process exit status documented in README and `--help`.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Other => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Integrity => 3,
            ErrorKind::Network => 4,
            ErrorKind::BakeRecipe => 10,
            ErrorKind::BakeCloudInit => 11,
            ErrorKind::BakeTimeout => 12,
            ErrorKind::BakeBootTest => 13,
            ErrorKind::QemuMissing => 14,
            // 128 + SIGINT, as shells report it.
            ErrorKind::Interrupted => 130,
        }
    }
}

/// An error and its causes on one line: "outer: inner: innermost".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror `transparent` wrappers repeat their inner message; show it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
