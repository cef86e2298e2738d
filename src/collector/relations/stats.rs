//! `relation_stats` (every 60s): scan and row counters per table and per index, from
//! `pg_stat_user_tables` and `pg_stat_user_indexes`; catalog reads only, cheap. Capped by
//! `[relations]`, with `(other)` counters that never step down ([`CounterRollups`]).

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Row;

use super::columns::{
    in_tree, read_chunk, Col, Read, UserTables, CHUNK_INDEXES, INDEX, INDEX_KEY, TABLE, TABLE_KEY,
};
use super::cut::Cut;
use super::export::export;
use super::rollup::{CounterRollups, Series};
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
                listed: UserTables::default(),
            })
        },
    }
}

/// One row per table of `$1` (partitions too) under its grouping keys: the counters straight
/// from the statistics functions `pg_stat_user_tables` is made of, without the view's grouping
/// over every index of the catalog. The view's `idx_scan` and `idx_tup_fetch` also sum the
/// table's indexes: those sums are added in Rust from the chunk's index rows
/// ([`IndexSums`]), read just before, rather than read again here per table.
fn table_stats_sql() -> String {
    format!(
        "SELECT {TABLE_KEY}, c.oid,
        pg_stat_get_numscans(c.oid)::float8 AS seq_scan,
        pg_stat_get_tuples_returned(c.oid)::float8 AS seq_tup_read,
        -- These two and rank_scans get the table's indexes' sums in Rust (IndexSums).
        0::float8 AS idx_scan,
        pg_stat_get_tuples_fetched(c.oid)::float8 AS idx_tup_fetch,
        pg_stat_get_tuples_inserted(c.oid)::float8 AS n_tup_ins,
        pg_stat_get_tuples_updated(c.oid)::float8 AS n_tup_upd,
        pg_stat_get_tuples_deleted(c.oid)::float8 AS n_tup_del,
        pg_stat_get_tuples_hot_updated(c.oid)::float8 AS n_tup_hot_upd,
        c.relpages::float8 AS rank_size,
        pg_stat_get_numscans(c.oid)::float8 AS rank_scans,
        pg_stat_get_tuples_returned(c.oid)::float8 AS rank_seq_read
    FROM pg_class c
    WHERE c.oid = ANY($1::oid[])"
    )
}

/// Where the table row's index sums go: values by their place in [`TABLE_STATS`], and the
/// scans' ranking key among the `rank_` columns of [`table_stats_sql`].
const IDX_SCAN: usize = 2;
const IDX_TUP_FETCH: usize = 3;
const RANK_SCANS: usize = 1;

/// One row per index of the tables of `$1` under its grouping keys, with its table's own oid
/// for [`IndexSums`] (`pg_stat_user_indexes` lists no index of a partitioned table). The size
/// an index is ranked by is its table's pages: its own are in its `pg_class` row, which
/// [`CHUNK_INDEXES`] leaves unread; the indexes of the largest tables are kept.
fn index_stats_sql(major: i32) -> String {
    // The last scan's time appeared in PostgreSQL 16.
    let last = if major >= 16 {
        "extract(epoch FROM pg_stat_get_lastscan(x.indexrelid))::float8"
    } else {
        "NULL::float8"
    };
    format!(
        "SELECT {INDEX_KEY}, c.oid AS table_oid,
        pg_stat_get_numscans(x.indexrelid)::float8 AS idx_scan,
        pg_stat_get_tuples_returned(x.indexrelid)::float8 AS idx_tup_read,
        pg_stat_get_tuples_fetched(x.indexrelid)::float8 AS idx_tup_fetch,
        {last} AS last_scan,
        c.relpages::float8 AS rank_size,
        pg_stat_get_numscans(x.indexrelid)::float8 AS rank_scans
    {CHUNK_INDEXES}"
    )
}

/// The scans and fetches of a chunk's indexes summed per table (its own oid), as
/// `pg_stat_user_tables` sums them into the table's `idx_scan` and `idx_tup_fetch`.
#[derive(Default)]
struct IndexSums(HashMap<u32, (f64, f64)>);

impl IndexSums {
    /// Forgets the last chunk's tables.
    fn clear(&mut self) {
        self.0.clear();
    }

