//! Collectors: named units that read from one database session and return metric families.
//!
//! The poller owns scheduling, timeouts and the connection; a collector only turns a session
//! into [`Family`] values. Each (target, collector) pair gets its own instance, so a collector
//! that needs memory between runs (deltas, caches) keeps it in `&mut self`.

mod server;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::config::Config;
use crate::metric::{Family, FamilyDesc};
use crate::target::ServerInfo;
use crate::views::Views;

/// What a collector gets to work with on each run.
pub struct Session {
    pub client: Client,
    pub server: ServerInfo,
}

/// A run that produced no values: either it failed, or the collector cannot run on this
/// server by design (`skip` holds a short reason code, e.g. `extension_missing`). A skip is
/// logged once, exported as `pgkpi_collector_skipped{reason}` and not counted as an error.
/// The message is shown on the status page and logged; it never holds query text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CollectError {
    pub message: String,
    pub skip: Option<&'static str>,
}

impl CollectError {
    pub fn failed(message: impl Into<String>) -> Self {
        CollectError {
            message: message.into(),
            skip: None,
        }
    }

    /// The collector does not apply here; `reason` is a bounded code, `message` says what to
    /// do about it (e.g. "run CREATE EXTENSION pg_stat_statements").
    pub fn skipped(reason: &'static str, message: impl Into<String>) -> Self {
        CollectError {
            message: message.into(),
            skip: Some(reason),
        }
    }
}

impl From<tokio_postgres::Error> for CollectError {
    fn from(error: tokio_postgres::Error) -> Self {
        CollectError::failed(crate::target::describe(&error))
    }
}

pub type CollectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Family>, CollectError>> + Send + 'a>>;

pub trait Collector: Send {
    /// Runs once against the session.
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a>;
}

/// What a collector instance is built from.
pub struct BuildContext<'a> {
    /// The whole configuration; collectors read their own section of it.
    pub config: &'a Config,
    /// The target this instance polls.
    pub target: &'a str,
    /// Where the instance may publish JSON debug views (see [`crate::views`]).
    pub views: Arc<Views>,
}

/// A built-in collector: its name, defaults, the families it may emit and a constructor.
pub struct Spec {
    pub name: &'static str,
    pub description: &'static str,
    pub default_interval: Duration,
    pub enabled_by_default: bool,
    /// The connection it runs on; `Lane::Main` unless it must never wait behind others.
    pub lane: crate::poller::Lane,
    pub families: fn() -> Vec<FamilyDesc>,
    /// Builds the instance for one target.
    pub build: fn(&BuildContext) -> Box<dyn Collector>,
}

/// Every built-in collector.
pub fn builtins() -> Vec<Spec> {
    vec![server::spec()]
}
