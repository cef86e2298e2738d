//! What a poll exports: the families (from the collector's running totals, histograms and the
//! poll's increments) and the `/debug/statements` view.

use std::collections::{BTreeMap, HashMap};

use super::delta::{Counters, Mode, StatementKey};
use super::histogram::Histogram;
use super::log::window::{quantiles, Logged};
use super::log::Status;
use super::metrics::{
    CACHED_STATEMENTS, DEALLOC, ENTRIES, FILL_RATIO, HIDDEN_ENTRIES, INTERVAL_SAMPLES, LAST_RESET,
    LATENCY, LOG_BYTES, LOG_LOST, LOG_MIN_DURATION_SAMPLE, LOG_MIN_DURATION_STATEMENT, LOG_RECORDS,
    LOG_SAMPLES, LOG_SAMPLE_RATE, LOG_STATUS, MAX, QUERY_INFO, SLOW_CALLS, SLOW_THRESHOLD, SOURCE,
    STATEMENT_COUNTERS, TEXT_FETCHES, TOP_OMITTED, TOTAL_COUNTERS, WINDOW_QUANTILE, WINDOW_SAMPLES,
};
use super::sql::Extension;
use super::Statements;
use crate::metric::{Family, Sample};

/// The statements exported one by one: the `n` with the most execution time in the interval
/// (ties by key, so the choice is stable), and how many active ones were left out.
pub fn top_statements(
    deltas: &HashMap<StatementKey, Counters>,
    n: usize,
) -> (Vec<(StatementKey, f64)>, usize) {
    let mut top: Vec<(StatementKey, f64)> = deltas.iter().map(|(k, d)| (*k, d.exec_ms)).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let omitted = top.len().saturating_sub(n);
    top.truncate(n);
    (top, omitted)
}

/// Truncates to `max` characters and folds whitespace runs, for a label value.
pub fn shorten(text: &str, max: usize) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &folded[..cut]),
        None => folded,
    }
}

/// What the poll counted, in the words of `/debug/statements`.
fn describe(mode: Mode) -> &'static str {
    match mode {
        Mode::Baseline => "baseline (no deltas: first poll or new server)",
        Mode::AllFresh => "after a full reset (every entry counted whole)",
        Mode::Delta => "deltas",
    }
}

/// One poll's figures the families need besides the collector's state.
pub struct PollFigures<'a> {
    pub ext: &'a Extension,
    pub top: &'a [(StatementKey, f64)],
    pub omitted: usize,
    /// Entries whose queryid the role may not see.
    pub hidden: usize,
    /// Rows of pg_stat_statements, hidden ones included.
    pub entries: usize,
    pub stats_reset: Option<f64>,
}

impl Statements {
    /// `/debug/statements`: the last interval's top statements, for the person who was paged.
    pub(super) fn publish_view(
        &self,
        mode: Mode,
        top: &[(StatementKey, f64)],
        deltas: &HashMap<StatementKey, Counters>,
        omitted: usize,
        entries: usize,
    ) {
        let statements: Vec<serde_json::Value> = top
            .iter()
            .filter_map(|(key, _)| {
                let d = deltas.get(key)?;
                let cached = self.cache.get(&(key.dbid, key.queryid));
                Some(serde_json::json!({
                    "datname": self.datname(key.dbid),
                    "user": self.rolname(key.userid),
                    "queryid": key.queryid.to_string(),
                    "workload": self.rules.names[self.workload(key.dbid, key.queryid)],
                    "calls": d.calls,
                    "exec_ms": d.exec_ms,
                    "mean_ms": if d.calls > 0.0 { d.exec_ms / d.calls } else { 0.0 },
                    "rows": d.rows,
                    "shared_blks_read": d.shared_blks_read,
                    "query": cached.and_then(|c| c.text.as_deref()),
                }))
            })
            .collect();
        self.views.publish(
            "statements",
            &self.target,
            serde_json::json!({
                "poll": describe(mode),
                "entries": entries,
                "top_omitted": omitted,
                "top": statements,
                "latency_log_source": self.log.status.label(),
                "to_do": self
                    .log
                    .status
                    .hint()
                    .map(|hint| vec![format!("latency log source ({}): {hint}", self.log.status.label())])
                    .unwrap_or_default(),
            }),
        );
    }

