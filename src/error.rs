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
    /// `upload`: Glance has an image of that name with other content (`--allow-duplicates`).
    NameTaken,
}

impl ErrorKind {
    /// The kind's name in JSON error objects (`usage`, `integrity`, `network`, `other`,
    /// `bake-recipe`, …).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Network => "network",
            ErrorKind::Other => "other",
            ErrorKind::BakeRecipe => "bake-recipe",
            ErrorKind::BakeCloudInit => "bake-cloud-init",
            ErrorKind::BakeTimeout => "bake-timeout",
            ErrorKind::BakeBootTest => "bake-boot-test",
            ErrorKind::QemuMissing => "qemu-missing",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::NameTaken => "name-taken",
        }
    }

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
            ErrorKind::NameTaken => 7,
            // 128 + SIGINT, as shells report it.
            ErrorKind::Interrupted => 130,
        }
    }
}

/// An error and its causes on one line: "outer: inner: innermost". A cause that starts with a
/// URL or path the line already names ("http://…/SHA256SUMS: HTTP 503") drops that repetition,
/// so each URL appears once.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let full = cause.to_string();
        let cause_text = without_repeated_subject(&text, &full);
        // thiserror `transparent` wrappers repeat their inner message; show it once.
        if !text.ends_with(cause_text) {
            text.push_str(": ");
            text.push_str(cause_text);
        }
        source = cause.source();
    }
    text
}

/// `message` without its leading `"<subject>: "` when the subject is a URL or an absolute path
/// that `so_far` already contains.
fn without_repeated_subject<'m>(so_far: &str, message: &'m str) -> &'m str {
    let Some((subject, rest)) = message.split_once(": ") else {
        return message;
    };
    let names_a_place = subject.contains("://") || subject.starts_with('/');
    if names_a_place && so_far.contains(subject) {
        rest
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(String, #[source] Option<Box<Layer>>);

    fn layers(messages: &[&str]) -> Layer {
        messages
            .iter()
            .rev()
            .fold(None, |inner, text| {
                Some(Layer(text.to_string(), inner.map(Box::new)))
            })
            .unwrap()
    }

    #[test]
    fn a_url_is_named_once() {
        let error = layers(&[
            "cannot fetch http://m/x/SHA256SUMS",
            "http://m/x/SHA256SUMS: gave up after 6 attempts",
            "http://m/x/SHA256SUMS: HTTP 503",
        ]);
        assert_eq!(
            chain(&error),
            "cannot fetch http://m/x/SHA256SUMS: gave up after 6 attempts: HTTP 503"
        );
    }

    #[test]
    fn other_subjects_and_new_urls_are_kept() {
        let error = layers(&[
            "reading catalog",
            "key: invalid value",
            "http://b/: HTTP 404",
        ]);
        assert_eq!(
            chain(&error),
            "reading catalog: key: invalid value: http://b/: HTTP 404"
        );
    }
}
