//! `relation_sizes` (every 5m): heap, TOAST, index and total sizes per table and index, plus
//! bloat estimates (explained in docs/relations.md).
//!
//! Work proportional to change, not to the catalog: size functions open and stat every
//! relation and the estimates join `pg_stats`, both costly on tens of thousands of relations,
//! while a size or an estimate only changes when its table is written, vacuumed, analyzed,
//! truncated or rewritten. So a run
//! 1. reads a fingerprint per table from the catalog and the statistics counters (no file is
//!    touched, no relation opened);
//! 2. measures the tables whose fingerprint changed (sizes and estimates), with their indexes,
//!    in chunks of [`CHUNK`] tables per statement, and carries the others' values from their
//!    last measure ([`Measured`]);
//! 3. re-measures the sizes of unchanged tables a slice at a time, so that every table is
//!    measured again once per `full_pass_interval` (the slice is sized to finish the pass in
//!    half of it); their estimates are carried, since everything they read is in the
//!    fingerprint;
//! 4. reports every table through the rollup and the caps in one catalog-only query fed with
//!    the values as arrays.
//!
//! A run stops starting chunks after [`RUN_BUDGET`] and asks to run again soon
//! ([`Collector::has_pending_work`]): the first pass over a large catalog is spread over
//! several short runs, no statement grows with the catalog, and the session is never busy for
//! long. A run that opened many relations asks for a fresh session
//! ([`Collector::wants_fresh_session`]) so that their cache entries do not stay in the
//! server's memory. Each file is stat'ed once per measure: a table's index total is the sum of
//! its indexes' sizes, not a second `pg_indexes_size`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::columns::{Col, INDEX, INDEX_LABELS, OUT_INDEX, OUT_TABLE, ROLLUP, TABLE, TABLE_LABELS};
use super::rollup::{aggs, cap, families, read};
use super::settings::RelationsConfig;
use crate::collector::{BuildContext, CollectError, CollectFuture, Collector, Lane, Session, Spec};
use crate::metric::Metric;

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
            "Estimated heap space beyond what the live rows need at the table's fillfactor, from catalog statistics (see docs/relations.md); absent without statistics.",
        ),
    ),
];

