//! `index_health` (every 5m): unused, invalid and duplicate indexes, each counted in full and
//! listed one by one up to `[relations] max_listed` (the largest first), plus the age of the
//! statistics the unused judgment rests on.

use std::time::Duration;

use tokio_postgres::Row;

use super::columns::{for_each_chunk, indexes_of_c, query_labels, user_tables, Read};
use super::settings::RelationsConfig;
use crate::collector::{BuildContext, CollectError, CollectFuture, Collector, Lane, Session, Spec};
use crate::metric::{describe_all, Family, FamilyDesc, Metric};

pub fn spec() -> Spec {
    Spec {
        name: "index_health",
        description:
            "Unused (idx_scan = 0 since the statistics reset), invalid and duplicate indexes.",
        default_interval: Duration::from_secs(300),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Database,
        families,
        build: |ctx: &BuildContext| {
            Box::new(IndexHealth {
                config: ctx.relations.clone(),
                dropped: 0,
                duplicates: None,
            })
        },
    }
}

/// Labels of a family with a series per listed index.
const ONE: &[&str] = &["target", "schemaname", "relname", "indexrelname"];

crate::metric::metrics! {
    UNUSED_INDEXES = gauge("pg_index_unused_indexes", &["target"], "Indexes never scanned since the statistics were reset, at least [relations] unused_min_bytes large, not backing a primary key, unique or exclusion constraint (partition indexes judged with their parent index).");
    UNUSED_RECLAIMABLE = gauge("pg_index_unused_reclaimable_bytes", &["target"], "Total size of the unused indexes: what dropping them all would free.");
    UNUSED_SIZE = gauge("pg_index_unused_size_bytes", ONE, "Size of each unused index, the largest [relations] max_listed.");
    STATS_AGE = gauge("pg_index_usage_stats_age_seconds", &["target"], "Age of the statistics the unused judgment rests on: now - stats_reset of this database (the server start when never reset, a lower bound). A reset yesterday proves little.");
    INVALID_INDEXES = gauge("pg_index_invalid_indexes", &["target"], "Indexes with indisvalid = false: a failed CREATE INDEX CONCURRENTLY (or one running now), still updated on writes but never used for reads.");
    INVALID = gauge("pg_index_invalid", ONE, "Always 1, for each invalid index (the first [relations] max_listed by size).");
    DUPLICATE_INDEXES = gauge("pg_index_duplicate_indexes", &["target"], "Valid indexes identical to another of the same table (method, columns, expressions, predicate, operator classes, collations, options): droppable.");
    DUPLICATE_SIZE = gauge("pg_index_duplicate_size_bytes", &["target", "schemaname", "relname", "indexrelname", "duplicate_of"], "Size of each duplicate index, the largest [relations] max_listed; duplicate_of is the one to keep (a constraint's index when there is one).");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[
        UNUSED_INDEXES,
        UNUSED_RECLAIMABLE,
        UNUSED_SIZE,
        STATS_AGE,
        INVALID_INDEXES,
        INVALID,
        DUPLICATE_INDEXES,
        DUPLICATE_SIZE,
    ])
}

