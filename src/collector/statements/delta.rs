//! The interval's activity from two polls of pg_stat_statements: [`step`] is a pure function of
//! the previous poll's [`Reading`] and the current one, and says per entry what it detected and
//! what the entry did in the interval.
//!
//! Increments are never negative or inflated (docs/statements.md, "Resets, evictions and
//! restarts"):
//! * an entry not in the previous poll, whose counters went down (one counter is enough), or
//!   whose `stats_since` moved (1.11+) was created inside the interval: all of its counters
//!   are the interval's;
//! * a full reset (`pg_stat_statements_info.stats_reset` moved, 1.9+) makes every entry whole;
//! * another server process (`pg_postmaster_start_time()` moved) whose statistics started with
//!   it makes every entry whole; statistics of unknown age (loaded from the file, or another
//!   server behind the same address) make the poll a baseline: nothing is counted;
//! * when only min/max were reset (1.11's `minmax_stats_since` moved) the counters are
//!   subtracted as usual but min/max no longer bound the interval's executions.

use std::collections::{BTreeMap, HashMap};

use super::estimate::{Cumulative, Moments};

/// One pg_stat_statements entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryKey {
    pub userid: u32,
    pub dbid: u32,
    pub queryid: i64,
    pub toplevel: bool,
}

impl EntryKey {
    /// The statement the entry belongs to.
    pub fn statement(&self) -> StatementKey {
        StatementKey {
            userid: self.userid,
            dbid: self.dbid,
            queryid: self.queryid,
        }
    }
}

/// One statement as exported: entries differing only in `toplevel` are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatementKey {
    pub userid: u32,
    pub dbid: u32,
    pub queryid: i64,
}

/// The additive counters of an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub calls: f64,
    pub exec_ms: f64,
    pub plan_ms: f64,
    pub rows: f64,
    pub shared_blks_hit: f64,
    pub shared_blks_read: f64,
    pub temp_blks_read: f64,
    pub temp_blks_written: f64,
    pub wal_bytes: f64,
    pub io_read_ms: f64,
    pub io_write_ms: f64,
}

impl Counters {
    fn fields(&self) -> [f64; 11] {
        [
            self.calls,
            self.exec_ms,
            self.plan_ms,
            self.rows,
            self.shared_blks_hit,
            self.shared_blks_read,
            self.temp_blks_read,
            self.temp_blks_written,
            self.wal_bytes,
            self.io_read_ms,
            self.io_write_ms,
        ]
    }

    fn from_fields(f: [f64; 11]) -> Counters {
        Counters {
            calls: f[0],
            exec_ms: f[1],
            plan_ms: f[2],
            rows: f[3],
            shared_blks_hit: f[4],
            shared_blks_read: f[5],
            temp_blks_read: f[6],
            temp_blks_written: f[7],
            wal_bytes: f[8],
            io_read_ms: f[9],
            io_write_ms: f[10],
        }
    }

    fn zip(&self, other: &Counters, op: impl Fn(f64, f64) -> f64) -> Counters {
        let (a, b) = (self.fields(), other.fields());
        Counters::from_fields(std::array::from_fn(|i| op(a[i], b[i])))
    }

    /// `self − earlier`, field by field.
    fn minus(&self, earlier: &Counters) -> Counters {
        self.zip(earlier, |a, b| a - b)
    }

    /// True when any counter is below `prev`: the entry was reset or evicted and re-created.
    fn went_down(&self, prev: &Counters) -> bool {
        self.fields()
            .iter()
            .zip(prev.fields())
            .any(|(now, before)| *now < before)
    }

    pub fn add(&mut self, other: &Counters) {
        *self = self.zip(other, |a, b| a + b);
    }

    /// True when the entry ran (or was planned) in the interval these counters cover.
    fn any_activity(&self) -> bool {
        self.calls > 0.0 || self.exec_ms > 0.0 || self.plan_ms > 0.0
    }
}

