//! Latency distributions recovered from pg_stat_statements' cumulative counters.
//!
//! pg_stat_statements keeps, per statement, `calls`, `total_exec_time`, `mean_exec_time` and
//! `stddev_exec_time` (population standard deviation), plus `min`/`max`. From the mean and the
//! standard deviation the cumulative sum of squares follows: `Σx² = calls·(stddev² + mean²)`.
//! Counters are cumulative, so the difference of two polls gives the *interval's* count, sum
//! and sum of squares, hence the interval's mean and variance ([`Moments::between`]).
//!
//! Each statement's interval calls are then described by a distribution with that mean and
//! variance ([`Shape`]), which [`super::histogram`] spreads over the buckets: a log-normal
//! (latencies are positive and right-skewed), clipped to the statement's all-time
//! `[min, max]`, which every execution of the interval lies in. When the variance is unusable
//! (one call, cancellation in the subtraction, a reset between polls with nothing to subtract)
//! all calls go to the interval mean — the baseline every other estimate is compared with
//! ([`Estimator::Mean`]).
//!
//! Limits: two moments cannot describe a multi-modal mix inside one statement (a 90 % / 10 %
//! mix of 2 ms and 40 ms comes out as one wide log-normal whose p95 is roughly half the true
//! one); statements are merged per workload, so a workload mixing fast and slow statements is
//! described well as long as each statement is roughly unimodal. See docs/statements.md.

use super::settings::Estimator;

/// One statement's cumulative timing counters, milliseconds as pg_stat_statements reports them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cumulative {
    pub calls: f64,
    pub total: f64,
    pub mean: f64,
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
}

impl Cumulative {
    /// Σx² of all executions so far.
    fn sum_of_squares(&self) -> f64 {
        self.calls * (self.stddev * self.stddev + self.mean * self.mean)
    }
}

/// The executions of one interval: count, mean and (when recoverable) variance, in ms, and the
/// range every execution lies in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub calls: f64,
    pub mean: f64,
    pub variance: Option<f64>,
    pub min: f64,
    pub max: f64,
}

impl Moments {
    /// All executions of a statement whose counters started inside the interval (a new or
    /// reset entry): its cumulative moments are the interval's.
    pub fn fresh(cur: &Cumulative) -> Moments {
        Moments {
            calls: cur.calls,
            mean: if cur.calls > 0.0 {
                cur.total / cur.calls
            } else {
                0.0
            },
            variance: Some(cur.stddev * cur.stddev),
            min: cur.min,
            max: cur.max,
        }
        .checked()
    }

    /// The executions between two polls of the same entry. `bounds_valid` is false when the
    /// min/max were reset in between (PostgreSQL 17's minmax-only reset), in which case they no
    /// longer bound the older executions of the interval.
    pub fn between(prev: &Cumulative, cur: &Cumulative, bounds_valid: bool) -> Moments {
        let calls = cur.calls - prev.calls;
        let sum = cur.total - prev.total;
        let mean = if calls > 0.0 { sum / calls } else { 0.0 };
        let squares = cur.sum_of_squares() - prev.sum_of_squares();
        let variance = squares / calls - mean * mean;
        // The subtraction of two large sums loses precision once a statement has run many
        // times: a difference below what f64 resolves of the cumulative value is noise.
        let resolvable = squares > cur.sum_of_squares() * 1e-10;
        let (min, max) = if bounds_valid {
            (cur.min, cur.max)
        } else {
            (0.0, f64::INFINITY)
        };
        Moments {
            calls,
            mean,
            variance: (resolvable && variance.is_finite() && variance > 0.0).then_some(variance),
            min,
            max,
        }
        .checked()
    }

    /// Drops a variance that cannot be right: a distribution on [min, max] with mean m has
    /// variance at most (max − m)(m − min) (Bhatia–Davis); above that it is capped.
    fn checked(mut self) -> Moments {
        if !(self.min <= self.mean && self.mean <= self.max) {
            // Rounding put the mean outside the range (or the range is unknown): widen it.
            self.min = self.min.min(self.mean).max(0.0);
            self.max = self.max.max(self.mean);
        }
        if let Some(v) = self.variance {
            let cap = (self.max - self.mean) * (self.mean - self.min);
            self.variance = if !v.is_finite() || v <= 0.0 {
                None
            } else if cap.is_finite() && v > cap {
                (cap > 0.0).then_some(cap)
            } else {
                Some(v)
            };
        }
        self
    }
}

