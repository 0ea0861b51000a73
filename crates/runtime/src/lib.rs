//! What runs beside the edge and needs no HTTP: the audit writer, detections, the
//! throttle, metrics, the log tables and the scheduler's clock. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod audit;
pub mod detect;
pub mod logs;
pub mod metrics;
pub mod scheduler;
pub mod throttle;
pub mod time;
