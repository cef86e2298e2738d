//! The rows of the capped queries, pure logic: rows are read as [`Series`] keyed by relation
//! oids (not names: a catalog of 50 000 tables has 150 000 indexes, and their names would be
//! most of the exporter's memory), cut to the caps as they arrive ([`super::cut::Cut`]), and
//! [`CounterRollups`] keeps the counters of the `(other)` rows from stepping down when their
//! members change. Only then are the few kept relations named, and [`families`] writes the
//! series out through their `Col` declarations.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Row;

use super::columns::{Agg, Col};
use super::last::Last;
use crate::collector::CollectError;
use crate::metric::{Family, MetricType};

/// Label value of rows summed beyond a cap.
pub const OTHER: &str = "(other)";

/// The relation a row reports (a table, or an index) and the table it belongs to (itself for a
/// table), after partitions are rolled up into their root: the grouping key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub relation: u32,
    pub table: u32,
}

/// What an exported row stands for: one relation, the rest of a table's indexes, or the rest
/// of everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    Relation(Key),
    OtherOf(u32),
    Other,
}

/// One row of a capped query: what it stands for, its values (by `Col`, NaN where missing)
/// and then its ranking keys (larger first), in one allocation: a big catalogue has hundreds
/// of thousands of rows, and a second allocation and `Option` tags per row would double them.
#[derive(Debug, Clone)]
pub struct Series {
    pub(super) id: Id,
    cells: Box<[f64]>,
    /// How many of `cells` are values; the rest are ranking keys.
    width: u16,
}

