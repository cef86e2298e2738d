//! `relation_sizes` (every 5m): heap, TOAST, index and total sizes per table and index, plus
//! bloat estimates (explained in docs/relations.md).
//!
//! Work proportional to change, not to the catalog: size functions open and stat every
//! relation and the estimates join `pg_stats`, both costly on tens of thousands of relations,
//! while a size or an estimate only changes when its table is written, vacuumed, analyzed,
//! truncated or rewritten. So a run
//! 1. reads a fingerprint per table from the catalog and the statistics counters (no file is
//!    touched, no relation opened);
//! 2. measures the tables whose fingerprint changed (sizes and estimates) and the sizes of new
//!    ones, with their indexes, in chunks of [`CHUNK`] tables per statement, and carries the
//!    others' values from their last measure ([`Measured`]);
//! 3. makes the new tables' first estimates a slice at a time ([`Work`]), and re-measures the
//!    sizes of unchanged tables a slice at a time, so that every table is measured again once
//!    per `full_pass_interval` (the slice is sized to finish the pass in half of it); their
//!    estimates are carried, since everything they read is in the fingerprint;
//! 4. reports every table through the rollup and the caps: names and activity ranks read in
//!    chunks of `page_size` tables (catalog and counters only), sizes from [`Measured`].
//!
//! A run stops starting chunks after [`RUN_BUDGET`] and asks to run again soon
//! ([`Collector::has_pending_work`]): the first pass over a large catalog is spread over
//! several short runs, no statement grows with the catalog, and the session is never busy for
//! long. A run that opened many relations asks for a fresh session
//! ([`Collector::wants_fresh_session`]) so that their cache entries do not stay in the
//! server's memory. Each file is stat'ed once per measure: a table's index total is the sum of
//! its indexes' sizes, not a second `pg_indexes_size`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::columns::{
    array, chunk_indexes, for_each_chunk, in_tree, index_reported_as, indexes_of_c, Col, Read,
    INDEX, TABLE, TABLE_KEY,
};
use super::cut::Cut;
use super::database::{Derived, DerivedSizes};
use super::export::export;
use super::measures::{Estimate, Measured, MeasuredIndex, Measures};
use super::rollup::{Key, Series};
use super::settings::RelationsConfig;
use crate::collector::{BuildContext, CollectError, CollectFuture, Collector, Lane, Session, Spec};
use crate::metric::{Family, Metric};

const TABLE_SIZES: &[Col] = &[
    Col::sum(
        "total_bytes",
        Metric::gauge(
            "pg_table_size_bytes",
            TABLE,
            "Total size of the table: heap, TOAST and indexes (pg_total_relation_size); deriv() of it is the growth rate.",
        ),
    ),
    Col::sum(
        "heap_bytes",
        Metric::gauge(
            "pg_table_heap_size_bytes",
            TABLE,
            "Main data of the table with its free space and visibility maps, TOAST excluded.",
        ),
    ),
    Col::sum(
        "toast_bytes",
        Metric::gauge(
            "pg_table_toast_size_bytes",
            TABLE,
            "TOAST table of the table with its index.",
        ),
    ),
    Col::sum(
        "index_bytes",
        Metric::gauge(
            "pg_table_indexes_size_bytes",
            TABLE,
            "All indexes of the table (pg_indexes_size).",
        ),
    ),
    Col::sum(
        "bloat_bytes",
        Metric::gauge(
            "pg_table_bloat_bytes",
            TABLE,
            "Estimated heap space beyond what the live rows need at the table's fillfactor, from catalog statistics (see docs/relations.md); absent without statistics, and until the table's first estimate (spread over half an hour on large catalogs).",
        ),
    ),
];

const INDEX_SIZES: &[Col] = &[
    Col::sum(
        "index_bytes",
        Metric::gauge(
            "pg_index_size_bytes",
            INDEX,
            "Size of the index, every fork (pg_total_relation_size of the index).",
        ),
    ),
    Col::sum(
        "bloat_bytes",
        Metric::gauge(
            "pg_index_bloat_bytes",
            INDEX,
            "Estimated B-tree space beyond what its entries need at the index's fillfactor, from catalog statistics (see docs/relations.md); B-tree only, absent without statistics and until its table's first estimate.",
        ),
    ),
];

