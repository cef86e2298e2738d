//! Latency histograms: each statement's interval calls, distributed as the [`Shape`]
//! [`super::estimate`] fits, are spread over the buckets ([`spread`]); per (database,
//! workload) the expected counts of an interval are rounded to whole calls ([`round_counts`])
//! and added to the collector's running [`Histogram`].

use super::estimate::Shape;

/// The bucket upper bounds in effect (+Inf excluded), in the unit of pg_stat_statements and as
/// exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Upper bounds in ms.
    pub bounds_ms: Vec<f64>,
    /// `le` label values: the shortest decimal that reads back as the bound ("0.005", "10").
    pub le: Vec<String>,
}

impl Buckets {
    /// From upper bounds in seconds.
    pub fn new(bounds_seconds: &[f64]) -> Buckets {
        Buckets {
            bounds_ms: bounds_seconds.iter().map(|b| b * 1000.0).collect(),
            le: bounds_seconds.iter().map(|b| format!("{b}")).collect(),
        }
    }

    /// The `le` label of bucket `i`; the one past the bounds is `+Inf`.
    pub fn le(&self, i: usize) -> String {
        self.le
            .get(i)
            .cloned()
            .unwrap_or_else(|| "+Inf".to_string())
    }
}

/// The executions of one (database, workload) in one interval, before rounding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interval {
    /// Expected calls per bucket (non-cumulative), the last one +Inf.
    fractions: Vec<f64>,
    calls: u64,
    sum_seconds: f64,
    slow: f64,
}

impl Interval {
    pub fn new(buckets: &Buckets) -> Interval {
        Interval {
            fractions: vec![0.0; buckets.bounds_ms.len() + 1],
            ..Interval::default()
        }
    }

    /// Adds one statement's `calls` executions taking `exec_ms` in all, distributed as `shape`;
    /// `threshold_ms` is `statements.slow_threshold`.
    pub fn add(
        &mut self,
        shape: &Shape,
        calls: f64,
        exec_ms: f64,
        buckets: &Buckets,
        threshold_ms: f64,
    ) {
        spread(shape, calls, &buckets.bounds_ms, &mut self.fractions);
        self.calls += calls as u64;
        self.sum_seconds += exec_ms / 1000.0;
        self.slow += calls * (1.0 - shape.cdf(threshold_ms));
    }

    /// Replaces the estimated shape with a measured one: `weights` per bucket (non-cumulative,
    /// +Inf last) of logged durations, `slow_share` their weighted share over the threshold.
    /// The calls and the sum stay pg_stat_statements' exact ones.
    pub fn reshape(&mut self, weights: Vec<f64>, slow_share: f64) {
        debug_assert_eq!(weights.len(), self.fractions.len());
        self.fractions = weights;
        self.slow = self.calls as f64 * slow_share;
    }
}

/// A latency histogram's running state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Non-cumulative counts per bucket, the last one +Inf.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
    /// Executions slower than the threshold (estimated, so fractional).
    pub slow: f64,
}

impl Histogram {
    /// No executions yet, in `buckets` buckets (+Inf included).
    pub fn empty(buckets: usize) -> Histogram {
        Histogram {
            counts: vec![0; buckets],
            ..Histogram::default()
        }
    }

    /// Adds an interval, its expected counts rounded so that `_count` and the `+Inf` bucket
    /// are exactly the interval's calls.
    pub fn record(&mut self, interval: &Interval) {
        let rounded = round_counts(&interval.fractions, interval.calls);
        for (total, add) in self.counts.iter_mut().zip(rounded) {
            *total += add;
        }
        self.count += interval.calls;
        self.sum_seconds += interval.sum_seconds;
        self.slow += interval.slow;
    }

