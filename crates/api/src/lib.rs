//! The HTTP edge: TLS, routing by host, authentication, Azure wire formats, audit.
//!
//! Requests whose host is `NAME.vault.localhost` go to the Key Vault data plane
//! ([`data_plane`]); every other host serves the token service and the management API
//! ([`control`]). Each request, refused ones included, produces one audit event that is
//! committed before the response is sent. Errors become Azure's
//! `{"error":{"code","message","innererror"}}` bodies (or OAuth2 bodies on the token
//! endpoints) here and nowhere else.
#![forbid(unsafe_code)]

mod admin;
mod audit;
mod auth;
mod authorization;
mod body;
pub mod client;
mod compute;
mod control;
mod data_plane;
mod detect;
mod error;
mod http;
pub mod instance;
mod jobs;
mod logs;
mod metrics;
mod pipeline;
mod scheduler;
mod server;
mod state;
mod throttle;
mod time;
mod vault_access;

pub use audit::{AuditSink, Durability};
pub use instance::{Instance, InstanceError, Options};
pub use server::{load_tls_config, serve};
pub use state::{AppState, Settings};
