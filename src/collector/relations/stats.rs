//! `relation_stats` (every 60s): scan and row counters per table and per index, from
//! `pg_stat_user_tables` and `pg_stat_user_indexes`; catalog reads only, cheap. Capped by
//! `[relations]`, with `(other)` counters that never step down ([`CounterRollups`]).

use std::time::Duration;

use super::columns::{
    for_each_chunk, indexes_of_c, user_tables, Col, INDEX, INDEX_KEY, TABLE, TABLE_KEY,
};
use super::cut::Cut;
use super::export::export;
use super::rollup::CounterRollups;
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

/// One row per table of `$1` (partitions too) under its grouping keys: the counters straight
/// from the statistics functions `pg_stat_user_tables` is made of, without the view's grouping
/// over every index of the catalog; `idx_scan` and `idx_tup_fetch` sum the table's own indexes
/// as the view does.
fn table_stats_sql() -> String {
    format!(
        "SELECT {TABLE_KEY},
        pg_stat_get_numscans(c.oid)::float8 AS seq_scan,
        pg_stat_get_tuples_returned(c.oid)::float8 AS seq_tup_read,
        coalesce(ix.scans, 0)::float8 AS idx_scan,
        coalesce(ix.fetched + pg_stat_get_tuples_fetched(c.oid), 0)::float8 AS idx_tup_fetch,
        pg_stat_get_tuples_inserted(c.oid)::float8 AS n_tup_ins,
        pg_stat_get_tuples_updated(c.oid)::float8 AS n_tup_upd,
        pg_stat_get_tuples_deleted(c.oid)::float8 AS n_tup_del,
        pg_stat_get_tuples_hot_updated(c.oid)::float8 AS n_tup_hot_upd,
        c.relpages::float8 AS rank_size,
        (pg_stat_get_numscans(c.oid) + coalesce(ix.scans, 0))::float8 AS rank_scans,
        pg_stat_get_tuples_returned(c.oid)::float8 AS rank_seq_read
    FROM pg_class c
    LEFT JOIN LATERAL (
        SELECT sum(pg_stat_get_numscans(x.indexrelid)) AS scans,
               sum(pg_stat_get_tuples_fetched(x.indexrelid)) AS fetched
        FROM pg_index x WHERE x.indrelid = c.oid
        HAVING count(*) > 0
    ) ix ON true
    WHERE c.oid = ANY($1::oid[])"
    )
}

/// One row per index of the tables of `$1` under its grouping keys (`pg_stat_user_indexes`
/// lists no index of a partitioned table).
fn index_stats_sql(major: i32) -> String {
    // The last scan's time appeared in PostgreSQL 16.
    let last = if major >= 16 {
        "extract(epoch FROM pg_stat_get_lastscan(x.indexrelid))::float8"
    } else {
        "NULL::float8"
    };
    format!(
        "SELECT {INDEX_KEY},
        pg_stat_get_numscans(x.indexrelid)::float8 AS idx_scan,
        pg_stat_get_tuples_returned(x.indexrelid)::float8 AS idx_tup_read,
        pg_stat_get_tuples_fetched(x.indexrelid)::float8 AS idx_tup_fetch,
        {last} AS last_scan,
        x.relpages::float8 AS rank_size,
        pg_stat_get_numscans(x.indexrelid)::float8 AS rank_scans
    FROM pg_class c{indexes}
    WHERE c.oid = ANY($1::oid[]) AND c.relkind IN ('r', 'm')",
        indexes = indexes_of_c!()
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
            let children = self.config.partition_children;
            let chunk = self.config.page_size;
            let oids = user_tables(session).await?;
            let mut cut = Cut::new(
                self.config.max_tables,
                false,
                TABLE_STATS,
                Some(&mut self.tables),
            );
            for_each_chunk(
                session,
                &oids,
                chunk,
                &table_stats_sql(),
                &[&children],
                |read| cut.read(read, TABLE_STATS),
            )
            .await?;
            let (tables, tables_dropped) = cut.finish();
            let mut cut = Cut::new(
                self.config.max_indexes,
                true,
                INDEX_STATS,
                Some(&mut self.indexes),
            );
            let sql = index_stats_sql(session.server.major());
            for_each_chunk(session, &oids, chunk, &sql, &[&children], |read| {
                cut.read(read, INDEX_STATS)
            })
            .await?;
            let (indexes, indexes_dropped) = cut.finish();
            self.dropped = tables_dropped + indexes_dropped;
            let out = export(
                session,
                children,
                (&tables, TABLE_STATS),
                (&indexes, INDEX_STATS),
            )
            .await?;
            Ok(out)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped)
    }
}
