//! `relation_stats` (every 60s): scan and row counters per table and per index, from
//! `pg_stat_user_tables` and `pg_stat_user_indexes`; catalog reads only, cheap. Capped by
//! `[relations]`, with `(other)` counters that never step down ([`CounterRollups`]).

use std::time::Duration;

use tokio_postgres::Row;

use super::columns::{
    array, for_each_chunk, in_tree, index_reported_as, Col, Read, UserTables, INDEX, TABLE,
    TABLE_KEY,
};
use super::cut::Cut;
use super::export::export;
use super::rollup::{CounterRollups, Key, Series};
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
/// over every index of the catalog, and its indexes' counters as arrays, one element per
/// index ([`Indexes`]), found through `pg_index`'s index on `indrelid` (a partitioned table's
/// indexes have no statistics: `pg_stat_user_indexes` lists none). The view's `idx_scan` and
/// `idx_tup_fetch` of a table are the sums of its indexes' counters, added in Rust from the
/// arrays. One row per table rather than a statement for the indexes and another for the
/// tables: each table is looked up once, and a chunk returns 5 000 rows rather than 20 000
/// (79 against 92 ms per chunk of 5 000 tables at 50 000, psql, PostgreSQL 15).
///
/// An index's own `pg_class` row is not read (that lookup, one per index, was half the cost
/// of the indexes' statement): the size an index is ranked by is its table's pages (the
/// indexes of the largest tables are kept), and the index it is reported as comes from its
/// table's row ([`index_reported_as`]).
fn stats_sql(major: i32) -> String {
    // The last scan's time appeared in PostgreSQL 16.
    let last = if major >= 16 {
        "extract(epoch FROM pg_stat_get_lastscan(x.indexrelid))::float8"
    } else {
        "NULL::float8"
    };
    format!(
        "SELECT {TABLE_KEY}, c.oid,
        pg_stat_get_numscans(c.oid)::float8 AS seq_scan,
        pg_stat_get_tuples_returned(c.oid)::float8 AS seq_tup_read,
        -- These two and rank_scans get the table's indexes' sums in Rust (Indexes).
        0::float8 AS idx_scan,
        pg_stat_get_tuples_fetched(c.oid)::float8 AS idx_tup_fetch,
        pg_stat_get_tuples_inserted(c.oid)::float8 AS n_tup_ins,
        pg_stat_get_tuples_updated(c.oid)::float8 AS n_tup_upd,
        pg_stat_get_tuples_deleted(c.oid)::float8 AS n_tup_del,
        pg_stat_get_tuples_hot_updated(c.oid)::float8 AS n_tup_hot_upd,
        c.relpages::float8 AS rank_size,
        pg_stat_get_numscans(c.oid)::float8 AS rank_scans,
        pg_stat_get_tuples_returned(c.oid)::float8 AS rank_seq_read,
        ix.index_keys, ix.index_scans, ix.index_reads, ix.index_fetches, ix.index_last_scans
    FROM pg_class c
    LEFT JOIN LATERAL (
        SELECT array_agg({reported_as}) AS index_keys,
               array_agg(pg_stat_get_numscans(x.indexrelid)::float8) AS index_scans,
               array_agg(pg_stat_get_tuples_returned(x.indexrelid)::float8) AS index_reads,
               array_agg(pg_stat_get_tuples_fetched(x.indexrelid)::float8) AS index_fetches,
               array_agg({last}) AS index_last_scans
        FROM pg_index x
        WHERE x.indrelid = c.oid AND c.relkind IN ('r', 'm')
    ) ix ON true
    WHERE c.oid = ANY($1::oid[])",
        reported_as = index_reported_as!()
    )
}

/// Where a table row's index sums go: values by their place in [`TABLE_STATS`], and the
/// scans' ranking key among the `rank_` columns of [`stats_sql`].
const IDX_SCAN: usize = 2;
const IDX_TUP_FETCH: usize = 3;
const RANK_SCANS: usize = 1;

/// A table's indexes, as [`stats_sql`] returns them: one element per index in each array,
/// `keys` the index each is reported as (itself, or its root partitioned index).
#[derive(Debug, Default, PartialEq)]
struct Indexes {
    keys: Vec<u32>,
    scans: Vec<f64>,
    reads: Vec<f64>,
    fetches: Vec<f64>,
    last_scans: Vec<Option<f64>>,
}

impl Indexes {
    /// The arrays of a table row; none without indexes.
    fn of(row: &Row) -> Result<Indexes, tokio_postgres::Error> {
        Ok(Indexes {
            keys: array(row, "index_keys")?,
            scans: array(row, "index_scans")?,
            reads: array(row, "index_reads")?,
            fetches: array(row, "index_fetches")?,
            last_scans: array(row, "index_last_scans")?,
        })
    }

