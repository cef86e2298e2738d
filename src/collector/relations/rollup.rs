//! The cap on per-table and per-index series, pure logic: rows are read as [`Series`] keyed
//! by relation oids (not names: a catalog of 50 000 tables has 150 000 indexes, and their
//! names would be most of the exporter's memory), partitions grouped into their root
//! ([`group`]), the best ranked kept, the rest combined into `(other)` rows ([`select`],
//! [`combine`], [`cap`]), and [`CounterRollups`] keeps the counters of those rows from
//! stepping down when their members change. Only then are the few kept relations named, and
//! [`families`] writes the series out through their `Col` declarations.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio_postgres::Row;

use super::columns::{Agg, Col};
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
    id: Id,
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

    fn values(&self) -> &[f64] {
        &self.cells[..self.width as usize]
    }

    fn values_mut(&mut self) -> &mut [f64] {
        &mut self.cells[..self.width as usize]
    }

    /// The value of column `at`, `None` where missing.
    fn value(&self, at: usize) -> Option<f64> {
        Some(self.cells[at]).filter(|v| !v.is_nan())
    }

    fn rank(&self) -> &[f64] {
        &self.cells[self.width as usize..]
    }
}

/// Series with the same key made one (partitions into their root): values combined by
/// `aggs`, ranking keys summed. Rows read one per relation are grouped here rather than by the
/// query, so that the query can be chunked and never sorts the catalog; sorted in place rather
/// than through a map, so that grouping needs no memory beyond the rows.
pub fn group(mut all: Vec<Series>, aggs: &[Agg]) -> Vec<Series> {
    all.sort_unstable_by_key(|s| s.id);
    all.dedup_by(|later, first| {
        if later.id != first.id {
            return false;
        }
        merge(first.values_mut(), later.values(), aggs);
        let width = first.width as usize;
        for (sum, rank) in first.cells[width..].iter_mut().zip(later.rank()) {
            *sum += rank;
        }
        true
    });
    all
}

/// The outcome of a cap: the series kept one by one, and the others grouped under the
/// `(other)` row they are rolled into.
#[derive(Debug)]
pub struct Capped {
    kept: Vec<Series>,
    /// The series rolled into `(other)` rows, by row and then key: the rows' members one after
    /// the other, in the vector the series arrived in (no second copy of a big catalogue's).
    rolled: Vec<Series>,
    /// Each `(other)` row and how many of `rolled` it holds, in order.
    rows: Vec<(Id, usize)>,
    /// Series not exported individually.
    pub dropped: u64,
}

/// The `(other)` rows of a [`Capped`] with their members.
fn groups<'a>(
    rolled: &'a [Series],
    rows: &'a [(Id, usize)],
) -> impl Iterator<Item = (Id, &'a [Series])> + 'a {
    let mut start = 0;
    rows.iter().map(move |&(id, count)| {
        let members = &rolled[start..start + count];
        start += count;
        (id, members)
    })
}

/// Puts `items[order[i]]` at position `i`, in place, one cycle of the permutation at a time.
fn permute<T>(items: &mut [T], mut order: Vec<u32>) {
    for start in 0..items.len() {
        let mut current = start;
        while order[current] as usize != current {
            let next = order[current] as usize;
            order[current] = current as u32;
            if next == start {
                break;
            }
            items.swap(current, next);
            current = next;
        }
    }
}

/// Keeps at most `max` series and groups the rest. A series' position is its best rank over
/// all ranking keys, ties broken by the first key, then by key (stable across runs). With
/// `per_table`, the rest of a table that kept series goes to its own `(other)` row, everything
/// else to one `(other)` row.
pub fn select(mut all: Vec<Series>, max: usize, per_table: bool) -> Capped {
    if all.len() <= max {
        all.sort_by_key(|s| s.id);
        return Capped {
            kept: all,
            rolled: Vec::new(),
            rows: Vec::new(),
            dropped: 0,
        };
    }
    let keys = all.first().map_or(0, |s| s.rank().len());
    let mut best = vec![usize::MAX; all.len()];
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    for k in 0..keys {
        order.sort_by(|&a, &b| all[b as usize].rank()[k].total_cmp(&all[a as usize].rank()[k]));
        for (position, &i) in order.iter().enumerate() {
            best[i as usize] = best[i as usize].min(position);
        }
    }
    order.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        best[a]
            .cmp(&best[b])
            .then_with(|| {
                let (x, y) = (all[a].rank().first(), all[b].rank().first());
                y.unwrap_or(&0.0).total_cmp(x.unwrap_or(&0.0))
            })
            .then_with(|| all[a].id.cmp(&all[b].id))
    });
    let mut keep = vec![false; all.len()];
    for &i in order.iter().take(max) {
        keep[i as usize] = true;
    }
    drop(order);
    drop(best);
    let tables_kept: BTreeSet<u32> = all
        .iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .filter_map(|(s, _)| match s.id {
            Id::Relation(key) => Some(key.table),
            _ => None,
        })
        .collect();
    let dropped = (all.len() - max) as u64;
    // Where each series goes: its own row (kept) or an `(other)` row. Rolled-up series are
    // ordered first (by row, then key) and kept ones last, so that splitting the kept ones
    // off copies at most `max` series and the rest stays where it is.
    let place: Vec<Option<Id>> = all
        .iter()
        .zip(&keep)
        .map(|(series, &keep)| {
            (!keep).then(|| match series.id {
                Id::Relation(key) if per_table && tables_kept.contains(&key.table) => {
                    Id::OtherOf(key.table)
                }
                _ => Id::Other,
            })
        })
        .collect();
    drop(keep);
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    order.sort_by_key(|&i| {
        let i = i as usize;
        (place[i].is_none(), place[i], all[i].id)
    });
    let mut rows: Vec<(Id, usize)> = Vec::new();
    for &i in &order {
        match (place[i as usize], rows.last_mut()) {
            (None, _) => break,
            (Some(row), Some((last, count))) if *last == row => *count += 1,
            (Some(row), _) => rows.push((row, 1)),
        }
    }
    drop(place);
    permute(&mut all, order);
    // Kept series in a stable order (by key); the rollups follow them.
    let kept = all.split_off(all.len() - max);
    Capped {
        kept,
        rolled: all,
        rows,
        dropped,
    }
}

