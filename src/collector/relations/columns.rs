//! What the relation queries share: their label columns, the SQL of a relation's grouping keys
//! (itself or its partitioned root), the naming of the few relations exported one by one
//! ([`names`]), the chunked reads over the user tables ([`for_each_chunk`]), and the
//! declaration of a value column ([`Col`]: the query column, the family it feeds as a
//! [`Metric`], and how it combines into `(other)` rows).
//!
//! `relation_stats` and `relation_sizes` each list their columns as `Col` tables; the tables
//! are the one source of both the families they emit and the families their spec describes.

use std::collections::HashMap;

use futures_util::StreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::collector::{CollectError, Session};
use crate::metric::{describe_all, FamilyDesc, Metric};

/// Labels of the per-table families.
pub const TABLE: &[&str] = &["target", "schemaname", "relname", "parent"];
/// Labels of the per-index families.
pub const INDEX: &[&str] = &["target", "schemaname", "relname", "parent", "indexrelname"];

/// Label columns of the table queries.
pub const TABLE_LABELS: &[&str] = query_labels(TABLE);
/// Label columns of the index queries.
pub const INDEX_LABELS: &[&str] = query_labels(INDEX);

/// The labels a query reads as columns: a family's labels but the leading `target`, which
/// the poller adds.
pub const fn query_labels(labels: &'static [&'static str]) -> &'static [&'static str] {
    match labels.split_first() {
        Some((_, rest)) => rest,
        None => labels,
    }
}

/// How a value column combines when rows are summed into `(other)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    Sum,
    Max,
}

/// One value column of a query and the family it feeds.
pub struct Col {
    pub column: &'static str,
    pub metric: Metric,
    pub agg: Agg,
}

impl Col {
    /// A column summed into `(other)` rows.
    pub const fn sum(column: &'static str, metric: Metric) -> Col {
        Col {
            column,
            metric,
            agg: Agg::Sum,
        }
    }

    /// A column whose `(other)` row takes the largest of its members (a timestamp).
    pub const fn max(column: &'static str, metric: Metric) -> Col {
        Col {
            column,
            metric,
            agg: Agg::Max,
        }
    }
}

/// The families of some `Col` tables, as a spec lists them.
pub fn describe(tables: &[&[Col]]) -> Vec<FamilyDesc> {
    let metrics: Vec<Metric> = tables
        .iter()
        .flat_map(|cols| cols.iter().map(|c| c.metric))
        .collect();
    describe_all(&metrics)
}

/// The grouping keys of a table `c`, as [`super::rollup::Key`] reads them: the table it is
/// reported as (itself, or its partitioned root unless `$2` = partition_children), twice; and
/// whether it belongs to a partition tree rolled up into its root ([`in_tree`]).
pub const TABLE_KEY: &str = "
    CASE WHEN $2 OR NOT c.relispartition THEN c.oid ELSE pg_partition_root(c.oid)::oid END AS key,
    CASE WHEN $2 OR NOT c.relispartition THEN c.oid ELSE pg_partition_root(c.oid)::oid END
        AS table_key,
    NOT $2 AND (c.relispartition OR c.relkind = 'p') AS in_tree";

/// The indexes with storage of the tables `c` of a chunk (tables and materialized views,
/// partitions included; a partitioned table's indexes have no storage), as `x`: their
/// `pg_index` rows, for a query `SELECT ... ` [this]. An index is as logged as its table:
/// `c.relpersistence` is the index's too.
///
/// An index's own `pg_class` row is not read: that lookup, one per index, was half the cost of
/// `relation_stats`' statement for a chunk's index counters (40 of 85 ms a chunk of 15 000
/// indexes at 50 000 tables, PostgreSQL 15). Both sides of the join are found through the
/// chunk's oids, so no plan can read the whole catalog (see [`indexes_of_c`] for what a plain
/// join did).
macro_rules! chunk_indexes {
    () => {
        "
    FROM pg_class c JOIN pg_index x ON x.indrelid = c.oid
    WHERE c.oid = ANY($1::oid[]) AND x.indrelid = ANY($1::oid[]) AND c.relkind IN ('r', 'm')"
    };
}
pub(super) use chunk_indexes;

/// The index an index `x` of table `c` is reported as: itself, or the root partitioned index
/// it is attached to unless `$2` (partition_children). Without reading the index's own
/// `pg_class` row: only a partition's index can be attached, so only those are asked for a
/// root (`pg_partition_root`, NULL for an index attached to none).
macro_rules! index_reported_as {
    () => {
        "CASE WHEN $2 OR NOT c.relispartition THEN x.indexrelid
              ELSE coalesce(pg_partition_root(x.indexrelid)::oid, x.indexrelid) END"
    };
}
pub(super) use index_reported_as;