pub fn spec() -> Spec {
    Spec {
        name: "relation_sizes",
        description: "Heap, TOAST, index and total sizes and bloat estimates per table and index; re-measures only the tables changed since the previous run, everything every full_pass_interval.",
        default_interval: Duration::from_secs(300),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Database,
        families: || super::columns::describe(&[TABLE_SIZES, INDEX_SIZES]),
        build: |ctx: &BuildContext| {
            Box::new(RelationSizes {
                config: ctx.relations.clone(),
                interval: ctx.interval,
                dropped: 0,
                measured: Measures::default(),
                pass: Pass::default(),
                pending: false,
                first_estimates: 0,
                opened: 0,
                fingerprints: Vec::new(),
                report: None,
                derived: ctx.derived_sizes.clone(),
                database: None,
                last_derived: None,
            })
        },
    }
}

/// Tables measured per statement, so that no statement grows with the catalog.
const CHUNK: usize = 500;

/// A run starts no new chunk after this long; the rest waits for the next run, soon after.
/// Well under the default collector timeout (statement_timeout + 1s = 6s).
const RUN_BUDGET: Duration = Duration::from_secs(2);

/// Relations (tables and indexes) opened in one run beyond which the session is replaced
/// afterwards: each leaves a relation cache entry of a few kilobytes in the server session.
const FRESH_SESSION_AFTER: usize = 1_000;

