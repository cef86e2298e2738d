//! What `relation_sizes` keeps of every table between runs ([`Measures`]): its last sizes and
//! estimates, with its indexes', carried while its fingerprint stays the same.
//!
//! One entry per table of the catalog, for as long as the exporter runs, so the layout is
//! about memory: the tables in one vector sorted by oid (a lookup bisects; no hash table,
//! whose buckets and spare capacity cost more than the entries) and the indexes of every table
//! in one shared vector, each table pointing at its run of it (no allocation per table). At
//! 50 000 tables of two indexes each this is 4 MB, where a map of tables, each with a boxed
//! slice of its indexes, held 5.9 MB (heaptrack).

/// A table's last measure. Sizes are exact byte counts (`f64` holds any file size exactly);
/// estimates are single-precision: they are estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub oid: u32,
    /// The full pass in which its sizes were last measured.
    pub pass: u32,
    pub fingerprint: i64,
    /// The table's own files (every fork), TOAST excluded.
    pub heap_bytes: f64,
    /// Its TOAST table and the TOAST index.
    pub toast_bytes: f64,
    pub bloat_bytes: Estimate,
    /// Its indexes: `count` entries of [`Measures::indexes`] from `first`.
    first: u32,
    count: u32,
}

impl Measured {
    pub fn new(oid: u32, pass: u32, fingerprint: i64) -> Measured {
        Measured {
            oid,
            pass,
            fingerprint,
            heap_bytes: 0.0,
            toast_bytes: 0.0,
            bloat_bytes: Estimate::PENDING,
            first: 0,
            count: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasuredIndex {
    pub oid: u32,
    pub bloat_bytes: Estimate,
    pub bytes: f64,
}

/// A bloat estimate, or none (NaN): the query's NULL when statistics are missing, or
/// [`Estimate::PENDING`] for a table first seen whose estimates wait for their slice.
#[derive(Debug, Clone, Copy)]
pub struct Estimate(f32);

impl Estimate {
    /// Not estimated yet: a NaN of its own, so that it costs no field in [`Measured`].
    pub const PENDING: Estimate = Estimate(f32::from_bits(0x7fc0_0001));

    pub fn new(bytes: Option<f64>) -> Estimate {
        Estimate(bytes.map_or(f32::NAN, |bytes| bytes as f32))
    }

    pub fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(f64::from(self.0))
    }

    pub fn is_pending(self) -> bool {
        self == Estimate::PENDING
    }
}

impl PartialEq for Estimate {
    fn eq(&self, other: &Estimate) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// Every table's last measure, sorted by oid, and their indexes' measures.
#[derive(Debug, Default)]
pub struct Measures {
    tables: Vec<Measured>,
    indexes: Vec<MeasuredIndex>,
    /// Entries of `indexes` no table points at any more (tables measured again with more
    /// indexes, or gone); compacted away once they are a third of the vector.
    unused: usize,
}

impl Measures {
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn get(&self, oid: u32) -> Option<&Measured> {
        let at = self.tables.binary_search_by_key(&oid, |t| t.oid).ok()?;
        Some(&self.tables[at])
    }

    /// Every table, in oid order.
    pub fn tables(&self) -> &[Measured] {
        &self.tables
    }

    pub fn indexes(&self, table: &Measured) -> &[MeasuredIndex] {
        &self.indexes[table.first as usize..(table.first + table.count) as usize]
    }

    /// Index `oid` of table `table`, as last measured.
    pub fn index(&self, table: u32, oid: u32) -> Option<&MeasuredIndex> {
        let table = self.get(table)?;
        self.indexes(table).iter().find(|i| i.oid == oid)
    }

    /// Every file of the table's indexes, stat'ed once by the index measure.
    pub fn index_bytes(&self, table: &Measured) -> f64 {
        self.indexes(table).iter().map(|i| i.bytes).sum()
    }

    /// Every file of the table: what `pg_total_relation_size` adds up.
    pub fn total_bytes(&self, table: &Measured) -> f64 {
        table.heap_bytes + table.toast_bytes + self.index_bytes(table)
    }

    /// Records a table's measure with its indexes', replacing the previous one. A table past
    /// every oid kept is appended; the runs measure in oid order, so that is nearly every new
    /// table, and the rare one below (oids wrapped around) is inserted in place.
    pub fn insert(
        &mut self,
        mut table: Measured,
        indexes: impl ExactSizeIterator<Item = MeasuredIndex>,
    ) {
        let count = indexes.len();
        let at = self.tables.binary_search_by_key(&table.oid, |t| t.oid);
        let reuse = match at {
            Ok(at) if self.tables[at].count as usize >= count => Some(self.tables[at].first),
            _ => None,
        };
        if let Ok(at) = at {
            self.unused += self.tables[at].count as usize - if reuse.is_some() { count } else { 0 };
        }
        table.first = match reuse {
            Some(first) => {
                for (slot, index) in self.indexes[first as usize..].iter_mut().zip(indexes) {
                    *slot = index;
                }
                first
            }
            None => {
                let first = self.indexes.len();
                self.indexes.extend(indexes);
                u32::try_from(first).expect("fewer than 2^32 indexes")
            }
        };
        table.count = count as u32;
        match at {
            Ok(at) => self.tables[at] = table,
            Err(at) => self.tables.insert(at, table),
        }
    }

    /// Keeps the tables `keep` says are still there, then compacts the indexes when a third
    /// of them are unused.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        let mut gone = 0;
        self.tables.retain(|t| {
            let kept = keep(t.oid);
            if !kept {
                gone += t.count as usize;
            }
            kept
        });
        self.unused += gone;
        if self.unused * 3 > self.indexes.len() {
            self.compact();
        }
    }

    /// Moves every table's indexes down over the unused entries, in place: taken in the order
    /// of where they are, each run moves to where the ones before it end, never past itself.
    fn compact(&mut self) {
        let mut order: Vec<u32> = (0..self.tables.len() as u32).collect();
        order.sort_unstable_by_key(|&t| self.tables[t as usize].first);
        let mut end = 0;
        for t in order {
            let table = &mut self.tables[t as usize];
            let (first, count) = (table.first as usize, table.count as usize);
            self.indexes.copy_within(first..first + count, end);
            table.first = end as u32;
            end += count;
        }
        self.indexes.truncate(end);
        self.unused = 0;
        if self.indexes.capacity() > end + end / 4 + 64 {
            self.indexes.shrink_to_fit();
        }
    }

    /// Room for the `tables` of the catalog, so that a first pass does not grow the vector by
    /// doubling (holding the old one and the new one at once), and no more than a quarter
    /// beyond them once the catalog shrank. Runs continuing a first pass ask for the same
    /// room each time, so it is allocated once.
    pub fn reserve_for(&mut self, tables: usize) {
        let tables = tables.max(self.tables.len());
        if self.tables.capacity() > tables + tables / 4 + 64 {
            self.tables.shrink_to(tables);
        } else {
            self.tables.reserve_exact(tables - self.tables.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(oid: u32, bytes: f64) -> MeasuredIndex {
        MeasuredIndex {
            oid,
            bloat_bytes: Estimate::new(None),
            bytes,
        }
    }

    fn table(oid: u32, heap: f64) -> Measured {
        let mut table = Measured::new(oid, 1, 0);
        table.heap_bytes = heap;
        table
    }

    #[test]
    fn stays_small() {
        // One per table and one per index of the catalog, kept between runs.
        assert_eq!(std::mem::size_of::<Measured>(), 48);
        assert_eq!(std::mem::size_of::<MeasuredIndex>(), 16);
    }

    #[test]
    fn tables_are_found_with_their_own_indexes_whatever_the_order_they_came_in() {
        let mut m = Measures::default();
        m.insert(
            table(20, 1.0),
            [index(21, 10.0), index(22, 20.0)].into_iter(),
        );
        m.insert(table(10, 2.0), [index(11, 5.0)].into_iter());
        m.insert(table(30, 3.0), std::iter::empty());
        let oids: Vec<u32> = m.tables().iter().map(|t| t.oid).collect();
        assert_eq!(oids, [10, 20, 30], "sorted, so lookups can bisect");
        let t20 = m.get(20).expect("20");
        assert_eq!((m.index_bytes(t20), m.total_bytes(t20)), (30.0, 31.0));
        assert_eq!(m.index(10, 11).map(|i| i.bytes), Some(5.0));
        assert_eq!(m.index(10, 21), None, "another table's index");
        assert_eq!(m.total_bytes(m.get(30).expect("30")), 3.0);
    }

    #[test]
    fn room_is_made_once_for_the_catalog_and_given_back_when_it_shrinks() {
        let mut m = Measures::default();
        m.reserve_for(1_000);
        let room = m.tables.capacity();
        assert!(room >= 1_000);
        for t in 1..=10 {
            m.insert(table(t, 0.0), std::iter::empty());
        }
        m.retain(|_| true);
        m.reserve_for(1_000);
        assert_eq!(
            m.tables.capacity(),
            room,
            "runs continuing a first pass ask for the same room"
        );
        m.reserve_for(10);
        assert!(
            m.tables.capacity() < 100,
            "a catalog that shrank gives it back"
        );
    }

    #[test]
    fn measuring_again_replaces_and_compaction_keeps_every_table_s_indexes() {
        let mut m = Measures::default();
        for t in 1..=4 {
            m.insert(
                table(t * 10, 0.0),
                [index(t * 10 + 1, 1.0), index(t * 10 + 2, 1.0)].into_iter(),
            );
        }
        // Fewer indexes: measured in its own slots; more: moved to the end.
        m.insert(table(10, 0.0), [index(11, 7.0)].into_iter());
        m.insert(table(20, 0.0), (1..4).map(|i| index(20 + i, 2.0)));
        assert_eq!(m.index_bytes(m.get(10).expect("10")), 7.0);
        assert_eq!(m.index_bytes(m.get(20).expect("20")), 6.0);
        assert_eq!(m.unused, 3);
        // 30 goes: 5 of 11 entries unused, past a third, so compacted.
        m.retain(|oid| oid != 30);
        assert_eq!((m.unused, m.indexes.len()), (0, 6));
        let totals: Vec<(u32, f64)> = m
            .tables()
            .iter()
            .map(|t| (t.oid, m.index_bytes(t)))
            .collect();
        assert_eq!(totals, [(10, 7.0), (20, 6.0), (40, 2.0)]);
        assert_eq!(m.index(20, 23).map(|i| i.bytes), Some(2.0));
        assert_eq!(m.index(40, 42).map(|i| i.bytes), Some(1.0));
    }
}
