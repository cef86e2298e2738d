//! `statements`: latency histograms per workload, top statements and totals from
//! pg_stat_statements, at a low and constant cost per poll.
//!
//! Each poll reads `pg_stat_statements(false)` — counters only, no query text, so the server
//! does not read its query-text file — and keeps the counters per entry (userid, dbid, queryid,
//! toplevel) until the next poll. The difference is the interval's activity:
//! * the latency histogram `pg_statement_latency_seconds{datname,workload}` spreads each
//!   statement's interval calls over buckets by a distribution matched to the interval's mean
//!   and variance (see [`estimate`], [`histogram`] and docs/statements.md);
//! * per-statement counters for the top N statements by execution time in the interval;
//! * totals per database and the extension's health (fill level, deallocations, last reset).
//!
//! Query text is read only for statements not seen before (and refreshed rarely), only when a
//! workload rule needs it or `query_text` is on; only the resulting workload (and, opt-in, the
//! truncated text) is cached.
//!
//! Resets and evictions never produce negative or inflated deltas (`delta`): an entry whose
//! counters went down, whose `stats_since` (pg_stat_statements 1.11, PostgreSQL 17) changed, or
//! that appeared since the last poll, started inside the interval and counts as a whole; a full
//! reset (`pg_stat_statements_info.stats_reset`, 1.9+) makes every entry fresh; after a server
//! restart that kept the statistics (or a switch to another server) the poll is a new baseline.
//! Exported counters are the collector's own running totals, so they only ever go up.
//!
//! Versions: the SQL follows the installed extension version (`sql::Release`: 1.8 =
//! PostgreSQL 13 minimum; `toplevel` and `pg_stat_statements_info` from 1.9 = 14;
//! `temp_blk_*_time` from 1.10 = 15; `shared_blk_*_time`, `stats_since` from 1.11 = 17), which
//! is what defines the columns even when the server was upgraded without
//! `ALTER EXTENSION ... UPDATE`.
//!
//! The histogram's shape comes from the server log's sampled execution durations when
//! `[statements.log]` is on and the interval has enough of them (`log`), else from the
//! estimate; its counts are always pg_stat_statements'.
//!
//! Layout: `metrics` declares the families; `sql` holds the SQL of each extension release and
//! decodes its rows; `delta` turns two readings into the interval's increments (pure);
//! `estimate` fits a latency distribution to an interval, `histogram` bins it; `log` reads the
//! sampled durations from the server log; `latency` shapes each interval from one or the
//! other; `workloads` classifies statements; `output` builds the families and the debug view;
//! this file keeps the state between polls and runs the poll.

mod delta;
pub mod estimate;
pub mod histogram;
mod latency;
pub mod log;
mod metrics;
mod output;
pub mod settings;
mod sql;
mod workloads;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::delta::{Counters, DeallocStep, Entry, EntryKey, Mode, Reading, StatementKey, Step};
use self::histogram::{Buckets, Histogram};
use self::log::LogSource;
use self::output::PollFigures;
use self::settings::StatementsConfig;
use self::sql::Extension;
use self::workloads::Rules;
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, Spec};
use crate::metric::Family;
use crate::views::Views;

pub fn spec() -> Spec {
    Spec {
        name: "statements",
        description: "Latency histograms per workload, top statements and totals from \
                      pg_stat_statements (1.8+), computed from deltas between polls.",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: super::Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Server,
        families: metrics::families,
        build: |ctx: &BuildContext| {
            Box::new(Statements::new(
                ctx.statements,
                ctx.target,
                ctx.views.clone(),
            ))
        },
    }
}

/// A statement's cached classification.
struct Cached {
    workload: usize,
    /// Truncated text, only with `query_text`.
    text: Option<String>,
    fetched: Instant,
}

/// The exported counters: the collector's own running totals, fed by the increments of each
/// poll, so they only ever go up.
#[derive(Debug, Default)]
struct Totals {
    /// Per statement (exported for the top ones); one per statement in pg_stat_statements,
    /// dropped when its entries go.
    statements: HashMap<StatementKey, Counters>,
    /// Per database, top-level statements only.
    databases: BTreeMap<u32, Counters>,
    /// `pg_stat_statements_dealloc_total`.
    dealloc: f64,
}