/// The tables of the database (ordinary, materialized, partitioned; system schemas excluded)
/// with a fingerprint of everything their sizes and estimates depend on: the files
/// (relfilenode of the table, its TOAST table and indexes, which a TRUNCATE, VACUUM FULL,
/// CLUSTER or REINDEX replace), the row counters of the statistics (inserts, updates and
/// deletes, aborted ones included, grow the files), VACUUM (truncates, creates the free space
/// and visibility maps) and ANALYZE (relpages, reltuples, pg_stats) counts, and the shape
/// (columns, options, the set of indexes). Catalog and statistics only: no file is opened.
const FINGERPRINTS_SQL: &str = "
    SELECT c.oid AS relid,
           hashtextextended(concat_ws(',', c.relfilenode, c.relpages, c.reltuples, c.relnatts,
               c.reloptions::text, tc.relfilenode,
               pg_stat_get_tuples_inserted(c.oid), pg_stat_get_tuples_updated(c.oid),
               pg_stat_get_tuples_deleted(c.oid), pg_stat_get_vacuum_count(c.oid),
               pg_stat_get_autovacuum_count(c.oid), pg_stat_get_analyze_count(c.oid),
               pg_stat_get_autoanalyze_count(c.oid),
               -- A sum of the indexes' hashes: the same whatever their order, without a sort
               -- per table.
               (SELECT sum(hashtextextended(concat_ws(':', ci.oid, ci.relfilenode, ci.relpages,
                                                      ci.reloptions::text), 0))
                FROM pg_index x JOIN pg_class ci ON ci.oid = x.indexrelid
                WHERE x.indrelid = c.oid)), 0) AS fingerprint
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid
    WHERE c.relkind IN ('r', 'm', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_(toast|temp_)'
      AND c.oid > $1::oid
    ORDER BY c.oid
    LIMIT $2";

/// Tables fingerprinted per statement (keyset pages by oid): about 40 ms at 10 000 tables.
const FINGERPRINT_PAGE: i64 = 2_000;

/// The sum of the `forks` of a relation, and of its init fork when it is unlogged (only
/// unlogged relations have one): each fork asked for is a relation lookup and a `stat`, even
/// when the file does not exist, so only the forks the relation can have are asked for.
macro_rules! forks_bytes {
    ($relid:literal, $persistence:literal, [$($fork:literal),+]) => {
        concat!(
            "(",
            $("pg_relation_size(", $relid, ", '", $fork, "') + ",)+
            "CASE WHEN ", $persistence, " = 'u' THEN pg_relation_size(", $relid,
            ", 'init') ELSE 0 END)::float8"
        )
    };
}

/// A table's own files, every fork (what `pg_table_size` adds up before its TOAST table), so
/// that the TOAST files are stat'ed once, by [`toast_bytes!`], not by both.
macro_rules! heap_bytes {
    ($relid:literal, $persistence:literal) => {
        forks_bytes!($relid, $persistence, ["main", "fsm", "vm"])
    };
}

/// An index's files, every fork it can have: what `pg_total_relation_size` of the index adds
/// up, without asking for a visibility map (only tables have one) or, unless unlogged, an init
/// fork: two lookups and `stat`s of files that cannot exist, out of four, for every index.
macro_rules! index_bytes {
    ($relid:literal, $persistence:literal) => {
        forks_bytes!($relid, $persistence, ["main", "fsm"])
    };
}

/// A table's TOAST table with its index, every fork; 0 without one.
macro_rules! toast_bytes {
    ($toastrelid:literal) => {
        concat!(
            "(CASE WHEN ",
            $toastrelid,
            " <> 0 THEN pg_total_relation_size(",
            $toastrelid,
            ") ELSE 0 END)::float8"
        )
    };
}

/// Heap bloat estimate: pages the table has (relpages) minus pages its rows need. A row needs
/// the MAXALIGNed header (23 bytes + null bitmap) and data (sum of avg_width × non-null
/// share over its columns, from pg_stats), MAXALIGNed, plus a 4-byte line pointer; a page
/// offers (block_size - 24) × fillfactor. NULL when a column lacks statistics. Only the
/// tables of `$1` are measured (and only their rows of pg_stats read).
const MEASURE_TABLES_SQL: &str = concat!(
    "
    WITH t AS (
        SELECT c.oid AS relid, n.nspname AS schemaname, c.relname, c.relkind, c.relpages,
               c.reltuples, c.reltoastrelid, c.relpersistence,
               coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                         FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 100) AS fillfactor,
               (SELECT count(*) FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS natts,
               -- Per table, by name, as a scalar subquery: pg_stats (a view checking column
               -- privileges on every row) is then read through the catalog indexes for this
               -- table only. Joined instead (even LATERAL), the planner reads the whole view
               -- and filters it per table: 16 s per chunk of 500 on a catalog of 10 000
               -- analyzed tables read by a superuser, against 30 ms this way.
               (SELECT ARRAY[sum((1 - s.null_frac) * s.avg_width),
                             count(*) FILTER (WHERE s.null_frac > 0), count(*)]::float8[]
                FROM pg_stats s
                WHERE NOT s.inherited AND s.schemaname = n.nspname AND s.tablename = c.relname
               ) AS stats
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = ANY($1::oid[])
    ), w AS (
        SELECT t.*, t.stats[1] AS width, t.stats[2] > 0 AS nulls, t.stats[3] AS ncols FROM t
    )
    SELECT w.relid, ",
    heap_bytes!("w.relid", "w.relpersistence"),
    " AS heap_bytes, ",
    toast_bytes!("w.reltoastrelid"),
    " AS toast_bytes,
           (CASE WHEN w.relkind <> 'p' AND w.reltuples >= 0 AND w.ncols = w.natts THEN
               greatest(w.relpages - ceil(w.reltuples / greatest(floor(
                   (current_setting('block_size')::int - 24) * w.fillfactor / 100.0
                   / (ceil((ceil((23 + CASE WHEN w.nulls THEN ceil(w.natts / 8.0) ELSE 0 END) / 8.0) * 8
                            + w.width) / 8.0) * 8 + 4)), 1)), 0)
               * current_setting('block_size')::int
           END)::float8 AS bloat_bytes
    FROM w"
);

/// B-tree bloat estimate: leaf pages needed = entries (reltuples) / entries per page, where an
/// entry is an 8-byte IndexTuple header plus the key and INCLUDE columns' average widths
/// (table column statistics, or the index's own for expressions), MAXALIGNed, plus a 4-byte
/// line pointer, and a page offers (block_size - 24 - 16) × fillfactor (default 90); plus the
/// metapage. Internal pages are ignored (under 1% for typical fan-outs). Only the indexes
/// (with storage) of the tables of `$1`.
const MEASURE_INDEXES_SQL: &str = concat!(
    "
    WITH i AS (
        SELECT x.indexrelid, x.indrelid, x.relpages, x.reltuples, x.relpersistence, am.amname,
               coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                         FROM unnest(x.reloptions) o WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor,
               x.indkey::int2[] AS indkey
        FROM pg_class c",
    indexes_of_c!(),
    "
        JOIN pg_am am ON am.oid = x.relam
        WHERE c.oid = ANY($1::oid[]) AND x.relkind = 'i'
    ), cols AS (
        SELECT i.indexrelid, k.attnum, k.pos
        FROM i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
        WHERE i.amname = 'btree'
    ), colstats AS (
        -- Per column, by name, as scalar subqueries (see MEASURE_TABLES_SQL): the table's
        -- statistics for a column, the index's own for an expression. [avg_width, null_frac].
        SELECT cols.indexrelid,
               (SELECT ARRAY[s.avg_width, s.null_frac]::float8[] FROM pg_stats s
                WHERE NOT s.inherited AND s.schemaname = tn.nspname AND s.tablename = tc.relname
                  AND s.attname = ta.attname) AS st,
               (SELECT ARRAY[s.avg_width, s.null_frac]::float8[] FROM pg_stats s
                WHERE NOT s.inherited AND s.schemaname = tn.nspname AND s.tablename = ic.relname
                  AND s.attname = ia.attname) AS se
        FROM cols
        JOIN pg_index x ON x.indexrelid = cols.indexrelid
        JOIN pg_class tc ON tc.oid = x.indrelid
        JOIN pg_namespace tn ON tn.oid = tc.relnamespace
        JOIN pg_class ic ON ic.oid = cols.indexrelid
        LEFT JOIN pg_attribute ta ON cols.attnum <> 0 AND ta.attrelid = x.indrelid AND ta.attnum = cols.attnum
        LEFT JOIN pg_attribute ia ON cols.attnum = 0 AND ia.attrelid = cols.indexrelid AND ia.attnum = cols.pos
    ), widths AS (
        SELECT c.indexrelid, count(coalesce(c.st, c.se)) AS known, count(*) AS total,
               sum((1 - (coalesce(c.st, c.se))[2]) * (coalesce(c.st, c.se))[1]) AS width
        FROM colstats c
        GROUP BY c.indexrelid
    )
    SELECT i.indrelid AS relid, i.indexrelid, ",
    index_bytes!("i.indexrelid", "i.relpersistence"),
    " AS index_bytes,
           (CASE WHEN i.amname = 'btree' AND i.reltuples >= 0 AND w.known = w.total THEN
               greatest(i.relpages - 1 - ceil(i.reltuples / greatest(floor(
                   (current_setting('block_size')::int - 40) * i.fillfactor / 100.0
                   / (ceil((8 + w.width) / 8.0) * 8 + 4)), 1)), 0)
               * current_setting('block_size')::int
           END)::float8 AS bloat_bytes
    FROM i LEFT JOIN widths w ON w.indexrelid = i.indexrelid"
);

/// Sizes only, for tables whose fingerprint did not change (their estimates are carried).
const MEASURE_TABLE_SIZES_SQL: &str = concat!(
    "SELECT c.oid AS relid, ",
    heap_bytes!("c.oid", "c.relpersistence"),
    " AS heap_bytes, ",
    toast_bytes!("c.reltoastrelid"),
    " AS toast_bytes, NULL::float8 AS bloat_bytes
    FROM pg_class c WHERE c.oid = ANY($1::oid[])"
);

/// Sizes only of the indexes (with storage) of the tables of `$1`.
const MEASURE_INDEX_SIZES_SQL: &str = concat!(
    "
    SELECT x.indrelid AS relid, x.indexrelid, ",
    index_bytes!("x.indexrelid", "c.relpersistence"),
    " AS index_bytes, NULL::float8 AS bloat_bytes",
    chunk_indexes!()
);

/// What the database's directory holds besides the tables measured one by one, for its
/// derived size (`database_size`): the system catalogs with their TOAST tables and indexes
/// (shared catalogs live in another directory) and the sequences, which are one block each
/// (and an init fork when unlogged) and are counted rather than stat'ed. Temporary tables
/// are left out, as they are from the measures.
const REST_SQL: &str = "
    SELECT (coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relkind <> 'S'), 0)
            + (count(*) FILTER (WHERE c.relkind = 'S')
               + count(*) FILTER (WHERE c.relkind = 'S' AND c.relpersistence = 'u'))
              * current_setting('block_size')::int)::float8
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE (c.relkind IN ('r', 'm') AND NOT c.relisshared
           AND n.nspname IN ('pg_catalog', 'information_schema'))
       OR (c.relkind = 'S' AND c.relpersistence <> 't')";

