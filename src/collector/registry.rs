//! The registry: every collector of either kind (Rust or definition file), checked for unique
//! collector and metric names. The poller builds instances from it, the metric reference
//! describes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::sql::SqlCollector;
use super::{
    activity, backups, data_volume, locks, pgbouncer, queues, relations, server, statements,
    webhooks,
};
use super::{BuildContext, Collector, Lane, Spec};
use crate::config::{Scope, TargetKind};
use crate::definition::{self, Definition};
use crate::metric::FamilyDesc;
use crate::telemetry::Telemetry;

/// Every collector written in Rust.
pub fn builtins() -> Vec<Spec> {
    vec![
        server::spec(),
        locks::spec(),
        activity::spec(),
        statements::spec(),
        relations::stats_spec(),
        relations::sizes_spec(),
        relations::database_size_spec(),
        relations::health_spec(),
        queues::spec(),
        webhooks::spec(),
        backups::spec(),
        data_volume::spec(),
        pgbouncer::pools_spec(),
        pgbouncer::stats_spec(),
        pgbouncer::limits_spec(),
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
    pub lane: Lane,
    /// The kind of target it is built for (definition files: PostgreSQL).
    pub kind: TargetKind,
    /// On a server target: once per server, or in each database.
    pub scope: Scope,
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
            Factory::Definition(definition) => Box::new(SqlCollector::new(definition.clone())),
        }
    }
}

/// Every collector: Rust ones, built-in definitions, then the user's definition files.
/// Collector names and metric names must be unique across all of them, the exporter's own
/// metrics included.
pub fn load(user_paths: &[PathBuf]) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = builtins()
        .into_iter()
        .map(|spec| Entry {
            name: spec.name.to_string(),
            description: spec.description.to_string(),
            origin: "built in (Rust)".to_string(),
            // Rust collectors pick their SQL at run time; every one runs in the version matrix.
            versions: match spec.kind {
                TargetKind::Postgres => "13–18".to_string(),
                TargetKind::Pgbouncer => "pgBouncer 1.18".to_string(),
            },
            default_interval: spec.default_interval,
            default_timeout: None,
            enabled_by_default: spec.enabled_by_default,
            lane: spec.lane,
            kind: spec.kind,
            scope: spec.scope,
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
            lane: Lane::Main,
            kind: TargetKind::Postgres,
            scope: d.scope,
            families: d.families(),
            factory: Factory::Definition(Arc::new(d)),
        });
    }
    let mut names: BTreeMap<String, String> = Telemetry::describe()
        .into_iter()
        .map(|f| (f.name, "the exporter's own metrics".to_string()))
        .collect();
    let mut collectors: BTreeMap<&str, &str> = Default::default();
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