/// The indexes of the tables `c` of a chunk, as `x`: each one's `pg_index` row and its own
/// `pg_class` row (`x.oid` is the index's), for a query `FROM pg_class c` [this] `WHERE c.oid =
/// ANY($1::oid[])`. They are found table by table through the catalog's indexes, in a
/// subquery the planner keeps as it is: joined plainly, `pg_index` and `pg_class` were hashed
/// whole (with parallel workers) for every chunk, which cost 130 ms per chunk of 5 000 tables
/// on a catalog of 50 000 and grows with the catalog, against 50 ms this way.
macro_rules! indexes_of_c {
    () => {
        "
    CROSS JOIN LATERAL (
        SELECT ix.*, i.* FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid
        WHERE ix.indrelid = c.oid
        OFFSET 0
    ) x"
    };
}
pub(super) use indexes_of_c;

/// An array column of `row`, empty where NULL (`array_agg` over no row: a table without
/// indexes).
pub fn array<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: &str,
) -> Result<Vec<T>, tokio_postgres::Error> {
    Ok(row
        .try_get::<_, Option<Vec<T>>>(column)?
        .unwrap_or_default())
}

/// Whether a row read with [`TABLE_KEY`] belongs to a partition tree rolled up into its root
/// (and so do its indexes): rows of other chunks may share its key or its table.
pub fn in_tree(row: &Row) -> Result<bool, tokio_postgres::Error> {
    row.try_get("in_tree")
}

/// Names of a table `c` (namespace `n`), for [`labels`]: its own schema and name, and its
/// partitioned root's when it is a partition.
const TABLE_NAMES: &str = "n.nspname::text AS schemaname, c.relname::text AS relname,
    root.root_schema, root.root_name";

/// The partitioned root of a partition `c` (no row for other tables): an index lookup per
/// partition (OFFSET 0 keeps the planner from turning it into a hash of all of `pg_class`).
const ROOT_OF_C: &str = "
    LEFT JOIN LATERAL (
        SELECT rn.nspname::text AS root_schema, r.relname::text AS root_name
        FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
        WHERE c.relispartition AND r.oid = pg_partition_root(c.oid)
        OFFSET 0
    ) root ON true";

/// Name of an index `ci` and, when it is a partition's index, its root partitioned index's.
const INDEX_NAMES: &str = "ci.relname::text AS indexrelname,
    CASE WHEN ci.relispartition THEN (SELECT ri.relname::text FROM pg_class ri
                                      WHERE ri.oid = pg_partition_root(ci.oid)) END AS root_index";

/// Where a relation read with [`TABLE_NAMES`] (and [`INDEX_NAMES`] for `index`) is reported:
/// itself, or (partitions, unless `children`) its root table and the root's index. With
/// `children`, a partition keeps its own names and `parent` names its root.
fn labels(row: &Row, children: bool, index: bool) -> Result<Vec<String>, tokio_postgres::Error> {
    let root: Option<(String, String)> = match row.try_get::<_, Option<String>>("root_name")? {
        Some(name) => Some((row.try_get("root_schema")?, name)),
        None => None,
    };
    let mut labels = match root {
        Some((schema, name)) if !children => vec![schema, name, String::new()],
        root => vec![
            row.try_get("schemaname")?,
            row.try_get("relname")?,
            root.map_or_else(String::new, |(schema, name)| format!("{schema}.{name}")),
        ],
    };
    if index {
        let own: String = row.try_get("indexrelname")?;
        let root: Option<String> = row.try_get("root_index")?;
        labels.push(match root {
            Some(root) if !children => root,
            _ => own,
        });
    }
    Ok(labels)
}

/// The labels of the relations that are exported one by one, by oid: `tables` (3 labels) and
/// `indexes` (4), at most the caps, so this never grows with the catalog.
pub async fn names(
    session: &Session,
    children: bool,
    tables: &[u32],
    indexes: &[u32],
) -> Result<HashMap<u32, Vec<String>>, CollectError> {
    let table_sql = format!(
        "SELECT c.oid, {TABLE_NAMES}
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace{ROOT_OF_C}
        WHERE c.oid = ANY($1::oid[])"
    );
    let index_sql = format!(
        "SELECT ci.oid, {TABLE_NAMES}, {INDEX_NAMES}
        FROM pg_class ci JOIN pg_index x ON x.indexrelid = ci.oid
        JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace{ROOT_OF_C}
        WHERE ci.oid = ANY($1::oid[])"
    );
    let mut names = HashMap::new();
    for (sql, oids, index) in [(table_sql, tables, false), (index_sql, indexes, true)] {
        if oids.is_empty() {
            continue;
        }
        for row in session.client.query(&sql, &[&oids]).await? {
            names.insert(row.try_get(0)?, labels(&row, children, index)?);
        }
    }
    Ok(names)
}

