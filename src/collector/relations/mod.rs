//! Tables and indexes of the target database: what index and partitioning plans act on.
//!
//! Three collectors share the `[relations]` section:
//! * `relation_stats` (every 60s): scan and row counters per table and per index
//!   (`pg_stat_user_tables`, `pg_stat_user_indexes`); catalog reads only, cheap.
//! * `relation_sizes` (every 5m): heap, TOAST, index and total sizes plus bloat estimates. Size
//!   functions stat every file of every relation, which is not free on a big catalog, hence the
//!   slower interval of their own.
//! * `index_health` (every 5m): unused, invalid and duplicate indexes.
//!
//! Partitioned tables are the `partitions` definition (`collectors/partitions.toml`).
//!
//! Cardinality: a catalogue of 10 000 tables must not become 10 000 series. Per-table and
//! per-index series are capped (`max_tables`, `max_indexes`); the rows kept are the best ranked
//! by any of size or activity (a row ranked 3rd by size and 900th by scans ranks 3rd), and
//! the rest are summed: index rows into an `indexrelname="(other)"` row of their table when
//! that table has series, everything else into one `(other)` row (whose counters add their
//! members' increases, so they never step down as members change). Partitions are rolled up into
//! their root table (and partition indexes into the root's index) unless `partition_children`
//! is set. The SQL does the grouping; Rust does the ranking and the cut, so it is unit-tested.
//! Estimates (bloat) are explained in docs/relations.md.

pub mod settings;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::time::Duration;

use tokio_postgres::Row;

use self::settings::RelationsConfig;
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, Spec};
use crate::metric::{Family, FamilyDesc, MetricType};

/// Label value of rows summed beyond a cap.
pub const OTHER: &str = "(other)";

const TABLE_LABELS: &[&str] = &["schemaname", "relname", "parent"];
const INDEX_LABELS: &[&str] = &["schemaname", "relname", "parent", "indexrelname"];

/// How a value column combines when rows are summed into `(other)`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Agg {
    Sum,
    Max,
}

/// One value column of a query and the family it feeds.
struct Col {
    column: &'static str,
    family: &'static str,
    kind: MetricType,
    help: &'static str,
    agg: Agg,
}

const fn counter(column: &'static str, family: &'static str, help: &'static str) -> Col {
    Col {
        column,
        family,
        kind: MetricType::Counter,
        help,
        agg: Agg::Sum,
    }
}

const fn gauge(column: &'static str, family: &'static str, help: &'static str) -> Col {
    Col {
        column,
        family,
        kind: MetricType::Gauge,
        help,
        agg: Agg::Sum,
    }
}

const TABLE_STATS: &[Col] = &[
    counter("seq_scan", "pg_table_seq_scans_total", "Sequential scans of the table (pg_stat_user_tables.seq_scan)."),
    counter("seq_tup_read", "pg_table_seq_tup_read_total", "Rows read by sequential scans: a high rate on a big table is the missing-index signal."),
    counter("idx_scan", "pg_table_idx_scans_total", "Index scans on the table's indexes."),
    counter("idx_tup_fetch", "pg_table_idx_tup_fetch_total", "Live rows fetched by index scans."),
    counter("n_tup_ins", "pg_table_tup_inserted_total", "Rows inserted."),
    counter("n_tup_upd", "pg_table_tup_updated_total", "Rows updated (HOT updates included)."),
    counter("n_tup_del", "pg_table_tup_deleted_total", "Rows deleted."),
    counter("n_tup_hot_upd", "pg_table_tup_hot_updated_total", "Rows updated without touching any index (HOT); updated minus HOT is what indexes cost on writes."),
];

const INDEX_STATS: &[Col] = &[
    counter("idx_scan", "pg_index_scans_total", "Scans of the index (pg_stat_user_indexes.idx_scan)."),
    counter("idx_tup_read", "pg_index_tup_read_total", "Index entries returned by scans of the index."),
    counter("idx_tup_fetch", "pg_index_tup_fetch_total", "Live table rows fetched by simple index scans of the index."),
    Col {
        column: "last_scan",
        family: "pg_index_last_scan_timestamp_seconds",
        kind: MetricType::Gauge,
        help: "Unix time of the last scan of the index (PostgreSQL 16+, last_idx_scan; absent when never scanned).",
        agg: Agg::Max,
    },
];

