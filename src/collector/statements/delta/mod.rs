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
mod tests;
