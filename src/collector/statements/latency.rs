//! The latency histograms' intervals: pg_stat_statements' exact calls per (database,
//! workload), shaped by the server log's sampled durations when there are enough of them in the
//! interval, else by the estimate fitted to each statement's moments.

use std::collections::{BTreeMap, HashMap};

use super::delta::{Reading, Step};
use super::estimate::Shape;
use super::histogram::{Histogram, Interval};
use super::log::window::{bucket_weights, share_above};
use super::{Session, Source, Statements};

impl Statements {
    /// Reads the durations logged since the last poll, classified like pg_stat_statements'
    /// entries: by query_id through the cache, else by the workload rules on the logged text.
    pub(super) async fn read_log(&mut self, session: &Session) {
        if !self.log.enabled() {
            return;
        }
        let by_name: HashMap<&str, u32> = self
            .databases
            .iter()
            .map(|(oid, name)| (name.as_str(), *oid))
            .collect();
        let (cache, rules) = (&self.cache, &self.rules);
        let classify = |dbname: &str, query_id: i64, text: &str| {
            let dbid = *by_name.get(dbname)?;
            let workload = match cache.get(&(dbid, query_id)) {
                Some(cached) => cached.workload,
                None => rules.classify(query_id, Some(text)),
            };
            Some((dbid, workload))
        };
        self.log.poll(&session.client, &classify).await;
    }

    /// After a baseline, every (database, workload) with top-level entries gets its histogram
    /// at zero, so that the next interval's calls show as an increase (rate() does not see the
    /// first value of a counter that appears above zero).
    pub(super) fn seed_histograms(&mut self, reading: &Reading) {
        let buckets = self.buckets.bounds_ms.len() + 1;
        let keys: Vec<(u32, usize)> = reading
            .entries
            .keys()
            .filter(|k| k.toplevel)
            .map(|k| (k.dbid, self.workload(k.dbid, k.queryid)))
            .collect();
        for key in keys {
            self.histograms
                .entry(key)
                .or_insert_with(|| Histogram::empty(buckets));
        }
    }

    /// Adds the interval's executions to the latency histograms per (database, workload).
    pub(super) fn record_latency(&mut self, step: &Step) {
        let threshold_ms = self.config.slow_threshold.as_secs_f64() * 1000.0;
        let mut intervals: BTreeMap<(u32, usize), Interval> = BTreeMap::new();
        for (key, increment) in step.executions() {
            let workload = self.workload(key.dbid, key.queryid);
            let shape = Shape::fit(&increment.moments, self.config.estimator);
            intervals
                .entry((key.dbid, workload))
                .or_insert_with(|| Interval::new(&self.buckets))
                .add(
                    &shape,
                    increment.counters.calls,
                    increment.counters.exec_ms,
                    &self.buckets,
                    threshold_ms,
                );
        }
        let buckets = self.buckets.bounds_ms.len() + 1;
        let log_usable = self.log.status.usable();
        for (key, mut interval) in intervals {
            // The log gives the shape when it has enough durations of this workload.
            let samples = self.log.samples.get(&key).map_or(&[][..], |s| s.interval());
            let from_log = log_usable && samples.len() >= self.log.min_samples();
            if from_log {
                interval.reshape(
                    bucket_weights(samples, &self.buckets.bounds_ms),
                    share_above(samples, threshold_ms),
                );
            }
            self.sources.insert(
                key,
                Source {
                    from_log,
                    samples: samples.len(),
                },
            );
            self.histograms
                .entry(key)
                .or_insert_with(|| Histogram::empty(buckets))
                .record(&interval);
        }
    }
}