const TABLE_SIZES: &[Col] = &[
    gauge("total_bytes", "pg_table_size_bytes", "Total size of the table: heap, TOAST and indexes (pg_total_relation_size); deriv() of it is the growth rate."),
    gauge("heap_bytes", "pg_table_heap_size_bytes", "Main data of the table with its free space and visibility maps, TOAST excluded."),
    gauge("toast_bytes", "pg_table_toast_size_bytes", "TOAST table of the table with its index."),
    gauge("index_bytes", "pg_table_indexes_size_bytes", "All indexes of the table (pg_indexes_size)."),
    gauge("bloat_bytes", "pg_table_bloat_bytes", "Estimated heap space beyond what the live rows need at the table's fillfactor, from catalog statistics (see docs/relations.md); absent without statistics."),
];

const INDEX_SIZES: &[Col] = &[
    gauge("index_bytes", "pg_index_size_bytes", "Size of the index (pg_relation_size)."),
    gauge("bloat_bytes", "pg_index_bloat_bytes", "Estimated B-tree space beyond what its entries need at the index's fillfactor, from catalog statistics (see docs/relations.md); B-tree only, absent without statistics."),
];

pub fn stats_spec() -> Spec {
    Spec {
        name: "relation_stats",
        description: "Scans and row counters per table and per index (pg_stat_user_tables, pg_stat_user_indexes), capped by [relations].",
        default_interval: Duration::from_secs(60),
        enabled_by_default: true,
        lane: super::Lane::Main,
        families: || {
            let mut all = descs(TABLE_STATS, TABLE_LABELS);
            all.extend(descs(INDEX_STATS, INDEX_LABELS));
            all
        },
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

pub fn sizes_spec() -> Spec {
    Spec {
        name: "relation_sizes",
        description: "Heap, TOAST, index and total sizes and bloat estimates per table and index, on a slow interval (size functions stat files).",
        default_interval: Duration::from_secs(300),
        enabled_by_default: true,
        lane: super::Lane::Main,
        families: || {
            let mut all = descs(TABLE_SIZES, TABLE_LABELS);
            all.extend(descs(INDEX_SIZES, INDEX_LABELS));
            all
        },
        build: |ctx: &BuildContext| {
            Box::new(RelationSizes {
                config: ctx.relations.clone(),
                dropped: 0,
            })
        },
    }
}

pub fn health_spec() -> Spec {
    Spec {
        name: "index_health",
        description:
            "Unused (idx_scan = 0 since the statistics reset), invalid and duplicate indexes.",
        default_interval: Duration::from_secs(300),
        enabled_by_default: true,
        lane: super::Lane::Main,
        families: health_families,
        build: |ctx: &BuildContext| {
            Box::new(IndexHealth {
                config: ctx.relations.clone(),
                dropped: 0,
            })
        },
    }
}

fn descs(cols: &[Col], labels: &[&str]) -> Vec<FamilyDesc> {
    let mut all = vec!["target"];
    all.extend_from_slice(labels);
    cols.iter()
        .map(|c| FamilyDesc::new(c.family, c.kind, &all, c.help))
        .collect()
}

fn health_families() -> Vec<FamilyDesc> {
    use MetricType::Gauge;
    let one = ["target", "schemaname", "relname", "indexrelname"];
    vec![
        FamilyDesc::new("pg_index_unused_indexes", Gauge, &["target"], "Indexes never scanned since the statistics were reset, at least [relations] unused_min_bytes large, not backing a primary key, unique or exclusion constraint (partition indexes judged with their parent index)."),
        FamilyDesc::new("pg_index_unused_reclaimable_bytes", Gauge, &["target"], "Total size of the unused indexes: what dropping them all would free."),
        FamilyDesc::new("pg_index_unused_size_bytes", Gauge, &one, "Size of each unused index, the largest [relations] max_listed."),
        FamilyDesc::new("pg_index_usage_stats_age_seconds", Gauge, &["target"], "Age of the statistics the unused judgment rests on: now - stats_reset of this database (the server start when never reset, a lower bound). A reset yesterday proves little."),
        FamilyDesc::new("pg_index_invalid_indexes", Gauge, &["target"], "Indexes with indisvalid = false: a failed CREATE INDEX CONCURRENTLY (or one running now), still updated on writes but never used for reads."),
        FamilyDesc::new("pg_index_invalid", Gauge, &one, "Always 1, for each invalid index (the first [relations] max_listed by size)."),
        FamilyDesc::new("pg_index_duplicate_indexes", Gauge, &["target"], "Valid indexes identical to another of the same table (method, columns, expressions, predicate, operator classes, collations, options): droppable."),
        FamilyDesc::new("pg_index_duplicate_size_bytes", Gauge, &["target", "schemaname", "relname", "indexrelname", "duplicate_of"], "Size of each duplicate index, the largest [relations] max_listed; duplicate_of is the one to keep (a constraint's index when there is one)."),
    ]
}

/// One row of a capped query: its labels, values (by `Col`) and ranking keys (larger first).
#[derive(Debug, Clone, PartialEq)]
struct Series {
    labels: Vec<String>,
    values: Vec<Option<f64>>,
    rank: Vec<f64>,
}

/// Reads rows: labels by name, values by `Col`, and every `rank_*` column as a ranking key.
fn read(rows: &[Row], labels: &[&str], cols: &[Col]) -> Result<Vec<Series>, CollectError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let rank_at: Vec<usize> = first
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name().starts_with("rank_"))
        .map(|(i, _)| i)
        .collect();
    rows.iter()
        .map(|row| {
            Ok(Series {
                labels: labels
                    .iter()
                    .map(|l| row.try_get::<_, String>(*l))
                    .collect::<Result<_, _>>()?,
                values: cols
                    .iter()
                    .map(|c| row.try_get::<_, Option<f64>>(c.column))
                    .collect::<Result<_, _>>()?,
                rank: rank_at
                    .iter()
                    .map(|&i| row.try_get::<_, Option<f64>>(i).map(|v| v.unwrap_or(0.0)))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// The outcome of a cap: the series kept one by one, and the others grouped under the
/// labels of the `(other)` row they are rolled into.
#[derive(Debug)]
struct Capped {
    kept: Vec<Series>,
    rolled: BTreeMap<Vec<String>, Vec<Series>>,
    /// Series not exported individually.
    dropped: u64,
}

/// Keeps at most `max` series and groups the rest. A series' position is its best rank over
/// all ranking keys, ties broken by the first key, then by labels (stable across runs).
/// With `per_table`, the first three labels name the table: the rest of a table that kept
/// series goes to its own `(other)` row, everything else to one `(other)` row.
fn select(mut all: Vec<Series>, max: usize, per_table: bool) -> Capped {
    if all.len() <= max {
        return Capped {
            kept: all,
            rolled: BTreeMap::new(),
            dropped: 0,
        };
    }
    let keys = all.first().map_or(0, |s| s.rank.len());
    let mut best = vec![usize::MAX; all.len()];
    for k in 0..keys {
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by(|&a, &b| all[b].rank[k].total_cmp(&all[a].rank[k]));
        for (position, &i) in order.iter().enumerate() {
            best[i] = best[i].min(position);
        }
    }
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| {
        best[a]
            .cmp(&best[b])
            .then_with(|| {
                let (x, y) = (all[a].rank.first(), all[b].rank.first());
                y.unwrap_or(&0.0).total_cmp(x.unwrap_or(&0.0))
            })
            .then_with(|| all[a].labels.cmp(&all[b].labels))
    });
    let keep: BTreeSet<usize> = order.iter().take(max).copied().collect();
    let tables_kept: BTreeSet<Vec<String>> = keep
        .iter()
        .map(|&i| all[i].labels[..3.min(all[i].labels.len())].to_vec())
        .collect();
    let width = all[0].labels.len();
    let mut rolled: BTreeMap<Vec<String>, Vec<Series>> = BTreeMap::new();
    let mut kept = Vec::with_capacity(max);
    let dropped = (all.len() - max) as u64;
    for (i, series) in all.drain(..).enumerate() {
        if keep.contains(&i) {
            kept.push(series);
            continue;
        }
        let table = series.labels[..3.min(width)].to_vec();
        let labels = if per_table && tables_kept.contains(&table) {
            let mut l = table;
            l.push(OTHER.to_string());
            l
        } else {
            let mut l = vec![OTHER.to_string(), OTHER.to_string(), String::new()];
            l.resize(width, OTHER.to_string());
            l
        };
        rolled.entry(labels).or_default().push(series);
    }
    // Kept series in a stable order (by labels); the rollups follow them.
    kept.sort_by(|a, b| a.labels.cmp(&b.labels));
    Capped {
        kept,
        rolled,
        dropped,
    }
}

/// One `(other)` row: its members' values combined column by column.
fn combine(labels: Vec<String>, members: &[Series], aggs: &[Agg]) -> Series {
    let mut values = vec![None; aggs.len()];
    for member in members {
        for ((acc, value), agg) in values.iter_mut().zip(&member.values).zip(aggs) {
            *acc = match (*acc, *value, agg) {
                (None, v, _) => v,
                (a, None, _) => a,
                (Some(a), Some(v), Agg::Sum) => Some(a + v),
                (Some(a), Some(v), Agg::Max) => Some(a.max(v)),
            };
        }
    }
    Series {
        labels,
        values,
        rank: Vec::new(),
    }
}

/// Keeps at most `max` series and sums the rest into `(other)` rows (see [`select`]), for
/// gauges. Returns the series to export and how many were not exported individually.
fn cap(all: Vec<Series>, max: usize, per_table: bool, aggs: &[Agg]) -> (Vec<Series>, u64) {
    let Capped {
        mut kept,
        rolled,
        dropped,
    } = select(all, max, per_table);
    kept.extend(
        rolled
            .into_iter()
            .map(|(labels, members)| combine(labels, &members, aggs)),
    );
    (kept, dropped)
}

/// Counters of `(other)` rows that never step down.
///
/// Summing the members' cumulative counters would drop whenever a member moves into a series
/// of its own (it grew, or others shrank), and rate() reads a drop as a counter reset: a
/// spike. So an `(other)` row starts as the sum of its members, and from then on adds, at each
/// run, the increase of the relations it holds: a relation that just joined adds what it
/// gained since the last run (when it was kept, or elsewhere), one seen for the first time adds
/// nothing, and a counter that went down (statistics reset) counts from 0.
#[derive(Debug, Default)]
struct CounterRollups {
    /// Every relation's values at the last run, kept or rolled up, by a hash of its labels
    /// (NaN for a missing value). A catalogue of 10 000 tables has 30 000 relations: a hash and
    /// a boxed slice each, rather than their label strings again.
    last: HashMap<u64, Box<[f64]>>,
    /// Each `(other)` row's values at the last run.
    rows: BTreeMap<Vec<String>, Vec<Option<f64>>>,
}

/// The key of a relation in [`CounterRollups::last`]; 64 bits make a collision among a
/// catalogue's relations vanishingly unlikely, and one would only misstate one increase.
fn label_hash(labels: &[String]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    labels.hash(&mut hasher);
    hasher.finish()
}

fn packed(values: &[Option<f64>]) -> Box<[f64]> {
    values.iter().map(|v| v.unwrap_or(f64::NAN)).collect()
}

impl CounterRollups {
    /// The series to export: the kept ones, then the `(other)` rows with monotonic counters
    /// (columns of other types are combined as [`cap`] does).
    fn apply(&mut self, capped: Capped, cols: &[Col]) -> Vec<Series> {
        let aggs = aggs(cols);
        let mut last = HashMap::with_capacity(self.last.len());
        let mut rows = BTreeMap::new();
        let mut out = capped.kept;
        for series in &out {
            last.insert(label_hash(&series.labels), packed(&series.values));
        }
        for (labels, members) in capped.rolled {
            let mut row = combine(labels, &members, &aggs);
            if let Some(previous) = self.rows.get(&row.labels) {
                for (at, col) in cols.iter().enumerate() {
                    if col.kind != MetricType::Counter {
                        continue;
                    }
                    let gained: f64 = members
                        .iter()
                        .map(|m| {
                            let before = self
                                .last
                                .get(&label_hash(&m.labels))
                                .map(|v| v[at])
                                .filter(|v| !v.is_nan());
                            increase(before, m.values[at])
                        })
                        .sum();
                    row.values[at] = Some(previous[at].unwrap_or(0.0) + gained);
                }
            }
            for member in &members {
                last.insert(label_hash(&member.labels), packed(&member.values));
            }
            rows.insert(row.labels.clone(), row.values.clone());
            out.push(row);
        }
        // Rows and relations gone this run are forgotten: the state stays as large as the
        // catalogue.
        self.last = last;
        self.rows = rows;
        out
    }
}

/// How much a counter gained between two runs: 0 for a relation not seen before, the whole
/// value after a reset.
fn increase(before: Option<f64>, now: Option<f64>) -> f64 {
    match (before, now) {
        (Some(b), Some(n)) if n >= b => n - b,
        (Some(_), Some(n)) => n,
        _ => 0.0,
    }
}

fn families(series: &[Series], labels: &[&str], cols: &[Col]) -> Vec<Family> {
    cols.iter()
        .enumerate()
        .map(|(at, col)| {
            let mut family = Family::new(col.family, col.help, col.kind);
            for s in series {
                if let Some(value) = s.values[at] {
                    let pairs: Vec<(&str, &str)> = labels
                        .iter()
                        .copied()
                        .zip(s.labels.iter().map(String::as_str))
                        .collect();
                    family.push(&pairs, value);
                }
            }
            family
        })
        .collect()
}

fn aggs(cols: &[Col]) -> Vec<Agg> {
    cols.iter().map(|c| c.agg).collect()
}

/// Where a relation is reported: itself, or (partitions, unless `$1` = partition_children)
/// its partitioned root. Expects a CTE row with `relid`, `schemaname`, `relname` and
/// `relispartition`; yields `out_schema`, `out_name` and `parent`.
const ROLLUP: &str = "
    LEFT JOIN LATERAL (
        SELECT rn.nspname::text AS root_schema, r.relname::text AS root_name
        FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
        WHERE x.relispartition AND r.oid = pg_partition_root(x.relid)
    ) root ON true";

const OUT_TABLE: &str = "
    CASE WHEN $1 OR root.root_name IS NULL THEN x.schemaname ELSE root.root_schema END AS schemaname,
    CASE WHEN $1 OR root.root_name IS NULL THEN x.relname ELSE root.root_name END AS relname,
    CASE WHEN $1 AND root.root_name IS NOT NULL
         THEN root.root_schema || '.' || root.root_name ELSE '' END AS parent";

/// Same for an index: a partition's index is reported as its root partitioned index.
const OUT_INDEX: &str = "
    CASE WHEN $1 OR NOT x.index_is_partition THEN x.indexrelname
         ELSE coalesce((SELECT ri.relname::text FROM pg_class ri
                        WHERE ri.oid = pg_partition_root(x.indexrelid)), x.indexrelname)
    END AS indexrelname";

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

struct RelationSizes {
    config: RelationsConfig,
    dropped: u64,
}

impl Collector for RelationSizes {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let children = &self.config.partition_children;
            let rows = session
                .client
                .query(&table_sizes_sql(), &[children])
                .await?;
            let tables = read(&rows, TABLE_LABELS, TABLE_SIZES)?;
            let (tables, dropped_tables) =
                cap(tables, self.config.max_tables, false, &aggs(TABLE_SIZES));
            let rows = session
                .client
                .query(&index_sizes_sql(), &[children])
                .await?;
            let indexes = read(&rows, INDEX_LABELS, INDEX_SIZES)?;
            let (indexes, dropped_indexes) =
                cap(indexes, self.config.max_indexes, true, &aggs(INDEX_SIZES));
            self.dropped = dropped_tables + dropped_indexes;
            let mut out = families(&tables, TABLE_LABELS, TABLE_SIZES);
            out.extend(families(&indexes, INDEX_LABELS, INDEX_SIZES));
            Ok(out)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped)
    }
}

/// Unused indexes, judged per index tree: a partition's index counts with its root
/// partitioned index (it cannot be dropped alone), so the tree is unused only when no
/// partition's index was scanned.
const UNUSED_SQL: &str = "
    WITH s AS (
        SELECT coalesce(CASE WHEN c.relispartition THEN pg_partition_root(s.indexrelid) END,
                        s.indexrelid) AS idx,
               s.indexrelid, s.idx_scan
        FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid
        WHERE s.schemaname !~ '^pg_temp_'
    ), z AS (
        SELECT idx FROM s GROUP BY idx HAVING sum(idx_scan) = 0
    ), g AS (
        -- Sizes (a stat per file) only for the never-scanned trees.
        SELECT z.idx, 0 AS scans, sum(pg_relation_size(s.indexrelid)) AS bytes
        FROM z JOIN s ON s.idx = z.idx GROUP BY z.idx
    )
    SELECT n.nspname::text AS schemaname, t.relname::text AS relname,
           ic.relname::text AS indexrelname, g.bytes::float8 AS bytes
    FROM g
    JOIN pg_index x ON x.indexrelid = g.idx
    JOIN pg_class ic ON ic.oid = g.idx
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = ic.relnamespace
    WHERE g.scans = 0 AND x.indisvalid
      AND NOT (x.indisprimary OR x.indisunique OR x.indisexclusion)
      AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = g.idx)
      AND g.bytes >= $1::int8
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
            let one = ["schemaname", "relname", "indexrelname"];

            let unused = client.query(UNUSED_SQL, &[&min_bytes]).await?;
            let total: f64 = unused.iter().map(|r| r.get::<_, f64>("bytes")).sum();
            out.push(
                Family::gauge("pg_index_unused_indexes", help("pg_index_unused_indexes"))
                    .with(&[], unused.len() as f64),
            );
            out.push(
                Family::gauge(
                    "pg_index_unused_reclaimable_bytes",
                    help("pg_index_unused_reclaimable_bytes"),
                )
                .with(&[], total),
            );
            out.push(listed(
                "pg_index_unused_size_bytes",
                &unused,
                &one,
                max,
                |r| r.get("bytes"),
            ));
            let age: Option<f64> = client.query_one(STATS_AGE_SQL, &[]).await?.get(0);
            let mut family = Family::gauge(
                "pg_index_usage_stats_age_seconds",
                help("pg_index_usage_stats_age_seconds"),
            );
            if let Some(age) = age {
                family.push(&[], age);
            }
            out.push(family);

            let invalid = client.query(INVALID_SQL, &[]).await?;
            out.push(
                Family::gauge("pg_index_invalid_indexes", help("pg_index_invalid_indexes"))
                    .with(&[], invalid.len() as f64),
            );
            out.push(listed("pg_index_invalid", &invalid, &one, max, |_| 1.0));

            let duplicates = client.query(DUPLICATE_SQL, &[]).await?;
            out.push(
                Family::gauge(
                    "pg_index_duplicate_indexes",
                    help("pg_index_duplicate_indexes"),
                )
                .with(&[], duplicates.len() as f64),
            );
            out.push(listed(
                "pg_index_duplicate_size_bytes",
                &duplicates,
                &["schemaname", "relname", "indexrelname", "duplicate_of"],
                max,
                |r| r.get("bytes"),
            ));

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

fn help(name: &str) -> String {
    health_families()
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| f.help)
        .unwrap_or_default()
}

