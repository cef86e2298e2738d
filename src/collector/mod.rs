//! Collectors: named units that read from one database session and return metric families.
//!
//! The poller owns scheduling, timeouts and the connection; a collector only turns a session
//! into [`Family`] values. Each (target, collector) pair gets its own instance, so a collector
//! that needs memory between runs (deltas, caches) keeps it in `&mut self`.

pub mod activity;
pub mod backups;
mod data_volume;
pub mod locks;
mod pgbouncer;
pub mod queues;
pub mod registry;
pub mod relations;
mod server;
pub mod sql;
pub mod statements;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use self::backups::settings::BackupsConfig;
use self::locks::settings::LocksConfig;
use self::queues::settings::QueueConfig;
use self::relations::settings::RelationsConfig;
use self::statements::settings::StatementsConfig;
use self::webhooks::settings::WebhooksConfig;
use crate::config::{Scope, SessionConfig, TargetKind};
use crate::metric::{Family, FamilyDesc};
use crate::target::{describe_with, ServerInfo, PG_MONITOR_HINT};
use crate::views::Views;

/// What a collector gets to work with on each run.
pub struct Session {
    pub client: Client,
    pub server: ServerInfo,
}

/// Why a collector does not run on a server, by design. A closed set: each is a label value
/// of `pgkpi_collector_skipped{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The server's version lacks what the collector reads.
    Version,
    /// The collector runs on standbys only and this server is a primary.
    Primary,
    /// The collector runs on primaries only and this server is a standby.
    Standby,
    /// A required extension is not installed in the database.
    ExtensionMissing,
    /// pg_stat_statements is installed but not in `shared_preload_libraries`.
    NotPreloaded,
    /// The monitoring role lacks a privilege.
    Permission,
    /// A configured application table does not exist.
    MissingTable,
    /// What the collector reads is on the database host and not visible to pgkpi (or is
    /// another cluster's).
    Remote,
}

impl SkipReason {
    pub const ALL: [SkipReason; 8] = [
        SkipReason::Version,
        SkipReason::Primary,
        SkipReason::Standby,
        SkipReason::ExtensionMissing,
        SkipReason::NotPreloaded,
        SkipReason::Permission,
        SkipReason::MissingTable,
        SkipReason::Remote,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Version => "version",
            SkipReason::Primary => "primary",
            SkipReason::Standby => "standby",
            SkipReason::ExtensionMissing => "extension_missing",
            SkipReason::NotPreloaded => "not_preloaded",
            SkipReason::Permission => "permission",
            SkipReason::MissingTable => "missing_table",
            SkipReason::Remote => "remote",
        }
    }

    /// True when someone can act on it (an extension, a grant, a table); false when it is
    /// simply how this server is (a standby, an old version).
    pub fn needs_action(self) -> bool {
        !matches!(
            self,
            SkipReason::Version | SkipReason::Primary | SkipReason::Standby | SkipReason::Remote
        )
    }
}

/// A run that produced no values: either it failed, or the collector cannot run on this
/// server by design (`skip` says why). A skip is logged once, exported as
/// `pgkpi_collector_skipped{reason}` and not counted as an error. The message is shown on the
/// status page and logged; it never holds query text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CollectError {
    pub message: String,
    pub skip: Option<SkipReason>,
}

impl CollectError {
    pub fn failed(message: impl Into<String>) -> Self {
        CollectError {
            message: message.into(),
            skip: None,
        }
    }

    /// The collector does not apply here; `message` says what to do about it (e.g. "run
    /// CREATE EXTENSION pg_stat_statements").
    pub fn skipped(reason: SkipReason, message: impl Into<String>) -> Self {
        CollectError {
            message: message.into(),
            skip: Some(reason),
        }
    }
}

/// What to do when a collector that reads other users' sessions runs without pg_monitor.
pub const PG_MONITOR_NEEDED: &str =
    "needs pg_monitor (at least its pg_read_all_stats); run GRANT pg_monitor TO <monitoring role>";

/// The session's role, as two columns: superuser, and has the privileges of pg_monitor. One
/// text for every collector that checks it (see [`require_pg_monitor`], the definitions'
/// `privilege` requirement).
pub const ROLE_COLUMNS: &str =
    "coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false), \
     pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')";

/// The one decision on pg_monitor: a superuser or a member passes, anyone else is skipped
/// (reason `permission`) with what to grant.
pub fn pg_monitor_check(superuser: bool, monitor: bool) -> Result<(), CollectError> {
    if superuser || monitor {
        Ok(())
    } else {
        Err(CollectError::skipped(
            SkipReason::Permission,
            PG_MONITOR_NEEDED,
        ))
    }
}