/// Grouping keys and activity ranks of the tables of `$1` and of their indexes (with storage),
/// for the report: sizes come from [`Measured`], so this reads the catalog and statistics
/// counters only, no file. A row per table with its indexes as arrays, as `relation_stats`
/// reads them: each table is looked up once, and a table's scans, its own and its indexes',
/// are summed in Rust from its row.
fn report_sql() -> String {
    format!(
        "SELECT c.oid, {TABLE_KEY},
            pg_stat_get_numscans(c.oid)::float8 AS scans,
            pg_stat_get_tuples_returned(c.oid)::float8 AS seq_read,
            ix.index_oids, ix.index_keys, ix.index_scans
        FROM pg_class c
        LEFT JOIN LATERAL (
            SELECT array_agg(x.indexrelid) AS index_oids,
                   array_agg({reported_as}) AS index_keys,
                   array_agg(pg_stat_get_numscans(x.indexrelid)::float8) AS index_scans
            FROM pg_index x
            WHERE x.indrelid = c.oid AND c.relkind IN ('r', 'm')
        ) ix ON true
        WHERE c.oid = ANY($1::oid[])",
        reported_as = index_reported_as!()
    )
}

/// The grouping keys of a report row.
fn key(row: &tokio_postgres::Row) -> Result<Key, tokio_postgres::Error> {
    Ok(Key {
        relation: row.try_get("key")?,
        table: row.try_get("table_key")?,
    })
}

