//! Weighted duration samples of one (database, workload): the current interval's, which give
//! the histogram its shape, and the last `window`'s, which give exact quantiles.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One logged execution: its duration and how many executions it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Logged {
    pub duration_ms: f64,
    pub weight: f64,
}

/// The samples of one (database, workload).
#[derive(Debug, Default)]
pub struct Samples {
    /// Since the last poll.
    interval: Vec<Logged>,
    /// The last window's, oldest first, with the poll that took them.
    window: VecDeque<(Instant, Logged)>,
}

/// Most samples kept per (database, workload) in the window: bounds memory at the price of
/// a shorter effective window under very high sampled rates (the oldest go first).
pub const WINDOW_CAP: usize = 100_000;

impl Samples {
    pub fn push(&mut self, sample: Logged) {
        self.interval.push(sample);
    }

    /// Samples since the last poll.
    pub fn interval(&self) -> &[Logged] {
        &self.interval
    }

    /// Ends the interval: its samples join the window (unless `keep` is false: a window must
    /// not mix weights it cannot tell apart) and samples older than `window` leave it.
    pub fn close_interval(&mut self, now: Instant, window: Duration, keep: bool) {
        if keep {
            self.window
                .extend(self.interval.drain(..).map(|sample| (now, sample)));
        } else {
            self.interval.clear();
        }
        while let Some((at, _)) = self.window.front() {
            if now.duration_since(*at) > window || self.window.len() > WINDOW_CAP {
                self.window.pop_front();
            } else {
                break;
            }
        }
    }

    /// Forgets the window (the weights changed, or the log was lost).
    pub fn clear_window(&mut self) {
        self.window.clear();
    }

    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// The window's samples.
    pub fn window(&self) -> impl Iterator<Item = Logged> + '_ {
        self.window.iter().map(|(_, s)| *s)
    }

    /// The window's weighted quantiles at `qs` (ms), or None without samples.
    pub fn window_quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        quantiles(&self.window().collect::<Vec<_>>(), qs)
    }

    pub fn is_empty(&self) -> bool {
        self.interval.is_empty() && self.window.is_empty()
    }
}

/// Weighted quantiles: the smallest duration whose cumulative weight reaches q of the total
/// (the nearest-rank definition, each sample counted `weight` times).
pub fn quantiles(samples: &[Logged], qs: &[f64]) -> Option<Vec<f64>> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms));
    let total: f64 = sorted.iter().map(|s| s.weight).sum();
    Some(
        qs.iter()
            .map(|q| {
                let rank = q * total;
                let mut cumulative = 0.0;
                for s in &sorted {
                    cumulative += s.weight;
                    // Tolerance for the float sum of equal weights (1/rate each).
                    if cumulative >= rank * (1.0 - 1e-12) {
                        return s.duration_ms;
                    }
                }
                sorted[sorted.len() - 1].duration_ms
            })
            .collect(),
    )
}

/// The weighted share of `samples` slower than `threshold_ms`.
pub fn share_above(samples: &[Logged], threshold_ms: f64) -> f64 {
    let total: f64 = samples.iter().map(|s| s.weight).sum();
    let above: f64 = samples
        .iter()
        .filter(|s| s.duration_ms > threshold_ms)
        .map(|s| s.weight)
        .sum();
    if total > 0.0 {
        above / total
    } else {
        0.0
    }
}

/// Weighted counts per bucket (non-cumulative, +Inf last) of `samples`; `bounds_ms` as in
/// [`super::super::histogram::Buckets`].
pub fn bucket_weights(samples: &[Logged], bounds_ms: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0; bounds_ms.len() + 1];
    for s in samples {
        let i = bounds_ms.partition_point(|b| *b < s.duration_ms);
        counts[i] += s.weight;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(duration_ms: f64, weight: f64) -> Logged {
        Logged {
            duration_ms,
            weight,
        }
    }

    #[test]
    fn weighted_quantiles_count_each_sample_weight_times() {
        // 9 sampled at 1/0.1 = 10 each (90 executions) and 10 slow ones logged whole.
        let mut samples: Vec<Logged> = (1..=9).map(|i| s(i as f64, 10.0)).collect();
        samples.extend((0..10).map(|_| s(300.0, 1.0)));
        let q = quantiles(&samples, &[0.5, 0.9, 0.95, 1.0]).unwrap();
        assert_eq!(q, vec![5.0, 9.0, 300.0, 300.0]);
        assert_eq!(quantiles(&[], &[0.5]), None);
    }

    #[test]
    fn buckets_hold_values_up_to_their_bound() {
        let samples = [s(1.0, 10.0), s(1.5, 10.0), s(50.0, 1.0)];
        assert_eq!(
            bucket_weights(&samples, &[1.0, 2.0, 20.0]),
            vec![10.0, 10.0, 0.0, 1.0]
        );
    }

    #[test]
    fn the_window_forgets_old_and_unweighable_intervals() {
        let start = Instant::now();
        let window = Duration::from_secs(300);
        let mut samples = Samples::default();
        samples.push(s(1.0, 1.0));
        samples.close_interval(start, window, true);
        samples.push(s(2.0, 1.0));
        samples.close_interval(start + Duration::from_secs(200), window, false);
        assert_eq!(samples.window_len(), 1);
        samples.push(s(3.0, 1.0));
        samples.close_interval(start + Duration::from_secs(301), window, true);
        assert_eq!(samples.window_quantiles(&[0.5]), Some(vec![3.0]));
    }
}
