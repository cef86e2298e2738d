//! The cap applied as rows arrive ([`Cut`]): a big catalogue's rows are never all in memory.
//!
//! A row can only be kept if it is among the best `max` of at least one ranking key (rank
//! descending, then id): key 0's best `max` alone are `max` rows whose best position is under
//! `max`, and they come before any row whose best position is not. So the cut holds the
//! candidates, and whenever they grow past a bound it rolls up every row that is in no key's
//! best `max` so far: later rows can only push such a row further down, so this is exact.
//! Positions computed among the candidates are exact wherever they are under `max`, which is
//! all the final order needs.
//!
//! Where a rolled-up row goes (its table's `(other)` row, or the global one) depends on
//! whether its table keeps a series, known only at the end: rolled-up rows are summed per
//! table, and a table's sum moves into the global row at a chunk's end once the table has no
//! candidate left (a table's rows all come in its own chunk). Partitions (rolled up into their
//! root) are summed by key as they arrive and ranked only at the end, their rows complete.

use std::collections::{HashMap, HashSet};

use super::columns::{Agg, Col};
use super::rollup::{aggs, merge, CounterRollups, Id, Key, Series};

/// The cap of one pass (tables or indexes), fed row by row.
pub struct Cut<'r> {
    max: usize,
    per_table: bool,
    aggs: Vec<Agg>,
    /// Counters whose `(other)` rows never step down (`relation_stats`); `None` for gauges.
    counters: Option<&'r mut CounterRollups>,
    /// Slots of an `(other)` accumulator after its values: the counters' gains.
    extra: usize,
    /// Rows of partition trees, summed by key: complete only once every chunk is read.
    trees: HashMap<Key, Series>,
    /// Tables of those rows: their sums stay apart until the end.
    open: HashSet<u32>,
    /// Rows that may still be kept.
    candidates: Vec<Series>,
    /// How many candidates each table has (per-table cuts).
    candidate_tables: HashMap<u32, u32>,
    /// Rolled-up rows summed per table, while the table may still keep a series.
    partials: HashMap<u32, Box<[f64]>>,
    /// The global `(other)` row's sum.
    other: Option<Box<[f64]>>,
    /// Rows seen, partition trees counted once.
    rows: u64,
}