/// What a run measures, in this order: `changed` tables (fingerprint changed: sizes and
/// estimates), `new` ones (first seen: in full within the interval's slice of first
/// estimates, sizes only beyond it, their estimates pending), `unestimated` ones (estimates
/// pending, fingerprint unchanged: in full, within what is left of the slice), then `aged`
/// ones (unchanged but not measured yet in the current full pass: sizes only).
///
/// The first estimates are spread like the full pass rather than made at once: they read
/// `pg_stats` and cost several times a size, so a large catalog's first pass was otherwise
/// half a minute of estimates as soon as pgkpi started (26 s at 50 000 tables). A catalog of
/// up to [`CHUNK`] tables, or one slice, has them all in its first run.
#[derive(Debug, Default, PartialEq)]
struct Work {
    changed: Vec<u32>,
    new: Vec<u32>,
    unestimated: Vec<u32>,
    aged: Vec<u32>,
}

fn work(fingerprints: &[(u32, i64)], measured: &Measures, pass: u32) -> Work {
    let mut work = Work::default();
    for (oid, fingerprint) in fingerprints {
        match measured.get(*oid) {
            None => work.new.push(*oid),
            Some(m) if m.fingerprint != *fingerprint => work.changed.push(*oid),
            Some(m) if m.bloat_bytes.is_pending() => work.unestimated.push(*oid),
            Some(m) if m.pass < pass => work.aged.push(*oid),
            Some(_) => {}
        }
    }
    work
}

/// The full pass in progress: every table is measured again once per `full_pass_interval`.
#[derive(Debug, Default)]
struct Pass {
    number: u32,
    started: Option<Instant>,
}

/// Unchanged tables re-measured per run: the pass spread over half of `full_pass_interval`
/// (so that it completes even when runs are late), at least a chunk.
fn aged_slice(tables: usize, interval: Duration, full_pass_interval: Duration) -> usize {
    let runs = (full_pass_interval.as_secs_f64() / 2.0 / interval.as_secs_f64().max(1.0)).max(1.0);
    ((tables as f64 / runs).ceil() as usize).max(CHUNK)
}

struct RelationSizes {
    config: RelationsConfig,
    interval: Duration,
    dropped: u64,
    /// Per table (oid): its last measure, carried while its fingerprint stays the same.
    measured: Measures,
    pass: Pass,
    /// The last run left changed or new tables unmeasured (its time budget ran out).
    pending: bool,
    /// First estimates (of new or unestimated tables) the runs may still make until the next
    /// scheduled run: a slice per interval, whatever the number of runs continuing the work.
    first_estimates: usize,
    /// Relations (tables and indexes) the last run opened.
    opened: usize,
    /// The fingerprints read by the run that started the pending work, and when: the runs
    /// that continue it (seconds apart) reuse them rather than read the catalog again.
    fingerprints: Vec<(u32, i64)>,
    /// What the last report exported: runs that continue pending work serve it again rather
    /// than name and rank the catalog after every chunk.
    report: Option<(Vec<Family>, u64)>,
    /// Where the database's size derived from the measures goes, for `database_size`.
    derived: Arc<DerivedSizes>,
    /// The connected database's name, asked once.
    database: Option<String>,
    /// The last size derived from a complete set of measures.
    last_derived: Option<f64>,
}