/// One entry as read in one poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub counters: Counters,
    pub timing: Cumulative,
    /// `stats_since` (1.11+): when the entry's statistics started.
    pub stats_since: Option<f64>,
    /// `minmax_stats_since` (1.11+): when min/max were last reset.
    pub minmax_since: Option<f64>,
}

/// One poll's reading of pg_stat_statements; kept until the next poll subtracts from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// The entries whose queryid the role may see.
    pub entries: HashMap<EntryKey, Entry>,
    /// `pg_stat_statements_info.stats_reset` (1.9+), Unix seconds: the last full reset.
    pub stats_reset: Option<f64>,
    /// `pg_stat_statements_info.dealloc` (1.9+): evictions since the last full reset.
    pub dealloc: Option<f64>,
    /// `pg_postmaster_start_time()` of the server read, Unix seconds.
    pub server_start: f64,
}

/// How a poll relates to the previous one, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The collector's first poll: nothing to subtract from.
    FirstPoll,
    /// Another server process whose statistics are older than it (loaded from the
    /// statistics file at startup, or another server behind the same address): of unknown
    /// age, so nothing to subtract from.
    RestartStatsKept,
    /// Another server process whose statistics started with it (a crash, or
    /// `pg_stat_statements.save = off`): every entry is the interval's.
    RestartStatsReset,
    /// `stats_reset` moved (`pg_stat_statements_reset()`): every entry is the interval's.
    FullReset,
    /// The same server and statistics as the previous poll: per-entry differences.
    Continuous,
}

impl Transition {
    fn between(previous: Option<&Reading>, current: &Reading) -> Transition {
        match previous {
            None => Transition::FirstPoll,
            Some(p) if p.server_start != current.server_start => {
                if current
                    .stats_reset
                    .is_some_and(|r| r >= current.server_start - 1.0)
                {
                    Transition::RestartStatsReset
                } else {
                    Transition::RestartStatsKept
                }
            }
            Some(p) if current.stats_reset != p.stats_reset => Transition::FullReset,
            Some(_) => Transition::Continuous,
        }
    }

    pub fn mode(self) -> Mode {
        match self {
            Transition::FirstPoll | Transition::RestartStatsKept => Mode::Baseline,
            Transition::RestartStatsReset | Transition::FullReset => Mode::AllFresh,
            Transition::Continuous => Mode::Delta,
        }
    }
}

/// What a poll counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing to subtract from (first poll, or counters of unknown origin): only remember.
    Baseline,
    /// Every entry started after the previous poll (a full reset, or a restart that reset).
    AllFresh,
    /// Normal: per-entry deltas.
    Delta,
}

/// How an entry's increment was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Every entry is whole in this poll ([`Mode::AllFresh`]).
    AllFresh,
    /// Not in the previous poll: created in the interval (new, or evicted and back); whole.
    New,
    /// `stats_since` moved (1.11+): re-created in the interval; whole.
    StatsSinceMoved,
    /// A counter went below the previous poll's: reset or evicted and re-created; whole.
    CountersDown,
    /// The difference with the previous poll; min/max bound the interval's executions.
    Continued,
    /// The difference with the previous poll, but min/max were reset in between (1.11's
    /// `minmax_stats_since` moved), so they do not bound the older executions of the interval.
    MinmaxReset,
}

/// One entry's activity in the interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Increment {
    pub origin: Origin,
    pub counters: Counters,
    /// The interval's executions, for the latency estimate.
    pub moments: Moments,
}

/// What the collector's running `pg_stat_statements_dealloc_total` does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeallocStep {
    /// Nothing (no `pg_stat_statements_info`, or a baseline after a restart).
    Unchanged,
    /// The first poll: start at the server's value.
    Seed(f64),
    /// Add the evictions of the interval.
    Add(f64),
}

