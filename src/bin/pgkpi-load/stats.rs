//! Client-side measurements: operations, errors and a latency histogram per operation kind.
//!
//! Every task records into one shared [`Stats`] (a mutex around a small map; a few thousand
//! records per second do not contend). Latencies go into log-spaced buckets (5% wide), so a
//! 24-hour run keeps constant memory and quantiles stay within 5% of the exact value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Growth factor between bucket upper bounds.
const BASE: f64 = 1.05;
/// Buckets from 1 µs to 1.05^400 µs (about 80 hours): everything fits.
const BUCKETS: usize = 400;

/// Latency histogram with log-spaced buckets, in microseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let index = if us <= 1 {
            0
        } else {
            ((us as f64).ln() / BASE.ln()).ceil() as usize
        };
        self.counts[index.min(BUCKETS - 1)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// The upper bound of the bucket holding the q-quantile, in seconds (0 when empty).
    pub fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let upper = BASE.powi(i as i32).min(self.max_us as f64);
                return upper / 1e6;
            }
        }
        self.max_us as f64 / 1e6
    }

    pub fn max_seconds(&self) -> f64 {
        self.max_us as f64 / 1e6
    }
}

/// What happened to one operation.
pub enum Outcome {
    Ok,
    /// An error the scenario provokes on purpose (lock_timeout of a lock waiter, a deadlock
    /// an application would retry); counted, not a failure of the run.
    Expected,
    /// Anything else: the run exits non-zero.
    Unexpected(String),
}

/// Counters of one operation kind.
#[derive(Default, Clone)]
pub struct KindStats {
    pub ok: u64,
    pub expected_errors: u64,
    pub unexpected_errors: u64,
    /// The first few unexpected error messages, for the summary.
    pub samples: Vec<String>,
    pub latency: Histogram,
}

/// Everything the tasks measured, keyed by (class, kind).
#[derive(Default)]
pub struct Stats {
    kinds: Mutex<BTreeMap<(&'static str, &'static str), KindStats>>,
    /// Operations started by all tasks together; bounded by `--max-ops`.
    pub started: AtomicU64,
}

impl Stats {
    pub fn record(
        &self,
        class: &'static str,
        kind: &'static str,
        latency: Duration,
        outcome: Outcome,
    ) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let entry = kinds.entry((class, kind)).or_default();
        entry.latency.record(latency);
        match outcome {
            Outcome::Ok => entry.ok += 1,
            Outcome::Expected => entry.expected_errors += 1,
            Outcome::Unexpected(message) => {
                entry.unexpected_errors += 1;
                if entry.samples.len() < 3 {
                    entry.samples.push(message);
                }
            }
        }
    }

    /// Claims one operation from the global budget; false once it is spent.
    pub fn take_op(&self, max_ops: u64) -> bool {
        self.started.fetch_add(1, Ordering::Relaxed) < max_ops
    }

    pub fn snapshot(&self) -> BTreeMap<(&'static str, &'static str), KindStats> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One row of the summary.
#[derive(Serialize)]
pub struct SummaryRow {
    pub class: &'static str,
    pub kind: &'static str,
    pub ops: u64,
    pub expected_errors: u64,
    pub unexpected_errors: u64,
    pub p50_seconds: f64,
    pub p95_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
    pub error_samples: Vec<String>,
}

pub fn summary_rows(stats: &Stats) -> Vec<SummaryRow> {
    stats
        .snapshot()
        .into_iter()
        .map(|((class, kind), k)| SummaryRow {
            class,
            kind,
            ops: k.ok + k.expected_errors + k.unexpected_errors,
            expected_errors: k.expected_errors,
            unexpected_errors: k.unexpected_errors,
            p50_seconds: k.latency.quantile(0.50),
            p95_seconds: k.latency.quantile(0.95),
            p99_seconds: k.latency.quantile(0.99),
            max_seconds: k.latency.max_seconds(),
            error_samples: k.samples,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_exact_value() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5);
        let p95 = h.quantile(0.95);
        assert!((0.500..=0.500 * BASE).contains(&p50), "p50 {p50}");
        assert!((0.950..=0.950 * BASE).contains(&p95), "p95 {p95}");
        assert_eq!(h.quantile(1.0), 1.0);
        assert_eq!(Histogram::default().quantile(0.5), 0.0);
    }

    #[test]
    fn the_operation_budget_is_global() {
        let stats = Stats::default();
        assert!(stats.take_op(2));
        assert!(stats.take_op(2));
        assert!(!stats.take_op(2));
    }
}
