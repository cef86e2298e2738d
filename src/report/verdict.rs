//! One KPI row's verdict: the per-step values of both ranges, summarized by their medians,
//! compared with the rank test, and checked against the KPI's target.

use serde::Serialize;

use super::kpi::{Better, Bound};
use super::statistics::{self, RankTest};

/// How a KPI moved from before to after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    /// A significant change of a KPI that is load rather than quality (`Better::Neither`).
    Changed,
    NoSignificantChange,
    NotEnoughData,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
            Verdict::Changed => "changed",
            Verdict::NoSignificantChange => "no significant change",
            Verdict::NotEnoughData => "not enough data",
        }
    }
}

/// When a difference counts: the test's level, the fewest per-step values per range, and the
/// smallest relative change of the medians worth a verdict.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Significance {
    pub alpha: f64,
    pub min_points: usize,
    /// A change of the medians smaller than this share of the before median is "no significant
    /// change" however small p is: with steady per-step values the rank test calls a 0.1 %
    /// shift significant, which is true and of no use to a deployment gate.
    pub min_change: f64,
}

/// A KPI target as Prometheus holds it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Target {
    pub rule: &'static str,
    pub bound: Bound,
    pub value: f64,
}

impl Target {
    pub fn met_by(&self, value: f64) -> bool {
        match self.bound {
            Bound::AtMost => value <= self.value,
            Bound::AtLeast => value >= self.value,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Medians of the per-step values; `None` when the range has no value (missing series).
    pub before: Option<f64>,
    pub after: Option<f64>,
    pub before_points: usize,
    pub after_points: usize,
    /// (after - before) / before, when both exist and before is not 0.
    pub change: Option<f64>,
    pub test: Option<RankTest>,
    pub verdict: Verdict,
    pub target: Option<Target>,
    /// Whether the after median meets the target (`None` without a target or an after value).
    pub target_met: Option<bool>,
}

impl Comparison {
    /// True when this row should fail a deployment gate.
    pub fn fails(&self) -> bool {
        self.verdict == Verdict::Regressed || self.target_met == Some(false)
    }
}

/// `resolution` is the smallest absolute difference of the medians that counts, in the KPI's
/// unit ([`super::kpi::Unit::resolution`]): one slow call in a 45-second range is a rate of
/// 0.00002/s, infinitely more than none, and no regression.
pub fn compare(
    before: &[f64],
    after: &[f64],
    better: Better,
    target: Option<Target>,
    significance: Significance,
    resolution: f64,
) -> Comparison {
    let before_median = statistics::median(&mut before.to_vec());
    let after_median = statistics::median(&mut after.to_vec());
    let change = match (before_median, after_median) {
        (Some(b), Some(a)) if b != 0.0 => Some((a - b) / b.abs()),
        _ => None,
    };
    let enough = before.len() >= significance.min_points && after.len() >= significance.min_points;
    let test = statistics::mann_whitney(before, after);
    // Large enough to matter: against the level it starts from and the unit's resolution. Not
    // against the target: a claim's p95 going from 1.8 to 3.1 ms is a regression to report
    // however far it stays under a 20 ms target.
    let large_enough = match (before_median, after_median) {
        (Some(b), Some(a)) => {
            let moved = (a - b).abs();
            moved >= resolution && moved >= significance.min_change * b.abs()
        }
        _ => false,
    };
    let verdict = match test {
        Some(test) if enough => {
            if test.p_value >= significance.alpha || test.z == 0.0 || !large_enough {
                Verdict::NoSignificantChange
            } else {
                let went_up = test.z > 0.0;
                match better {
                    Better::Neither => Verdict::Changed,
                    Better::Lower if went_up => Verdict::Regressed,
                    Better::Higher if !went_up => Verdict::Regressed,
                    _ => Verdict::Improved,
                }
            }
        }
        _ => Verdict::NotEnoughData,
    };
    Comparison {
        before: before_median,
        after: after_median,
        before_points: before.len(),
        after_points: after.len(),
        change,
        test,
        verdict,
        target,
        // Judged, as the change, only on enough values: one sample is no level.
        target_met: target
            .zip(after_median)
            .filter(|_| after.len() >= significance.min_points)
            .map(|(t, v)| t.met_by(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNIFICANCE: Significance = Significance {
        alpha: 0.01,
        min_points: 6,
        min_change: 0.05,
    };
    const RESOLUTION: f64 = 0.0001;

    fn ramp(from: f64, step: f64, n: usize) -> Vec<f64> {
        // Interleaved so the values are not sorted by time.
        (0..n).map(|i| from + step * ((i * 7) % n) as f64).collect()
    }

    #[test]
    fn lower_latency_is_improved_and_meets_its_target() {
        let target = Target {
            rule: "pgkpi_kpi:statement_p95_target_seconds",
            bound: Bound::AtMost,
            value: 0.020,
        };
        let c = compare(
            &ramp(0.025, 0.001, 12),
            &ramp(0.002, 0.0002, 12),
            Better::Lower,
            Some(target),
            SIGNIFICANCE,
            RESOLUTION,
        );
        assert_eq!(c.verdict, Verdict::Improved);
        assert_eq!(c.target_met, Some(true));
        assert!(!c.fails());
        assert!(c.change.unwrap() < -0.8);
    }

    #[test]
    fn direction_decides_regressed() {
        let low = ramp(0.90, 0.001, 10);
        let high = ramp(0.99, 0.001, 10);
        assert_eq!(
            compare(&high, &low, Better::Higher, None, SIGNIFICANCE, RESOLUTION).verdict,
            Verdict::Regressed
        );
        assert_eq!(
            compare(&low, &high, Better::Lower, None, SIGNIFICANCE, RESOLUTION).verdict,
            Verdict::Regressed
        );
        assert_eq!(
            compare(&low, &high, Better::Neither, None, SIGNIFICANCE, RESOLUTION).verdict,
            Verdict::Changed
        );
        assert!(compare(&low, &high, Better::Lower, None, SIGNIFICANCE, RESOLUTION).fails());
    }

    #[test]
    fn too_few_points_or_missing_is_not_enough_data() {
        let few = compare(
            &[1.0, 2.0, 3.0],
            &[10.0, 11.0, 12.0],
            Better::Lower,
            None,
            SIGNIFICANCE,
            RESOLUTION,
        );
        assert_eq!(few.verdict, Verdict::NotEnoughData);
        let missing = compare(
            &[],
            &ramp(1.0, 0.1, 10),
            Better::Lower,
            None,
            SIGNIFICANCE,
            RESOLUTION,
        );
        assert_eq!(missing.verdict, Verdict::NotEnoughData);
        assert_eq!(missing.before, None);
        assert_eq!(missing.change, None);
        assert!(!missing.fails());
    }

    #[test]
    fn a_missed_target_fails_without_a_regression() {
        let target = Target {
            rule: "pgkpi_kpi:cache_hit_ratio_min",
            bound: Bound::AtLeast,
            value: 0.9,
        };
        let same = ramp(0.5, 0.001, 10);
        let c = compare(
            &same,
            &same,
            Better::Higher,
            Some(target),
            SIGNIFICANCE,
            RESOLUTION,
        );
        assert_eq!(c.verdict, Verdict::NoSignificantChange);
        assert_eq!(c.target_met, Some(false));
        assert!(c.fails());
    }

    #[test]
    fn a_significant_change_below_the_floors_is_no_significant_change() {
        // Steady values: the rank test finds the shift, p is tiny.
        let before = ramp(0.999, 0.00001, 12);
        let after = ramp(0.998, 0.00001, 12);
        let ratio = compare(&before, &after, Better::Higher, None, SIGNIFICANCE, 0.005);
        assert!(ratio.test.unwrap().p_value < 0.001);
        assert_eq!(ratio.verdict, Verdict::NoSignificantChange);
        // One slow call in the after range: from none to a tiny rate.
        let none = vec![0.0; 9];
        let mut one = vec![0.0; 9];
        one.iter_mut().take(5).for_each(|v| *v = 0.00002);
        let rate = compare(&none, &one, Better::Lower, None, SIGNIFICANCE, 0.01);
        assert_eq!(rate.verdict, Verdict::NoSignificantChange);
        // Above the absolute floor but under 5 % of the level: still no change.
        let slow = ramp(0.100, 0.0001, 12);
        let slower = ramp(0.103, 0.0001, 12);
        let small = compare(
            &slow,
            &slower,
            Better::Lower,
            None,
            SIGNIFICANCE,
            RESOLUTION,
        );
        assert!(small.test.unwrap().p_value < 0.01);
        assert_eq!(small.verdict, Verdict::NoSignificantChange);
        // The same data with a larger shift is a regression.
        let much_slower = ramp(0.120, 0.0001, 12);
        assert_eq!(
            compare(
                &slow,
                &much_slower,
                Better::Lower,
                None,
                SIGNIFICANCE,
                RESOLUTION
            )
            .verdict,
            Verdict::Regressed
        );
    }
}