/// The outcome of one poll: what was detected and the interval's increments.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub transition: Transition,
    /// Per entry that ran or was planned in the interval. Empty in a baseline.
    pub increments: HashMap<EntryKey, Increment>,
    /// Per statement, the increments of its entries summed.
    pub deltas: HashMap<StatementKey, Counters>,
    /// Per database, the increments of its top-level entries summed.
    pub total_deltas: BTreeMap<u32, Counters>,
    /// Per statement, the current cumulative counters of its entries summed (every entry,
    /// active or not): where running totals start in a baseline, and which statements exist.
    pub current: HashMap<StatementKey, Counters>,
    /// Per database, the current cumulative counters of its top-level entries summed.
    pub current_totals: BTreeMap<u32, Counters>,
    pub dealloc: DeallocStep,
}

impl Step {
    pub fn mode(&self) -> Mode {
        self.transition.mode()
    }

    /// The increments the latency histograms take: top-level entries that were called.
    /// (Nested statements' time is part of their caller's.)
    pub fn executions(&self) -> impl Iterator<Item = (&EntryKey, &Increment)> {
        self.increments
            .iter()
            .filter(|(key, inc)| key.toplevel && inc.counters.calls > 0.0)
    }
}

/// Compares `current` with the `previous` poll's reading (None on the first poll).
pub fn step(previous: Option<&Reading>, current: &Reading) -> Step {
    let transition = Transition::between(previous, current);
    let mode = transition.mode();
    let mut out = Step {
        transition,
        increments: HashMap::new(),
        deltas: HashMap::new(),
        total_deltas: BTreeMap::new(),
        current: HashMap::with_capacity(current.entries.len()),
        current_totals: BTreeMap::new(),
        dealloc: dealloc_step(previous, current, mode),
    };
    for (key, entry) in &current.entries {
        out.current
            .entry(key.statement())
            .or_default()
            .add(&entry.counters);
        if key.toplevel {
            out.current_totals
                .entry(key.dbid)
                .or_default()
                .add(&entry.counters);
        }
        let earlier = previous.and_then(|p| p.entries.get(key));
        let Some(increment) = increment(mode, earlier, entry) else {
            continue;
        };
        if !increment.counters.any_activity() {
            continue;
        }
        out.deltas
            .entry(key.statement())
            .or_default()
            .add(&increment.counters);
        if key.toplevel {
            out.total_deltas
                .entry(key.dbid)
                .or_default()
                .add(&increment.counters);
        }
        out.increments.insert(*key, increment);
    }
    out
}

/// One entry's increment; None in a baseline.
fn increment(mode: Mode, earlier: Option<&Entry>, entry: &Entry) -> Option<Increment> {
    let whole = |origin| Increment {
        origin,
        counters: entry.counters,
        moments: Moments::fresh(&entry.timing),
    };
    Some(match (mode, earlier) {
        (Mode::Baseline, _) => return None,
        (Mode::AllFresh, _) => whole(Origin::AllFresh),
        (Mode::Delta, None) => whole(Origin::New),
        (Mode::Delta, Some(p)) if p.stats_since != entry.stats_since => {
            whole(Origin::StatsSinceMoved)
        }
        (Mode::Delta, Some(p)) if entry.counters.went_down(&p.counters) => {
            whole(Origin::CountersDown)
        }
        (Mode::Delta, Some(p)) => {
            let bounds_valid = p.minmax_since == entry.minmax_since;
            Increment {
                origin: if bounds_valid {
                    Origin::Continued
                } else {
                    Origin::MinmaxReset
                },
                counters: entry.counters.minus(&p.counters),
                moments: Moments::between(&p.timing, &entry.timing, bounds_valid),
            }
        }
    })
}