impl RelationSizes {
    /// Steps (1) to (3) of the module comment: fingerprints, then the changed tables and a
    /// slice of the aged ones measured in chunks until the run's budget is spent; tables gone
    /// from the catalog are forgotten. True when every table has a measure.
    async fn refresh(&mut self, session: &Session) -> Result<bool, CollectError> {
        let started = Instant::now();
        if self
            .pass
            .started
            .is_none_or(|at| at.elapsed() >= self.config.full_pass_interval)
        {
            self.pass.number += 1;
            self.pass.started = Some(started);
        }
        if !self.pending || self.fingerprints.is_empty() {
            self.fingerprints.clear();
            // As many as last time, a page more: not grown by doubling past the catalog.
            self.fingerprints
                .reserve_exact(self.measured.len() + FINGERPRINT_PAGE as usize);
            loop {
                let after = self.fingerprints.last().map_or(0, |(oid, _)| *oid);
                let rows = session
                    .client
                    .query(FINGERPRINTS_SQL, &[&after, &FINGERPRINT_PAGE])
                    .await?;
                for row in &rows {
                    self.fingerprints.push((row.try_get(0)?, row.try_get(1)?));
                }
                if (rows.len() as i64) < FINGERPRINT_PAGE {
                    break;
                }
            }
        }
        let fingerprints = std::mem::take(&mut self.fingerprints);
        // Sorted by oid (keyset pages): searched in place rather than copied into maps.
        let fingerprint = |oid: &u32| {
            fingerprints
                .binary_search_by_key(oid, |(oid, _)| *oid)
                .ok()
                .map(|at| fingerprints[at].1)
        };
        self.measured.retain(|oid| fingerprint(&oid).is_some());
        self.measured.reserve_for(fingerprints.len());
        let Work {
            changed,
            new,
            mut unestimated,
            mut aged,
        } = work(&fingerprints, &self.measured, self.pass.number);
        let slice = aged_slice(
            fingerprints.len(),
            self.interval,
            self.config.full_pass_interval,
        );
        if !self.pending {
            self.first_estimates = slice;
        }
        // New tables within the slice are measured in full at once (each file stat'ed once),
        // the others' sizes only; then the slice's rest goes to the tables left unestimated.
        let (new_in_full, new_sized) = new.split_at(new.len().min(self.first_estimates));
        self.first_estimates -= new_in_full.len();
        unestimated.truncate(self.first_estimates);
        self.first_estimates -= unestimated.len();
        aged.truncate(slice);
        self.opened = 0;
        self.pending = false;
        // (tables, with estimates, more runs soon when the budget cuts them short)
        let lists = [
            (changed.as_slice(), true, true),
            (new_in_full, true, true),
            (new_sized, false, true),
            (unestimated.as_slice(), true, false),
            (aged.as_slice(), false, false),
        ];
        'budget: for (tables, estimates, urgent) in lists {
            for chunk in tables.chunks(CHUNK) {
                if started.elapsed() >= RUN_BUDGET {
                    self.pending = urgent;
                    break 'budget;
                }
                self.measure(session, chunk, estimates, &fingerprint)
                    .await?;
            }
        }
        // `measured` holds only present tables: equal counts mean every one is measured.
        let complete = self.measured.len() == fingerprints.len();
        if self.pending {
            self.fingerprints = fingerprints;
        }
        Ok(complete)
    }

    /// Publishes the database's size for `database_size`: the sum of the measures (each
    /// file stat'ed once, by them) plus the catalogs and sequences, when every table has a
    /// measure; the last such sum while new tables wait for theirs; "measuring" before the
    /// first. Valid for three intervals, after which `database_size` walks the files itself.
    async fn derive_database_size(
        &mut self,
        session: &Session,
        complete: bool,
    ) -> Result<(), CollectError> {
        let database = match &self.database {
            Some(database) => database.clone(),
            None => {
                let row = session
                    .client
                    .query_one("SELECT current_database()::text", &[])
                    .await?;
                self.database.insert(row.try_get(0)?).clone()
            }
        };
        if complete {
            let row = session.client.query_one(REST_SQL, &[]).await?;
            let rest: f64 = row.try_get(0)?;
            let measured = &self.measured;
            self.last_derived = Some(
                rest + measured
                    .tables()
                    .iter()
                    .map(|t| measured.total_bytes(t))
                    .sum::<f64>(),
            );
        }
        let derived = self.last_derived.map_or(Derived::Measuring, Derived::Bytes);
        self.derived.publish(&database, derived, self.interval * 3);
        Ok(())
    }

    /// Measures one chunk of tables with their indexes: sizes, and the estimates when
    /// `estimates` (else the previous ones are kept, or marked pending for a new table).
    async fn measure(
        &mut self,
        session: &Session,
        chunk: &[u32],
        estimates: bool,
        fingerprint: &impl Fn(&u32) -> Option<i64>,
    ) -> Result<(), CollectError> {
        let (tables_sql, indexes_sql) = if estimates {
            (MEASURE_TABLES_SQL, MEASURE_INDEXES_SQL)
        } else {
            (MEASURE_TABLE_SIZES_SQL, MEASURE_INDEX_SIZES_SQL)
        };
        let chunk = chunk.to_vec();
        let mut indexes: HashMap<u32, Vec<MeasuredIndex>> = HashMap::new();
        for row in session.client.query(indexes_sql, &[&chunk]).await? {
            let table: u32 = row.try_get("relid")?;
            let oid: u32 = row.try_get("indexrelid")?;
            let bloat_bytes = if estimates {
                Estimate::new(row.try_get("bloat_bytes")?)
            } else {
                self.measured
                    .index(table, oid)
                    .map_or(Estimate::PENDING, |i| i.bloat_bytes)
            };
            indexes.entry(table).or_default().push(MeasuredIndex {
                oid,
                bytes: row.try_get::<_, Option<f64>>("index_bytes")?.unwrap_or(0.0),
                bloat_bytes,
            });
            self.opened += 1;
        }
        let mut tables = Vec::with_capacity(chunk.len());
        for row in session.client.query(tables_sql, &[&chunk]).await? {
            let oid: u32 = row.try_get("relid")?;
            let Some(fingerprint) = fingerprint(&oid) else {
                continue;
            };
            let bloat_bytes = if estimates {
                Estimate::new(row.try_get("bloat_bytes")?)
            } else {
                self.measured
                    .get(oid)
                    .map_or(Estimate::PENDING, |m| m.bloat_bytes)
            };
            let mut table = Measured::new(oid, self.pass.number, fingerprint);
            table.heap_bytes = row.try_get::<_, Option<f64>>("heap_bytes")?.unwrap_or(0.0);
            table.toast_bytes = row.try_get::<_, Option<f64>>("toast_bytes")?.unwrap_or(0.0);
            table.bloat_bytes = bloat_bytes;
            tables.push(table);
            self.opened += 1;
        }
        // In oid order, as the chunks come: new tables are then appended (Measures::insert).
        tables.sort_unstable_by_key(|t| t.oid);
        for table in tables {
            let of_table = indexes.remove(&table.oid).unwrap_or_default();
            self.measured.insert(table, of_table.into_iter());
        }
        Ok(())
    }
}