impl PartialEq for Series {
    /// Bit for bit, so that a missing value (NaN) equals itself.
    fn eq(&self, other: &Series) -> bool {
        self.id == other.id
            && self.width == other.width
            && self.cells.len() == other.cells.len()
            && self
                .cells
                .iter()
                .zip(other.cells.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Series {
    fn packed(id: Id, values: impl ExactSizeIterator<Item = Option<f64>>, rank: &[f64]) -> Series {
        let width = values.len() as u16;
        let cells = values
            .map(|v| v.unwrap_or(f64::NAN))
            .chain(rank.iter().copied())
            .collect();
        Series { id, cells, width }
    }

    /// A series from values computed in Rust (in the order of its `Col` table) and ranking keys.
    pub fn new(key: Key, values: Vec<Option<f64>>, rank: Vec<f64>) -> Series {
        Series::packed(Id::Relation(key), values.into_iter(), &rank)
    }

    /// One relation's row: `key` and `table` oid columns, values by `Col`, every `rank_*`
    /// column a ranking key.
    pub fn from_row(row: &Row, cols: &[Col]) -> Result<Series, CollectError> {
        let width = cols.len();
        let ranks = row
            .columns()
            .iter()
            .filter(|c| c.name().starts_with("rank_"));
        // Exactly sized: the boxed slice below is then the same allocation, not a copy.
        let mut cells = Vec::with_capacity(width + ranks.count());
        for col in cols {
            cells.push(
                row.try_get::<_, Option<f64>>(col.column)?
                    .unwrap_or(f64::NAN),
            );
        }
        for (i, column) in row.columns().iter().enumerate() {
            if column.name().starts_with("rank_") {
                cells.push(row.try_get::<_, Option<f64>>(i)?.unwrap_or(0.0));
            }
        }
        Ok(Series {
            id: Id::Relation(Key {
                relation: row.try_get("key")?,
                table: row.try_get("table_key")?,
            }),
            cells: cells.into_boxed_slice(),
            width: width as u16,
        })
    }

    pub(super) fn values(&self) -> &[f64] {
        &self.cells[..self.width as usize]
    }

    fn values_mut(&mut self) -> &mut [f64] {
        &mut self.cells[..self.width as usize]
    }

    /// The value of column `at`, `None` where missing.
    fn value(&self, at: usize) -> Option<f64> {
        Some(self.cells[at]).filter(|v| !v.is_nan())
    }

    pub(super) fn rank(&self) -> &[f64] {
        &self.cells[self.width as usize..]
    }

    /// Values and ranking keys to adjust, as computed in Rust from other rows.
    pub(super) fn cells_mut(&mut self) -> (&mut [f64], &mut [f64]) {
        self.cells.split_at_mut(self.width as usize)
    }

    /// An `(other)` row of `values`.
    pub(super) fn row(id: Id, values: &[f64]) -> Series {
        Series {
            id,
            cells: values.into(),
            width: values.len() as u16,
        }
    }

    /// Adds a row of the same key (a partition, into its root's row): values combined by
    /// `aggs`, ranking keys summed.
    pub(super) fn absorb(&mut self, other: &Series, aggs: &[Agg]) {
        merge(self.values_mut(), other.values(), aggs);
        let width = self.width as usize;
        for (sum, rank) in self.cells[width..].iter_mut().zip(other.rank()) {
            *sum += rank;
        }
    }
}

/// Adds `values` into `acc` column by column; a missing value (NaN) leaves the other side as
/// is.
pub(super) fn merge(acc: &mut [f64], values: &[f64], aggs: &[Agg]) {
    for ((acc, &value), agg) in acc.iter_mut().zip(values).zip(aggs) {
        if acc.is_nan() {
            *acc = value;
        } else if !value.is_nan() {
            *acc = match agg {
                Agg::Sum => *acc + value,
                Agg::Max => acc.max(value),
            };
        }
    }
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
pub struct CounterRollups {
    /// Every relation's counters at the last run, kept or rolled up.
    last: Last,
    /// Each `(other)` row's values at the last run (NaN where missing).
    rows: BTreeMap<Id, Box<[f64]>>,
    /// The `(other)` rows of the run under way.
    next: BTreeMap<Id, Box<[f64]>>,
    /// The counter columns of the rows, by position.
    columns: Vec<usize>,
}

impl CounterRollups {
    /// A run of [`super::cut::Cut`] over rows of `cols` starts; returns how many gains an
    /// `(other)` sum keeps after its values (one per counter column).
    pub fn begin(&mut self, cols: &[Col]) -> usize {
        self.columns = (0..cols.len())
            .filter(|&at| cols[at].metric.kind == MetricType::Counter)
            .collect();
        self.last.begin(self.columns.len());
        self.next.clear();
        self.columns.len()
    }

    /// A series exported on its own: its counters are remembered.
    pub fn kept(&mut self, series: &Series) {
        if let Id::Relation(key) = series.id {
            let values = series.values();
            let counters = self.columns.iter().map(|&at| values[at]);
            self.last.remember(key.relation, counters);
        }
    }

    /// A series summed into an `(other)` row: adds what each counter gained since the last
    /// run to `gains`, then remembers it. A relation is kept or rolled up once per run, so
    /// `last` still holds the last run's values here.
    pub fn rolled(&mut self, gains: &mut [f64], series: &Series) {
        if let Id::Relation(key) = series.id {
            for (c, (&at, gain)) in self.columns.iter().zip(gains.iter_mut()).enumerate() {
                *gain += increase(self.last.get(key.relation, c), series.value(at));
            }
        }
        self.kept(series);
    }

    /// The `(other)` row `id` of combined `values` and `gains`: a row that existed at the last
    /// run adds the gains to its counters, a new one starts from its members' sum.
    pub fn row(&mut self, id: Id, values: &[f64], gains: &[f64]) -> Series {
        let mut row = Series::row(id, values);
        if let Some(previous) = self.rows.get(&id) {
            for (&at, gain) in self.columns.iter().zip(gains) {
                let before = Some(previous[at]).filter(|v| !v.is_nan());
                row.values_mut()[at] = before.unwrap_or(0.0) + gain;
            }
        }
        self.next.insert(id, row.values().into());
        row
    }

    /// The run is over: rows and relations it did not see are forgotten.
    pub fn end(&mut self) {
        self.last.end();
        self.rows = std::mem::take(&mut self.next);
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

/// The oids to name before [`families`]: the kept relations, and the tables of per-table
/// `(other)` rows.
pub fn to_name(series: &[Series]) -> (Vec<u32>, Vec<u32>) {
    let mut relations = Vec::new();
    let mut tables = Vec::new();
    for s in series {
        match s.id {
            Id::Relation(key) => relations.push(key.relation),
            Id::OtherOf(table) => tables.push(table),
            Id::Other => {}
        }
    }
    (relations, tables)
}

/// The labels of a row: a relation's from `names` (by oid), a per-table `(other)` row's from
/// its table's, the global `(other)` row's all `(other)` but `parent`. `width` is the number of
/// label columns. A relation dropped before it could be named is left out (`None`).
fn labels_of(id: Id, width: usize, names: &HashMap<u32, Vec<String>>) -> Option<Vec<String>> {
    match id {
        Id::Relation(key) => names.get(&key.relation).cloned(),
        Id::OtherOf(table) => names.get(&table).map(|t| {
            let mut l = t[..3.min(t.len())].to_vec();
            l.resize(width, OTHER.to_string());
            l
        }),
        Id::Other => {
            let mut l = vec![OTHER.to_string(), OTHER.to_string(), String::new()];
            l.resize(width, OTHER.to_string());
            Some(l)
        }
    }
}

pub fn families(
    series: &[Series],
    names: &HashMap<u32, Vec<String>>,
    labels: &[&str],
    cols: &[Col],
) -> Vec<Family> {
    let named: Vec<(Vec<String>, &Series)> = series
        .iter()
        .filter_map(|s| labels_of(s.id, labels.len(), names).map(|l| (l, s)))
        .collect();
    cols.iter()
        .enumerate()
        .map(|(at, col)| {
            let mut family = col.metric.family();
            for (values, s) in &named {
                if let Some(value) = s.value(at) {
                    let pairs: Vec<(&str, &str)> = labels
                        .iter()
                        .copied()
                        .zip(values.iter().map(String::as_str))
                        .collect();
                    family.push(&pairs, value);
                }
            }
            family
        })
        .collect()
}

pub fn aggs(cols: &[Col]) -> Vec<Agg> {
    cols.iter().map(|c| c.agg).collect()
}

#[cfg(test)]
mod tests {
    use super::super::cut::Cut;
    use super::*;
    use crate::metric::Metric;

    const SUMS: &[Col] = &[
        Col::sum("a", Metric::gauge("t_a", &[], "A.")),
        Col::sum("b", Metric::gauge("t_b", &[], "B.")),
    ];
    const SUM_MAX: &[Col] = &[
        Col::sum("size", Metric::gauge("t_size_bytes", &[], "Size.")),
        Col::max("last", Metric::gauge("t_last", &[], "Last.")),
    ];

    /// The rows through a cut, in one chunk, none in a partition tree.
    fn cap(all: Vec<Series>, max: usize, per_table: bool, cols: &[Col]) -> (Vec<Series>, u64) {
        let mut cut = Cut::new(max, per_table, cols, None);
        all.into_iter().for_each(|s| cut.push(s, false));
        cut.chunk_end();
        cut.finish()
    }

    /// One run of `relation_stats`' table pass over `rows`.
    fn apply(rollups: &mut CounterRollups, rows: Vec<Series>, max: usize) -> Vec<Series> {
        let mut cut = Cut::new(max, false, STATS_COLS, Some(rollups));
        rows.into_iter().for_each(|s| cut.push(s, false));
        cut.chunk_end();
        cut.finish().0
    }

    /// Index `relation` of table `table`.
    fn index(table: u32, relation: u32, size: f64, scans: f64) -> Series {
        Series::new(
            Key { relation, table },
            vec![Some(scans), Some(size)],
            vec![size, scans],
        )
    }

    impl Series {
        fn options(&self) -> Vec<Option<f64>> {
            (0..self.width as usize).map(|at| self.value(at)).collect()
        }
    }

    fn relation(id: Id) -> u32 {
        match id {
            Id::Relation(key) => key.relation,
            _ => 0,
        }
    }

    #[test]
    fn under_the_cap_everything_is_kept() {
        let all = vec![index(1, 11, 1.0, 1.0), index(1, 12, 2.0, 0.0)];
        let (kept, dropped) = cap(all.clone(), 2, true, SUMS);
        assert_eq!((kept, dropped), (all, 0));
    }

    #[test]
    fn keeps_the_largest_and_the_most_scanned_and_sums_the_rest() {
        let all = vec![
            index(1, 11, 100.0, 0.0), // big
            index(1, 12, 1.0, 500.0), // busy
            index(1, 13, 2.0, 1.0),   // small
            index(2, 21, 3.0, 2.0),   // idle
            index(3, 31, 0.5, 0.0),   // tiny
        ];
        let (kept, dropped) = cap(all, 2, true, SUMS);
        assert_eq!(dropped, 3);
        let ids: Vec<Id> = kept.iter().map(|s| s.id).collect();
        assert_eq!(
            ids,
            [
                Id::Relation(Key {
                    relation: 11,
                    table: 1
                }),
                Id::Relation(Key {
                    relation: 12,
                    table: 1
                }),
                Id::OtherOf(1),
                Id::Other
            ]
        );
        // Table 1 kept series: its rest is summed in its own row; 2 and 3 go to the global one.
        assert_eq!(kept[2].options(), [Some(1.0), Some(2.0)]);
        assert_eq!(kept[3].options(), [Some(2.0), Some(3.5)]);
    }

    /// Table `relation` (its own table).
    fn table(relation: u32, size: f64, last: Option<f64>) -> Series {
        Series::new(
            Key {
                relation,
                table: relation,
            },
            vec![Some(size), last],
            vec![size],
        )
    }

    #[test]
    fn tables_sum_into_one_row_and_max_aggregates_take_the_maximum() {
        let all = vec![
            table(1, 10.0, Some(5.0)),
            table(2, 5.0, Some(7.0)),
            table(3, 1.0, None),
        ];
        let (kept, dropped) = cap(all, 1, false, SUM_MAX);
        assert_eq!(dropped, 2);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].id, Id::Other);
        assert_eq!(kept[1].options(), [Some(6.0), Some(7.0)]);
    }

    #[test]
    fn partitions_group_into_their_root_and_labels_come_from_names() {
        // Two partitions' rows reported under root 5, a plain table 6.
        let mut cut = Cut::new(10, false, SUM_MAX, None);
        // 5's rows are partitions of a tree, arriving in two chunks.
        cut.push(table(5, 10.0, Some(1.0)), true);
        cut.chunk_end();
        cut.push(table(5, 4.0, Some(3.0)), true);
        cut.push(table(6, 1.0, None), false);
        cut.chunk_end();
        let (kept, _) = cut.finish();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].options(), [Some(14.0), Some(3.0)]);
        assert_eq!(kept[0].rank(), [14.0]);
        let names = HashMap::from([(5, vec!["s".into(), "root".into(), String::new()])]);
        let families = families(&kept, &names, &["schemaname", "relname", "parent"], SUM_MAX);
        // 6 was not named (dropped meanwhile): left out rather than exported without labels.
        assert_eq!(families[0].samples.len(), 1);
    }

    /// A table's stats row: one counter and one gauge-like column (last scan, Max).
    fn stats(relation: u32, scans: f64) -> Series {
        Series::new(
            Key {
                relation,
                table: relation,
            },
            vec![Some(scans), Some(scans)],
            vec![scans],
        )
    }

    const STATS_COLS: &[Col] = &[
        Col::sum("scans", Metric::counter("t_scans_total", &[], "Scans.")),
        Col::max("last", Metric::gauge("t_last", &[], "Last.")),
    ];

    fn other_row(out: &[Series]) -> Vec<Option<f64>> {
        out.iter()
            .find(|s| s.id == Id::Other)
            .expect("an (other) row")
            .options()
    }

    #[test]
    fn other_counters_never_step_down_when_members_change() {
        let (a, b, c, d) = (1, 2, 3, 4);
        let mut rollups = CounterRollups::default();
        // Run 1: a is kept; b and c are summed (10 + 5).
        let run = |rollups: &mut CounterRollups, rows: Vec<Series>| apply(rollups, rows, 1);
        let out = run(
            &mut rollups,
            vec![stats(a, 100.0), stats(b, 10.0), stats(c, 5.0)],
        );
        assert_eq!(other_row(&out), [Some(15.0), Some(10.0)]);
        // Run 2: b overtakes a, which joins c in the row. A plain sum would jump to 107 (all
        // of a's history); the row adds a's and c's gains since run 1 (1 + 1).
        let out = run(
            &mut rollups,
            vec![stats(a, 101.0), stats(b, 500.0), stats(c, 6.0)],
        );
        assert_eq!(relation(out[0].id), b);
        assert_eq!(other_row(&out), [Some(17.0), Some(101.0)]);
        // Run 3: a new table d (first seen: adds nothing), c reset to 2 (counts from 0).
        let out = run(
            &mut rollups,
            vec![
                stats(a, 103.0),
                stats(b, 600.0),
                stats(c, 2.0),
                stats(d, 40.0),
            ],
        );
        assert_eq!(other_row(&out), [Some(17.0 + 2.0 + 2.0), Some(103.0)]);
        // Run 4: a takes the lead back; b leaves for the row and adds only its gain.
        let out = run(
            &mut rollups,
            vec![
                stats(a, 10_000.0),
                stats(b, 601.0),
                stats(c, 2.0),
                stats(d, 41.0),
            ],
        );
        assert_eq!(relation(out[0].id), a);
        assert_eq!(other_row(&out), [Some(21.0 + 1.0 + 1.0), Some(601.0)]);
    }

    #[test]
    fn counter_rollups_forget_what_is_gone() {
        let mut rollups = CounterRollups::default();
        apply(&mut rollups, vec![stats(1, 3.0), stats(2, 1.0)], 1);
        assert_eq!((rollups.last.len(), rollups.rows.len()), (2, 1));
        // Under the cap: no (other) row, and 2, dropped, is forgotten.
        let out = apply(&mut rollups, vec![stats(1, 4.0)], 1);
        assert_eq!(out.len(), 1);
        assert_eq!((rollups.last.len(), rollups.rows.len()), (1, 0));
    }
}