impl<'r> Cut<'r> {
    /// A cut keeping at most `max` rows of `cols`; with `per_table`, the rest of a table that
    /// keeps series goes to its own `(other)` row.
    pub fn new(
        max: usize,
        per_table: bool,
        cols: &[Col],
        mut counters: Option<&'r mut CounterRollups>,
    ) -> Cut<'r> {
        let extra = counters.as_deref_mut().map_or(0, |c| c.begin(cols));
        Cut {
            max,
            per_table,
            aggs: aggs(cols),
            counters,
            extra,
            trees: HashMap::new(),
            open: HashSet::new(),
            candidates: Vec::new(),
            candidate_tables: HashMap::new(),
            partials: HashMap::new(),
            other: None,
            rows: 0,
        }
    }

    /// One row; `in_tree` when it belongs to a partition tree rolled up into its root (other
    /// rows may share its key, in any chunk).
    pub fn push(&mut self, series: Series, in_tree: bool) {
        let Id::Relation(key) = series.id else {
            return;
        };
        if in_tree {
            self.open.insert(key.table);
            match self.trees.get_mut(&key) {
                Some(tree) => tree.absorb(&series, &self.aggs),
                None => {
                    self.rows += 1;
                    self.trees.insert(key, series);
                }
            }
            return;
        }
        self.rows += 1;
        self.consider(series);
    }

    /// Every row of the chunk's tables has been read.
    pub fn chunk_end(&mut self) {
        let done: Vec<u32> = self
            .partials
            .keys()
            .copied()
            .filter(|t| !self.candidate_tables.contains_key(t) && !self.open.contains(t))
            .collect();
        for table in done {
            if let Some(sum) = self.partials.remove(&table) {
                self.add_sum(&sum);
            }
        }
    }

    fn consider(&mut self, series: Series) {
        if let Id::Relation(key) = series.id {
            *self.candidate_tables.entry(key.table).or_default() += 1;
        }
        self.candidates.push(series);
        let keys = self.candidates[0].rank().len().max(1);
        if self.candidates.len() >= (4 * keys * self.max).max(1024) {
            self.prune();
        }
    }

    /// Rolls up the candidates that are in no ranking key's best `max`.
    fn prune(&mut self) {
        let n = self.candidates.len();
        let top = self.max.min(n);
        let keys = self.candidates.first().map_or(0, |s| s.rank().len());
        let mut keep = vec![false; n];
        let mut order: Vec<u32> = (0..n as u32).collect();
        for k in 0..keys {
            let all = &self.candidates;
            let ahead = |a: &u32, b: &u32| ahead(k, &all[*a as usize], &all[*b as usize]);
            if top > 0 && top < n {
                order.select_nth_unstable_by(top - 1, ahead);
            }
            for &i in &order[..top] {
                keep[i as usize] = true;
            }
        }
        if keys == 0 {
            keep.iter_mut().take(top).for_each(|k| *k = true);
        }
        let candidates = std::mem::take(&mut self.candidates);
        for (series, keep) in candidates.into_iter().zip(keep) {
            if keep {
                self.candidates.push(series);
            } else {
                self.roll(series);
            }
        }
    }

    /// Sums a row that will not be exported on its own into its table's sum (or the global
    /// one).
    fn roll(&mut self, series: Series) {
        let table = match series.id {
            Id::Relation(key) => {
                if let Some(count) = self.candidate_tables.get_mut(&key.table) {
                    *count -= 1;
                    if *count == 0 {
                        self.candidate_tables.remove(&key.table);
                    }
                }
                Some(key.table)
            }
            _ => None,
        };
        let (width, extra) = (self.aggs.len(), self.extra);
        let sum = match table {
            Some(table) if self.per_table => self
                .partials
                .entry(table)
                .or_insert_with(|| empty(width, extra)),
            _ => self.other.get_or_insert_with(|| empty(width, extra)),
        };
        merge(&mut sum[..width], series.values(), &self.aggs);
        if let Some(counters) = self.counters.as_deref_mut() {
            counters.rolled(&mut sum[width..], &series);
        }
    }

    /// Adds a table's sum into the global `(other)` row's.
    fn add_sum(&mut self, sum: &[f64]) {
        let width = self.aggs.len();
        let other = self.other.get_or_insert_with(|| empty(width, self.extra));
        merge(&mut other[..width], &sum[..width], &self.aggs);
        for (total, gain) in other[width..].iter_mut().zip(&sum[width..]) {
            *total += gain;
        }
    }

    /// The series to export (kept ones by key, then the `(other)` rows) and how many rows were
    /// not exported on their own.
    pub fn finish(mut self) -> (Vec<Series>, u64) {
        for (_, tree) in std::mem::take(&mut self.trees) {
            self.consider(tree);
        }
        let candidates = std::mem::take(&mut self.candidates);
        let n = candidates.len();
        let keys = candidates.first().map_or(0, |s| s.rank().len());
        let mut best = vec![usize::MAX; n];
        let mut order: Vec<u32> = (0..n as u32).collect();
        for k in 0..keys {
            order.sort_by(|&a, &b| ahead(k, &candidates[a as usize], &candidates[b as usize]));
            for (position, &i) in order.iter().enumerate() {
                best[i as usize] = best[i as usize].min(position);
            }
        }
        order.sort_by(|&a, &b| {
            let (x, y) = (&candidates[a as usize], &candidates[b as usize]);
            best[a as usize]
                .cmp(&best[b as usize])
                .then_with(|| first_rank(y).total_cmp(&first_rank(x)))
                .then_with(|| x.id.cmp(&y.id))
        });
        let mut keep = vec![false; n];
        for &i in order.iter().take(self.max) {
            keep[i as usize] = true;
        }
        let mut kept = Vec::with_capacity(self.max.min(n));
        for (series, keep) in candidates.into_iter().zip(keep) {
            if keep {
                kept.push(series);
            } else {
                self.roll(series);
            }
        }
        kept.sort_by_key(|s| s.id);
        if let Some(counters) = self.counters.as_deref_mut() {
            kept.iter().for_each(|s| counters.kept(s));
        }
        let tables_kept: HashSet<u32> = kept
            .iter()
            .filter_map(|s| match s.id {
                Id::Relation(key) => Some(key.table),
                _ => None,
            })
            .collect();
        let mut own: Vec<(u32, Box<[f64]>)> = Vec::new();
        for (table, sum) in std::mem::take(&mut self.partials) {
            if tables_kept.contains(&table) {
                own.push((table, sum));
            } else {
                self.add_sum(&sum);
            }
        }
        own.sort_by_key(|(table, _)| *table);
        let dropped = self.rows.saturating_sub(kept.len() as u64);
        let sums = own
            .into_iter()
            .map(|(table, sum)| (Id::OtherOf(table), sum))
            .chain(self.other.take().map(|sum| (Id::Other, sum)));
        let width = self.aggs.len();
        for (id, sum) in sums {
            kept.push(match self.counters.as_deref_mut() {
                Some(counters) => counters.row(id, &sum[..width], &sum[width..]),
                None => Series::row(id, &sum[..width]),
            });
        }
        if let Some(counters) = self.counters.as_deref_mut() {
            counters.end();
        }
        (kept, dropped)
    }
}