/// Unused indexes, judged per index tree: a partition's index counts with its root
/// partitioned index (it cannot be dropped alone), so the tree is unused only when no
/// partition's index was scanned.
/// Never-scanned droppable index trees of the tables of `$1` at least `$2` bytes large: a
/// plain index, or a partitioned index judged with all its partitions' indexes (the tree is
/// read from its root, so each tree is judged once, in the chunk of its root's table).
///
/// The tests go from the cheapest to the costliest, each on what the one before left: the
/// flags of `pg_index` (found through the chunk's oids), the scans (statistics), the pages
/// (`pg_class.relpages`, kept by CREATE INDEX, VACUUM and ANALYZE: one lookup per index left),
/// the constraints (one lookup through `pg_constraint`'s index on `conrelid` per index left),
/// and only then the files. On a big catalog most indexes are primary keys or unique, and
/// most never-scanned ones are small. Written as one join, the constraint test was planned as
/// a hash of the whole of `pg_constraint` for every chunk, which grows with the catalog.
const UNUSED_SQL: &str = "
    WITH x AS (
        SELECT x.indexrelid AS idx, x.indrelid, c.relkind = 'p' AS parted
        FROM pg_class c JOIN pg_index x ON x.indrelid = c.oid
        WHERE c.oid = ANY($1::oid[]) AND x.indrelid = ANY($1::oid[])
          AND x.indisvalid AND NOT (x.indisprimary OR x.indisunique OR x.indisexclusion)
          -- Roots only: an index attached to a parent is judged with its tree, and only a
          -- partition's index can be attached.
          AND NOT (c.relispartition
                   AND (SELECT i.relispartition FROM pg_class i WHERE i.oid = x.indexrelid))
    ), tree AS (
        -- A plain index is a tree of one. Only a partitioned index has a tree to read:
        -- pg_partition_tree looks its argument up in the system caches, which the session
        -- keeps (60 MB of cache in the backend after one pass over 100 000 plain indexes).
        SELECT x.idx, x.indrelid, x.parted, pg_stat_get_numscans(x.idx) AS scans,
               NULL::int8 AS pages
        FROM x WHERE NOT x.parted
        UNION ALL
        SELECT x.idx, x.indrelid, x.parted, t.scans, t.pages
        FROM x CROSS JOIN LATERAL (
            SELECT sum(pg_stat_get_numscans(p.relid)) AS scans,
                   sum((SELECT m.relpages FROM pg_class m WHERE m.oid = p.relid)) AS pages
            FROM pg_partition_tree(x.idx) p
        ) t
        WHERE x.parted
    ), e AS (
        SELECT tree.idx, tree.indrelid, tree.parted
        FROM tree
        -- In this order (CASE: the planner would order the tests by its own estimates).
        WHERE CASE WHEN tree.scans <> 0 THEN false
                   WHEN coalesce(tree.pages,
                                 (SELECT m.relpages FROM pg_class m WHERE m.oid = tree.idx))
                        ::float8 * current_setting('block_size')::int < $2::int8 / 4 THEN false
                   -- A constraint elsewhere (a foreign key) only uses a unique index; the
                   -- table's own are found through pg_constraint's index on conrelid (OFFSET
                   -- 0: looked up per index, not planned as a join).
                   ELSE NOT EXISTS (SELECT FROM pg_constraint k
                                    WHERE k.conrelid = tree.indrelid AND k.conindid = tree.idx
                                    OFFSET 0) END
    ), g AS (
        SELECT e.idx, e.indrelid,
               CASE WHEN e.parted
                    THEN (SELECT sum(pg_relation_size(p.relid)) FROM pg_partition_tree(e.idx) p)
                    ELSE pg_relation_size(e.idx) END AS bytes
        FROM e
    )
    SELECT n.nspname::text AS schemaname, t.relname::text AS relname,
           i.relname::text AS indexrelname, g.bytes::float8 AS bytes
    FROM g
    JOIN pg_class i ON i.oid = g.idx
    JOIN pg_class t ON t.oid = g.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE g.bytes >= $2::int8";

const STATS_AGE_SQL: &str = "
    SELECT extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))::float8
    FROM pg_stat_database WHERE datname = current_database()";

const INVALID_SQL: &str = "
    SELECT n.nspname::text AS schemaname, t.relname::text AS relname,
           c.relname::text AS indexrelname, pg_relation_size(c.oid)::float8 AS bytes
    FROM pg_index x
    JOIN pg_class c ON c.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE NOT x.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_(toast|temp_)'
    ORDER BY 4 DESC, 1, 2, 3";

