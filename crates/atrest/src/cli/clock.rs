//! `atrest clock`: the key scheduler's clock.

use atrest_api::client::Method;
use clap::Subcommand;
use serde_json::json;

use super::connection::Connection;
use super::output::{print, Format};

#[derive(Subcommand)]
pub(crate) enum ClockCommand {
    /// Show the scheduler's time.
    Show,
    /// Move the scheduler's time forward and run the key lifetime actions now due.
    Advance {
        /// An ISO 8601 duration such as P7D or PT12H.
        #[arg(long)]
        by: String,
    },
}

/// `atrest clock …`.
pub(super) async fn clock(
    conn: &Connection,
    command: ClockCommand,
    format: Format,
) -> anyhow::Result<()> {
    let out = match command {
        ClockCommand::Show => conn.admin(Method::GET, "/clock", None).await?,
        ClockCommand::Advance { by } => {
            conn.admin(Method::POST, "/clock/advance", Some(&json!({ "by": by })))
                .await?
        }
    };
    print(&out, format)
}