const INDEX_SIZES: &[Col] = &[
    Col::sum(
        "index_bytes",
        Metric::gauge(
            "pg_index_size_bytes",
            INDEX,
            "Size of the index (pg_relation_size).",
        ),
    ),
    Col::sum(
        "bloat_bytes",
        Metric::gauge(
            "pg_index_bloat_bytes",
            INDEX,
            "Estimated B-tree space beyond what its entries need at the index's fillfactor, from catalog statistics (see docs/relations.md); B-tree only, absent without statistics.",
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
                measured: HashMap::new(),
                pass: Pass::default(),
                pending: false,
                opened: 0,
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
               (SELECT string_agg(concat_ws(':', ci.oid, ci.relfilenode, ci.relpages, ci.reloptions::text),
                                  ',' ORDER BY ci.oid)
                FROM pg_index x JOIN pg_class ci ON ci.oid = x.indexrelid
                WHERE x.indrelid = c.oid)), 0) AS fingerprint
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid
    WHERE c.relkind IN ('r', 'm', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_(toast|temp_)'";

/// Heap bloat estimate: pages the table has (relpages) minus pages its rows need. A row needs
/// the MAXALIGNed header (23 bytes + null bitmap) and data (sum of avg_width × non-null
/// share over its columns, from pg_stats), MAXALIGNed, plus a 4-byte line pointer; a page
/// offers (block_size - 24) × fillfactor. NULL when a column lacks statistics. Only the
/// tables of `$1` are measured (and only their rows of pg_stats read).
const MEASURE_TABLES_SQL: &str = "
    WITH t AS (
        SELECT c.oid AS relid, n.nspname AS schemaname, c.relname, c.relkind, c.relpages,
               c.reltuples, c.reltoastrelid,
               coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                         FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 100) AS fillfactor,
               (SELECT count(*) FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS natts
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = ANY($1::oid[])
    )
    SELECT t.relid, pg_table_size(t.relid)::float8 AS table_bytes,
           CASE WHEN t.reltoastrelid <> 0
                THEN pg_total_relation_size(t.reltoastrelid)::float8 ELSE 0 END AS toast_bytes,
           (CASE WHEN t.relkind <> 'p' AND t.reltuples >= 0 AND w.ncols = t.natts THEN
               greatest(t.relpages - ceil(t.reltuples / greatest(floor(
                   (current_setting('block_size')::int - 24) * t.fillfactor / 100.0
                   / (ceil((ceil((23 + CASE WHEN w.nulls THEN ceil(t.natts / 8.0) ELSE 0 END) / 8.0) * 8
                            + w.width) / 8.0) * 8 + 4)), 1)), 0)
               * current_setting('block_size')::int
           END)::float8 AS bloat_bytes
    FROM t
    -- Per table, by name: pg_stats (a view checking column privileges on every row it reads)
    -- is then read through the catalog indexes for these tables only, not scanned whole for
    -- every chunk.
    LEFT JOIN LATERAL (
        SELECT sum((1 - s.null_frac) * s.avg_width) AS width, bool_or(s.null_frac > 0) AS nulls,
               count(*) AS ncols
        FROM pg_stats s
        WHERE NOT s.inherited AND s.schemaname = t.schemaname AND s.tablename = t.relname
    ) w ON true";

/// B-tree bloat estimate: leaf pages needed = entries (reltuples) / entries per page, where an
/// entry is an 8-byte IndexTuple header plus the key and INCLUDE columns' average widths
/// (table column statistics, or the index's own for expressions), MAXALIGNed, plus a 4-byte
/// line pointer, and a page offers (block_size - 24 - 16) × fillfactor (default 90); plus the
/// metapage. Internal pages are ignored (under 1% for typical fan-outs). Only the indexes
/// (with storage) of the tables of `$1`.
const MEASURE_INDEXES_SQL: &str = "
    WITH i AS (
        SELECT x.indexrelid, x.indrelid, ci.relpages, ci.reltuples, am.amname,
               coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                         FROM unnest(ci.reloptions) o WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor,
               x.indkey::int2[] AS indkey
        FROM pg_index x
        JOIN pg_class ci ON ci.oid = x.indexrelid
        JOIN pg_am am ON am.oid = ci.relam
        WHERE x.indrelid = ANY($1::oid[]) AND ci.relkind = 'i'
    ), cols AS (
        SELECT i.indexrelid, k.attnum, k.pos
        FROM i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
        WHERE i.amname = 'btree'
    ), widths AS (
        SELECT cols.indexrelid, count(coalesce(st.avg_width, se.avg_width)) AS known,
               count(*) AS total,
               sum((1 - coalesce(st.null_frac, se.null_frac))
                   * coalesce(st.avg_width, se.avg_width)) AS width
        FROM cols
        JOIN pg_index x ON x.indexrelid = cols.indexrelid
        JOIN pg_class tc ON tc.oid = x.indrelid
        JOIN pg_namespace tn ON tn.oid = tc.relnamespace
        JOIN pg_class ic ON ic.oid = cols.indexrelid
        LEFT JOIN pg_attribute ta ON cols.attnum <> 0 AND ta.attrelid = x.indrelid AND ta.attnum = cols.attnum
        LEFT JOIN pg_attribute ia ON cols.attnum = 0 AND ia.attrelid = cols.indexrelid AND ia.attnum = cols.pos
        -- Per column, by name, through the catalog indexes (see MEASURE_TABLES_SQL).
        LEFT JOIN LATERAL (
            SELECT s.avg_width, s.null_frac FROM pg_stats s
            WHERE NOT s.inherited AND s.schemaname = tn.nspname AND s.tablename = tc.relname
              AND s.attname = ta.attname
        ) st ON true
        LEFT JOIN LATERAL (
            SELECT s.avg_width, s.null_frac FROM pg_stats s
            WHERE NOT s.inherited AND s.schemaname = tn.nspname AND s.tablename = ic.relname
              AND s.attname = ia.attname
        ) se ON true
        GROUP BY cols.indexrelid
    )
    SELECT i.indrelid AS relid, i.indexrelid, pg_relation_size(i.indexrelid)::float8 AS index_bytes,
           (CASE WHEN i.amname = 'btree' AND i.reltuples >= 0 AND w.known = w.total THEN
               greatest(i.relpages - 1 - ceil(i.reltuples / greatest(floor(
                   (current_setting('block_size')::int - 40) * i.fillfactor / 100.0
                   / (ceil((8 + w.width) / 8.0) * 8 + 4)), 1)), 0)
               * current_setting('block_size')::int
           END)::float8 AS bloat_bytes
    FROM i LEFT JOIN widths w ON w.indexrelid = i.indexrelid";

/// Sizes only, for tables whose fingerprint did not change (their estimates are carried).
const MEASURE_TABLE_SIZES_SQL: &str = "
    SELECT c.oid AS relid, pg_table_size(c.oid)::float8 AS table_bytes,
           CASE WHEN c.reltoastrelid <> 0
                THEN pg_total_relation_size(c.reltoastrelid)::float8 ELSE 0 END AS toast_bytes,
           NULL::float8 AS bloat_bytes
    FROM pg_class c WHERE c.oid = ANY($1::oid[])";

/// Sizes only of the indexes (with storage) of the tables of `$1`.
const MEASURE_INDEX_SIZES_SQL: &str = "
    SELECT x.indrelid AS relid, x.indexrelid,
           pg_relation_size(x.indexrelid)::float8 AS index_bytes, NULL::float8 AS bloat_bytes
    FROM pg_index x JOIN pg_class ci ON ci.oid = x.indexrelid
    WHERE x.indrelid = ANY($1::oid[]) AND ci.relkind = 'i'";

/// Every table's values ($2..$6, measured or carried) under its labels, rolled up and ranked.
fn report_tables_sql() -> String {
    format!(
        "WITH x AS (
            SELECT m.*, n.nspname::text AS schemaname, c.relname::text AS relname, c.relispartition
            FROM unnest($2::oid[], $3::float8[], $4::float8[], $5::float8[], $6::float8[])
                 AS m(relid, table_bytes, index_bytes, toast_bytes, bloat_bytes)
            JOIN pg_class c ON c.oid = m.relid
            JOIN pg_namespace n ON n.oid = c.relnamespace
        )
        SELECT {OUT_TABLE},
               sum(x.table_bytes + x.index_bytes)::float8 AS total_bytes,
               sum(x.table_bytes - x.toast_bytes)::float8 AS heap_bytes,
               sum(x.toast_bytes)::float8 AS toast_bytes, sum(x.index_bytes)::float8 AS index_bytes,
               sum(x.bloat_bytes)::float8 AS bloat_bytes,
               sum(x.table_bytes + x.index_bytes)::float8 AS rank_size,
               sum(coalesce(s.seq_scan, 0) + coalesce(s.idx_scan, 0))::float8 AS rank_scans,
               sum(coalesce(s.seq_tup_read, 0))::float8 AS rank_seq_read
        FROM x {ROLLUP}
        LEFT JOIN pg_stat_user_tables s ON s.relid = x.relid
        GROUP BY 1, 2, 3"
    )
}

/// Every index's values ($2..$4, measured or carried) under its labels, rolled up and ranked.
fn report_indexes_sql() -> String {
    format!(
        "WITH x AS (
            SELECT s.relid, s.indexrelid, s.schemaname::text AS schemaname, s.relname::text AS relname,
                   s.indexrelname::text AS indexrelname, ct.relispartition,
                   ci.relispartition AS index_is_partition, s.idx_scan, m.index_bytes, m.bloat_bytes
            FROM unnest($2::oid[], $3::float8[], $4::float8[]) AS m(indexrelid, index_bytes, bloat_bytes)
            JOIN pg_stat_user_indexes s ON s.indexrelid = m.indexrelid
            JOIN pg_class ci ON ci.oid = s.indexrelid
            JOIN pg_class ct ON ct.oid = s.relid
        )
        SELECT {OUT_TABLE}, {OUT_INDEX},
               sum(x.index_bytes)::float8 AS index_bytes, sum(x.bloat_bytes)::float8 AS bloat_bytes,
               sum(x.index_bytes)::float8 AS rank_size, sum(x.idx_scan)::float8 AS rank_scans
        FROM x {ROLLUP}
        GROUP BY 1, 2, 3, 4"
    )
}

