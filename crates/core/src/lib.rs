//! Domain types and rules shared by every layer, with no I/O, no clock and no key
//! material: every rule is a pure function of its inputs. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod access_policy;
pub mod ade;
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