    /// The families of a poll.
    pub(super) fn families_out(&self, poll: &PollFigures) -> Vec<Family> {
        let ext = poll.ext;
        let mut out = Vec::new();

        // Top statements.
        let labelled: Vec<([String; 3], &Counters, StatementKey)> = poll
            .top
            .iter()
            .filter_map(|(key, _)| {
                let counters = self.totals.statements.get(key)?;
                let labels = [
                    self.datname(key.dbid),
                    self.rolname(key.userid),
                    key.queryid.to_string(),
                ];
                Some((labels, counters, *key))
            })
            .collect();
        for counter in STATEMENT_COUNTERS {
            if counter.needs_track_planning && !ext.track_planning {
                continue;
            }
            let mut family = counter.metric.family();
            for ([datname, user, queryid], counters, _) in &labelled {
                family.push(
                    &[("datname", datname), ("user", user), ("queryid", queryid)],
                    (counter.value)(counters),
                );
            }
            out.push(family);
        }
        if self.config.query_text {
            let mut family = QUERY_INFO.family();
            for ([datname, user, queryid], _, key) in &labelled {
                if let Some(text) = self
                    .cache
                    .get(&(key.dbid, key.queryid))
                    .and_then(|c| c.text.as_deref())
                {
                    family.push(
                        &[
                            ("datname", datname),
                            ("user", user),
                            ("queryid", queryid),
                            ("query", text),
                        ],
                        1.0,
                    );
                }
            }
            out.push(family);
        }

        // Totals per database; two oids may carry one name (a database dropped and created
        // again while its entries remain), so they are merged by name.
        let mut by_name: BTreeMap<String, Counters> = BTreeMap::new();
        for (dbid, counters) in &self.totals.databases {
            by_name
                .entry(self.datname(*dbid))
                .or_default()
                .add(counters);
        }
        for counter in TOTAL_COUNTERS {
            let mut family = counter.metric.family();
            for (datname, counters) in &by_name {
                family.push(&[("datname", datname)], (counter.value)(counters));
            }
            out.push(family);
        }

        // Latency histograms and slow calls, merged by name like the totals.
        let mut merged: BTreeMap<(String, &str), Histogram> = BTreeMap::new();
        for ((dbid, workload), h) in &self.histograms {
            merged
                .entry((self.datname(*dbid), self.rules.names[*workload].as_str()))
                .or_insert_with(|| Histogram::empty(h.buckets()))
                .merge(h);
        }
        let mut latency = LATENCY.family();
        let mut slow = SLOW_CALLS.family();
        for ((datname, workload), h) in &merged {
            let base = vec![
                ("datname".to_string(), datname.clone()),
                ("workload".to_string(), workload.to_string()),
            ];
            let mut cumulative = 0u64;
            for (i, count) in h.counts.iter().enumerate() {
                cumulative += count;
                let mut labels = base.clone();
                labels.push(("le".to_string(), self.buckets.le(i)));
                latency.samples.push(Sample {
                    suffix: "_bucket",
                    labels,
                    value: cumulative as f64,
                });
            }
            latency.samples.push(Sample {
                suffix: "_sum",
                labels: base.clone(),
                value: h.sum_seconds,
            });
            latency.samples.push(Sample {
                suffix: "_count",
                labels: base,
                value: h.count as f64,
            });
            slow.push(&[("datname", datname), ("workload", workload)], h.slow);
        }
        out.push(latency);
        out.push(slow);
        if self.log.enabled() {
            out.extend(self.log_families());
        }

        // Health of the extension.
        out.push(TOP_OMITTED.family().with(&[], poll.omitted as f64));
        out.push(ENTRIES.family().with(&[], poll.entries as f64));
        if let Some(max) = ext.max {
            out.push(MAX.family().with(&[], max));
            if max > 0.0 {
                out.push(FILL_RATIO.family().with(&[], poll.entries as f64 / max));
            }
        }
        out.push(HIDDEN_ENTRIES.family().with(&[], poll.hidden as f64));
        if let Some(reset) = poll.stats_reset {
            out.push(LAST_RESET.family().with(&[], reset));
        }
        out.push(
            SLOW_THRESHOLD
                .family()
                .with(&[], self.config.slow_threshold.as_secs_f64()),
        );
        out.push(
            CACHED_STATEMENTS
                .family()
                .with(&[], self.cache.len() as f64),
        );
        if ext.release.has_info() {
            out.push(DEALLOC.family().with(&[], self.totals.dealloc));
        }
        out.push(TEXT_FETCHES.family().with(&[], self.text_fetches as f64));
        out
    }
}

/// The quantiles of the window gauges.
const WINDOW_QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.95, "0.95"), (0.99, "0.99")];