/// What a table measured to, kept until its fingerprint changes.
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    fingerprint: i64,
    /// The full pass ([`Pass::number`]) in which its sizes were last measured.
    pass: u32,
    table_bytes: f64,
    toast_bytes: f64,
    bloat_bytes: Option<f64>,
    indexes: Vec<MeasuredIndex>,
}

#[derive(Debug, Clone, PartialEq)]
struct MeasuredIndex {
    oid: u32,
    bytes: f64,
    bloat_bytes: Option<f64>,
}

impl Measured {
    /// Every file of the table's indexes, stat'ed once by the index measure.
    fn index_bytes(&self) -> f64 {
        self.indexes.iter().map(|i| i.bytes).sum()
    }
}

/// What a run measures: `changed` tables (new, or fingerprint changed: sizes and estimates),
/// then `aged` ones (unchanged but not measured yet in the current full pass: sizes only).
#[derive(Debug, Default, PartialEq)]
struct Work {
    changed: Vec<u32>,
    aged: Vec<u32>,
}

fn work(fingerprints: &[(u32, i64)], measured: &HashMap<u32, Measured>, pass: u32) -> Work {
    let mut work = Work::default();
    for (oid, fingerprint) in fingerprints {
        match measured.get(oid) {
            Some(m) if m.fingerprint == *fingerprint && m.pass >= pass => {}
            Some(m) if m.fingerprint == *fingerprint => work.aged.push(*oid),
            _ => work.changed.push(*oid),
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
    measured: HashMap<u32, Measured>,
    pass: Pass,
    /// The last run left changed or new tables unmeasured (its time budget ran out).
    pending: bool,
    /// Relations (tables and indexes) the last run opened.
    opened: usize,
}

impl RelationSizes {
    /// Steps (1) to (3) of the module comment: fingerprints, then the changed tables and a
    /// slice of the aged ones measured in chunks until the run's budget is spent; tables gone
    /// from the catalog are forgotten.
    async fn refresh(&mut self, session: &Session) -> Result<(), CollectError> {
        let started = Instant::now();
        if self
            .pass
            .started
            .is_none_or(|at| at.elapsed() >= self.config.full_pass_interval)
        {
            self.pass.number += 1;
            self.pass.started = Some(started);
        }
        let fingerprints: Vec<(u32, i64)> = session
            .client
            .query(FINGERPRINTS_SQL, &[])
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        let present: HashSet<u32> = fingerprints.iter().map(|(oid, _)| *oid).collect();
        self.measured.retain(|oid, _| present.contains(oid));
        let fingerprint: HashMap<u32, i64> = fingerprints.iter().copied().collect();
        let Work { changed, mut aged } = work(&fingerprints, &self.measured, self.pass.number);
        aged.truncate(aged_slice(
            fingerprints.len(),
            self.interval,
            self.config.full_pass_interval,
        ));
        self.opened = 0;
        self.pending = false;
        let chunks = changed
            .chunks(CHUNK)
            .map(|chunk| (chunk, true))
            .chain(aged.chunks(CHUNK).map(|chunk| (chunk, false)));
        for (chunk, estimates) in chunks {
            if started.elapsed() >= RUN_BUDGET {
                self.pending = estimates;
                break;
            }
            self.measure(session, chunk, estimates, &fingerprint)
                .await?;
        }
        Ok(())
    }

    /// Measures one chunk of tables with their indexes: sizes, and the estimates when
    /// `estimates` (else the previous ones are kept).
    async fn measure(
        &mut self,
        session: &Session,
        chunk: &[u32],
        estimates: bool,
        fingerprint: &HashMap<u32, i64>,
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
                row.try_get("bloat_bytes")?
            } else {
                self.measured
                    .get(&table)
                    .and_then(|m| m.indexes.iter().find(|i| i.oid == oid))
                    .and_then(|i| i.bloat_bytes)
            };
            indexes.entry(table).or_default().push(MeasuredIndex {
                oid,
                bytes: row.try_get::<_, Option<f64>>("index_bytes")?.unwrap_or(0.0),
                bloat_bytes,
            });
            self.opened += 1;
        }
        for row in session.client.query(tables_sql, &[&chunk]).await? {
            let oid: u32 = row.try_get("relid")?;
            let Some(&fingerprint) = fingerprint.get(&oid) else {
                continue;
            };
            let bloat_bytes = if estimates {
                row.try_get("bloat_bytes")?
            } else {
                self.measured.get(&oid).and_then(|m| m.bloat_bytes)
            };
            self.measured.insert(
                oid,
                Measured {
                    fingerprint,
                    pass: self.pass.number,
                    table_bytes: row.try_get::<_, Option<f64>>("table_bytes")?.unwrap_or(0.0),
                    toast_bytes: row.try_get::<_, Option<f64>>("toast_bytes")?.unwrap_or(0.0),
                    bloat_bytes,
                    indexes: indexes.remove(&oid).unwrap_or_default(),
                },
            );
            self.opened += 1;
        }
        Ok(())
    }
}

