//! Collectors: named units that read from one database session and return metric families.
//!
//! The poller owns scheduling, timeouts and the connection; a collector only turns a session
//! into [`Family`] values. Each (target, collector) pair gets its own instance, so a collector
//! that needs memory between runs (deltas, caches) keeps it in `&mut self`.

pub mod activity;
pub mod locks;
pub mod queues;
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

use crate::config::Config;
use crate::definition::{self, Definition};
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

    /// For a collector with a cardinality cap: the series its last run left out (exported as
    /// `pgkpi_collector_dropped_series`). None when it has no cap.
    fn dropped_series(&self) -> Option<u64> {
        None
    }
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

/// A collector written in Rust: its name, defaults, the families it may emit and a
/// constructor. Collectors that are only SQL are definition files instead (see
/// [`crate::definition`]).
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

/// Every collector written in Rust.
pub fn builtins() -> Vec<Spec> {
    vec![
        server::spec(),
        locks::spec(),
        activity::spec(),
        statements::spec(),
        relations::stats_spec(),
        relations::sizes_spec(),
        relations::health_spec(),
        queues::spec(),
        webhooks::spec(),
    ]
}

/// A collector of either kind, as the poller and the metric reference see it.
pub struct Entry {
    pub name: String,
    pub description: String,
    /// "built in" for Rust collectors, else the definition file.
    pub origin: String,
    /// Server versions covered, e.g. "14+".
    pub versions: String,
    pub default_interval: Duration,
    pub default_timeout: Option<Duration>,
    pub enabled_by_default: bool,
    pub lane: crate::poller::Lane,
    pub families: Vec<FamilyDesc>,
    factory: Factory,
}

enum Factory {
    Native(fn(&BuildContext) -> Box<dyn Collector>),
    Definition(Arc<Definition>),
}

impl Entry {
    /// A fresh instance for one target.
    pub fn build(&self, context: &BuildContext) -> Box<dyn Collector> {
        match &self.factory {
            Factory::Native(build) => build(context),
            Factory::Definition(definition) => Box::new(sql::SqlCollector::new(definition.clone())),
        }
    }
}

/// Every collector: Rust ones, built-in definitions, then the user's definition files.
/// Collector names and metric names must be unique across all of them, the exporter's own
/// metrics included.
pub fn registry(user_paths: &[std::path::PathBuf]) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = builtins()
        .into_iter()
        .map(|spec| Entry {
            name: spec.name.to_string(),
            description: spec.description.to_string(),
            origin: "built in (Rust)".to_string(),
            // Rust collectors pick their SQL at run time; every one runs in the version matrix.
            versions: "13–18".to_string(),
            default_interval: spec.default_interval,
            default_timeout: None,
            enabled_by_default: spec.enabled_by_default,
            lane: spec.lane,
            families: (spec.families)(),
            factory: Factory::Native(spec.build),
        })
        .collect();
    let definitions = definition::builtin()
        .into_iter()
        .chain(definition::load_user(user_paths)?);
    for loaded in definitions {
        let d = loaded.definition;
        entries.push(Entry {
            name: d.name.clone(),
            description: d.description.clone(),
            origin: loaded.origin,
            versions: d.versions(),
            default_interval: d.interval,
            default_timeout: d.timeout,
            enabled_by_default: d.enabled,
            lane: crate::poller::Lane::Main,
            families: d.families(),
            factory: Factory::Definition(Arc::new(d)),
        });
    }
    let mut names: std::collections::BTreeMap<String, String> =
        crate::telemetry::Telemetry::describe()
            .into_iter()
            .map(|f| (f.name, "the exporter's own metrics".to_string()))
            .collect();
    let mut collectors: std::collections::BTreeMap<&str, &str> = Default::default();
    for entry in &entries {
        if let Some(first) = collectors.insert(&entry.name, &entry.origin) {
            return Err(format!(
                "collector name \"{}\" is defined twice: in {first} and in {}; rename one",
                entry.name, entry.origin
            ));
        }
        for family in &entry.families {
            let here = format!("collector \"{}\" ({})", entry.name, entry.origin);
            if let Some(first) = names.insert(family.name.clone(), here.clone()) {
                return Err(format!(
                    "metric \"{}\" is defined twice: by {first} and by {here}; metric names must be unique",
                    family.name
                ));
            }
        }
    }
    Ok(entries)
}