/// The distribution assumed for one statement's executions in one interval (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Every execution at this value.
    Point(f64),
    /// ln(x) ~ N(mu, sigma²), clipped to [lo, hi]: mass outside is put on the bound.
    LogNormal {
        mu: f64,
        sigma: f64,
        lo: f64,
        hi: f64,
    },
    /// (x − lo) / (hi − lo) ~ Beta(alpha, beta).
    Beta {
        alpha: f64,
        beta: f64,
        lo: f64,
        hi: f64,
    },
}

/// Above this alpha + beta (variance below 1/1000 of the most the range allows) the bounds
/// carry no information the log-normal lacks, and the continued fraction converges slowly.
const MAX_BETA_CONCENTRATION: f64 = 1000.0;

impl Shape {
    /// The shape matching `m` under `estimator`.
    pub fn fit(m: &Moments, estimator: Estimator) -> Shape {
        if let (Estimator::Beta, Some(var)) = (estimator, m.variance) {
            let range = m.max - m.min;
            if range.is_finite() && range > 0.0 {
                // var / its maximum on the range = 1 / (alpha + beta + 1).
                let ratio = var / ((m.max - m.mean) * (m.mean - m.min));
                let k = 1.0 / ratio - 1.0;
                if k.is_finite() && k > 0.0 && k <= MAX_BETA_CONCENTRATION {
                    let p = (m.mean - m.min) / range;
                    return Shape::Beta {
                        alpha: p * k,
                        beta: (1.0 - p) * k,
                        lo: m.min,
                        hi: m.max,
                    };
                }
            }
        }
        match (estimator, m.variance) {
            (Estimator::Lognormal | Estimator::Beta, Some(var)) if m.mean > 0.0 => {
                // Moment matching: E = exp(mu + s²/2), Var = (exp(s²) − 1)·E².
                let s2 = (1.0 + var / (m.mean * m.mean)).ln();
                Shape::LogNormal {
                    mu: m.mean.ln() - s2 / 2.0,
                    sigma: s2.sqrt(),
                    lo: m.min,
                    hi: m.max,
                }
            }
            _ => Shape::Point(m.mean),
        }
    }

    /// P(X ≤ x).
    pub fn cdf(&self, x: f64) -> f64 {
        match *self {
            Shape::Point(v) => {
                if v <= x {
                    1.0
                } else {
                    0.0
                }
            }
            Shape::LogNormal { mu, sigma, lo, hi } => {
                if x < lo || x <= 0.0 {
                    0.0
                } else if x >= hi {
                    1.0
                } else {
                    normal_cdf((x.ln() - mu) / sigma)
                }
            }
            Shape::Beta {
                alpha,
                beta,
                lo,
                hi,
            } => regularized_beta(alpha, beta, (x - lo) / (hi - lo)),
        }
    }
}

/// I_x(a, b), the regularized incomplete beta function (the Beta(a, b) CDF), by the continued
/// fraction of Numerical Recipes (§6.4) with the symmetry I_x(a, b) = 1 − I_{1−x}(b, a).
pub fn regularized_beta(a: f64, b: f64, x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    let value = if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    };
    value.clamp(0.0, 1.0)
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-14 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x) = Γ(x + 1) / x.
        return ln_gamma(x + 1.0) - x.ln();
    }
    let x = x - 1.0;
    let mut sum = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        sum += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Standard normal CDF, from libm's complementary error function (a maintained port of C's
