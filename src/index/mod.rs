//! Discovery: what a mirror offers, from its HTML listings or its simplestreams metadata.
//!
//! The parsers (`html`, `sums`, `streams`, `release`) are pure functions over bytes; `discover`
//! drives them over documents fetched through [`discover::DocumentSource`].

pub mod discover;
pub mod html;
pub mod release;
pub mod streams;
pub mod sums;

use url::Url;

use crate::catalog::PatternError;
use crate::fetch::FetchError;
use crate::ErrorKind;

pub use discover::{Discovery, DocumentSource, FileEntry, Listing, Query, SourceKind, Stream};
pub use release::Release;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("unknown stream {name:?} (known: {known})")]
    UnknownStream { name: String, known: String },
    #[error("unknown source {name:?} (known: html, streams)")]
    UnknownSource { name: String },
    #[error("catalog {catalog} has no {stream} stream")]
    StreamNotInCatalog { catalog: String, stream: Stream },
    #[error("the {stream} stream of catalog {catalog} publishes no simplestreams metadata")]
    NoSimplestreams { catalog: String, stream: Stream },
    #[error("unknown release {release:?} in the {stream} stream (known: {known})")]
    UnknownRelease {
        release: String,
        stream: Stream,
        known: String,
    },
    #[error("unknown architecture {arch:?} (known: {known})")]
    UnknownArch { arch: String, known: String },
    #[error("{release} has no {arch} build in the {stream} stream (built for: {known})")]
    ArchNotBuilt {
        release: String,
        arch: String,
        stream: Stream,
        known: String,
    },
    #[error("unknown serial {serial:?} of {release} (known: {known})")]
    UnknownSerial {
        serial: String,
        release: String,
        known: String,
    },
    #[error("unknown file kind {ftype:?} in {release} {serial} (published: {known})")]
    UnknownFileKind {
        ftype: String,
        release: String,
        serial: String,
        known: String,
    },
    #[error("{url}: the source offers no releases at all (an empty or maintenance page?)")]
    NoReleases { url: Url },
    #[error("{url}: no build of {release} is listed")]
    NoSerials { url: Url, release: String },
    #[error("{url}: no {arch} files in this build")]
    NoFiles { url: Url, arch: String },
    #[error("cannot fetch {url}")]
    Fetch {
        url: Url,
        /// Boxed: a fetch error is large and rare.
        #[source]
        source: Box<FetchError>,
    },
    #[error("{url}: unusable listing")]
    Html {
        url: Url,
        #[source]
        source: html::HtmlError,
    },
    #[error("{url}: malformed checksum file")]
    Sums {
        url: Url,
        #[source]
        source: Box<sums::SumsError>,
    },
    #[error("{url}: malformed simplestreams document")]
    Streams {
        url: Url,
        #[source]
        source: Box<streams::StreamsError>,
    },
    #[error("{base}: cannot form a URL with {path:?}")]
    Url {
        base: Url,
        path: String,
        #[source]
        source: url::ParseError,
    },
    #[error("catalog pattern cannot be expanded")]
    Pattern(#[from] PatternError),
}

impl IndexError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            IndexError::UnknownStream { .. }
            | IndexError::UnknownSource { .. }
            | IndexError::StreamNotInCatalog { .. }
            | IndexError::NoSimplestreams { .. }
            | IndexError::UnknownRelease { .. }
            | IndexError::UnknownArch { .. }
            | IndexError::ArchNotBuilt { .. }
            | IndexError::UnknownSerial { .. }
            | IndexError::UnknownFileKind { .. } => ErrorKind::Usage,
            IndexError::Fetch { source, .. } => source.kind(),
            // The source's fault: no releases at all, or a listing too large to be one (garbage
            // parses as an empty listing), like a document the network layer refuses as too
            // large.
            IndexError::NoReleases { .. } | IndexError::Html { .. } => ErrorKind::Network,
            IndexError::NoSerials { .. }
            | IndexError::NoFiles { .. }
            | IndexError::Sums { .. }
            | IndexError::Streams { .. }
            | IndexError::Url { .. }
            | IndexError::Pattern(_) => ErrorKind::Other,
        }
    }
}

/// Deterministic corruptions of a real sample for no-panic tests: each copy has one byte
/// replaced, one cut short, or one byte removed, at pseudo-random places (xorshift, fixed seed).
#[cfg(test)]
pub(crate) fn corruptions(sample: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let len = sample.len().max(1) as u64;
    (0..count)
        .map(|i| {
            let mut copy = sample.to_vec();
            let at = (next() % len) as usize;
            match i % 3 {
                0 if at < copy.len() => copy[at] = (next() & 0xff) as u8,
                1 => copy.truncate(at),
                _ if at < copy.len() => {
                    copy.remove(at);
                }
                _ => {}
            }
            copy
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small_enough_to_return_by_value() {
        // Clippy's result_large_err limit.
        assert!(std::mem::size_of::<IndexError>() < 128);
    }
}
