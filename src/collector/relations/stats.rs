//! `relation_stats` (every 60s): scan and row counters per table and per index, from
//! `pg_stat_user_tables` and `pg_stat_user_indexes`; catalog reads only, cheap. Capped by
//! `[relations]`, with `(other)` counters that never step down ([`CounterRollups`]).

use std::time::Duration;

use super::columns::{Col, INDEX, INDEX_LABELS, OUT_INDEX, OUT_TABLE, ROLLUP, TABLE, TABLE_LABELS};
use super::rollup::{families, read, select, CounterRollups};
use super::settings::RelationsConfig;
use crate::collector::{BuildContext, CollectFuture, Collector, Lane, Session, Spec};
use crate::metric::Metric;

const TABLE_STATS: &[Col] = &[
    Col::sum(
        "seq_scan",
        Metric::counter(
            "pg_table_seq_scans_total",
            TABLE,
            "Sequential scans of the table (pg_stat_user_tables.seq_scan).",
        ),
    ),
    Col::sum(
        "seq_tup_read",
        Metric::counter(
            "pg_table_seq_tup_read_total",
            TABLE,
            "Rows read by sequential scans: a high rate on a big table is the missing-index signal.",
        ),
    ),
    Col::sum(
        "idx_scan",
        Metric::counter(
            "pg_table_idx_scans_total",
            TABLE,
            "Index scans on the table's indexes.",
        ),
    ),
    Col::sum(
        "idx_tup_fetch",
        Metric::counter(
            "pg_table_idx_tup_fetch_total",
            TABLE,
            "Live rows fetched by index scans.",
        ),
    ),
    Col::sum(
        "n_tup_ins",
        Metric::counter(
            "pg_table_tup_inserted_total",
            TABLE,
            "Rows inserted.",
        ),
    ),
    Col::sum(
        "n_tup_upd",
        Metric::counter(
            "pg_table_tup_updated_total",
            TABLE,
            "Rows updated (HOT updates included).",
        ),
    ),
    Col::sum(
        "n_tup_del",
        Metric::counter(
            "pg_table_tup_deleted_total",
            TABLE,
            "Rows deleted.",
        ),
    ),
    Col::sum(
        "n_tup_hot_upd",
        Metric::counter(
            "pg_table_tup_hot_updated_total",
            TABLE,
            "Rows updated without touching any index (HOT); updated minus HOT is what indexes cost on writes.",
        ),
    ),
];

const INDEX_STATS: &[Col] = &[
    Col::sum(
        "idx_scan",
        Metric::counter(
            "pg_index_scans_total",
            INDEX,
            "Scans of the index (pg_stat_user_indexes.idx_scan).",
        ),
    ),
    Col::sum(
        "idx_tup_read",
        Metric::counter(
            "pg_index_tup_read_total",
            INDEX,
            "Index entries returned by scans of the index.",
        ),
    ),
    Col::sum(
        "idx_tup_fetch",
        Metric::counter(
            "pg_index_tup_fetch_total",
            INDEX,
            "Live table rows fetched by simple index scans of the index.",
        ),
    ),
    Col::max(
        "last_scan",
        Metric::gauge(
            "pg_index_last_scan_timestamp_seconds",
            INDEX,
            "Unix time of the last scan of the index (PostgreSQL 16+, last_idx_scan; absent when never scanned).",
        ),
    ),
];

pub fn spec() -> Spec {
    Spec {
        name: "relation_stats",
        description: "Scans and row counters per table and per index (pg_stat_user_tables, pg_stat_user_indexes), capped by [relations].",
        default_interval: Duration::from_secs(60),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Database,
        families: || super::columns::describe(&[TABLE_STATS, INDEX_STATS]),
        build: |ctx: &BuildContext| {
            Box::new(RelationStats {
                config: ctx.relations.clone(),
                dropped: 0,
                tables: CounterRollups::default(),
                indexes: CounterRollups::default(),
            })
        },
    }
}