    /// One series of [`INDEX_STATS`] per index, under its table's grouping key `table_key`;
    /// ranked by its table's pages (`rank` of the table's series) and its own scans.
    fn series(&self, table: &Series, table_key: u32) -> impl Iterator<Item = Series> + '_ {
        let pages = table.rank()[0];
        (0..self.keys.len()).map(move |i| {
            let values = vec![
                Some(self.scans[i]),
                Some(self.reads[i]),
                Some(self.fetches[i]),
                self.last_scans.get(i).copied().flatten(),
            ];
            let key = Key {
                relation: self.keys[i],
                table: table_key,
            };
            Series::new(key, values, vec![pages, self.scans[i]])
        })
    }

    /// Completes its table's series with the sums `pg_stat_user_tables` makes of its indexes.
    /// The view's sums over no index are NULL, exported as 0: `idx_tup_fetch` is then 0 even
    /// where the table's own fetch counter is not.
    fn complete(&self, table: &mut Series) {
        let (values, rank) = table.cells_mut();
        if self.keys.is_empty() {
            values[IDX_TUP_FETCH] = 0.0;
            return;
        }
        let scans: f64 = self.scans.iter().sum();
        values[IDX_SCAN] += scans;
        values[IDX_TUP_FETCH] += self.fetches.iter().sum::<f64>();
        rank[RANK_SCANS] += scans;
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
            let sql = stats_sql(session.server.major());
            for_each_chunk(session, oids, chunk, &sql, &[&children], |read| {
                match read {
                    Read::Row(row) => {
                        let mut table = Series::from_row(&row, TABLE_STATS)?;
                        let in_tree = in_tree(&row)?;
                        let of_table = Indexes::of(&row)?;
                        for index in of_table.series(&table, row.try_get("table_key")?) {
                            indexes.push(index, in_tree);
                        }
                        of_table.complete(&mut table);
                        tables.push(table, in_tree);
                    }
                    Read::ChunkEnd => {
                        tables.chunk_end();
                        indexes.chunk_end();
                    }
                }
                Ok(())
            })
            .await?;
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

    #[test]
    fn index_sums_land_on_the_columns_they_complete() {
        assert_eq!(TABLE_STATS[IDX_SCAN].column, "idx_scan");
        assert_eq!(TABLE_STATS[IDX_TUP_FETCH].column, "idx_tup_fetch");
        let sql = stats_sql(15);
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

    fn table(oid: u32) -> Series {
        let values = [1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 6.0, 7.0].map(Some).to_vec();
        let key = Key {
            relation: oid,
            table: oid,
        };
        Series::new(key, values, vec![10.0, 1.0, 2.0])
    }

    #[test]
    fn a_table_gains_its_indexes_sums_and_one_without_indexes_fetches_nothing() {
        let two = Indexes {
            keys: vec![70, 71],
            scans: vec![2.0, 3.0],
            reads: vec![9.0, 9.0],
            fetches: vec![15.0, 25.0],
            last_scans: vec![None, None],
        };
        let mut indexed = table(7);
        two.complete(&mut indexed);
        assert_eq!(indexed.values(), [1.0, 2.0, 5.0, 43.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(indexed.rank(), [10.0, 6.0, 2.0]);
        let mut bare = table(8);
        Indexes::default().complete(&mut bare);
        assert_eq!(bare.values(), [1.0, 2.0, 0.0, 0.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(bare.rank(), [10.0, 1.0, 2.0]);
    }

    #[test]
    fn each_index_is_a_series_under_its_table_ranked_by_the_tables_pages() {
        let indexes = Indexes {
            keys: vec![70, 90],
            scans: vec![2.0, 3.0],
            reads: vec![4.0, 5.0],
            fetches: vec![6.0, 7.0],
            // Before PostgreSQL 16 the array is of NULLs; a partition root has its own.
            last_scans: vec![Some(1.7e9), None],
        };
        let series: Vec<Series> = indexes.series(&table(7), 5).collect();
        let expected = [
            Series::new(
                Key {
                    relation: 70,
                    table: 5,
                },
                vec![Some(2.0), Some(4.0), Some(6.0), Some(1.7e9)],
                vec![10.0, 2.0],
            ),
            Series::new(
                Key {
                    relation: 90,
                    table: 5,
                },
                vec![Some(3.0), Some(5.0), Some(7.0), None],
                vec![10.0, 3.0],
            ),
        ];
        assert_eq!(series, expected);
    }
}