/// The user tables of the database (partitioned and materialized ones too: what
/// `pg_stat_user_tables` lists), by oid: the keys the catalog-wide statements run over in
/// chunks. One scan of `pg_class`, catalog only.
const USER_TABLES_SQL: &str = "
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_(toast|temp_)'
    ORDER BY c.oid";

/// Streamed: a `Row` costs about ten times its oid, and there is one per table.
pub async fn user_tables(session: &Session) -> Result<Vec<u32>, CollectError> {
    let mut oids = Vec::new();
    for_each_row(session, USER_TABLES_SQL, &[], |row| {
        oids.push(row.try_get(0)?);
        Ok(())
    })
    .await?;
    Ok(oids)
}

/// What `pg_class` was written since the statistics were reset (rows inserted, updated,
/// deleted: a table created, dropped, altered, truncated or rewritten), or NULL where that
/// cannot tell: a standby (replayed changes are not counted) or counters turned off.
const CATALOG_WRITES_SQL: &str = "
    SELECT CASE WHEN pg_is_in_recovery() OR NOT current_setting('track_counts')::bool THEN NULL
           ELSE pg_stat_get_tuples_inserted('pg_catalog.pg_class'::regclass)
                + pg_stat_get_tuples_updated('pg_catalog.pg_class'::regclass)
                + pg_stat_get_tuples_deleted('pg_catalog.pg_class'::regclass) END";

/// Runs served from one list at most, however quiet the catalog: a bound on what the
/// counters could miss (statistics lost in a crash that land on the same total).
const LIST_AT_MOST_EVERY: u32 = 10;

/// [`user_tables`], listed again only when the catalog was written since: listing is one scan
/// of the whole of `pg_class` (about 0.1 s at 50 000 tables), every run, where the set of
/// tables rarely changes. A table created is listed at the first run after its creating
/// session's statistics are flushed (within a second of its commit when idle, a minute at
/// most); until then it is missing from the run, as it was before its creation. A dropped
/// table just has no row.
#[derive(Default)]
pub struct UserTables {
    oids: Vec<u32>,
    /// The catalog's writes when `oids` were listed; None: list every run.
    writes: Option<i64>,
    served: u32,
}

impl UserTables {
    pub async fn get(&mut self, session: &Session) -> Result<&[u32], CollectError> {
        // Read before listing: a write the list misses changes the count seen next run.
        let writes: Option<i64> = session
            .client
            .query_one(CATALOG_WRITES_SQL, &[])
            .await?
            .try_get(0)?;
        if relist(writes, self.writes, self.served) {
            self.oids = user_tables(session).await?;
            self.oids.shrink_to_fit();
            self.writes = writes;
            self.served = 0;
        }
        self.served += 1;
        Ok(&self.oids)
    }
}

/// Whether to list the tables again, the catalog's writes being `now` and `then` when the list
/// was made, after `served` runs from it.
fn relist(now: Option<i64>, then: Option<i64>, served: u32) -> bool {
    now.is_none() || now != then || served >= LIST_AT_MOST_EVERY
}

/// Runs `sql` once, handing each row to `each` as it arrives rather than collecting them.
async fn for_each_row(
    session: &Session,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    mut each: impl FnMut(Row) -> Result<(), CollectError>,
) -> Result<(), CollectError> {
    let rows = session
        .client
        .query_raw(sql, params.iter().map(|p| *p as &dyn ToSql))
        .await?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.next().await.transpose()? {
        each(row)?;
    }
    Ok(())
}

/// What a chunked read hands over: each row, and after a chunk's last row, its end (every row
/// of the chunk's tables has then been read).
pub enum Read {
    Row(Row),
    ChunkEnd,
}

/// Runs a query over the tables of `$1` (an oid array; further parameters follow it),
/// `chunk` tables per statement (`[relations] page_size`), handing each row to `each` as it
/// arrives: no statement grows with the catalog, and the rows are never all in memory at
/// once, not even a chunk's. Tables dropped meanwhile simply have no row.
pub async fn for_each_chunk(
    session: &Session,
    tables: &[u32],
    chunk: usize,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    mut each: impl FnMut(Read) -> Result<(), CollectError>,
) -> Result<(), CollectError> {
    for oids in tables.chunks(chunk.max(1)) {
        let oids = oids.to_vec();
        let mut all: Vec<&(dyn ToSql + Sync)> = vec![&oids];
        all.extend_from_slice(params);
        for_each_row(session, sql, &all, |row| each(Read::Row(row))).await?;
        each(Read::ChunkEnd)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_listed_again_when_the_catalog_was_written_or_cannot_tell() {
        assert!(relist(Some(7), None, 0), "first run");
        assert!(!relist(Some(7), Some(7), 3));
        assert!(relist(Some(8), Some(7), 3), "written since");
        assert!(relist(Some(0), Some(7), 3), "statistics reset");
        assert!(relist(None, None, 1), "standby or counters off");
        assert!(relist(Some(7), Some(7), LIST_AT_MOST_EVERY));
    }
}