impl Collector for RelationSizes {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            self.refresh(session).await?;
            let children = self.config.partition_children;
            let tables = self.measured.iter();
            let oids: Vec<u32> = tables.clone().map(|(oid, _)| *oid).collect();
            let table_bytes: Vec<f64> = tables.clone().map(|(_, m)| m.table_bytes).collect();
            let index_bytes: Vec<f64> = tables.clone().map(|(_, m)| m.index_bytes()).collect();
            let toast_bytes: Vec<f64> = tables.clone().map(|(_, m)| m.toast_bytes).collect();
            let bloat_bytes: Vec<Option<f64>> = tables.map(|(_, m)| m.bloat_bytes).collect();
            let table_rows = session
                .client
                .query(
                    &report_tables_sql(),
                    &[
                        &children,
                        &oids,
                        &table_bytes,
                        &index_bytes,
                        &toast_bytes,
                        &bloat_bytes,
                    ],
                )
                .await?;
            let indexes = self.measured.values().flat_map(|m| &m.indexes);
            let index_oids: Vec<u32> = indexes.clone().map(|i| i.oid).collect();
            let index_sizes: Vec<f64> = indexes.clone().map(|i| i.bytes).collect();
            let index_bloat: Vec<Option<f64>> = indexes.map(|i| i.bloat_bytes).collect();
            let index_rows = session
                .client
                .query(
                    &report_indexes_sql(),
                    &[&children, &index_oids, &index_sizes, &index_bloat],
                )
                .await?;
            let mut out = Vec::new();
            let mut dropped = 0;
            // Tables, then indexes: each query's rows capped at its own limit.
            for (rows, labels, cols, max, per_table) in [
                (
                    &table_rows,
                    TABLE_LABELS,
                    TABLE_SIZES,
                    self.config.max_tables,
                    false,
                ),
                (
                    &index_rows,
                    INDEX_LABELS,
                    INDEX_SIZES,
                    self.config.max_indexes,
                    true,
                ),
            ] {
                let (series, cut) = cap(read(rows, labels, cols)?, max, per_table, &aggs(cols));
                dropped += cut;
                out.extend(families(&series, labels, cols));
            }
            self.dropped = dropped;
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

