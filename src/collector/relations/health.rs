//! `index_health` (every 5m): unused, invalid and duplicate indexes, each counted in full and
//! listed one by one up to `[relations] max_listed` (the largest first), plus the age of the
//! statistics the unused judgment rests on.

use std::time::Duration;

use tokio_postgres::Row;

use super::columns::query_labels;
use super::settings::RelationsConfig;
use crate::collector::{BuildContext, CollectFuture, Collector, Lane, Session, Spec};
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
        families,
        build: |ctx: &BuildContext| {
            Box::new(IndexHealth {
                config: ctx.relations.clone(),
                dropped: 0,
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
const UNUSED_SQL: &str = "
    WITH s AS (
        SELECT coalesce(CASE WHEN c.relispartition THEN pg_partition_root(s.indexrelid) END,
                        s.indexrelid) AS idx,
               s.indexrelid, s.idx_scan, c.relpages
        FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid
        WHERE s.schemaname !~ '^pg_temp_'
    ), z AS (
        SELECT idx FROM s GROUP BY idx HAVING sum(idx_scan) = 0
    ), d AS (
        -- Droppable trees only (valid, enforcing nothing), before any file is stat'ed: on a
        -- big catalog most never-scanned indexes are primary keys and unique ones.
        SELECT z.idx FROM z JOIN pg_index x ON x.indexrelid = z.idx
        WHERE x.indisvalid AND NOT (x.indisprimary OR x.indisunique OR x.indisexclusion)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = z.idx)
    ), e AS (
        -- Only trees the catalog's page count (relpages: kept by CREATE INDEX, VACUUM and
        -- ANALYZE) puts within 4x of the threshold or beyond are measured: measuring opens
        -- the index (a relation cache entry in this session) and stats its file, and on a big
        -- catalog most never-scanned indexes are small.
        SELECT d.idx FROM d JOIN s ON s.idx = d.idx GROUP BY d.idx
        HAVING sum(s.relpages)::float8 * current_setting('block_size')::int >= $1::int8 / 4
    ), g AS (
        SELECT e.idx, sum(pg_relation_size(s.indexrelid)) AS bytes
        FROM e JOIN s ON s.idx = e.idx GROUP BY e.idx
    )
    SELECT n.nspname::text AS schemaname, t.relname::text AS relname,
           ic.relname::text AS indexrelname, g.bytes::float8 AS bytes
    FROM g
    JOIN pg_index x ON x.indexrelid = g.idx
    JOIN pg_class ic ON ic.oid = g.idx
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = ic.relnamespace
    WHERE g.bytes >= $1::int8
    ORDER BY g.bytes DESC, 1, 2, 3";

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

/// Duplicates: same table, access method, key columns, expressions, predicate, operator
/// classes, collations and options. Per group the one backing a constraint (else the oldest)
/// is kept; the others are reported. Partition indexes are compared through their parent.
const DUPLICATE_SQL: &str = "
    WITH x AS (
        SELECT x.indexrelid, x.indrelid, c.relam, x.indkey::text AS k, x.indclass::text AS cl,
               x.indcollation::text AS co, x.indoption::text AS op,
               coalesce(pg_get_expr(x.indexprs, x.indrelid), '') AS ex,
               coalesce(pg_get_expr(x.indpred, x.indrelid), '') AS pr,
               (x.indisprimary OR x.indisunique OR x.indisexclusion
                OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)) AS constrained
        FROM pg_index x
        JOIN pg_class c ON c.oid = x.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE x.indisvalid AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname !~ '^pg_(toast|temp_)'
    ), r AS (
        SELECT x.indexrelid, x.indrelid,
               first_value(x.indexrelid) OVER w AS keeper, row_number() OVER w AS nth
        FROM x
        WINDOW w AS (PARTITION BY x.indrelid, x.relam, x.k, x.cl, x.co, x.op, x.ex, x.pr
                     ORDER BY x.constrained DESC, x.indexrelid)
    )
    SELECT n.nspname::text AS schemaname, t.relname::text AS relname,
           c.relname::text AS indexrelname, kc.relname::text AS duplicate_of,
           pg_relation_size(r.indexrelid)::float8 AS bytes
    FROM r
    JOIN pg_class c ON c.oid = r.indexrelid
    JOIN pg_class kc ON kc.oid = r.keeper
    JOIN pg_class t ON t.oid = r.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE r.nth > 1
    ORDER BY 5 DESC, 1, 2, 3";

struct IndexHealth {
    config: RelationsConfig,
    /// Unused, invalid and duplicate indexes of the last run beyond `max_listed`.
    dropped: u64,
}

impl Collector for IndexHealth {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let client = &session.client;
            let max = self.config.max_listed;
            let min_bytes = i64::try_from(self.config.unused_min_bytes).unwrap_or(i64::MAX);
            let mut out = Vec::new();

            let unused = client.query(UNUSED_SQL, &[&min_bytes]).await?;
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

            let duplicates = client.query(DUPLICATE_SQL, &[]).await?;
            out.push(
                DUPLICATE_INDEXES
                    .family()
                    .with(&[], duplicates.len() as f64),
            );
            out.push(listed(DUPLICATE_SIZE, &duplicates, max, |r| r.get("bytes")));

            self.dropped = [&unused, &invalid, &duplicates]
                .iter()
                .map(|rows| rows.len().saturating_sub(max) as u64)
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
