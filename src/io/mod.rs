//! Small adapters between byte streams and the rest of the crate.

pub mod atomic;
pub mod blocking;
pub mod hashing;
pub mod progress;
pub mod sys;
