//! The HTTP edge: TLS, routing, authentication, the Azure wire formats, and the instance
//! wiring. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod admin;
mod arm;
mod auth;
mod blob;
mod body;
pub mod client;
mod error;
mod graph;
mod http;
pub mod instance;
mod jobs;
mod keyvault;
mod odata;
mod pipeline;
mod server;
mod state;
mod token;
mod vault_access;

pub use atrest_disk::SnapshotLimits;
pub use atrest_runtime::audit::{AuditSink, Durability};
pub use instance::{Instance, InstanceError, Options};
pub use server::{load_tls_config, serve};
pub use state::{AppState, Settings};
