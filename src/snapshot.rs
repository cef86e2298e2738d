//! The latest metrics of every (target, collector), kept already encoded.
//!
//! Collectors write here after each successful run; a scrape reads one `Bytes` handle and never
//! waits for the database. Each entry is encoded once when it arrives; the body served to
//! Prometheus is re-assembled only when an entry changes, grouping samples of the same family
//! from several targets under one `# HELP`/`# TYPE` header as the text format requires.
//! An entry whose collector keeps failing is served until its `keep_until` and then dropped
//! ([`Snapshot::expire`]), so stale values have a bounded life.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::metric::{self, Family};

/// One family of one entry, encoded.
struct EncodedFamily {
    name: String,
    header: String,
    samples: String,
}

struct Entry {
    families: Vec<EncodedFamily>,
    /// After this instant the values are too old to serve.
    keep_until: Instant,
}

/// Key: (target, database, collector). The database is empty for a target's own collectors
/// and names the database for a per-database collector of a server target (whose series then
/// carry `datname`).
type Key = (String, String, String);

pub struct Snapshot {
    entries: Mutex<BTreeMap<Key, Entry>>,
    body: RwLock<Bytes>,
    /// Marked changed whenever a new body is in place ([`Snapshot::subscribe`]).
    published: watch::Sender<()>,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            entries: Mutex::default(),
            body: RwLock::default(),
            published: watch::Sender::new(()),
        }
    }
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// A receiver that sees a change each time a new body is in place (several changes in a
    /// row may be seen as one).
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.published.subscribe()
    }

    /// Replaces the values of (target, collector); they are served for at most `keep_for`
    /// unless a newer run replaces them.
    pub fn put(&self, target: &str, collector: &str, families: Vec<Family>, keep_for: Duration) {
        self.put_in(target, None, collector, families, keep_for);
    }

    /// Like [`Snapshot::put`], for a collector run in one `database` of a server target: its
    /// series carry `datname` after `target`.
    pub fn put_in(
        &self,
        target: &str,
        database: Option<&str>,
        collector: &str,
        families: Vec<Family>,
        keep_for: Duration,
    ) {
        let mut leading = vec![("target", target)];
        if let Some(database) = database {
            leading.push(("datname", database));
        }
        let encoded = families
            .into_iter()
            .filter(|f| !f.samples.is_empty())
            .map(|family| {
                let mut header = String::new();
                metric::write_header(&mut header, &family);
                let mut samples = String::new();
                metric::write_samples(&mut samples, &family, &leading);
                EncodedFamily {
                    name: family.name,
                    header,
                    samples,
                }
            })
            .collect();
        let mut entries = self.entries.lock().expect("snapshot lock");
        entries.insert(
            key(target, database, collector),
            Entry {
                families: encoded,
                keep_until: Instant::now() + keep_for,
            },
        );
        self.rebuild(&entries);
    }

    /// True when values of (target, database, collector) are being served.
    pub fn contains(&self, target: &str, database: Option<&str>, collector: &str) -> bool {
        self.entries
            .lock()
            .expect("snapshot lock")
            .contains_key(&key(target, database, collector))
    }

    /// Drops every value of a target (stopped by a reload or moved to another shard), or of
    /// one database of it (dropped, or no longer matching the target's filter).
    pub fn remove(&self, target: &str, database: Option<&str>) {
        let mut entries = self.entries.lock().expect("snapshot lock");
        let before = entries.len();
        entries
            .retain(|(t, d, _), _| t != target || database.is_some_and(|database| d != database));
        if entries.len() != before {
            self.rebuild(&entries);
        }
    }

    /// Drops entries past their `keep_until`; returns the keys dropped: (target, database,
    /// collector), the database empty for a target's own collectors.
    pub fn expire(&self, now: Instant) -> Vec<(String, String, String)> {
        let mut entries = self.entries.lock().expect("snapshot lock");
        let expired: Vec<Key> = entries
            .iter()
            .filter(|(_, e)| e.keep_until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if !expired.is_empty() {
            for key in &expired {
                entries.remove(key);
            }
            self.rebuild(&entries);
        }
        expired
    }

    /// The encoded body: O(1), a reference-counted handle.
    pub fn body(&self) -> Bytes {
        self.body.read().expect("snapshot lock").clone()
    }

    /// The number of entries, for tests and the benchmark's sanity checks.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("snapshot lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn rebuild(&self, entries: &BTreeMap<Key, Entry>) {
        let mut by_family: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
        let mut size = 0;
        for entry in entries.values() {
            for family in &entry.families {
                let slot = by_family
                    .entry(family.name.as_str())
                    .or_insert_with(|| (family.header.as_str(), Vec::new()));
                slot.1.push(family.samples.as_str());
                size += family.header.len() + family.samples.len();
            }
        }
        let mut body = String::with_capacity(size);
        for (header, samples) in by_family.values() {
            body.push_str(header);
            for s in samples {
                body.push_str(s);
            }
        }
        *self.body.write().expect("snapshot lock") = Bytes::from(body);
        self.published.send_replace(());
    }
}

fn key(target: &str, database: Option<&str>, collector: &str) -> Key {
    (
        target.to_string(),
        database.unwrap_or_default().to_string(),
        collector.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;

    const X: Metric = Metric::gauge("pg_x", &["target"], "x");
    const EMPTY: Metric = Metric::gauge("empty", &["target"], "e");

    fn up(value: f64) -> Vec<Family> {
        vec![X.family().with(&[], value)]
    }

    #[test]
    fn merges_one_family_across_targets_under_one_header() {
        let snapshot = Snapshot::new();
        snapshot.put("b", "server", up(2.0), Duration::from_secs(60));
        snapshot.put("a", "server", up(1.0), Duration::from_secs(60));
        let body = String::from_utf8(snapshot.body().to_vec()).unwrap();
        assert_eq!(
            body,
            "# HELP pg_x x\n# TYPE pg_x gauge\npg_x{target=\"a\"} 1\npg_x{target=\"b\"} 2\n"
        );
    }

    #[test]
    fn database_series_carry_datname_and_go_with_their_database_or_target() {
        let snapshot = Snapshot::new();
        let keep = Duration::from_secs(60);
        snapshot.put("s", "server", up(1.0), keep);
        snapshot.put_in("s", Some("app"), "rel", up(2.0), keep);
        snapshot.put_in("s", Some("crm"), "rel", up(3.0), keep);
        snapshot.put("t", "server", up(4.0), keep);
        let body = String::from_utf8(snapshot.body().to_vec()).unwrap();
        assert!(
            body.contains("pg_x{target=\"s\",datname=\"app\"} 2\n"),
            "{body}"
        );
        snapshot.remove("s", Some("app"));
        assert!(!snapshot.contains("s", Some("app"), "rel"));
        assert!(snapshot.contains("s", Some("crm"), "rel"));
        snapshot.remove("s", None);
        assert_eq!(snapshot.len(), 1, "only target t is left");
        assert!(snapshot.contains("t", None, "server"));
    }

    #[test]
    fn drops_empty_families_and_expired_entries() {
        let snapshot = Snapshot::new();
        snapshot.put("a", "c", vec![EMPTY.family()], Duration::from_secs(60));
        assert!(snapshot.body().is_empty());
        snapshot.put("a", "c", up(1.0), Duration::from_secs(5));
        assert!(!snapshot.body().is_empty());
        assert!(snapshot.expire(Instant::now()).is_empty());
        let later = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            snapshot.expire(later),
            vec![("a".to_string(), String::new(), "c".to_string())]
        );
        assert!(snapshot.body().is_empty());
        assert!(!snapshot.contains("a", None, "c"));
    }
}