impl Statements {
    /// The log source's families: window quantiles, which source shaped each histogram, the
    /// server's logging settings, the reader's status and counts.
    fn log_families(&self) -> Vec<Family> {
        let mut out = Vec::new();
        // Merged by name like the histograms.
        let mut windows: BTreeMap<(String, &str), Vec<Logged>> = BTreeMap::new();
        for ((dbid, workload), samples) in &self.log.samples {
            windows
                .entry((self.datname(*dbid), self.rules.names[*workload].as_str()))
                .or_default()
                .extend(samples.window());
        }
        let mut window = WINDOW_QUANTILE.family();
        let mut window_samples = WINDOW_SAMPLES.family();
        for ((datname, workload), samples) in &windows {
            let qs: Vec<f64> = WINDOW_QUANTILES.iter().map(|(q, _)| *q).collect();
            let Some(values) = quantiles(samples, &qs) else {
                continue;
            };
            for ((_, label), value) in WINDOW_QUANTILES.iter().zip(values) {
                window.push(
                    &[
                        ("datname", datname),
                        ("workload", workload),
                        ("quantile", label),
                    ],
                    value / 1000.0,
                );
            }
            window_samples.push(
                &[("datname", datname), ("workload", workload)],
                samples.len() as f64,
            );
        }
        out.push(window);
        out.push(window_samples);

        let mut source = SOURCE.family();
        let mut interval_samples = INTERVAL_SAMPLES.family();
        for ((dbid, workload), s) in &self.sources {
            let datname = self.datname(*dbid);
            let workload = self.rules.names[*workload].as_str();
            for (name, on) in [("log", s.from_log), ("estimate", !s.from_log)] {
                source.push(
                    &[
                        ("datname", &datname),
                        ("workload", workload),
                        ("source", name),
                    ],
                    if on { 1.0 } else { 0.0 },
                );
            }
            interval_samples.push(
                &[("datname", &datname), ("workload", workload)],
                s.samples as f64,
            );
        }
        out.push(source);
        out.push(interval_samples);

        let mut status = LOG_STATUS.family();
        let current = self.log.status.label();
        for label in Status::LABELS {
            status.push(
                &[("status", label)],
                if label == current { 1.0 } else { 0.0 },
            );
        }
        out.push(status);
        if let Some(settings) = &self.log.settings {
            let seconds = |ms: Option<f64>| ms.map_or(-1.0, |ms| ms / 1000.0);
            out.push(LOG_SAMPLE_RATE.family().with(&[], settings.sample_rate));
            out.push(
                LOG_MIN_DURATION_STATEMENT
                    .family()
                    .with(&[], seconds(settings.min_duration_statement_ms)),
            );
            out.push(
                LOG_MIN_DURATION_SAMPLE
                    .family()
                    .with(&[], seconds(settings.min_duration_sample_ms)),
            );
        }
        let counts = self.log.counts;
        out.push(LOG_RECORDS.family().with(&[], counts.records as f64));
        out.push(LOG_SAMPLES.family().with(&[], counts.samples as f64));
        out.push(LOG_BYTES.family().with(&[], self.log.bytes_read() as f64));
        let lost = self.log.lost();
        let mut family = LOG_LOST.family();
        for (reason, value) in [
            ("rotation_missed", lost.rotation_missed),
            ("truncated", lost.truncated),
            ("incomplete_record", lost.incomplete_record),
            ("malformed", counts.malformed),
            ("unweighable", counts.unweighable),
        ] {
            family.push(&[("reason", reason)], value as f64);
        }
        out.push(family);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_statements_by_execution_time() {
        let key = |queryid| StatementKey {
            userid: 1,
            dbid: 1,
            queryid,
        };
        let deltas: HashMap<StatementKey, Counters> = [(3, 5.0), (1, 9.0), (2, 5.0), (4, 1.0)]
            .into_iter()
            .map(|(q, ms)| {
                let d = Counters {
                    calls: 1.0,
                    exec_ms: ms,
                    ..Counters::default()
                };
                (key(q), d)
            })
            .collect();
        let (top, omitted) = top_statements(&deltas, 3);
        let ids: Vec<i64> = top.iter().map(|(k, _)| k.queryid).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(omitted, 1);
        assert_eq!(top_statements(&deltas, 10).1, 0);
    }

    #[test]
    fn shorten_folds_whitespace_and_truncates() {
        assert_eq!(shorten("SELECT  a,\n  b FROM t", 10), "SELECT a, …");
        assert_eq!(shorten("SELECT 1", 10), "SELECT 1");
    }
}