    fn measured(fingerprint: i64) -> Measured {
        Measured {
            fingerprint,
            pass: 1,
            table_bytes: 8192.0,
            toast_bytes: 0.0,
            bloat_bytes: None,
            indexes: vec![
                MeasuredIndex {
                    oid: 10,
                    bytes: 16384.0,
                    bloat_bytes: Some(0.0),
                },
                MeasuredIndex {
                    oid: 11,
                    bytes: 8192.0,
                    bloat_bytes: None,
                },
            ],
        }
    }

    #[test]
    fn changed_tables_are_measured_and_unchanged_ones_only_once_per_pass() {
        let known = HashMap::from([(1, measured(100)), (2, measured(200))]);
        // 1 unchanged, 2 written since, 3 new: within pass 1, only 2 and 3.
        let fingerprints = [(1, 100), (2, 201), (3, 300)];
        assert_eq!(
            work(&fingerprints, &known, 1),
            Work {
                changed: vec![2, 3],
                aged: vec![]
            }
        );
        assert_eq!(work(&[(1, 100), (2, 200)], &known, 1), Work::default());
        // A new pass: the unchanged table is due again, for its sizes only.
        assert_eq!(
            work(&fingerprints, &known, 2),
            Work {
                changed: vec![2, 3],
                aged: vec![1]
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

    #[test]
    fn a_table_s_index_total_is_the_sum_of_its_indexes() {
        assert_eq!(measured(1).index_bytes(), 24576.0);
    }
}
