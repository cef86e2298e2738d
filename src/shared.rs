//! The state the pollers write and the HTTP server reads. It belongs to neither: `app` creates
//! it and hands a clone to each side, so neither layer imports the other.

use std::sync::Arc;

use crate::snapshot::Snapshot;
use crate::status::Status;
use crate::telemetry::Telemetry;
use crate::views::Views;

/// State shared by the pollers and the HTTP server.
#[derive(Clone)]
pub struct Shared {
    pub snapshot: Arc<Snapshot>,
    pub status: Arc<Status>,
    pub telemetry: Telemetry,
    /// JSON debug views published by collectors.
    pub views: Arc<Views>,
}
