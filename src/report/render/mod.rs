//! The report's outputs: a terminal table (`table`), Markdown for a pull-request comment
//! (`markdown`), JSON for tools (`json`) and a self-contained HTML page with a small chart per
//! KPI (`html`). The formatting of values, changes and targets every output shares is here.

pub mod html;
pub mod json;
pub mod markdown;
pub mod table;

use super::kpi::{Bound, Unit};
use super::verdict::{Comparison, Verdict};
use super::{Report, Row};

/// The output formats of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Markdown,
    Json,
    Html,
}

pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table::render(report),
        Format::Markdown => markdown::render(report),
        Format::Json => json::render(report),
        Format::Html => html::render(report),
    }
}

/// A value in its unit, 3 significant digits (milliseconds under a second, percent for ratios).
pub fn value(unit: Unit, value: Option<f64>) -> String {
    let Some(v) = value else {
        return "missing".into();
    };
    match unit {
        Unit::Seconds if v.abs() < 1.0 => format!("{} ms", significant(v * 1000.0)),
        Unit::Seconds => format!("{} s", significant(v)),
        Unit::Ratio => format!("{}%", significant(v * 100.0)),
        Unit::PerSecond => format!("{}/s", significant(v)),
        Unit::BytesPerSecond if v.abs() >= 1e6 => format!("{} MB/s", significant(v / 1e6)),
        Unit::BytesPerSecond if v.abs() >= 1e3 => format!("{} kB/s", significant(v / 1e3)),
        Unit::BytesPerSecond => format!("{} B/s", significant(v)),
        Unit::Count => significant(v),
    }
}

fn significant(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.digits$}")
}

/// The relative change, or "-" when there is none to compute (missing, or before was 0).
pub fn change(comparison: &Comparison) -> String {
    match comparison.change {
        Some(c) => format!("{:+.1}%", c * 100.0),
        None => "-".into(),
    }
}

pub fn p_value(comparison: &Comparison) -> String {
    match (&comparison.test, comparison.verdict) {
        (_, Verdict::NotEnoughData) | (None, _) => "-".into(),
        (Some(test), _) if test.p_value < 0.001 => "<0.001".into(),
        (Some(test), _) => format!("{:.3}", test.p_value),
    }
}

/// The target, and whether the after value meets it.
pub fn target(row: &Row) -> String {
    let Some(target) = row.comparison.target else {
        return "-".into();
    };
    let bound = match target.bound {
        Bound::AtMost => "≤",
        Bound::AtLeast => "≥",
    };
    let state = match row.comparison.target_met {
        Some(true) => " met",
        Some(false) => " MISSED",
        None => "",
    };
    format!("{bound} {}{state}", value(row.unit, Some(target.value)))
}

/// The KPI's name with its row labels, e.g. `latency p95 (workload=chat, datname=app)`.
pub fn name(row: &Row) -> String {
    if row.labels.is_empty() {
        return row.kpi.to_string();
    }
    let labels: Vec<String> = row.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{} ({})", row.kpi, labels.join(", "))
}

/// Before or after with its number of per-step values, e.g. `2.10 ms (n=12)`.
pub fn side(unit: Unit, median: Option<f64>, points: usize) -> String {
    match median {
        Some(_) => format!("{} (n={points})", value(unit, median)),
        None => value(unit, None),
    }
}

/// The verdict as shown: with "(ignored)" for a row `--ignore` matched.
pub fn verdict(row: &Row) -> String {
    let text = row.comparison.verdict.text();
    if row.ignored {
        format!("{text} (ignored)")
    } else {
        text.to_string()
    }
}

/// One line counting the verdicts, and the exit code they give.
pub fn summary(report: &Report) -> String {
    let count = |verdict: Verdict| {
        report
            .rows
            .iter()
            .filter(|r| r.comparison.verdict == verdict)
            .count()
    };
    let missed = report
        .rows
        .iter()
        .filter(|r| !r.ignored && r.comparison.target_met == Some(false))
        .count();
    let ignored = report.rows.iter().filter(|r| r.ignored).count();
    format!(
        "{} improved, {} regressed, {} changed (load), {} no significant change, {} not enough data; \
         {missed} target(s) missed; {ignored} row(s) ignored; exit code {}",
        count(Verdict::Improved),
        count(Verdict::Regressed),
        count(Verdict::Changed),
        count(Verdict::NoSignificantChange),
        count(Verdict::NotEnoughData),
        if report.fails() { super::EXIT_FAILED_KPI } else { 0 }
    )
}

pub fn header_lines(report: &Report) -> Vec<String> {
    vec![
        format!("target {} on {}", report.target, report.prometheus),
        format!("before {}", report.before.display()),
        format!("after  {}", report.after.display()),
        format!(
            "step {} s, alpha {}, at least {} values per range, minimum change {}%",
            report.step_seconds,
            report.significance.alpha,
            report.significance.min_points,
            report.significance.min_change * 100.0
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_units() {
        assert_eq!(value(Unit::Seconds, Some(0.0021)), "2.10 ms");
        assert_eq!(value(Unit::Seconds, Some(0.028)), "28.0 ms");
        assert_eq!(value(Unit::Seconds, Some(120.0)), "120 s");
        assert_eq!(value(Unit::Ratio, Some(0.9912)), "99.1%");
        assert_eq!(value(Unit::PerSecond, Some(0.0)), "0/s");
        assert_eq!(value(Unit::Count, None), "missing");
        assert_eq!(value(Unit::BytesPerSecond, Some(25_000.0)), "25.0 kB/s");
    }
}