/// A family with one sample per row (the first `max`; rows come ordered largest first).
fn listed(
    name: &str,
    rows: &[Row],
    labels: &[&str],
    max: usize,
    value: impl Fn(&Row) -> f64,
) -> Family {
    let mut family = Family::gauge(name, help(name));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn index(table: &str, index: &str, size: f64, scans: f64) -> Series {
        Series {
            labels: vec!["s".into(), table.into(), String::new(), index.into()],
            values: vec![Some(scans), Some(size)],
            rank: vec![size, scans],
        }
    }

    #[test]
    fn under_the_cap_everything_is_kept() {
        let all = vec![index("a", "a1", 1.0, 1.0), index("a", "a2", 2.0, 0.0)];
        let (kept, dropped) = cap(all.clone(), 2, true, &[Agg::Sum, Agg::Sum]);
        assert_eq!((kept, dropped), (all, 0));
    }

    #[test]
    fn keeps_the_largest_and_the_most_scanned_and_sums_the_rest() {
        let all = vec![
            index("a", "big", 100.0, 0.0),
            index("a", "busy", 1.0, 500.0),
            index("a", "small", 2.0, 1.0),
            index("b", "idle", 3.0, 2.0),
            index("c", "tiny", 0.5, 0.0),
        ];
        let (kept, dropped) = cap(all, 2, true, &[Agg::Sum, Agg::Sum]);
        assert_eq!(dropped, 3);
        let names: Vec<&str> = kept.iter().map(|s| s.labels[3].as_str()).collect();
        assert_eq!(names, ["big", "busy", OTHER, OTHER]);
        // Table a kept series: its rest is summed in its own row; b and c go to the global one.
        let row = |labels: [&str; 4]| kept.iter().find(|s| s.labels == labels).map(|s| &s.values);
        assert_eq!(
            row(["s", "a", "", OTHER]),
            Some(&vec![Some(1.0), Some(2.0)])
        );
        assert_eq!(
            row([OTHER, OTHER, "", OTHER]),
            Some(&vec![Some(2.0), Some(3.5)])
        );
    }

    #[test]
    fn tables_sum_into_one_row_and_max_aggregates_take_the_maximum() {
        let table = |name: &str, size: f64, last: Option<f64>| Series {
            labels: vec!["s".into(), name.into(), String::new()],
            values: vec![Some(size), last],
            rank: vec![size],
        };
        let all = vec![
            table("a", 10.0, Some(5.0)),
            table("b", 5.0, Some(7.0)),
            table("c", 1.0, None),
        ];
        let (kept, dropped) = cap(all, 1, false, &[Agg::Sum, Agg::Max]);
        assert_eq!(dropped, 2);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].labels, [OTHER, OTHER, ""]);
        assert_eq!(kept[1].values, [Some(6.0), Some(7.0)]);
    }

    /// A table's stats row: one counter and one gauge-like column (last scan, Max).
    fn stats(name: &str, scans: f64) -> Series {
        Series {
            labels: vec!["s".into(), name.into(), String::new()],
            values: vec![Some(scans), Some(scans)],
            rank: vec![scans],
        }
    }

    const STATS_COLS: &[Col] = &[
        counter("scans", "t_scans_total", "Scans."),
        Col {
            column: "last",
            family: "t_last",
            kind: MetricType::Gauge,
            help: "Last.",
            agg: Agg::Max,
        },
    ];

    fn other_row(out: &[Series]) -> Vec<Option<f64>> {
        out.iter()
            .find(|s| s.labels[0] == OTHER)
            .expect("an (other) row")
            .values
            .clone()
    }

    #[test]
    fn other_counters_never_step_down_when_members_change() {
        let mut rollups = CounterRollups::default();
        // Run 1: a is kept; b and c are summed (10 + 5).
        let run = |rollups: &mut CounterRollups, rows: Vec<Series>| {
            rollups.apply(select(rows, 1, false), STATS_COLS)
        };
        let out = run(
            &mut rollups,
            vec![stats("a", 100.0), stats("b", 10.0), stats("c", 5.0)],
        );
        assert_eq!(other_row(&out), [Some(15.0), Some(10.0)]);
        // Run 2: b overtakes a, which joins c in the row. A plain sum would jump to 107 (all
        // of a's history); the row adds a's and c's gains since run 1 (1 + 1).
        let out = run(
            &mut rollups,
            vec![stats("a", 101.0), stats("b", 500.0), stats("c", 6.0)],
        );
        assert_eq!(out[0].labels[1], "b");
        assert_eq!(other_row(&out), [Some(17.0), Some(101.0)]);
        // Run 3: a new table d (first seen: adds nothing), c reset to 2 (counts from 0).
        let out = run(
            &mut rollups,
            vec![
                stats("a", 103.0),
                stats("b", 600.0),
                stats("c", 2.0),
                stats("d", 40.0),
            ],
        );
        assert_eq!(other_row(&out), [Some(17.0 + 2.0 + 2.0), Some(103.0)]);
        // Run 4: a takes the lead back; b leaves for the row and adds only its gain.
        let out = run(
            &mut rollups,
            vec![
                stats("a", 10_000.0),
                stats("b", 601.0),
                stats("c", 2.0),
                stats("d", 41.0),
            ],
        );
        assert_eq!(out[0].labels[1], "a");
        assert_eq!(other_row(&out), [Some(21.0 + 1.0 + 1.0), Some(601.0)]);
    }

    #[test]
    fn counter_rollups_forget_what_is_gone() {
        let mut rollups = CounterRollups::default();
        rollups.apply(
            select(vec![stats("a", 3.0), stats("b", 1.0)], 1, false),
            STATS_COLS,
        );
        assert_eq!((rollups.last.len(), rollups.rows.len()), (2, 1));
        // Under the cap: no (other) row, and b, dropped, is forgotten.
        let out = rollups.apply(select(vec![stats("a", 4.0)], 1, false), STATS_COLS);
        assert_eq!(out.len(), 1);
        assert_eq!((rollups.last.len(), rollups.rows.len()), (1, 0));
    }

    #[test]
    fn config_bounds_name_the_key() {
        let config = RelationsConfig {
            max_indexes: 0,
            ..Default::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("relations.max_indexes"));
        assert!(RelationsConfig::default().validate().is_ok());
    }
}