/// libm, accurate to the last bits).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::super::histogram::{histogram_quantile, round_counts, spread};
    use super::*;

    /// The 1-2-5 ladder the estimator's accuracy bar ("within one bucket") was set on; the
    /// default layout is finer, which makes "one bucket" a stricter bar than the two moments
    /// can meet for a two-mode mix (docs/statements.md).
    const DEFAULT_BUCKETS: &[f64] = &[
        0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
        5.0, 10.0,
    ];

    /// Cumulative counters of a set of executions, as pg_stat_statements keeps them.
    fn counters(xs: &[f64]) -> Cumulative {
        let n = xs.len() as f64;
        let total: f64 = xs.iter().sum();
        let mean = total / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        Cumulative {
            calls: n,
            total,
            mean,
            stddev: var.sqrt(),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(0.0, f64::max),
        }
    }

    fn quantiles(shape: &Shape, calls: f64, qs: &[f64]) -> Vec<f64> {
        let bounds_ms: Vec<f64> = DEFAULT_BUCKETS.iter().map(|b| b * 1000.0).collect();
        let mut counts = vec![0.0; bounds_ms.len() + 1];
        spread(shape, calls, &bounds_ms, &mut counts);
        let rounded = round_counts(&counts, calls as u64);
        let mut cumulative = Vec::new();
        let mut acc = 0.0;
        for c in rounded {
            acc += c as f64;
            cumulative.push(acc);
        }
        let mut bounds = bounds_ms.clone();
        bounds.push(f64::INFINITY);
        qs.iter()
            .map(|q| histogram_quantile(*q, &bounds, &cumulative))
            .collect()
    }

    fn bucket_index(ms: f64) -> usize {
        DEFAULT_BUCKETS
            .iter()
            .position(|b| b * 1000.0 >= ms)
            .unwrap_or(DEFAULT_BUCKETS.len())
    }

    #[test]
    fn interval_moments_come_from_deltas() {
        let before: Vec<f64> = (0..1000).map(|i| 100.0 + (i % 7) as f64).collect();
        let interval: Vec<f64> = (0..300).map(|i| 1.0 + (i % 3) as f64).collect();
        let all: Vec<f64> = before.iter().chain(&interval).copied().collect();
        let m = Moments::between(&counters(&before), &counters(&all), true);
        let truth = counters(&interval);
        assert_eq!(m.calls, 300.0);
        assert!((m.mean - truth.mean).abs() < 1e-9, "{m:?}");
        let var = m.variance.unwrap();
        assert!(
            (var - truth.stddev.powi(2)).abs() < 1e-6,
            "{var} vs {truth:?}"
        );
    }

    #[test]
    fn unusable_variance_falls_back_to_the_mean() {
        // One call in the interval: variance 0, everything at the mean.
        let before = counters(&[5.0, 6.0, 7.0]);
        let after = counters(&[5.0, 6.0, 7.0, 9.0]);
        let m = Moments::between(&before, &after, true);
        assert_eq!(m.variance, None);
        assert_eq!(Shape::fit(&m, Estimator::Lognormal), Shape::Point(9.0));
        // A huge history and a tiny interval: the difference of sums of squares is noise.
        let big = Cumulative {
            calls: 1e12,
            total: 1e12 * 3.0,
            mean: 3.0,
            stddev: 1.0,
            min: 1.0,
            max: 10.0,
        };
        let next = Cumulative {
            calls: big.calls + 1.0,
            total: big.total + 3.0,
            ..big
        };
        assert_eq!(Moments::between(&big, &next, true).variance, None);
    }

    #[test]
    fn lognormal_matches_the_moments() {
        let m = Moments {
            calls: 1.0,
            mean: 5.0,
            variance: Some(16.0),
            min: 0.0,
            max: f64::INFINITY,
        };
        let Shape::LogNormal { mu, sigma, .. } = Shape::fit(&m, Estimator::Lognormal) else {
            panic!("expected a log-normal");
        };
        let mean = (mu + sigma * sigma / 2.0).exp();
        let var = ((sigma * sigma).exp() - 1.0) * mean * mean;
        assert!((mean - 5.0).abs() < 1e-9 && (var - 16.0).abs() < 1e-9);
        // Median of a log-normal is exp(mu).
        let shape = Shape::fit(&m, Estimator::Lognormal);
        assert!((shape.cdf(mu.exp()) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn normal_cdf_is_accurate() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746),
            (1.644_853_6, 0.95),
            (2.326_347_9, 0.99),
            (-1.959_964, 0.025),
        ] {
            assert!((normal_cdf(z) - p).abs() < 1e-6, "{z}: {}", normal_cdf(z));
        }
    }

    /// The mix: 90 % at 2 ms, 10 % at 40 ms. The truth p95/p99 is 40 ms. The mean
    /// baseline puts everything at 5.8 ms; the moment-matched log-normal must land within one
    /// bucket of the truth for p95.
    #[test]
    fn bimodal_mix_p95_within_one_bucket() {
        let history: Vec<f64> = (0..5000).map(|i| 1.0 + (i % 5) as f64 * 0.3).collect();
        let interval: Vec<f64> = (0..1000)
            .map(|i| if i % 10 == 0 { 40.0 } else { 2.0 })
            .collect();
        let all: Vec<f64> = history.iter().chain(&interval).copied().collect();
        let m = Moments::between(&counters(&history), &counters(&all), true);
        let lognormal = quantiles(&Shape::fit(&m, Estimator::Lognormal), 1000.0, &[0.5, 0.95]);
        let mean = quantiles(&Shape::fit(&m, Estimator::Mean), 1000.0, &[0.5, 0.95]);
        let truth_bucket = bucket_index(40.0) as i64;
        assert!(
            (bucket_index(lognormal[1]) as i64 - truth_bucket).abs() <= 1,
            "log-normal p95 {} ms vs truth 40 ms",
            lognormal[1]
        );
        assert!(
            (bucket_index(mean[1]) as i64 - truth_bucket).abs() > 1,
            "the baseline should be off: {mean:?}"
        );
    }

    #[test]
    fn incomplete_beta_matches_known_values() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        // I_x(1, 1) = x; I_x(2, 1) = x²; I_x(1, 3) = 1 − (1 − x)³; I_0.5(a, a) = 0.5.
        for x in [0.1, 0.5, 0.9] {
            assert!((regularized_beta(1.0, 1.0, x) - x).abs() < 1e-12);
            assert!((regularized_beta(2.0, 1.0, x) - x * x).abs() < 1e-12);
            assert!((regularized_beta(1.0, 3.0, x) - (1.0 - (1.0 - x).powi(3))).abs() < 1e-12);
        }
        for a in [0.05, 0.7, 30.0, 400.0] {
            assert!((regularized_beta(a, a, 0.5) - 0.5).abs() < 1e-9, "{a}");
        }
    }

    #[test]
    fn beta_keeps_modes_at_the_bounds() {
        let history: Vec<f64> = (0..5000).map(|i| 1.0 + (i % 5) as f64 * 0.3).collect();
        let interval: Vec<f64> = (0..1000)
            .map(|i| if i % 10 == 0 { 40.0 } else { 2.0 })
            .collect();
        let all: Vec<f64> = history.iter().chain(&interval).copied().collect();
        // The interval's own min/max (2 and 40), as after a recent entry creation.
        let m = Moments {
            min: 2.0,
            ..Moments::between(&counters(&history), &counters(&all), true)
        };
        let shape = Shape::fit(&m, Estimator::Beta);
        assert!(matches!(shape, Shape::Beta { .. }), "{shape:?}");
        let q = quantiles(&shape, 1000.0, &[0.5, 0.95]);
        assert!(bucket_index(q[0]) <= bucket_index(2.0) + 1, "p50 {q:?}");
        assert_eq!(bucket_index(q[1]), bucket_index(40.0), "p95 {q:?}");
        // Loose bounds: the log-normal takes over.
        let loose = Moments {
            max: 1e6,
            min: 0.0,
            ..m
        };
        assert!(matches!(
            Shape::fit(&loose, Estimator::Beta),
            Shape::LogNormal { .. }
        ));
    }

    #[test]
    fn clipping_respects_min_and_max() {
        let m = Moments {
            calls: 10.0,
            mean: 10.0,
            variance: Some(100.0),
            min: 8.0,
            max: 30.0,
        };
        let shape = Shape::fit(&m, Estimator::Lognormal);
        assert_eq!(shape.cdf(7.9), 0.0);
        assert!(shape.cdf(8.0) > 0.0);
        assert_eq!(shape.cdf(30.0), 1.0);
    }
}