    /// Adds another histogram with the same buckets.
    pub fn merge(&mut self, other: &Histogram) {
        for (total, add) in self.counts.iter_mut().zip(&other.counts) {
            *total += add;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
        self.slow += other.slow;
    }

    /// The number of buckets (+Inf included), for an empty histogram to merge into.
    pub fn buckets(&self) -> usize {
        self.counts.len()
    }
}

/// Adds `calls` executions distributed as `shape` to per-bucket (non-cumulative) `counts`;
/// `bounds_ms` are the upper bounds of all but the last (+Inf) bucket.
pub fn spread(shape: &Shape, calls: f64, bounds_ms: &[f64], counts: &mut [f64]) {
    debug_assert_eq!(counts.len(), bounds_ms.len() + 1);
    let mut below = 0.0;
    for (i, bound) in bounds_ms.iter().enumerate() {
        let cdf = shape.cdf(*bound);
        counts[i] += calls * (cdf - below);
        below = cdf;
    }
    counts[bounds_ms.len()] += calls * (1.0 - below);
}

/// Rounds fractional per-bucket counts to integers summing to `total` (largest remainder),
/// so that `_count` is the exact number of calls and buckets stay whole numbers.
pub fn round_counts(fractions: &[f64], total: u64) -> Vec<u64> {
    let sum: f64 = fractions.iter().sum();
    if total == 0 || sum.is_nan() || sum <= 0.0 {
        return vec![0; fractions.len()];
    }
    let scaled: Vec<f64> = fractions
        .iter()
        .map(|f| f.max(0.0) * total as f64 / sum)
        .collect();
    let mut out: Vec<u64> = scaled.iter().map(|v| v.floor() as u64).collect();
    let assigned: u64 = out.iter().sum();
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = scaled[a] - scaled[a].floor();
        let rb = scaled[b] - scaled[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().take(total.saturating_sub(assigned) as usize) {
        out[i] += 1;
    }
    out
}

/// The q-quantile of a histogram given as cumulative counts per upper bound (the last bound
/// +Inf), interpolated linearly inside the bucket as PromQL's `histogram_quantile` does.
pub fn histogram_quantile(q: f64, bounds: &[f64], cumulative: &[f64]) -> f64 {
    let total = match cumulative.last() {
        Some(t) if *t > 0.0 => *t,
        _ => return f64::NAN,
    };
    let rank = q * total;
    let i = cumulative
        .iter()
        .position(|c| *c >= rank)
        .unwrap_or(cumulative.len() - 1);
    if i == bounds.len() - 1 {
        // The +Inf bucket: PromQL answers the highest finite bound.
        return bounds[bounds.len().saturating_sub(2)];
    }
    let (start, below) = if i == 0 {
        (0.0, 0.0)
    } else {
        (bounds[i - 1], cumulative[i - 1])
    };
    let in_bucket = cumulative[i] - below;
    if in_bucket <= 0.0 {
        return bounds[i];
    }
    start + (bounds[i] - start) * (rank - below) / in_bucket
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_the_total() {
        assert_eq!(round_counts(&[0.4, 0.4, 0.2], 1), vec![1, 0, 0]);
        assert_eq!(round_counts(&[1.5, 1.5, 7.0], 10), vec![2, 1, 7]);
        assert_eq!(round_counts(&[0.0, 0.0], 0), vec![0, 0]);
        let r = round_counts(&[0.33, 0.33, 0.34], 1000);
        assert_eq!(r.iter().sum::<u64>(), 1000);
    }

    #[test]
    fn quantile_interpolates_like_promql() {
        let bounds = [1.0, 2.0, 4.0, f64::INFINITY];
        let cumulative = [10.0, 30.0, 40.0, 40.0];
        assert_eq!(histogram_quantile(0.25, &bounds, &cumulative), 1.0);
        assert_eq!(histogram_quantile(0.5, &bounds, &cumulative), 1.5);
        assert_eq!(histogram_quantile(1.0, &bounds, &cumulative), 4.0);
        let with_inf = [10.0, 30.0, 40.0, 50.0];
        assert_eq!(histogram_quantile(0.99, &bounds, &with_inf), 4.0);
    }

    #[test]
    fn le_labels_read_back_as_the_bounds() {
        let buckets = Buckets::new(&[0.0001, 0.005, 10.0]);
        assert_eq!(buckets.bounds_ms, vec![0.1, 5.0, 10_000.0]);
        assert_eq!(buckets.le(0), "0.0001");
        assert_eq!(buckets.le(1), "0.005");
        assert_eq!(buckets.le(2), "10");
        assert_eq!(buckets.le(3), "+Inf");
    }

    #[test]
    fn interval_rounds_into_the_running_histogram() {
        let buckets = Buckets::new(&[0.001, 0.01]);
        let mut interval = Interval::new(&buckets);
        // 3 calls at 0.5 ms and 1 at 50 ms; threshold 20 ms.
        interval.add(&Shape::Point(0.5), 3.0, 1.5, &buckets, 20.0);
        interval.add(&Shape::Point(50.0), 1.0, 50.0, &buckets, 20.0);
        let mut h = Histogram::empty(3);
        h.record(&interval);
        h.record(&interval);
        assert_eq!(h.counts, vec![6, 0, 2]);
        assert_eq!(h.count, 8);
        assert!((h.sum_seconds - 0.103).abs() < 1e-12);
        assert_eq!(h.slow, 2.0);
        let mut merged = Histogram::empty(h.buckets());
        merged.merge(&h);
        merged.merge(&h);
        assert_eq!((merged.counts.clone(), merged.count), (vec![12, 0, 4], 16));
    }
}
