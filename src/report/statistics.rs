//! The significance test of a report: the Mann-Whitney U (Wilcoxon rank-sum) test of the
//! per-step values of a KPI before and after, two-sided, with the normal approximation, tie
//! correction and a continuity correction; and the Hodges-Lehmann shift (the median of all
//! after - before differences) as the size of the change.
//!
//! Why a rank test: per-step latencies and rates are skewed and have outliers (a checkpoint, a
//! lock held for seconds); ranks are not moved by how far an outlier lies, and the test needs
//! no assumption about the shape of the distribution. Written here (about 80 lines) rather than
//! pulled in from a statistics crate: what is needed is one test, and the crates that offer it
//! bring linear algebra and distributions the exporter does not use.

/// The outcome of the test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RankTest {
    /// U of the after sample: the number of (before, after) pairs where after is larger (ties
    /// count one half).
    pub u_after: f64,
    /// Standardized U (positive: after tends to be larger).
    pub z: f64,
    /// Two-sided p-value under "both ranges come from the same distribution".
    pub p_value: f64,
    /// Median of after - before over all pairs.
    pub shift: f64,
}

/// The test on two samples; `None` when either is empty.
pub fn mann_whitney(before: &[f64], after: &[f64]) -> Option<RankTest> {
    let (n1, n2) = (before.len() as f64, after.len() as f64);
    if before.is_empty() || after.is_empty() {
        return None;
    }
    // Ranks of the pooled sample, ties given their average rank.
    let mut pooled: Vec<(f64, bool)> = before
        .iter()
        .map(|&v| (v, false))
        .chain(after.iter().map(|&v| (v, true)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pooled.len();
    let mut rank_sum_after = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let tied = (j - i + 1) as f64;
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_after += average_rank * pooled[i..=j].iter().filter(|p| p.1).count() as f64;
        tie_term += tied * tied * tied - tied;
        i = j + 1;
    }
    let u_after = rank_sum_after - n2 * (n2 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let total = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)).max(1.0));
    let (z, p_value) = if variance <= 0.0 {
        // Every value equal: nothing to tell apart.
        (0.0, 1.0)
    } else {
        let distance = ((u_after - mean).abs() - 0.5).max(0.0);
        let z = distance / variance.sqrt() * (u_after - mean).signum();
        (z, (2.0 * normal_upper_tail(z.abs())).min(1.0))
    };
    let mut differences: Vec<f64> = after
        .iter()
        .flat_map(|a| before.iter().map(move |b| a - b))
        .collect();
    Some(RankTest {
        u_after,
        z,
        p_value,
        shift: median(&mut differences).unwrap_or(0.0),
    })
}

/// The median; `None` for an empty sample. Sorts `values`.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// P(Z > z) for a standard normal Z, from libm's erfc (the same function C's libm has: the
/// tail of a rank test needs nothing finer).
fn normal_upper_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream (xorshift), so the tests need no seed handling.
    fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed.max(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 10_000) as f64 / 10_000.0
            })
            .collect()
    }

    #[test]
    fn normal_tail_matches_tables() {
        assert!((normal_upper_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_upper_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((normal_upper_tail(2.575_829) - 0.005).abs() < 1e-6);
    }

    #[test]
    fn matches_a_worked_example() {
        // Two samples with a tie across them, worked by hand: after's ranks 5.5, 8..12 sum to
        // 55.5, so U(after) = 55.5 - 21 = 34.5 and U(before) = 1.5; the tie term is 2^3 - 2 = 6,
        // variance = 36/12 * (13 - 6/132) = 38.864; z = (16.5 - 0.5) / 6.234 = 2.567 and
        // p = 2 * (1 - Phi(2.567)) = 0.0103.
        let before = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let after = [5.0, 7.0, 8.0, 9.0, 10.0, 11.0];
        let test = mann_whitney(&before, &after).unwrap();
        assert_eq!(test.u_after, 34.5);
        assert!((test.z - 2.567).abs() < 0.001, "{test:?}");
        assert!((test.p_value - 0.0103).abs() < 0.0001, "{test:?}");
        assert_eq!(test.shift, 5.0);
    }

    #[test]
    fn a_clear_shift_is_found() {
        let before: Vec<f64> = noise(1, 20).iter().map(|v| 0.020 + 0.01 * v).collect();
        let after: Vec<f64> = noise(2, 20).iter().map(|v| 0.002 + 0.01 * v).collect();
        let test = mann_whitney(&before, &after).unwrap();
        assert!(test.p_value < 0.001, "{test:?}");
        assert!(test.z < 0.0 && test.shift < -0.01, "{test:?}");
    }

    #[test]
    fn noise_alone_is_not_significant() {
        // The same distribution on both sides, many times: about alpha of them come out
        // "significant" at alpha; far more would mean the p-values are too small.
        let mut significant = 0;
        for seed in 0..200 {
            let before = noise(seed * 2 + 1, 15);
            let after = noise(seed * 2 + 2, 15);
            if mann_whitney(&before, &after).unwrap().p_value < 0.05 {
                significant += 1;
            }
        }
        assert!(
            significant <= 20,
            "{significant} of 200 noise pairs significant at 0.05"
        );
    }

    #[test]
    fn all_ties_and_empty_samples() {
        let test = mann_whitney(&[1.0; 8], &[1.0; 8]).unwrap();
        assert_eq!(test.p_value, 1.0);
        assert!(mann_whitney(&[], &[1.0]).is_none());
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }
}