/// One `(other)` row: its members' values combined column by column.
fn combine(id: Id, members: &[Series], aggs: &[Agg]) -> Series {
    let mut values = vec![f64::NAN; aggs.len()];
    for member in members {
        merge(&mut values, member.values(), aggs);
    }
    Series {
        id,
        cells: values.into(),
        width: aggs.len() as u16,
    }
}

/// Adds `values` into `acc` column by column; a missing value (NaN) leaves the other side as
/// is.
fn merge(acc: &mut [f64], values: &[f64], aggs: &[Agg]) {
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

/// Keeps at most `max` series and sums the rest into `(other)` rows (see [`select`]), for
/// gauges. Returns the series to export and how many were not exported individually.
pub fn cap(all: Vec<Series>, max: usize, per_table: bool, aggs: &[Agg]) -> (Vec<Series>, u64) {
    let Capped {
        mut kept,
        rolled,
        rows,
        dropped,
    } = select(all, max, per_table);
    kept.extend(groups(&rolled, &rows).map(|(id, members)| combine(id, members, aggs)));
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
pub struct CounterRollups {
    /// Every relation's counters at the last run, kept or rolled up.
    last: Last,
    /// Each `(other)` row's values at the last run (NaN where missing).
    rows: BTreeMap<Id, Box<[f64]>>,
    /// Runs so far: a relation not seen by this run is forgotten at its end.
    run: u32,
}

/// The relations' counters at their last run, in flat vectors: a slot per relation oid,
/// `width` values per slot (NaN where missing). A big catalogue has hundreds of thousands of
/// relations: a map of boxed slices cost three times as much, in as many allocations.
#[derive(Debug, Default)]
struct Last {
    slots: HashMap<u32, u32>,
    width: usize,
    values: Vec<f64>,
    /// The run that last wrote each slot.
    runs: Vec<u32>,
    /// Slots of forgotten relations, reused before the vectors grow.
    free: Vec<u32>,
}

impl Last {
    /// Counter `c` of `oid` at its last run, if it was seen and had one.
    fn get(&self, oid: u32, c: usize) -> Option<f64> {
        let slot = *self.slots.get(&oid)? as usize;
        Some(self.values[slot * self.width + c]).filter(|v| !v.is_nan())
    }

    /// Records `counters` (`width` of them) as the relation's last ones.
    fn remember(&mut self, oid: u32, counters: impl Iterator<Item = f64>, run: u32) {
        let slot = match self.slots.get(&oid) {
            Some(&slot) => slot as usize,
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => slot as usize,
                    None => {
                        self.runs.push(run);
                        self.values.resize(self.values.len() + self.width, f64::NAN);
                        self.runs.len() - 1
                    }
                };
                self.slots.insert(oid, slot as u32);
                slot
            }
        };
        self.runs[slot] = run;
        let at = slot * self.width;
        for (cell, value) in self.values[at..at + self.width].iter_mut().zip(counters) {
            *cell = value;
        }
    }

    /// Forgets the relations `run` did not see: the state stays as large as the catalogue.
    fn forget_all_but(&mut self, run: u32) {
        let (runs, free) = (&self.runs, &mut self.free);
        self.slots.retain(|_, slot| {
            let seen = runs[*slot as usize] == run;
            if !seen {
                free.push(*slot);
            }
            seen
        });
        if self.slots.is_empty() {
            *self = Last {
                width: self.width,
                ..Last::default()
            };
        } else if self.slots.capacity() > 2 * self.slots.len().max(64) {
            self.slots.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

impl CounterRollups {
    /// The series to export: the kept ones, then the `(other)` rows with monotonic counters
    /// (columns of other types are combined as [`cap`] does).
    pub fn apply(&mut self, capped: Capped, cols: &[Col]) -> Vec<Series> {
        let aggs = aggs(cols);
        let counters: Vec<usize> = (0..cols.len())
            .filter(|&at| cols[at].metric.kind == MetricType::Counter)
            .collect();
        if self.last.width != counters.len() {
            self.last = Last {
                width: counters.len(),
                ..Last::default()
            };
        }
        self.run = self.run.wrapping_add(1).max(1);
        let run = self.run;
        let remember = |last: &mut Last, series: &Series| {
            if let Id::Relation(key) = series.id {
                let values = series.values();
                last.remember(key.relation, counters.iter().map(|&at| values[at]), run);
            }
        };
        let mut rows = BTreeMap::new();
        let Capped {
            kept: mut out,
            rolled,
            rows: rows_of,
            ..
        } = capped;
        for series in &out {
            remember(&mut self.last, series);
        }
        for (id, members) in groups(&rolled, &rows_of) {
            let mut row = combine(id, members, &aggs);
            if let Some(previous) = self.rows.get(&row.id) {
                for (c, &at) in counters.iter().enumerate() {
                    let gained: f64 = members
                        .iter()
                        .map(|m| {
                            // Still last run's values: a relation is kept or rolled up
                            // once per run, and members are remembered after their row.
                            let before = match m.id {
                                Id::Relation(key) => self.last.get(key.relation, c),
                                _ => None,
                            };
                            increase(before, m.value(at))
                        })
                        .sum();
                    let before = Some(previous[at]).filter(|v| !v.is_nan());
                    row.values_mut()[at] = before.unwrap_or(0.0) + gained;
                }
            }
            for member in members {
                remember(&mut self.last, member);
            }
            rows.insert(row.id, row.values().into());
            out.push(row);
        }
        // Rows and relations gone this run are forgotten.
        self.last.forget_all_but(run);
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
    use super::*;
    use crate::metric::Metric;

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
        let (kept, dropped) = cap(all.clone(), 2, true, &[Agg::Sum, Agg::Sum]);
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
        let (kept, dropped) = cap(all, 2, true, &[Agg::Sum, Agg::Sum]);
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
        let (kept, dropped) = cap(all, 1, false, &[Agg::Sum, Agg::Max]);
        assert_eq!(dropped, 2);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].id, Id::Other);
        assert_eq!(kept[1].options(), [Some(6.0), Some(7.0)]);
    }

    #[test]
    fn partitions_group_into_their_root_and_labels_come_from_names() {
        // Two partitions' rows reported under root 5, a plain table 6.
        let all = vec![
            table(5, 10.0, Some(1.0)),
            table(5, 4.0, Some(3.0)),
            table(6, 1.0, None),
        ];
        let grouped = group(all, &[Agg::Sum, Agg::Max]);
        let (kept, _) = cap(grouped, 10, false, &[Agg::Sum, Agg::Max]);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].options(), [Some(14.0), Some(3.0)]);
        assert_eq!(kept[0].rank(), [14.0]);
        let names = HashMap::from([(5, vec!["s".into(), "root".into(), String::new()])]);
        const COLS: &[Col] = &[
            Col::sum("size", Metric::gauge("t_size_bytes", &[], "Size.")),
            Col::max("last", Metric::gauge("t_last", &[], "Last.")),
        ];
        let families = families(&kept, &names, &["schemaname", "relname", "parent"], COLS);
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
        let run = |rollups: &mut CounterRollups, rows: Vec<Series>| {
            rollups.apply(select(rows, 1, false), STATS_COLS)
        };
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
        rollups.apply(
            select(vec![stats(1, 3.0), stats(2, 1.0)], 1, false),
            STATS_COLS,
        );
        assert_eq!((rollups.last.len(), rollups.rows.len()), (2, 1));
        // Under the cap: no (other) row, and 2, dropped, is forgotten.
        let out = rollups.apply(select(vec![stats(1, 4.0)], 1, false), STATS_COLS);
        assert_eq!(out.len(), 1);
        assert_eq!((rollups.last.len(), rollups.rows.len()), (1, 0));
    }

    #[test]
    fn permute_places_each_item_where_the_order_says() {
        for n in [0usize, 1, 2, 7, 50] {
            // A scrambled order with cycles of several lengths.
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by_key(|&i| (i * 37 + 11) % (n as u32).max(1));
            order.reverse();
            let items: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let expected: Vec<String> = order.iter().map(|&i| items[i as usize].clone()).collect();
            let mut permuted = items.clone();
            permute(&mut permuted, order);
            assert_eq!(permuted, expected, "n = {n}");
        }
    }
}
