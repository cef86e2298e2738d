//! Every relation's counters at the last run ([`Last`]), for the `(other)` rows' increases.
//!
//! A big catalogue has hundreds of thousands of relations, each with a few counters, and this
//! state lives as long as the exporter: it is most of what pgkpi holds per relation. So it is
//! two flat vectors sorted by oid (no hash table: a lookup is a binary search, the runs read a
//! few hundred thousand rows a minute at most), and a counter takes four bytes: the counters
//! are counts, almost always under 2³², and the rare larger or fractional value is kept exactly
//! beside them ([`Last::wide`]). A map of slots with f64 cells cost three times as much.

use std::collections::HashMap;

/// A counter's cell: its value when it fits, else one of these markers.
const MISSING: u32 = u32::MAX;
/// The value is in [`Last::wide`].
const WIDE: u32 = u32::MAX - 1;

/// The cell of `value`, `None` when it needs [`Last::wide`].
fn narrow(value: f64) -> Option<u32> {
    if value.is_nan() {
        Some(MISSING)
    } else if (0.0..f64::from(WIDE)).contains(&value) && value.fract() == 0.0 {
        Some(value as u32)
    } else {
        None
    }
}

#[derive(Debug, Default)]
pub struct Last {
    /// Counters per relation.
    width: usize,
    /// The relations remembered, sorted by oid.
    oids: Vec<u32>,
    /// Their counters, `width` cells per relation in the order of `oids`.
    cells: Vec<u32>,
    /// Which of `oids` the run under way has seen (the others are forgotten at its end).
    seen: Vec<bool>,
    /// Relations the run under way saw first, as `width + 1` cells: the oid, then the
    /// counters. Merged into `oids` at its end.
    newcomers: Vec<u32>,
    /// Values a cell cannot hold, by oid and counter.
    wide: HashMap<(u32, usize), f64>,
}

impl Last {
    /// A run starts over relations with `width` counters each (a new width forgets all).
    pub fn begin(&mut self, width: usize) {
        if width != self.width {
            *self = Last {
                width,
                ..Last::default()
            };
        }
        self.seen.iter_mut().for_each(|seen| *seen = false);
        self.newcomers.clear();
    }

    /// Counter `c` of `oid` at the last run, if it was seen and had one.
    pub fn get(&self, oid: u32, c: usize) -> Option<f64> {
        let at = self.oids.binary_search(&oid).ok()?;
        match self.cells[at * self.width + c] {
            MISSING => None,
            WIDE => self.wide.get(&(oid, c)).copied(),
            cell => Some(f64::from(cell)),
        }
    }

    /// Records `counters` (`width` of them) as the relation's last ones.
    pub fn remember(&mut self, oid: u32, counters: impl Iterator<Item = f64>) {
        let width = self.width;
        let cells = match self.oids.binary_search(&oid) {
            Ok(at) => {
                self.seen[at] = true;
                &mut self.cells[at * width..(at + 1) * width]
            }
            // Past every oid remembered: in place already. The runs read relations in oid
            // order, so a first run appends nearly all of them here rather than keep them as
            // newcomers and copy them over at its end (two copies of everything at once).
            Err(at) if at == self.oids.len() => {
                self.oids.push(oid);
                self.seen.push(true);
                self.cells.resize(self.cells.len() + width, MISSING);
                &mut self.cells[at * width..]
            }
            Err(_) => {
                self.newcomers.push(oid);
                let from = self.newcomers.len();
                self.newcomers.resize(from + width, MISSING);
                &mut self.newcomers[from..]
            }
        };
        for (c, (cell, value)) in cells.iter_mut().zip(counters).enumerate() {
            if *cell == WIDE {
                self.wide.remove(&(oid, c));
            }
            *cell = narrow(value).unwrap_or_else(|| {
                self.wide.insert((oid, c), value);
                WIDE
            });
        }
    }

    /// The run is over: the relations it did not see are forgotten, the ones it saw first
    /// take their place in oid order.
    pub fn end(&mut self) {
        let width = self.width;
        let mut kept = 0;
        for at in 0..self.oids.len() {
            if self.seen[at] {
                self.oids[kept] = self.oids[at];
                self.cells
                    .copy_within(at * width..(at + 1) * width, kept * width);
                kept += 1;
            }
        }
        self.oids.truncate(kept);
        self.cells.truncate(kept * width);
        if !self.newcomers.is_empty() {
            self.merge_newcomers();
        }
        self.seen.clear();
        self.seen.resize(self.oids.len(), false);
        // A catalogue that shrank a lot (or a first run's growth) leaves spare capacity.
        if self.oids.capacity() > self.oids.len() + self.oids.len() / 4 + 64 {
            self.oids.shrink_to_fit();
            self.cells.shrink_to_fit();
            self.seen.shrink_to_fit();
        }
        self.newcomers = Vec::new();
        let oids = &self.oids;
        self.wide
            .retain(|(oid, _), _| oids.binary_search(oid).is_ok());
    }