fn table_stats_sql() -> String {
    format!(
        "WITH x AS (
            SELECT s.relid, s.schemaname::text AS schemaname, s.relname::text AS relname,
                   c.relispartition, c.relpages, s.seq_scan, s.seq_tup_read,
                   coalesce(s.idx_scan, 0) AS idx_scan, coalesce(s.idx_tup_fetch, 0) AS idx_tup_fetch,
                   s.n_tup_ins, s.n_tup_upd, s.n_tup_del, s.n_tup_hot_upd
            FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
            WHERE s.schemaname !~ '^pg_temp_'
        )
        SELECT {OUT_TABLE},
               sum(x.seq_scan)::float8 AS seq_scan, sum(x.seq_tup_read)::float8 AS seq_tup_read,
               sum(x.idx_scan)::float8 AS idx_scan, sum(x.idx_tup_fetch)::float8 AS idx_tup_fetch,
               sum(x.n_tup_ins)::float8 AS n_tup_ins, sum(x.n_tup_upd)::float8 AS n_tup_upd,
               sum(x.n_tup_del)::float8 AS n_tup_del, sum(x.n_tup_hot_upd)::float8 AS n_tup_hot_upd,
               sum(x.relpages)::float8 AS rank_size,
               sum(x.seq_scan + x.idx_scan)::float8 AS rank_scans,
               sum(x.seq_tup_read)::float8 AS rank_seq_read
        FROM x {ROLLUP}
        GROUP BY 1, 2, 3"
    )
}

fn index_stats_sql(major: i32) -> String {
    // last_idx_scan appeared in PostgreSQL 16.
    let last = if major >= 16 {
        "extract(epoch FROM s.last_idx_scan)::float8"
    } else {
        "NULL::float8"
    };
    format!(
        "WITH x AS (
            SELECT s.relid, s.indexrelid, s.schemaname::text AS schemaname, s.relname::text AS relname,
                   s.indexrelname::text AS indexrelname, ct.relispartition,
                   ci.relispartition AS index_is_partition, ci.relpages,
                   s.idx_scan, s.idx_tup_read, s.idx_tup_fetch, {last} AS last_scan
            FROM pg_stat_user_indexes s
            JOIN pg_class ci ON ci.oid = s.indexrelid
            JOIN pg_class ct ON ct.oid = s.relid
            WHERE s.schemaname !~ '^pg_temp_'
        )
        SELECT {OUT_TABLE}, {OUT_INDEX},
               sum(x.idx_scan)::float8 AS idx_scan, sum(x.idx_tup_read)::float8 AS idx_tup_read,
               sum(x.idx_tup_fetch)::float8 AS idx_tup_fetch, max(x.last_scan) AS last_scan,
               sum(x.relpages)::float8 AS rank_size, sum(x.idx_scan)::float8 AS rank_scans
        FROM x {ROLLUP}
        GROUP BY 1, 2, 3, 4"
    )
}

struct RelationStats {
    config: RelationsConfig,
    /// Tables and indexes of the last run summed into `(other)` rows.
    dropped: u64,
    tables: CounterRollups,
    indexes: CounterRollups,
}

impl Collector for RelationStats {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let children = &self.config.partition_children;
            let rows = session
                .client
                .query(&table_stats_sql(), &[children])
                .await?;
            let tables = select(
                read(&rows, TABLE_LABELS, TABLE_STATS)?,
                self.config.max_tables,
                false,
            );
            let rows = session
                .client
                .query(&index_stats_sql(session.server.major()), &[children])
                .await?;
            let indexes = select(
                read(&rows, INDEX_LABELS, INDEX_STATS)?,
                self.config.max_indexes,
                true,
            );
            self.dropped = tables.dropped + indexes.dropped;
            let tables = self.tables.apply(tables, TABLE_STATS);
            let indexes = self.indexes.apply(indexes, INDEX_STATS);
            let mut out = families(&tables, TABLE_LABELS, TABLE_STATS);
            out.extend(families(&indexes, INDEX_LABELS, INDEX_STATS));
            Ok(out)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped)
    }
}