/// Skips (reason `permission`) unless the session is a superuser or has the privileges of
/// pg_monitor. For collectors that read other users' rows of pg_stat_activity or pg_locks:
/// without the role those rows lose `state`, `backend_type` and the query, so counts and ages
/// would silently read low (0) instead of unknown. Checked on every run (one round trip, no
/// prepared statement), so a REVOKE shows within one interval and a GRANT needs no restart.
pub async fn require_pg_monitor(client: &Client) -> Result<(), CollectError> {
    let rows = client
        .query_typed(&format!("SELECT {ROLE_COLUMNS}"), &[])
        .await?;
    let (superuser, monitor) = rows
        .first()
        .map_or((false, false), |r| (r.get(0), r.get(1)));
    pg_monitor_check(superuser, monitor)
}

impl From<tokio_postgres::Error> for CollectError {
    fn from(error: tokio_postgres::Error) -> Self {
        // Collectors that read application tables map their errors themselves; everything
        // else reads statistics views, which pg_monitor opens.
        CollectError::failed(describe_with(&error, PG_MONITOR_HINT))
    }
}

pub type CollectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Family>, CollectError>> + Send + 'a>>;

pub trait Collector: Send {
    /// Runs once against the session.
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a>;

    /// For a collector with a cardinality cap: the series its last run left out (exported as
    /// `pgkpi_collector_dropped_series`). None when it has no cap.
    fn dropped_series(&self) -> Option<u64> {
        None
    }

    /// True when the last run stopped at its time budget with work left (a catalog pass
    /// spread over runs): the schedule runs it again after a pause as long as the run took,
    /// instead of a whole interval, so the pass completes without a long statement and
    /// without taking more than half of the session's time.
    fn has_pending_work(&self) -> bool {
        false
    }

    /// True when the last run opened so many relations that the server session now holds
    /// their cache entries (a relation cache entry per table and index, kept for the
    /// session's life): the session is closed after the run and a fresh one opened, which
    /// gives that memory back to the server.
    fn wants_fresh_session(&self) -> bool {
        false
    }
}

/// Which connection of a target a collector uses. Collectors on one connection run one query
/// at a time, so a slow collector delays the others on it; the high-frequency activity sampler
/// gets a connection of its own so that nothing delays it. Every other collector shares the
/// main connection, whose state is `pg_up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    Main,
    Sampler,
}

/// What a collector instance is built from: the target it polls and the settings it may
/// read, never the whole configuration.
pub struct BuildContext<'a> {
    /// The target this instance polls.
    pub target: &'a str,
    /// The target's effective session settings; `application_name` marks pgkpi's own
    /// sessions, which the lock and activity collectors leave out.
    pub session: &'a SessionConfig,
    /// The effective interval of this collector on this target.
    pub interval: Duration,
    pub locks: &'a LocksConfig,
    pub statements: &'a StatementsConfig,
    pub queues: &'a [QueueConfig],
    pub webhooks: &'a WebhooksConfig,
    pub relations: &'a RelationsConfig,
    /// The target's `data_directory` (where pgkpi sees it), if configured.
    pub data_directory: Option<&'a std::path::Path>,
    /// `[backups]`, on the one target it applies to (see `app::plan`); None elsewhere.
    pub backups: Option<&'a BackupsConfig>,
    /// Where the instance may publish JSON debug views (see [`crate::views`]).
    pub views: Arc<Views>,
    /// Database sizes `relation_sizes` derives and `database_size` reports; one per target.
    pub derived_sizes: Arc<relations::DerivedSizes>,
}

/// A collector written in Rust: its name, defaults, the families it may emit and a
/// constructor. Collectors that are only SQL are definition files instead (see
/// [`crate::definition`]).
pub struct Spec {
    pub name: &'static str,
    pub description: &'static str,
    pub default_interval: Duration,
    pub enabled_by_default: bool,
    /// The connection it runs on; `Lane::Main` unless it must never wait behind others.
    pub lane: Lane,
    /// The kind of target it speaks to; it is built only for targets of that kind.
    pub kind: TargetKind,
    /// On a server target: once per server, or in each database.
    pub scope: Scope,
    pub families: fn() -> Vec<FamilyDesc>,
    /// Builds the instance for one target.
    pub build: fn(&BuildContext) -> Box<dyn Collector>,
}
