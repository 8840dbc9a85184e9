//! Small adapters between byte streams and the rest of the crate.

pub mod blocking;
pub mod device;
pub mod digests;
pub mod hashing;
pub mod lock;
pub mod progress;
pub mod publish;
pub mod sys;