impl Totals {
    /// Advances by a poll's increments. In a baseline nothing is added, but statements and
    /// databases seen for the first time start at their current cumulative values.
    fn advance(&mut self, step: &Step) {
        if step.mode() == Mode::Baseline {
            for (key, counters) in &step.current {
                self.statements.entry(*key).or_insert(*counters);
            }
            for (dbid, counters) in &step.current_totals {
                self.databases.entry(*dbid).or_insert(*counters);
            }
        } else {
            for (key, delta) in &step.deltas {
                self.statements.entry(*key).or_default().add(delta);
            }
        }
        self.statements
            .retain(|key, _| step.current.contains_key(key));
        for (dbid, delta) in &step.total_deltas {
            self.databases.entry(*dbid).or_default().add(delta);
        }
        match step.dealloc {
            DeallocStep::Seed(value) => self.dealloc = value,
            DeallocStep::Add(value) => self.dealloc += value,
            DeallocStep::Unchanged => {}
        }
    }
}

struct Statements {
    config: StatementsConfig,
    /// Target name, for the `/debug/statements` view.
    target: String,
    views: Arc<Views>,
    rules: Rules,
    buckets: Buckets,
    /// The last poll's reading, which the next one subtracts from.
    previous: Option<Reading>,
    /// (dbid, queryid) → workload, bounded by `cache_size`; when full, statements gone from
    /// pg_stat_statements are dropped.
    cache: HashMap<(u32, i64), Cached>,
    databases: HashMap<u32, String>,
    roles: HashMap<u32, String>,
    totals: Totals,
    /// Per (dbid, workload).
    histograms: BTreeMap<(u32, usize), Histogram>,
    text_fetches: u64,
    /// Set after a failed text read: no new attempt before then.
    texts_retry_at: Option<Instant>,
    /// Sampled durations from the server log (`[statements.log]`).
    log: LogSource,
    /// Per (dbid, workload): what shaped the histogram in the last interval the workload ran.
    sources: BTreeMap<(u32, usize), Source>,
}

/// What shaped a histogram's interval.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Source {
    from_log: bool,
    /// Logged durations of the interval.
    samples: usize,
}

/// Wait after a failed query-text read.
const TEXT_RETRY: Duration = Duration::from_secs(300);

impl Statements {
    fn new(config: &StatementsConfig, target: &str, views: Arc<Views>) -> Statements {
        Statements {
            target: target.to_string(),
            views,
            rules: Rules::new(&config.workloads),
            buckets: Buckets::new(&config.bucket_bounds()),
            config: config.clone(),
            previous: None,
            cache: HashMap::new(),
            databases: HashMap::new(),
            roles: HashMap::new(),
            totals: Totals::default(),
            histograms: BTreeMap::new(),
            text_fetches: 0,
            texts_retry_at: None,
            log: LogSource::new(&config.log),
            sources: BTreeMap::new(),
        }
    }
}

impl Collector for Statements {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(self.poll(session))
    }
}

impl Statements {
    /// Refreshes the dbid → datname and userid → rolname maps when an id is unknown.
    async fn resolve_names(
        &mut self,
        session: &Session,
        entries: &HashMap<EntryKey, Entry>,
    ) -> Result<(), CollectError> {
        // The maps only grow with databases and roles that exist(ed); the cap guards against a
        // cluster that churns through roles.
        const CAP: usize = 100_000;
        let unknown_db = entries
            .keys()
            .any(|k| !self.databases.contains_key(&k.dbid));
        if unknown_db {
            if self.databases.len() > CAP {
                self.databases.clear();
            }
            for row in session.client.query(sql::DATABASES_SQL, &[]).await? {
                self.databases.insert(row.get(0), row.get(1));
            }
            for key in entries.keys() {
                // A dropped database keeps its oid as the label value instead of a re-query.
                self.databases
                    .entry(key.dbid)
                    .or_insert_with(|| key.dbid.to_string());
            }
        }
        let unknown_role = entries.keys().any(|k| !self.roles.contains_key(&k.userid));
        if unknown_role {
            if self.roles.len() > CAP {
                self.roles.clear();
            }
            for row in session.client.query(sql::ROLES_SQL, &[]).await? {
                self.roles.insert(row.get(0), row.get(1));
            }
            for key in entries.keys() {
                self.roles
                    .entry(key.userid)
                    .or_insert_with(|| key.userid.to_string());
            }
        }
        Ok(())
    }

