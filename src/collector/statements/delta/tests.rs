//! Unit tests of the pure delta step: every case of how two polls of pg_stat_statements relate.

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