/// Duplicates among the indexes of the tables of `$1`: same table, access method, key
/// columns, expressions, predicate, operator classes, collations and options. Per group the one
/// backing a constraint (else the oldest) is kept; the others are reported with it. Partition
/// indexes are compared through their parent. Duplicates share a table, so the check runs a
/// chunk of tables at a time (one statement over every index took 557 ms at 50 000 tables);
/// their names are read every run with their sizes ([`DUPLICATES_SQL`]).
const DUPLICATE_SQL: &str = concat!(
    "
    WITH x AS (
        SELECT x.indexrelid, x.indrelid, x.relam, x.indkey::text AS k, x.indclass::text AS cl,
               x.indcollation::text AS co, x.indoption::text AS op,
               coalesce(pg_get_expr(x.indexprs, x.indrelid), '') AS ex,
               coalesce(pg_get_expr(x.indpred, x.indrelid), '') AS pr,
               -- A constraint on another table (a foreign key) can only use a unique index;
               -- the table's own are found through pg_constraint's index on conrelid.
               (x.indisprimary OR x.indisunique OR x.indisexclusion
                OR EXISTS (SELECT FROM pg_constraint k
                           WHERE k.conrelid = x.indrelid AND k.conindid = x.indexrelid))
                   AS constrained
        FROM pg_class c",
    indexes_of_c!(),
    "
        WHERE c.oid = ANY($1::oid[]) AND x.indisvalid AND NOT x.relispartition
    ), r AS (
        SELECT x.indexrelid, first_value(x.indexrelid) OVER w AS keeper,
               row_number() OVER w AS nth
        FROM x
        WINDOW w AS (PARTITION BY x.indrelid, x.relam, x.k, x.cl, x.co, x.op, x.ex, x.pr
                     ORDER BY x.constrained DESC, x.indexrelid)
    )
    SELECT r.indexrelid, r.keeper FROM r WHERE r.nth > 1"
);

/// What the duplicate check depends on, for the tables of `$1`: the set of their indexes (a
/// changed definition is a new index) and their validity. A sum over the indexes, so the
/// chunks' values add up to the same whatever the chunk boundaries. `pg_index` only, a chunk
/// at a time: names are not in it (they are read with the sizes), so no index's `pg_class`
/// row is looked up, where the check itself compares every index's definition.
const INDEX_DEFINITIONS_SQL: &str = "
    SELECT count(*)::int8 * 1000000007
           + coalesce(sum(hashtextextended(concat_ws(',', x.indexrelid, x.indisvalid), 0)
                          % 1000000007), 0)::int8
    FROM pg_index x
    WHERE x.indrelid = ANY($1::oid[])";

/// Names and sizes of the duplicates found (`$1`) and the indexes they duplicate (`$2`): one
/// stat each. Read every run, so a renamed index is listed under its new name.
const DUPLICATES_SQL: &str = "
    SELECT n.nspname::text AS schemaname, t.relname::text AS relname,
           i.relname::text AS indexrelname, k.relname::text AS duplicate_of,
           pg_relation_size(d.idx)::float8 AS bytes
    FROM unnest($1::oid[], $2::oid[]) AS d(idx, keeper)
    JOIN pg_class i ON i.oid = d.idx
    JOIN pg_index x ON x.indexrelid = d.idx
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = i.relnamespace
    JOIN pg_class k ON k.oid = d.keeper";

struct IndexHealth {
    config: RelationsConfig,
    /// Unused, invalid and duplicate indexes of the last run beyond `max_listed`.
    dropped: u64,
    /// The duplicates found, each with the index it duplicates, kept while the index
    /// definitions they were found in stay (`INDEX_DEFINITIONS_SQL`): the check compares every
    /// index, the definitions rarely change.
    duplicates: Option<(i64, Vec<(u32, u32)>)>,
}

/// A duplicate index: its labels (`DUPLICATE_SIZE`'s, in order, after `target`) and size.
struct Duplicate {
    labels: [String; 4],
    bytes: f64,
}