    /// Merges the newcomers (in the order the run saw them; the last record of an oid wins)
    /// into the sorted vectors, in place: they grow by the newcomers and are filled from the
    /// back, so the relations already there are never held twice.
    fn merge_newcomers(&mut self) {
        let (width, stride) = (self.width, self.width + 1);
        let records = self.newcomers.len() / stride;
        let mut order: Vec<u32> = (0..records as u32).collect();
        // Stable: of two records of one oid, the later stays later.
        order.sort_by_key(|&r| self.newcomers[r as usize * stride]);
        order.dedup_by(|later, earlier| {
            let same = self.newcomers[*later as usize * stride]
                == self.newcomers[*earlier as usize * stride];
            if same {
                *earlier = *later;
            }
            same
        });
        let mut old = self.oids.len();
        self.oids.resize(old + order.len(), 0);
        self.cells.resize(self.oids.len() * width, 0);
        // With `old` relations and `n + 1` newcomers left to place, the greatest of them goes
        // to `old + n`: the slots past it are filled, the ones before it not yet read.
        for (n, &r) in order.iter().enumerate().rev() {
            let record = &self.newcomers[r as usize * stride..(r as usize + 1) * stride];
            while old > 0 && self.oids[old - 1] > record[0] {
                let to = old + n;
                self.oids[to] = self.oids[old - 1];
                self.cells
                    .copy_within((old - 1) * width..old * width, to * width);
                old -= 1;
            }
            let to = old + n;
            self.oids[to] = record[0];
            self.cells[to * width..(to + 1) * width].copy_from_slice(&record[1..]);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.oids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(last: &mut Last, relations: &[(u32, &[f64])]) {
        last.begin(2);
        for (oid, counters) in relations {
            last.remember(*oid, counters.iter().copied());
        }
        last.end();
    }

    #[test]
    fn remembers_what_the_last_run_saw_in_any_order_and_forgets_the_rest() {
        let mut last = Last::default();
        run(
            &mut last,
            &[(30, &[1.0, 2.0]), (10, &[3.0, f64::NAN]), (20, &[5.0, 6.0])],
        );
        assert_eq!(last.get(10, 0), Some(3.0));
        assert_eq!(last.get(10, 1), None, "a missing counter stays missing");
        assert_eq!(last.get(30, 1), Some(2.0));
        run(
            &mut last,
            &[(25, &[7.0, 7.0]), (30, &[8.0, 9.0]), (5, &[1.0, 1.0])],
        );
        assert_eq!(last.len(), 3, "10 and 20 were not seen: forgotten");
        assert_eq!((last.get(10, 0), last.get(20, 0)), (None, None));
        assert_eq!(last.get(30, 0), Some(8.0));
        assert_eq!(last.get(25, 1), Some(7.0));
        assert_eq!(last.get(5, 0), Some(1.0));
        assert_eq!(last.oids, vec![5, 25, 30], "sorted, so lookups can bisect");
    }

    #[test]
    fn values_past_a_cell_are_kept_exactly_until_their_relation_goes() {
        let mut last = Last::default();
        let big = 2f64.powi(40) + 3.0;
        run(
            &mut last,
            &[(1, &[big, 0.5]), (2, &[4_294_967_294.0, 4_294_967_293.0])],
        );
        assert_eq!(last.get(1, 0), Some(big));
        assert_eq!(last.get(1, 1), Some(0.5));
        assert_eq!(
            last.get(2, 0),
            Some(4_294_967_294.0),
            "the first value a cell cannot hold"
        );
        assert_eq!(last.get(2, 1), Some(4_294_967_293.0), "the last one it can");
        run(&mut last, &[(2, &[1.0, 1.0])]);
        assert_eq!(
            last.get(2, 0),
            Some(1.0),
            "a reset counter fits a cell again"
        );
        assert!(
            last.wide.is_empty(),
            "wide values of forgotten or narrowed relations go"
        );
    }

    #[test]
    fn newcomers_out_of_order_are_merged_between_the_relations_kept() {
        let mut last = Last::default();
        run(
            &mut last,
            &[(10, &[1.0, 1.0]), (20, &[2.0, 2.0]), (30, &[3.0, 3.0])],
        );
        // 40 comes in order (appended), 5, 15 and 25 after it (merged), 20 is forgotten.
        run(
            &mut last,
            &[
                (10, &[11.0, 11.0]),
                (30, &[33.0, 33.0]),
                (40, &[44.0, 44.0]),
                (25, &[25.0, 25.0]),
                (5, &[5.0, 5.0]),
                (15, &[15.0, 15.0]),
            ],
        );
        assert_eq!(last.oids, vec![5, 10, 15, 25, 30, 40]);
        let firsts: Vec<Option<f64>> = last.oids.iter().map(|&oid| last.get(oid, 1)).collect();
        assert_eq!(
            firsts,
            [5.0, 11.0, 15.0, 25.0, 33.0, 44.0].map(Some),
            "each relation with its own counters"
        );
        assert_eq!(last.seen.len(), last.oids.len());
    }

    #[test]
    fn a_relation_remembered_twice_in_a_run_keeps_the_later_counters() {
        let mut last = Last::default();
        run(&mut last, &[(7, &[1.0, 1.0]), (7, &[2.0, 2.0])]);
        assert_eq!((last.len(), last.get(7, 0)), (1, Some(2.0)));
        run(&mut last, &[(7, &[3.0, 3.0]), (7, &[4.0, 4.0])]);
        assert_eq!((last.len(), last.get(7, 1)), (1, Some(4.0)));
    }
}