    /// Reads the text of the statements in `wanted` that are not cached (or cached too long
    /// ago), classifies and caches them. One query for all of them.
    async fn fetch_texts(
        &mut self,
        session: &Session,
        ext: &Extension,
        wanted: &HashSet<(u32, i64)>,
    ) -> Result<(), CollectError> {
        let refresh = self.config.text_refresh;
        let room = self.config.cache_size.saturating_sub(self.cache.len());
        let mut missing: Vec<(u32, i64)> = Vec::new();
        let mut fresh_slots = room;
        for key in wanted {
            match self.cache.get(key) {
                Some(c) if c.fetched.elapsed() < refresh => {}
                Some(_) => missing.push(*key),
                // Beyond the cache's capacity a statement stays unclassified (`other` unless
                // listed by queryid) rather than being re-read every poll.
                None if fresh_slots > 0 => {
                    fresh_slots -= 1;
                    missing.push(*key);
                }
                None => {}
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = missing
            .iter()
            .map(|(_, q)| *q)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let rows = session
            .client
            .query(&ext.text_sql(), &[&ids])
            .await
            .map_err(|e| ext.query_error(e))?;
        self.text_fetches += 1;
        let missing: HashSet<(u32, i64)> = missing.into_iter().collect();
        let now = Instant::now();
        // A cached statement whose entry went meanwhile keeps its workload until the next
        // refresh instead of being asked for again every poll.
        for key in &missing {
            if let Some(cached) = self.cache.get_mut(key) {
                cached.fetched = now;
            }
        }
        for row in rows {
            let key: (u32, i64) = (row.get(0), row.get(1));
            if !missing.contains(&key) {
                continue;
            }
            let text: Option<String> = row.get(2);
            let workload = self.rules.classify(key.1, text.as_deref());
            let text = text
                .filter(|_| self.config.query_text)
                .map(|t| output::shorten(&t, self.config.query_text_max_length));
            self.cache.insert(
                key,
                Cached {
                    workload,
                    text,
                    fetched: now,
                },
            );
        }
        Ok(())
    }

    fn workload(&self, dbid: u32, queryid: i64) -> usize {
        match self.cache.get(&(dbid, queryid)) {
            Some(c) => c.workload,
            None => self.rules.classify(queryid, None),
        }
    }

    fn datname(&self, dbid: u32) -> String {
        self.databases
            .get(&dbid)
            .cloned()
            .unwrap_or_else(|| dbid.to_string())
    }

    fn rolname(&self, userid: u32) -> String {
        self.roles
            .get(&userid)
            .cloned()
            .unwrap_or_else(|| userid.to_string())
    }

    /// Reads the extension, its info and every entry the role may see. Also returns the
    /// number of rows, hidden entries included.
    async fn read(&self, session: &Session) -> Result<(Extension, Reading, usize), CollectError> {
        let row = session.client.query_one(sql::EXTENSION_SQL, &[]).await?;
        let ext = Extension::from_row(&row)?;
        let (dealloc, stats_reset) = if ext.release.has_info() {
            let row = session
                .client
                .query_one(&ext.info_sql(), &[])
                .await
                .map_err(|e| ext.query_error(e))?;
            sql::read_info(&row)
        } else {
            (None, None)
        };
        let rows = session
            .client
            .query(&ext.entries_sql(), &[])
            .await
            .map_err(|e| ext.query_error(e))?;
        let mut entries: HashMap<EntryKey, Entry> = HashMap::with_capacity(rows.len());
        for row in &rows {
            if let Some((key, entry)) = sql::read_entry(row)? {
                entries.insert(key, entry);
            }
        }
        let reading = Reading {
            entries,
            stats_reset,
            dealloc,
            server_start: session.server.start_time_seconds,
        };
        Ok((ext, reading, rows.len()))
    }

    async fn poll(&mut self, session: &Session) -> Result<Vec<Family>, CollectError> {
        let (ext, reading, total_rows) = self.read(session).await?;
        let hidden = total_rows - reading.entries.len();
        self.resolve_names(session, &reading.entries).await?;

        let previous = self.previous.take();
        let step = delta::step(previous.as_ref(), &reading);
        self.totals.advance(&step);

        // Classification needs the text of active top-level statements not seen before (in a
        // baseline: of every top-level entry, so that their histograms start at zero). Without
        // rules on the text only pgkpi's own statements need it, for the `pgkpi` workload.
        let all_texts = self.rules.needs_text || self.config.query_text;
        let own = ext.own_role;
        let mut wanted: HashSet<(u32, i64)> = if step.mode() == Mode::Baseline {
            reading
                .entries
                .keys()
                .filter(|k| k.toplevel)
                .filter(|k| all_texts || Some(k.userid) == own)
                .map(|k| (k.dbid, k.queryid))
                .collect()
        } else {
            step.executions()
                .filter(|(k, _)| all_texts || Some(k.userid) == own)
                .map(|(k, _)| (k.dbid, k.queryid))
                .collect()
        };
        let (top, omitted) = output::top_statements(&step.deltas, self.config.top_n);
        if self.config.query_text {
            wanted.extend(top.iter().map(|(k, _)| (k.dbid, k.queryid)));
        }
        // A statement's workload does not change, so it is kept after its entry is evicted:
        // under eviction churn the same statements come back, and reading texts is the costly
        // part. Only a full cache drops the statements gone from pg_stat_statements.
        if self.cache.len() >= self.config.cache_size {
            let present: HashSet<(u32, i64)> = reading
                .entries
                .keys()
                .map(|k| (k.dbid, k.queryid))
                .collect();
            self.cache.retain(|k, _| present.contains(k));
        }
        // A failed text read (e.g. statement_timeout on a huge query-text file) costs only the
        // classification: those statements count as `other` until a retry some minutes later.
        let texts_allowed = self.texts_retry_at.is_none_or(|at| Instant::now() >= at);
        if texts_allowed {
            if let Err(error) = self.fetch_texts(session, &ext, &wanted).await {
                tracing::warn!(
                    target = %self.target,
                    collector = "statements",
                    error = %error,
                    "cannot read query texts; unclassified statements count as other"
                );
                self.texts_retry_at = Some(Instant::now() + TEXT_RETRY);
            } else {
                self.texts_retry_at = None;
            }
        }

        self.read_log(session).await;
        self.record_latency(&step);
        if step.mode() == Mode::Baseline {
            self.seed_histograms(&reading);
        }
        self.log.close_interval(Instant::now());
        self.publish_view(step.mode(), &top, &step.deltas, omitted, total_rows);

        let stats_reset = reading.stats_reset;
        self.previous = Some(reading);
        Ok(self.families_out(&PollFigures {
            ext: &ext,
            top: &top,
            omitted,
            hidden,
            entries: total_rows,
            stats_reset,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::delta::Transition;
    use super::*;

    fn step_with(transition: Transition, dealloc: DeallocStep) -> Step {
        Step {
            transition,
            increments: HashMap::new(),
            deltas: HashMap::new(),
            total_deltas: BTreeMap::new(),
            current: HashMap::new(),
            current_totals: BTreeMap::new(),
            dealloc,
        }
    }

    fn calls(n: f64) -> Counters {
        Counters {
            calls: n,
            ..Counters::default()
        }
    }

    #[test]
    fn running_totals_start_in_a_baseline_and_only_go_up() {
        let a = StatementKey {
            userid: 1,
            dbid: 5,
            queryid: 11,
        };
        let b = StatementKey { queryid: 12, ..a };
        let mut totals = Totals::default();

        // First poll: statements start at their current values, dealloc at the server's.
        let mut first = step_with(Transition::FirstPoll, DeallocStep::Seed(40.0));
        first.current = HashMap::from([(a, calls(100.0)), (b, calls(7.0))]);
        first.current_totals = BTreeMap::from([(5, calls(107.0))]);
        totals.advance(&first);
        assert_eq!(totals.statements[&a].calls, 100.0);
        assert_eq!(totals.databases[&5].calls, 107.0);
        assert_eq!(totals.dealloc, 40.0);

        // A full reset: increments are added, dealloc's restart at 2 adds 2; b is gone.
        let mut reset = step_with(Transition::FullReset, DeallocStep::Add(2.0));
        reset.current = HashMap::from([(a, calls(3.0))]);
        reset.deltas = HashMap::from([(a, calls(3.0))]);
        reset.total_deltas = BTreeMap::from([(5, calls(3.0))]);
        totals.advance(&reset);
        assert_eq!(totals.statements[&a].calls, 103.0);
        assert!(!totals.statements.contains_key(&b));
        assert_eq!(totals.databases[&5].calls, 110.0);
        assert_eq!(totals.dealloc, 42.0);

        // A restart with kept statistics: nothing added; a known statement keeps its total,
        // one seen for the first time starts at its current value.
        let mut restart = step_with(Transition::RestartStatsKept, DeallocStep::Unchanged);
        restart.current = HashMap::from([(a, calls(500.0)), (b, calls(9.0))]);
        restart.current_totals = BTreeMap::from([(5, calls(509.0))]);
        totals.advance(&restart);
        assert_eq!(totals.statements[&a].calls, 103.0);
        assert_eq!(totals.statements[&b].calls, 9.0);
        assert_eq!(totals.databases[&5].calls, 110.0);
        assert_eq!(totals.dealloc, 42.0);
    }
}
