//! `relation_sizes` (every 5m): heap, TOAST, index and total sizes per table and index, plus
//! bloat estimates (explained in docs/relations.md). Size functions stat every file of every
//! relation, which is not free on a big catalog, hence the slower interval of their own.

use std::time::Duration;

use super::columns::{Col, INDEX, INDEX_LABELS, OUT_INDEX, OUT_TABLE, ROLLUP, TABLE, TABLE_LABELS};
use super::rollup::{aggs, cap, families, read};
use super::settings::RelationsConfig;
use crate::collector::{BuildContext, CollectFuture, Collector, Lane, Session, Spec};
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
        description: "Heap, TOAST, index and total sizes and bloat estimates per table and index, on a slow interval (size functions stat files).",
        default_interval: Duration::from_secs(300),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        families: || super::columns::describe(&[TABLE_SIZES, INDEX_SIZES]),
        build: |ctx: &BuildContext| {
            Box::new(RelationSizes {
                config: ctx.relations.clone(),
                dropped: 0,
            })
        },
    }
}

/// Heap bloat estimate: pages the table has (relpages) minus pages its rows need. A row needs
/// the MAXALIGNed header (23 bytes + null bitmap) and data (sum of avg_width × non-null
/// share over its columns, from pg_stats), MAXALIGNed, plus a 4-byte line pointer; a page
/// offers (block_size - 24) × fillfactor. NULL when a column lacks statistics.
fn table_sizes_sql() -> String {
    format!(
        "WITH t AS (
            SELECT c.oid AS relid, n.nspname::text AS schemaname, c.relname::text AS relname,
                   c.relispartition, c.relkind, c.relpages, c.reltuples, c.reltoastrelid,
                   coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                             FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 100) AS fillfactor,
                   (SELECT count(*) FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS natts
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm', 'p')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname !~ '^pg_(toast|temp_)'
        ), w AS (
            SELECT s.schemaname::text AS schemaname, s.tablename::text AS tablename,
                   sum((1 - s.null_frac) * s.avg_width) AS width,
                   bool_or(s.null_frac > 0) AS nulls, count(*) AS ncols
            FROM pg_stats s
            WHERE NOT s.inherited AND s.schemaname NOT IN ('pg_catalog', 'information_schema')
            GROUP BY 1, 2
        ), x AS (
            SELECT t.*, pg_table_size(t.relid)::float8 AS table_bytes,
                   pg_indexes_size(t.relid)::float8 AS index_bytes,
                   CASE WHEN t.reltoastrelid <> 0
                        THEN pg_total_relation_size(t.reltoastrelid)::float8 ELSE 0 END AS toast_bytes,
                   CASE WHEN t.relkind <> 'p' AND t.reltuples >= 0 AND w.ncols = t.natts THEN
                       greatest(t.relpages - ceil(t.reltuples / greatest(floor(
                           (current_setting('block_size')::int - 24) * t.fillfactor / 100.0
                           / (ceil((ceil((23 + CASE WHEN w.nulls THEN ceil(t.natts / 8.0) ELSE 0 END) / 8.0) * 8
                                    + w.width) / 8.0) * 8 + 4)), 1)), 0)
                       * current_setting('block_size')::int
                   END AS bloat_bytes
            FROM t LEFT JOIN w ON w.schemaname = t.schemaname AND w.tablename = t.relname
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

/// B-tree bloat estimate: leaf pages needed = entries (reltuples) / entries per page, where an
/// entry is an 8-byte IndexTuple header plus the key and INCLUDE columns' average widths
/// (table column statistics, or the index's own for expressions), MAXALIGNed, plus a 4-byte
/// line pointer, and a page offers (block_size - 24 - 16) × fillfactor (default 90); plus the
/// metapage. Internal pages are ignored (under 1% for typical fan-outs).
fn index_sizes_sql() -> String {
    format!(
        "WITH i AS (
            SELECT x.indexrelid, x.indrelid, ci.relpages, ci.reltuples, am.amname,
                   coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                             FROM unnest(ci.reloptions) o WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor,
                   x.indkey::int2[] AS indkey
            FROM pg_index x
            JOIN pg_class ci ON ci.oid = x.indexrelid
            JOIN pg_am am ON am.oid = ci.relam
            JOIN pg_namespace n ON n.oid = ci.relnamespace
            WHERE ci.relkind = 'i' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname !~ '^pg_(toast|temp_)'
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
            -- Two equi-joins rather than one OR: they hash-join over pg_stats.
            LEFT JOIN pg_stats st ON NOT st.inherited AND st.schemaname = tn.nspname
                 AND st.tablename = tc.relname AND st.attname = ta.attname
            LEFT JOIN pg_stats se ON NOT se.inherited AND se.schemaname = tn.nspname
                 AND se.tablename = ic.relname AND se.attname = ia.attname
            GROUP BY cols.indexrelid
        ), x AS (
            SELECT s.relid, s.indexrelid, s.schemaname::text AS schemaname, s.relname::text AS relname,
                   s.indexrelname::text AS indexrelname, ct.relispartition,
                   ci.relispartition AS index_is_partition, s.idx_scan,
                   pg_relation_size(s.indexrelid)::float8 AS index_bytes,
                   CASE WHEN i.amname = 'btree' AND i.reltuples >= 0 AND w.known = w.total THEN
                       greatest(i.relpages - 1 - ceil(i.reltuples / greatest(floor(
                           (current_setting('block_size')::int - 40) * i.fillfactor / 100.0
                           / (ceil((8 + w.width) / 8.0) * 8 + 4)), 1)), 0)
                       * current_setting('block_size')::int
                   END AS bloat_bytes
            FROM pg_stat_user_indexes s
            JOIN pg_class ci ON ci.oid = s.indexrelid
            JOIN pg_class ct ON ct.oid = s.relid
            JOIN i ON i.indexrelid = s.indexrelid
            LEFT JOIN widths w ON w.indexrelid = s.indexrelid
        )
        SELECT {OUT_TABLE}, {OUT_INDEX},
               sum(x.index_bytes)::float8 AS index_bytes, sum(x.bloat_bytes)::float8 AS bloat_bytes,
               sum(x.index_bytes)::float8 AS rank_size, sum(x.idx_scan)::float8 AS rank_scans
        FROM x {ROLLUP}
        GROUP BY 1, 2, 3, 4"
    )
}

struct RelationSizes {
    config: RelationsConfig,
    dropped: u64,
}

impl Collector for RelationSizes {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let children = self.config.partition_children;
            let mut out = Vec::new();
            let mut dropped = 0;
            // Tables, then indexes: each query's rows capped at its own limit.
            for (sql, labels, cols, max, per_table) in [
                (
                    table_sizes_sql(),
                    TABLE_LABELS,
                    TABLE_SIZES,
                    self.config.max_tables,
                    false,
                ),
                (
                    index_sizes_sql(),
                    INDEX_LABELS,
                    INDEX_SIZES,
                    self.config.max_indexes,
                    true,
                ),
            ] {
                let rows = session.client.query(&sql, &[&children]).await?;
                let (series, cut) = cap(read(&rows, labels, cols)?, max, per_table, &aggs(cols));
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
}