impl IndexHealth {
    /// The duplicate indexes with their sizes, largest first; found again only when the
    /// index definitions changed.
    async fn duplicates(
        &mut self,
        session: &Session,
        tables: &[u32],
    ) -> Result<Vec<Duplicate>, CollectError> {
        let chunk = self.config.page_size;
        let mut definitions = 0i64;
        for_each_chunk(session, tables, chunk, INDEX_DEFINITIONS_SQL, &[], |read| {
            if let Read::Row(row) = read {
                definitions = definitions.wrapping_add(row.try_get(0)?);
            }
            Ok(())
        })
        .await?;
        if self.duplicates.as_ref().map(|(d, _)| *d) != Some(definitions) {
            let mut found = Vec::new();
            for_each_chunk(session, tables, chunk, DUPLICATE_SQL, &[], |read| {
                if let Read::Row(row) = read {
                    found.push((row.try_get("indexrelid")?, row.try_get("keeper")?));
                }
                Ok(())
            })
            .await?;
            self.duplicates = Some((definitions, found));
        }
        let found = self
            .duplicates
            .as_ref()
            .map_or(&[][..], |(_, d)| d.as_slice());
        let (oids, keepers): (Vec<u32>, Vec<u32>) = found.iter().copied().unzip();
        let mut listed = session
            .client
            .query(DUPLICATES_SQL, &[&oids, &keepers])
            .await?
            .iter()
            .map(|row| {
                Ok(Duplicate {
                    labels: ["schemaname", "relname", "indexrelname", "duplicate_of"]
                        .map(|column| row.get(column)),
                    bytes: row.try_get::<_, Option<f64>>("bytes")?.unwrap_or(0.0),
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        listed.sort_by(|a, b| {
            b.bytes
                .total_cmp(&a.bytes)
                .then_with(|| a.labels.cmp(&b.labels))
        });
        Ok(listed)
    }
}

impl Collector for IndexHealth {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let client = &session.client;
            let max = self.config.max_listed;
            let min_bytes = i64::try_from(self.config.unused_min_bytes).unwrap_or(i64::MAX);
            let mut out = Vec::new();

            let tables = user_tables(session).await?;
            let mut unused = Vec::new();
            let chunk = self.config.page_size;
            for_each_chunk(session, &tables, chunk, UNUSED_SQL, &[&min_bytes], |read| {
                if let Read::Row(row) = read {
                    unused.push(row);
                }
                Ok(())
            })
            .await?;
            // The largest first, then by name: the listed ones are stable across runs.
            let key = |r: &Row| -> [String; 3] {
                ["schemaname", "relname", "indexrelname"].map(|c| r.get(c))
            };
            unused.sort_by(|a, b| {
                b.get::<_, f64>("bytes")
                    .total_cmp(&a.get::<_, f64>("bytes"))
                    .then_with(|| key(a).cmp(&key(b)))
            });
            let total: f64 = unused.iter().map(|r| r.get::<_, f64>("bytes")).sum();
            out.push(UNUSED_INDEXES.family().with(&[], unused.len() as f64));
            out.push(UNUSED_RECLAIMABLE.family().with(&[], total));
            out.push(listed(UNUSED_SIZE, &unused, max, |r| r.get("bytes")));
            let age: Option<f64> = client.query_one(STATS_AGE_SQL, &[]).await?.get(0);
            let mut family = STATS_AGE.family();
            if let Some(age) = age {
                family.push(&[], age);
            }
            out.push(family);

            let invalid = client.query(INVALID_SQL, &[]).await?;
            out.push(INVALID_INDEXES.family().with(&[], invalid.len() as f64));
            out.push(listed(INVALID, &invalid, max, |_| 1.0));

            let (unused, invalid) = (unused.len(), invalid.len());
            let duplicates = self.duplicates(session, &tables).await?;
            out.push(
                DUPLICATE_INDEXES
                    .family()
                    .with(&[], duplicates.len() as f64),
            );
            let mut family = DUPLICATE_SIZE.family();
            let names = query_labels(DUPLICATE_SIZE.labels);
            for duplicate in duplicates.iter().take(max) {
                let pairs: Vec<(&str, &str)> = names
                    .iter()
                    .copied()
                    .zip(duplicate.labels.iter().map(String::as_str))
                    .collect();
                family.push(&pairs, duplicate.bytes);
            }
            out.push(family);

            self.dropped = [unused, invalid, duplicates.len()]
                .iter()
                .map(|n| n.saturating_sub(max) as u64)
                .sum();
            Ok(out)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped)
    }
}

/// A family with one sample per row (the first `max`; rows come ordered largest first),
/// labelled by the row's columns of the family's labels.
fn listed(metric: Metric, rows: &[Row], max: usize, value: impl Fn(&Row) -> f64) -> Family {
    let labels = query_labels(metric.labels);
    let mut family = metric.family();
    for row in rows.iter().take(max) {
        let values: Vec<String> = labels.iter().map(|l| row.get(*l)).collect();
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .copied()
            .zip(values.iter().map(String::as_str))
            .collect();
        family.push(&pairs, value(row));
    }
    family
}
