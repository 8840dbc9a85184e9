//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod mirror;
pub mod pgp;
pub mod server;
pub mod tools;
