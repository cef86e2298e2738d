//! The cap on per-table and per-index series, pure logic: rows are read as [`Series`], the
//! best ranked are kept, the rest are combined into `(other)` rows ([`select`], [`combine`],
//! [`cap`]), and [`CounterRollups`] keeps the counters of those rows from stepping down when
//! their members change. Then [`families`] writes the series out through their `Col`
//! declarations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};

use tokio_postgres::Row;

use super::columns::{Agg, Col};
use crate::collector::CollectError;
use crate::metric::{Family, MetricType};

/// Label value of rows summed beyond a cap.
pub const OTHER: &str = "(other)";

/// One row of a capped query: its labels, values (by `Col`) and ranking keys (larger first).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    labels: Vec<String>,
    values: Vec<Option<f64>>,
    rank: Vec<f64>,
}

impl Series {
    /// A series from values computed in Rust (in the order of its `Col` table) and ranking keys.
    pub fn new(labels: Vec<String>, values: Vec<Option<f64>>, rank: Vec<f64>) -> Series {
        Series {
            labels,
            values,
            rank,
        }
    }

    /// One relation's row under `labels`: values by `Col`, every `rank_*` column a ranking key.
    pub fn from_row(row: &Row, labels: Vec<String>, cols: &[Col]) -> Result<Series, CollectError> {
        Ok(Series {
            labels,
            values: cols
                .iter()
                .map(|c| row.try_get::<_, Option<f64>>(c.column))
                .collect::<Result<_, _>>()?,
            rank: row
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, c)| c.name().starts_with("rank_"))
                .map(|(i, _)| row.try_get::<_, Option<f64>>(i).map(|v| v.unwrap_or(0.0)))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Series with the same labels made one (partitions into their root): values combined by
/// `aggs`, ranking keys summed. Rows read one per relation are grouped here rather than by the
/// query, so that the query can be paged and never sorts the catalog.
pub fn group(all: impl IntoIterator<Item = Series>, aggs: &[Agg]) -> Vec<Series> {
    let mut grouped: HashMap<Vec<String>, Series> = HashMap::new();
    for mut series in all {
        let labels = std::mem::take(&mut series.labels);
        match grouped.entry(labels) {
            std::collections::hash_map::Entry::Occupied(mut at) => {
                let into = at.get_mut();
                merge(&mut into.values, &series.values, aggs);
                for (sum, rank) in into.rank.iter_mut().zip(&series.rank) {
                    *sum += rank;
                }
            }
            std::collections::hash_map::Entry::Vacant(at) => {
                at.insert(series);
            }
        }
    }
    grouped
        .into_iter()
        .map(|(labels, series)| Series { labels, ..series })
        .collect()
}

/// The outcome of a cap: the series kept one by one, and the others grouped under the
/// labels of the `(other)` row they are rolled into.
#[derive(Debug)]
pub struct Capped {
    kept: Vec<Series>,
    rolled: BTreeMap<Vec<String>, Vec<Series>>,
    /// Series not exported individually.
    pub dropped: u64,
}

/// Keeps at most `max` series and groups the rest. A series' position is its best rank over
/// all ranking keys, ties broken by the first key, then by labels (stable across runs).
/// With `per_table`, the first three labels name the table: the rest of a table that kept
/// series goes to its own `(other)` row, everything else to one `(other)` row.
pub fn select(mut all: Vec<Series>, max: usize, per_table: bool) -> Capped {
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
        merge(&mut values, &member.values, aggs);
    }
    Series {
        labels,
        values,
        rank: Vec::new(),
    }
}

/// Adds `values` into `acc` column by column; a missing value leaves the other side as is.
fn merge(acc: &mut [Option<f64>], values: &[Option<f64>], aggs: &[Agg]) {
    for ((acc, value), agg) in acc.iter_mut().zip(values).zip(aggs) {
        *acc = match (*acc, *value, agg) {
            (None, v, _) => v,
            (a, None, _) => a,
            (Some(a), Some(v), Agg::Sum) => Some(a + v),
            (Some(a), Some(v), Agg::Max) => Some(a.max(v)),
        };
    }
}

/// Keeps at most `max` series and sums the rest into `(other)` rows (see [`select`]), for
/// gauges. Returns the series to export and how many were not exported individually.
pub fn cap(all: Vec<Series>, max: usize, per_table: bool, aggs: &[Agg]) -> (Vec<Series>, u64) {
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
pub struct CounterRollups {
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
    pub fn apply(&mut self, capped: Capped, cols: &[Col]) -> Vec<Series> {
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
                    if col.metric.kind != MetricType::Counter {
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

pub fn families(series: &[Series], labels: &[&str], cols: &[Col]) -> Vec<Family> {
    cols.iter()
        .enumerate()
        .map(|(at, col)| {
            let mut family = col.metric.family();
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

pub fn aggs(cols: &[Col]) -> Vec<Agg> {
    cols.iter().map(|c| c.agg).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;

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
        Col::sum("scans", Metric::counter("t_scans_total", &[], "Scans.")),
        Col::max("last", Metric::gauge("t_last", &[], "Last.")),
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
}
