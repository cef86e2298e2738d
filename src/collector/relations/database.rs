//! `database_size` (every 5m): the on-disk size of each database of the server.
//!
//! Each file is stat'ed at most once per pass. `pg_database_size` lists and stats every file
//! of a database (over 150 000 on a catalog of 50 000 tables: 0.6 s per call), files that
//! `relation_sizes` already stats for the database it inspects. So `relation_sizes` derives its
//! database's size from its own measures (its tables and indexes, carried while unchanged,
//! plus the system catalogs and sequences: see `sizes`) and publishes it in [`DerivedSizes`];
//! this collector reports that value for such a database and calls `pg_database_size` only
//! for the others (those of the server that pgkpi does not inspect relation by relation).
//!
//! A database whose first pass is still running (published as measuring) has no sample yet
//! rather than a walk of its files; so has the connected database before `relation_sizes`'
//! first run, for up to three of its intervals, when it runs on the target's connection. A
//! published value expires after three `relation_sizes` intervals (that collector disabled,
//! failing or its database gone), and the database is walked again. The derived size leaves out what belongs to no relation pgkpi can see:
//! other sessions' temporary tables, the few small per-database files (`PG_VERSION`, the
//! relation map, the relation cache init file, a few hundred kilobytes at most) and orphaned
//! files left by a crash (docs/relations.md).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::collector::{CollectFuture, Collector, Session, Spec};
use crate::metric::{describe_all, FamilyDesc};

pub fn spec() -> Spec {
    Spec {
        name: "database_size",
        description: "On-disk size of each database: derived from relation_sizes' measures for the database it inspects, pg_database_size for the others.",
        default_interval: Duration::from_secs(300),
        enabled_by_default: true,
        lane: crate::collector::Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Server,
        families,
        build: |context| {
            Box::new(DatabaseSize {
                derived: context.derived_sizes.clone(),
                dropped: 0,
            })
        },
    }
}

crate::metric::metrics! {
    SIZE = gauge("pg_database_size_bytes", &["target", "datname"], "Disk space used by the database: the sum of its relations as relation_sizes measures them where pgkpi inspects its tables (see docs/relations.md), else pg_database_size; deriv() of it is the growth rate.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[SIZE])
}

/// Databases reported, largest first; a server with more is summarized by the largest.
const MAX_DATABASES: usize = 200;

/// What `relation_sizes` knows of its database's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Derived {
    /// The first pass over its tables is still running.
    Measuring,
    /// The sum of its measures, in bytes.
    Bytes(f64),
}

/// The sizes `relation_sizes` instances derived, by database name, shared by a target's
/// collectors (one per target: a server target's databases publish into the same one).
#[derive(Debug, Default)]
pub struct DerivedSizes {
    by_database: Mutex<HashMap<String, (Derived, Instant)>>,
    /// Until when the connected database is left unmeasured while nothing is published for
    /// it: `relation_sizes` runs on the same session and publishes at its first run, but the
    /// collectors' tasks start in no set order, and a first `database_size` run that came
    /// first would walk every file of the very catalogue the exporter measures anyway.
    awaited_until: OnceLock<Instant>,
}

impl DerivedSizes {
    /// Awaits `relation_sizes`' first publication for the connected database for `grace`
    /// from now; called once, when it is scheduled on the target's own connection.
    pub fn await_connected(&self, grace: Duration) {
        let _ = self.awaited_until.set(Instant::now() + grace);
    }

    /// Whether the connected database's first publication is still awaited.
    fn awaited(&self) -> bool {
        self.awaited_until
            .get()
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Records `derived` for `database`, valid for `valid_for`.
    pub fn publish(&self, database: &str, derived: Derived, valid_for: Duration) {
        self.lock()
            .insert(database.to_string(), (derived, Instant::now() + valid_for));
    }

    /// The last value published for `database`, unless it expired.
    pub fn get(&self, database: &str) -> Option<Derived> {
        let mut by_database = self.lock();
        match by_database.get(database) {
            Some((derived, until)) if Instant::now() < *until => Some(*derived),
            Some(_) => {
                by_database.remove(database);
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Derived, Instant)>> {
        // A panic while holding the lock leaves a plain map behind, still consistent.
        self.by_database
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The databases this role may see the size of (pg_database_size needs CONNECT or
/// pg_read_all_stats). The size itself is asked per database, only for those not derived.
const DATABASES_SQL: &str = "
    SELECT datname::text, oid, datname = current_database() FROM pg_database
    WHERE datallowconn AND NOT datistemplate
      AND (has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE'))
    ORDER BY datname";

struct DatabaseSize {
    derived: std::sync::Arc<DerivedSizes>,
    dropped: u64,
}

impl Collector for DatabaseSize {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let mut sizes: Vec<(String, f64)> = Vec::new();
            let mut walked: Vec<(String, u32)> = Vec::new();
            for row in session.client.query(DATABASES_SQL, &[]).await? {
                let name: String = row.try_get(0)?;
                let connected: bool = row.try_get(2)?;
                match self.derived.get(&name) {
                    Some(Derived::Bytes(bytes)) => sizes.push((name, bytes)),
                    Some(Derived::Measuring) => {}
                    None if connected && self.derived.awaited() => {}
                    None => walked.push((name, row.try_get(1)?)),
                }
            }
            if !walked.is_empty() {
                let oids: Vec<u32> = walked.iter().map(|(_, oid)| *oid).collect();
                let rows = session
                    .client
                    .query(
                        "SELECT d, pg_database_size(d)::float8 FROM unnest($1::oid[]) AS d",
                        &[&oids],
                    )
                    .await?;
                for row in rows {
                    let oid: u32 = row.try_get(0)?;
                    if let Some((name, _)) = walked.iter().find(|(_, o)| *o == oid) {
                        sizes.push((name.clone(), row.try_get(1)?));
                    }
                }
            }
            sizes.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            self.dropped = sizes.len().saturating_sub(MAX_DATABASES) as u64;
            sizes.truncate(MAX_DATABASES);
            let mut family = SIZE.family();
            for (name, bytes) in &sizes {
                family.push(&[("datname", name)], *bytes);
            }
            Ok(vec![family])
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_size_is_read_until_it_expires() {
        let derived = DerivedSizes::default();
        assert_eq!(derived.get("app"), None);
        derived.publish("app", Derived::Measuring, Duration::from_secs(60));
        assert_eq!(derived.get("app"), Some(Derived::Measuring));
        derived.publish("app", Derived::Bytes(8192.0), Duration::from_secs(60));
        assert_eq!(derived.get("app"), Some(Derived::Bytes(8192.0)));
        assert_eq!(derived.get("other"), None);
        derived.publish("app", Derived::Bytes(8192.0), Duration::ZERO);
        assert_eq!(derived.get("app"), None);
    }

    #[test]
    fn the_connected_database_is_awaited_only_for_its_grace() {
        let awaiting = |grace| {
            let derived = DerivedSizes::default();
            derived.await_connected(grace);
            derived.awaited()
        };
        assert!(awaiting(Duration::from_secs(60)));
        assert!(!awaiting(Duration::ZERO));
        assert!(!DerivedSizes::default().awaited());
    }
}