/// An empty `(other)` sum: values missing (NaN), gains 0.
fn empty(width: usize, extra: usize) -> Box<[f64]> {
    let mut sum = vec![f64::NAN; width + extra];
    sum[width..].iter_mut().for_each(|g| *g = 0.0);
    sum.into()
}

/// Whether `a` ranks before `b` by ranking key `k`: larger first, then by id.
fn ahead(k: usize, a: &Series, b: &Series) -> std::cmp::Ordering {
    b.rank()[k]
        .total_cmp(&a.rank()[k])
        .then_with(|| a.id.cmp(&b.id))
}

fn first_rank(s: &Series) -> f64 {
    s.rank().first().copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;

    const COLS: &[Col] = &[
        Col::sum("size", Metric::gauge("t_size", &[], "Size.")),
        Col::sum("scans", Metric::gauge("t_scans", &[], "Scans.")),
    ];

    /// The cut computed over every row at once: best position over all rows, then the rest
    /// summed by where it goes.
    fn at_once(all: &[Series], max: usize, per_table: bool) -> Vec<(Id, Vec<f64>)> {
        let n = all.len();
        let mut best = vec![usize::MAX; n];
        for k in 0..2 {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| ahead(k, &all[a], &all[b]));
            for (position, &i) in order.iter().enumerate() {
                best[i] = best[i].min(position);
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            best[a]
                .cmp(&best[b])
                .then_with(|| first_rank(&all[b]).total_cmp(&first_rank(&all[a])))
                .then_with(|| all[a].id.cmp(&all[b].id))
        });
        let kept: HashSet<usize> = order.iter().take(max).copied().collect();
        let table = |s: &Series| match s.id {
            Id::Relation(key) => key.table,
            _ => 0,
        };
        let tables: HashSet<u32> = kept.iter().map(|&i| table(&all[i])).collect();
        let mut out: Vec<(Id, Vec<f64>)> = kept
            .iter()
            .map(|&i| (all[i].id, all[i].values().to_vec()))
            .collect();
        let mut rest: std::collections::BTreeMap<Id, Vec<f64>> = Default::default();
        for (_, s) in all.iter().enumerate().filter(|(i, _)| !kept.contains(i)) {
            let id = if per_table && tables.contains(&table(s)) {
                Id::OtherOf(table(s))
            } else {
                Id::Other
            };
            let sum = rest.entry(id).or_insert_with(|| vec![0.0; 2]);
            sum.iter_mut().zip(s.values()).for_each(|(a, v)| *a += v);
        }
        out.extend(rest);
        out.sort_by_key(|(id, _)| *id);
        out
    }

    #[test]
    fn rows_cut_as_they_arrive_match_the_cut_of_all_rows_at_once() {
        // Enough rows for several prunes, with many ties among the ranks.
        let mut seed = 7u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let mut all = Vec::new();
        for table in 1..=900u32 {
            for i in 0..3 {
                let (size, scans) = (next(50) as f64, next(30) as f64);
                let key = Key {
                    relation: table * 10 + i,
                    table,
                };
                all.push(Series::new(
                    key,
                    vec![Some(size), Some(scans)],
                    vec![size, scans],
                ));
            }
        }
        for (max, per_table) in [(5, true), (5, false), (40, true), (3000, true)] {
            let expected = at_once(&all, max, per_table);
            // Tables in chunks of 100, their rows in a shuffled order within the chunk.
            let mut cut = Cut::new(max, per_table, COLS, None);
            for chunk in all.chunks(300) {
                let mut rows = chunk.to_vec();
                for i in (1..rows.len()).rev() {
                    rows.swap(i, next(i as u64 + 1) as usize);
                }
                rows.into_iter().for_each(|s| cut.push(s, false));
                cut.chunk_end();
            }
            let (out, dropped) = cut.finish();
            let out: Vec<(Id, Vec<f64>)> =
                out.iter().map(|s| (s.id, s.values().to_vec())).collect();
            assert_eq!(out, expected, "max {max}, per_table {per_table}");
            assert_eq!(dropped, all.len().saturating_sub(max) as u64);
        }
    }
}