/// `dealloc` restarts at 0 on a full reset, so a value below the previous one is all new.
fn dealloc_step(previous: Option<&Reading>, current: &Reading, mode: Mode) -> DeallocStep {
    match (current.dealloc, previous) {
        (Some(now), None) => DeallocStep::Seed(now),
        (Some(now), Some(p)) if mode != Mode::Baseline => {
            let before = p.dealloc.unwrap_or(0.0);
            DeallocStep::Add(if now >= before { now - before } else { now })
        }
        _ => DeallocStep::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_START: f64 = 1_700_000_000.0;
    const STATS_RESET: f64 = SERVER_START + 100.0;

    fn key(queryid: i64) -> EntryKey {
        EntryKey {
            userid: 10,
            dbid: 5,
            queryid,
            toplevel: true,
        }
    }

    /// An entry after `calls` executions of `ms` each, plus one of `slow_ms`: min `ms`, max
    /// `slow_ms`.
    fn entry(calls: f64, ms: f64, slow_ms: f64) -> Entry {
        let n = calls + 1.0;
        let total = calls * ms + slow_ms;
        let mean = total / n;
        let squares = calls * ms * ms + slow_ms * slow_ms;
        Entry {
            counters: Counters {
                calls: n,
                exec_ms: total,
                rows: n,
                shared_blks_hit: 4.0 * n,
                ..Counters::default()
            },
            timing: Cumulative {
                calls: n,
                total,
                mean,
                stddev: (squares / n - mean * mean).max(0.0).sqrt(),
                min: ms,
                max: slow_ms,
            },
            stats_since: None,
            minmax_since: None,
        }
    }

    /// The same entry on 1.11+, with its `stats_since` and `minmax_stats_since`.
    fn since(mut e: Entry, stats_since: f64, minmax_since: f64) -> Entry {
        e.stats_since = Some(stats_since);
        e.minmax_since = Some(minmax_since);
        e
    }

    fn reading(entries: &[(EntryKey, Entry)], dealloc: f64) -> Reading {
        Reading {
            entries: entries.iter().copied().collect(),
            stats_reset: Some(STATS_RESET),
            dealloc: Some(dealloc),
            server_start: SERVER_START,
        }
    }

    fn calls(step: &Step, queryid: i64) -> Option<f64> {
        step.increments
            .get(&key(queryid))
            .map(|inc| inc.counters.calls)
    }

    fn origin(step: &Step, queryid: i64) -> Option<Origin> {
        step.increments.get(&key(queryid)).map(|inc| inc.origin)
    }

    #[test]
    fn counters_detect_resets() {
        let before = Counters {
            calls: 10.0,
            rows: 100.0,
            ..Counters::default()
        };
        let grew = Counters {
            calls: 12.0,
            rows: 120.0,
            ..Counters::default()
        };
        let reinserted = Counters {
            calls: 15.0,
            rows: 3.0,
            ..Counters::default()
        };
        assert!(!grew.went_down(&before));
        assert!(reinserted.went_down(&before));
        assert_eq!(grew.minus(&before).calls, 2.0);
    }

    #[test]
    fn first_poll_is_a_baseline_that_seeds_dealloc() {
        let now = reading(&[(key(1), entry(10.0, 2.0, 9.0))], 7.0);
        let s = step(None, &now);
        assert_eq!(s.transition, Transition::FirstPoll);
        assert_eq!(s.mode(), Mode::Baseline);
        assert!(s.increments.is_empty() && s.deltas.is_empty() && s.total_deltas.is_empty());
        // What running totals start from.
        assert_eq!(s.current[&key(1).statement()].calls, 11.0);
        assert_eq!(s.current_totals[&5].calls, 11.0);
        assert_eq!(s.dealloc, DeallocStep::Seed(7.0));
        // Without pg_stat_statements_info (1.8) there is nothing to seed.
        let old = Reading {
            dealloc: None,
            stats_reset: None,
            ..now
        };
        assert_eq!(step(None, &old).dealloc, DeallocStep::Unchanged);
    }

    #[test]
    fn normal_increment_is_the_difference() {
        let before = reading(
            &[
                (key(1), entry(100.0, 2.0, 9.0)),
                (key(2), entry(5.0, 1.0, 1.0)),
            ],
            3.0,
        );
        let now = reading(
            &[
                (key(1), entry(130.0, 2.0, 9.0)),
                // Idle: no increment.
                (key(2), entry(5.0, 1.0, 1.0)),
            ],
            3.0,
        );
        let s = step(Some(&before), &now);
        assert_eq!(s.transition, Transition::Continuous);
        assert_eq!(s.mode(), Mode::Delta);
        let inc = s.increments[&key(1)];
        assert_eq!(inc.origin, Origin::Continued);
        assert_eq!(inc.counters.calls, 30.0);
        assert!((inc.counters.exec_ms - 60.0).abs() < 1e-9);
        assert_eq!(inc.counters.shared_blks_hit, 120.0);
        // The interval's own moments, bounded by the entry's min/max.
        assert_eq!(inc.moments.calls, 30.0);
        assert!((inc.moments.mean - 2.0).abs() < 1e-9, "{:?}", inc.moments);
        assert_eq!((inc.moments.min, inc.moments.max), (2.0, 9.0));
        assert_eq!(origin(&s, 2), None);
        assert_eq!(s.deltas.len(), 1);
        assert_eq!(s.deltas[&key(1).statement()].calls, 30.0);
        assert_eq!(s.total_deltas[&5].calls, 30.0);
        assert_eq!(s.dealloc, DeallocStep::Add(0.0));
        assert_eq!(s.executions().count(), 1);
    }

    #[test]
    fn nested_entries_count_per_statement_but_not_in_totals_or_latency() {
        let nested = EntryKey {
            toplevel: false,
            ..key(1)
        };
        let before = reading(
            &[
                (key(1), entry(10.0, 2.0, 9.0)),
                (nested, entry(4.0, 1.0, 1.0)),
            ],
            0.0,
        );
        let now = reading(
            &[
                (key(1), entry(20.0, 2.0, 9.0)),
                (nested, entry(9.0, 1.0, 1.0)),
            ],
            0.0,
        );
        let s = step(Some(&before), &now);
        // toplevel and nested entries of one statement are summed...
        assert_eq!(s.deltas[&key(1).statement()].calls, 15.0);
        assert_eq!(s.current[&key(1).statement()].calls, 31.0);
        // ...the database totals and the histogram take the top-level entry only.
        assert_eq!(s.total_deltas[&5].calls, 10.0);
        assert_eq!(s.current_totals[&5].calls, 21.0);
        let executions: Vec<&EntryKey> = s.executions().map(|(k, _)| k).collect();
        assert_eq!(executions, vec![&key(1)]);
    }

    #[test]
    fn full_reset_counts_every_entry_whole() {
        let before = reading(
            &[
                (key(1), entry(1000.0, 2.0, 9.0)),
                (key(2), entry(50.0, 1.0, 3.0)),
            ],
            40.0,
        );
        // pg_stat_statements_reset(): stats_reset moves, dealloc restarts at 0, counters
        // start over (here key 1 has run more since than before, and is still whole).
        let now = Reading {
            stats_reset: Some(STATS_RESET + 60.0),
            ..reading(
                &[
                    (key(1), entry(1200.0, 2.0, 9.0)),
                    (key(2), entry(4.0, 1.0, 3.0)),
                ],
                2.0,
            )
        };
        let s = step(Some(&before), &now);
        assert_eq!(s.transition, Transition::FullReset);
        assert_eq!(s.mode(), Mode::AllFresh);
        assert_eq!(origin(&s, 1), Some(Origin::AllFresh));
        assert_eq!(calls(&s, 1), Some(1201.0));
        assert_eq!(calls(&s, 2), Some(5.0));
        // Moments of the whole entry, bounded by its min/max.
        let m = s.increments[&key(2)].moments;
        assert_eq!((m.calls, m.min, m.max), (5.0, 1.0, 3.0));
        assert_eq!(s.total_deltas[&5].calls, 1206.0);
        // dealloc went from 40 to 2: the 2 are new.
        assert_eq!(s.dealloc, DeallocStep::Add(2.0));
    }

    #[test]
    fn evicted_statement_that_comes_back_is_counted_whole() {
        let before = reading(
            &[
                (key(1), entry(500.0, 2.0, 9.0)),
                (key(2), entry(10.0, 1.0, 1.0)),
            ],
            0.0,
        );
        // Evicted: key 1 is gone; nothing is counted for it.
        let gone = reading(&[(key(2), entry(20.0, 1.0, 1.0))], 1.0);
        let s = step(Some(&before), &gone);
        assert_eq!(s.transition, Transition::Continuous);
        assert_eq!(origin(&s, 1), None);
        assert!(!s.current.contains_key(&key(1).statement()));
        assert_eq!(s.dealloc, DeallocStep::Add(1.0));
        // Back with lower counters: not in the previous poll, so new and whole.
        let back = reading(
            &[
                (key(1), entry(3.0, 2.0, 4.0)),
                (key(2), entry(20.0, 1.0, 1.0)),
            ],
            1.0,
        );
        let s = step(Some(&gone), &back);
        assert_eq!(origin(&s, 1), Some(Origin::New));
        assert_eq!(calls(&s, 1), Some(4.0));
        // Evicted and back between two polls: its counters went down, so whole as well.
        let s = step(Some(&before), &back);
        assert_eq!(origin(&s, 1), Some(Origin::CountersDown));
        assert_eq!(calls(&s, 1), Some(4.0));
        let m = s.increments[&key(1)].moments;
        assert_eq!((m.calls, m.min, m.max), (4.0, 2.0, 4.0));
        // Back with counters past the old ones: before 1.11 that cannot be told from
        // activity, so the increment is the difference (too small, never too large).
        let past = reading(&[(key(1), entry(520.0, 2.0, 9.0))], 1.0);
        let s = step(Some(&before), &past);
        assert_eq!(origin(&s, 1), Some(Origin::Continued));
        assert_eq!(calls(&s, 1), Some(20.0));
    }

    #[test]
    fn stats_since_moving_marks_a_recreated_entry() {
        // 1.11+: the same case is caught by stats_since.
        let before = reading(
            &[(key(1), since(entry(500.0, 2.0, 9.0), 1000.0, 1000.0))],
            0.0,
        );
        let now = reading(
            &[(key(1), since(entry(520.0, 2.0, 9.0), 2000.0, 2000.0))],
            1.0,
        );
        let s = step(Some(&before), &now);
        assert_eq!(origin(&s, 1), Some(Origin::StatsSinceMoved));
        assert_eq!(calls(&s, 1), Some(521.0));
    }

    #[test]
    fn counters_going_back_for_one_statement_only_affect_it() {
        let before = reading(
            &[
                (key(1), entry(100.0, 2.0, 9.0)),
                (key(2), entry(100.0, 3.0, 9.0)),
            ],
            0.0,
        );
        // Key 1 ran 10 more times; key 2 was reset on its own (pg_stat_statements_reset(
        // userid, dbid, queryid) does not move stats_reset) and has one counter below the
        // previous poll even though calls went up.
        let mut reset = entry(150.0, 3.0, 9.0);
        reset.counters.shared_blks_hit = 1.0;
        let now = reading(&[(key(1), entry(110.0, 2.0, 9.0)), (key(2), reset)], 0.0);
        let s = step(Some(&before), &now);
        assert_eq!(s.transition, Transition::Continuous);
        assert_eq!(origin(&s, 1), Some(Origin::Continued));
        assert_eq!(calls(&s, 1), Some(10.0));
        assert_eq!(origin(&s, 2), Some(Origin::CountersDown));
        assert_eq!(calls(&s, 2), Some(151.0));
        assert_eq!(s.increments[&key(2)].counters.shared_blks_hit, 1.0);
        assert_eq!(s.total_deltas[&5].calls, 161.0);
    }

    #[test]
    fn restart_with_kept_statistics_is_a_new_baseline() {
        let before = reading(&[(key(1), entry(100.0, 2.0, 9.0))], 5.0);
        // Restarted: statistics loaded from the file are older than the new server.
        let now = Reading {
            server_start: SERVER_START + 3600.0,
            ..reading(&[(key(1), entry(110.0, 2.0, 9.0))], 5.0)
        };
        let s = step(Some(&before), &now);
        assert_eq!(s.transition, Transition::RestartStatsKept);
        assert_eq!(s.mode(), Mode::Baseline);
        assert!(s.increments.is_empty() && s.deltas.is_empty());
        assert_eq!(s.current[&key(1).statement()].calls, 111.0);
        assert_eq!(s.dealloc, DeallocStep::Unchanged);
        // Before 1.9 there is no stats_reset: a restart is always a baseline.
        let old = |r: Reading| Reading {
            stats_reset: None,
            dealloc: None,
            ..r
        };
        let s = step(Some(&old(before)), &old(now));
        assert_eq!(s.transition, Transition::RestartStatsKept);
    }

    #[test]
    fn restart_that_reset_statistics_counts_every_entry_whole() {
        let before = reading(&[(key(1), entry(100.0, 2.0, 9.0))], 5.0);
        // A crash (or save = off): statistics start with the server, to within a second.
        let start = SERVER_START + 3600.0;
        let now = Reading {
            server_start: start,
            stats_reset: Some(start - 0.5),
            ..reading(&[(key(1), entry(6.0, 2.0, 9.0))], 0.0)
        };
        let s = step(Some(&before), &now);
        assert_eq!(s.transition, Transition::RestartStatsReset);
        assert_eq!(s.mode(), Mode::AllFresh);
        assert_eq!(origin(&s, 1), Some(Origin::AllFresh));
        assert_eq!(calls(&s, 1), Some(7.0));
        assert_eq!(s.dealloc, DeallocStep::Add(0.0));
    }

    #[test]
    fn minmax_reset_keeps_the_difference_but_drops_the_bounds() {
        let before = reading(
            &[(key(1), since(entry(100.0, 2.0, 90.0), 1000.0, 1000.0))],
            0.0,
        );
        // pg_stat_statements_reset(0, 0, 0, true): min/max restart, counters go on.
        let mut after = since(entry(150.0, 2.0, 90.0), 1000.0, 1500.0);
        after.timing.min = 2.0;
        after.timing.max = 2.0;
        let now = reading(&[(key(1), after)], 0.0);
        let s = step(Some(&before), &now);
        assert_eq!(s.transition, Transition::Continuous);
        let inc = s.increments[&key(1)];
        assert_eq!(inc.origin, Origin::MinmaxReset);
        assert_eq!(inc.counters.calls, 50.0);
        assert_eq!(inc.moments.calls, 50.0);
        // Neither the new min/max (2..2) nor the old ones bound the interval.
        assert_eq!((inc.moments.min, inc.moments.max), (0.0, f64::INFINITY));
        // The same readings without the minmax reset keep the bounds.
        let unchanged = reading(
            &[(key(1), since(entry(150.0, 2.0, 90.0), 1000.0, 1000.0))],
            0.0,
        );
        let inc = step(Some(&before), &unchanged).increments[&key(1)];
        assert_eq!(inc.origin, Origin::Continued);
        assert_eq!((inc.moments.min, inc.moments.max), (2.0, 90.0));
    }

    #[test]
    fn planning_only_activity_counts_but_feeds_no_histogram() {
        let mut before = entry(10.0, 2.0, 9.0);
        before.counters.plan_ms = 5.0;
        let mut now = before;
        now.counters.plan_ms = 8.0;
        let s = step(
            Some(&reading(&[(key(1), before)], 0.0)),
            &reading(&[(key(1), now)], 0.0),
        );
        assert_eq!(s.deltas[&key(1).statement()].plan_ms, 3.0);
        assert_eq!(s.executions().count(), 0);
    }
}