impl Collector for RelationSizes {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let complete = self.refresh(session).await?;
            self.derive_database_size(session, complete).await?;
            if self.pending {
                if let Some((out, dropped)) = &self.report {
                    self.dropped = *dropped;
                    return Ok(out.clone());
                }
            }
            let children = self.config.partition_children;
            let oids: Vec<u32> = self.measured.tables().iter().map(|t| t.oid).collect();
            let chunk = self.config.page_size;
            let measured = &self.measured;
            let mut tables = Cut::new(self.config.max_tables, false, TABLE_SIZES, None);
            let mut indexes = Cut::new(self.config.max_indexes, true, INDEX_SIZES, None);
            for_each_chunk(session, &oids, chunk, &report_sql(), &[&children], |read| {
                let Read::Row(row) = read else {
                    tables.chunk_end();
                    indexes.chunk_end();
                    return Ok(());
                };
                let oid: u32 = row.try_get("oid")?;
                let Some(m) = measured.get(oid) else {
                    return Ok(());
                };
                let (key, in_tree) = (key(&row)?, in_tree(&row)?);
                let index_oids: Vec<u32> = array(&row, "index_oids")?;
                let index_keys: Vec<u32> = array(&row, "index_keys")?;
                let index_scans: Vec<f64> = array(&row, "index_scans")?;
                for ((&index, &reported), &scans) in
                    index_oids.iter().zip(&index_keys).zip(&index_scans)
                {
                    // Found through its table's measure (a few indexes each): no map of every
                    // index of the catalog.
                    let Some(i) = measured.index(oid, index) else {
                        continue;
                    };
                    let key = Key {
                        relation: reported,
                        table: key.table,
                    };
                    let series = Series::new(
                        key,
                        vec![Some(i.bytes), i.bloat_bytes.get()],
                        vec![i.bytes, scans],
                    );
                    indexes.push(series, in_tree);
                }
                let total = measured.total_bytes(m);
                let scans = row.try_get::<_, Option<f64>>("scans")?.unwrap_or(0.0)
                    + index_scans.iter().sum::<f64>();
                let series = Series::new(
                    key,
                    vec![
                        Some(total),
                        Some(m.heap_bytes),
                        Some(m.toast_bytes),
                        Some(measured.index_bytes(m)),
                        m.bloat_bytes.get(),
                    ],
                    vec![
                        total,
                        scans,
                        row.try_get::<_, Option<f64>>("seq_read")?.unwrap_or(0.0),
                    ],
                );
                tables.push(series, in_tree);
                Ok(())
            })
            .await?;
            let (tables, cut_tables) = tables.finish();
            let (indexes, cut_indexes) = indexes.finish();
            let dropped = cut_tables + cut_indexes;
            let out = export(
                session,
                children,
                (&tables, TABLE_SIZES),
                (&indexes, INDEX_SIZES),
            )
            .await?;
            self.dropped = dropped;
            self.report = Some((out.clone(), dropped));
            Ok(out)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped)
    }

    fn has_pending_work(&self) -> bool {
        self.pending
    }

    fn wants_fresh_session(&self) -> bool {
        self.opened >= FRESH_SESSION_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Measures of tables (oid, fingerprint, estimates pending), measured in pass 1.
    fn known(tables: &[(u32, i64, bool)]) -> Measures {
        let mut known = Measures::default();
        for &(oid, fingerprint, pending) in tables {
            let mut table = Measured::new(oid, 1, fingerprint);
            if !pending {
                table.bloat_bytes = Estimate::new(None);
            }
            known.insert(table, std::iter::empty());
        }
        known
    }

    #[test]
    fn changed_tables_are_measured_and_unchanged_ones_only_once_per_pass() {
        let known = known(&[(1, 100, false), (2, 200, false)]);
        // 1 unchanged, 2 written since, 3 new: within pass 1, 2 in full and 3's sizes.
        let fingerprints = [(1, 100), (2, 201), (3, 300)];
        assert_eq!(
            work(&fingerprints, &known, 1),
            Work {
                changed: vec![2],
                new: vec![3],
                ..Work::default()
            }
        );
        assert_eq!(work(&[(1, 100), (2, 200)], &known, 1), Work::default());
        // A new pass: the unchanged table is due again, for its sizes only.
        assert_eq!(
            work(&fingerprints, &known, 2),
            Work {
                changed: vec![2],
                new: vec![3],
                unestimated: vec![],
                aged: vec![1]
            }
        );
        // 3 measured without its estimates: they are due whatever the pass, until its
        // fingerprint changes (then it is measured in full as a changed table).
        let known = self::known(&[(1, 100, false), (2, 200, false), (3, 300, true)]);
        assert_eq!(
            work(&fingerprints, &known, 1),
            Work {
                changed: vec![2],
                unestimated: vec![3],
                ..Work::default()
            }
        );
        assert_eq!(
            work(&[(3, 301)], &known, 1),
            Work {
                changed: vec![3],
                ..Work::default()
            }
        );
    }

    #[test]
    fn a_pass_is_spread_over_half_its_interval_in_whole_chunks() {
        let (five_minutes, hour) = (Duration::from_secs(300), Duration::from_secs(3600));
        // 6 runs in half an hour: 10 000 tables in slices of 1 667.
        assert_eq!(aged_slice(10_000, five_minutes, hour), 1_667);
        // Never less than a chunk, and everything at once when the interval is longer.
        assert_eq!(aged_slice(100, five_minutes, hour), CHUNK);
        assert_eq!(aged_slice(10_000, hour * 2, hour), 10_000);
    }
}
