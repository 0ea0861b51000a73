//! Domain types and rules shared by every atrest service.
//!
//! This crate does no I/O and knows nothing of HTTP, SQL or key material: it only
//! states what a valid vault, object name, attribute set or api-version is. The clock
//! is always passed in, so every rule here is a pure function that tests can drive.
#![forbid(unsafe_code)]

pub mod access_policy;
pub mod api_version;
pub mod attributes;
pub mod audit;
pub mod compute;
pub mod limits;
pub mod names;
pub mod operation;
pub mod principal;
pub mod rbac;
pub mod rotation;
pub mod vault;

/// Seconds since the Unix epoch, the unit Key Vault uses for every timestamp.
pub type UnixTime = i64;