    fn add(&mut self, row: &Row) -> Result<(), tokio_postgres::Error> {
        let scans: f64 = row.try_get("idx_scan")?;
        let fetched: f64 = row.try_get("idx_tup_fetch")?;
        let sum = self.0.entry(row.try_get("table_oid")?).or_default();
        sum.0 += scans;
        sum.1 += fetched;
        Ok(())
    }

    /// Completes the row of table `oid`. The view's sums over no index are NULL, exported as
    /// 0: `idx_tup_fetch` is then 0 even where the table's own fetch counter is not.
    fn complete(&self, oid: u32, series: &mut Series) {
        let (values, rank) = series.cells_mut();
        match self.0.get(&oid) {
            Some(&(scans, fetched)) => {
                values[IDX_SCAN] += scans;
                values[IDX_TUP_FETCH] += fetched;
                rank[RANK_SCANS] += scans;
            }
            None => values[IDX_TUP_FETCH] = 0.0,
        }
    }
}

struct RelationStats {
    config: RelationsConfig,
    /// Tables and indexes of the last run summed into `(other)` rows.
    dropped: u64,
    tables: CounterRollups,
    indexes: CounterRollups,
    listed: UserTables,
}

impl Collector for RelationStats {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let children = self.config.partition_children;
            let chunk = self.config.page_size;
            let oids = self.listed.get(session).await?;
            let mut tables = Cut::new(
                self.config.max_tables,
                false,
                TABLE_STATS,
                Some(&mut self.tables),
            );
            let mut indexes = Cut::new(
                self.config.max_indexes,
                true,
                INDEX_STATS,
                Some(&mut self.indexes),
            );
            let (table_sql, index_sql) =
                (table_stats_sql(), index_stats_sql(session.server.major()));
            let mut sums = IndexSums::default();
            // Chunk by chunk, the indexes first: their rows give the table rows' sums.
            for oids in oids.chunks(chunk.max(1)) {
                sums.clear();
                read_chunk(session, oids, &index_sql, &[&children], |read| {
                    if let Read::Row(row) = &read {
                        sums.add(row)?;
                    }
                    indexes.read(read, INDEX_STATS)
                })
                .await?;
                read_chunk(session, oids, &table_sql, &[&children], |read| {
                    match read {
                        Read::Row(row) => {
                            let mut series = Series::from_row(&row, TABLE_STATS)?;
                            sums.complete(row.try_get("oid")?, &mut series);
                            tables.push(series, in_tree(&row)?);
                        }
                        Read::ChunkEnd => tables.chunk_end(),
                    }
                    Ok(())
                })
                .await?;
            }
            let (tables, tables_dropped) = tables.finish();
            let (indexes, indexes_dropped) = indexes.finish();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::relations::rollup::Key;

    #[test]
    fn index_sums_land_on_the_columns_they_complete() {
        assert_eq!(TABLE_STATS[IDX_SCAN].column, "idx_scan");
        assert_eq!(TABLE_STATS[IDX_TUP_FETCH].column, "idx_tup_fetch");
        let sql = table_stats_sql();
        let ranks: Vec<&str> = sql
            .split("AS rank_")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(ranks, ["size", "scans", "seq_read"]);
        assert_eq!(ranks[RANK_SCANS], "scans");
    }

    #[test]
    fn a_table_gains_its_indexes_sums_and_one_without_indexes_fetches_nothing() {
        let sums = IndexSums(HashMap::from([(7, (5.0, 40.0))]));
        let row = |table| {
            let values = [1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 6.0, 7.0].map(Some).to_vec();
            let key = Key {
                relation: table,
                table,
            };
            Series::new(key, values, vec![10.0, 1.0, 2.0])
        };
        let mut indexed = row(7);
        sums.complete(7, &mut indexed);
        assert_eq!(indexed.values(), [1.0, 2.0, 5.0, 43.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(indexed.rank(), [10.0, 6.0, 2.0]);
        let mut bare = row(8);
        sums.complete(8, &mut bare);
        assert_eq!(bare.values(), [1.0, 2.0, 0.0, 0.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(bare.rank(), [10.0, 1.0, 2.0]);
    }
}
