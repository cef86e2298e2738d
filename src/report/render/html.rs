//! A self-contained HTML page: the table with a small chart per KPI (its per-step values
//! before, then after, the medians as lines, the target dashed), inline CSS and SVG, nothing
//! fetched from the network.

use super::super::kpi::Bound;
use super::super::verdict::Verdict;
use super::super::{Report, Row};
use super::{change, header_lines, name, p_value, side, summary, target};
use crate::html::escape;

const WIDTH: f64 = 220.0;
const HEIGHT: f64 = 44.0;
const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}th,td{padding:3px 8px;border-bottom:1px solid #ddd;\
text-align:right;vertical-align:middle}th:first-child,td:first-child{text-align:left}\
.improved{color:#176f2c;font-weight:600}.regressed{color:#b00020;font-weight:600}\
.missed{color:#b00020}.note{color:#555;max-width:60em}";

pub fn render(report: &Report) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>pgkpi report: {}</title><style>{STYLE}</style></head><body>\n\
         <h1>pgkpi report</h1>\n<p><strong>{}</strong></p>\n<ul>",
        escape(&report.target),
        escape(&summary(report))
    );
    for line in header_lines(report) {
        out.push_str(&format!("<li>{}</li>", escape(&line)));
    }
    out.push_str(
        "</ul>\n<p class=\"note\">Charts: per-step values before (grey) and after \
        (blue), their medians as lines, the target dashed red.</p>\n",
    );
    let mut groups: Vec<_> = report.rows.iter().map(|r| r.group).collect();
    groups.dedup();
    for group in groups {
        out.push_str(&format!(
            "<h2>{}</h2>\n<table><tr><th>KPI</th><th>chart</th><th>before</th><th>after</th>\
             <th>change</th><th>p</th><th>target</th><th>verdict</th></tr>\n",
            escape(group.title())
        ));
        for row in report.rows.iter().filter(|r| r.group == group) {
            let c = &row.comparison;
            let class = match c.verdict {
                Verdict::Improved => "improved",
                Verdict::Regressed => "regressed",
                _ => "",
            };
            let target_class = if c.target_met == Some(false) {
                "missed"
            } else {
                ""
            };
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"{target_class}\">{}</td><td class=\"{class}\">{}</td></tr>\n",
                escape(&name(row)),
                chart(row),
                escape(&side(row.unit, c.before, c.before_points)),
                escape(&side(row.unit, c.after, c.after_points)),
                escape(&change(c)),
                escape(&p_value(c)),
                escape(&target(row)),
                escape(&super::verdict(row)),
            ));
        }
        out.push_str("</table>\n");
    }
    out.push_str(&format!(
        "<p class=\"note\">{}</p>\n</body></html>\n",
        escape(report.method)
    ));
    out
}

/// The chart of one row: before in the left half, after in the right, on one value scale.
fn chart(row: &Row) -> String {
    let c = &row.comparison;
    let mut values: Vec<f64> = row
        .before_values
        .iter()
        .chain(&row.after_values)
        .map(|p| p.1)
        .collect();
    if values.is_empty() {
        return String::new();
    }
    if let Some(t) = c.target {
        values.push(t.value);
    }
    let low = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if high > low { high - low } else { 1.0 };
    let y = |v: f64| HEIGHT - 2.0 - (v - low) / span * (HEIGHT - 4.0);
    let half = WIDTH / 2.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\"><line x1=\"{half}\" y1=\"0\" x2=\"{half}\" y2=\"{HEIGHT}\" stroke=\"#ccc\"/>"
    );
    for (points, x0, colour, median) in [
        (&row.before_values, 0.0, "#999", c.before),
        (&row.after_values, half, "#1f6feb", c.after),
    ] {
        let n = points.len().max(2) as f64 - 1.0;
        let path: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{:.1},{:.1}",
                    x0 + 2.0 + i as f64 / n * (half - 4.0),
                    y(p.1)
                )
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.2\" points=\"{}\"/>",
            path.join(" ")
        ));
        if let Some(m) = median {
            svg.push_str(&format!(
                "<line x1=\"{x0}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"{colour}\" stroke-width=\"2\" opacity=\"0.5\"/>",
                y(m),
                x0 + half
            ));
        }
    }
    if let Some(t) = c.target {
        let label = match t.bound {
            Bound::AtMost => "at most",
            Bound::AtLeast => "at least",
        };
        svg.push_str(&format!(
            "<line x1=\"0\" y1=\"{0:.1}\" x2=\"{WIDTH}\" y2=\"{0:.1}\" stroke=\"#b00020\" stroke-dasharray=\"3 2\"><title>target: {label} {1}</title></line>",
            y(t.value),
            t.value
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::super::super::kpi::{Better, Group, Unit};
    use super::super::super::verdict::{compare, Significance};
    use super::super::super::Range;
    use super::*;

    #[test]
    fn a_self_contained_page_with_a_chart_per_row() {
        let before: Vec<(f64, f64)> = (0..8)
            .map(|i| (i as f64, 0.02 + 0.001 * i as f64))
            .collect();
        let after: Vec<(f64, f64)> = (0..8)
            .map(|i| (i as f64, 0.002 + 0.0001 * i as f64))
            .collect();
        let values = |p: &[(f64, f64)]| p.iter().map(|p| p.1).collect::<Vec<_>>();
        let row = Row {
            group: Group::Statements,
            kpi: "latency p95",
            labels: [("workload".to_string(), "<chat>".to_string())].into(),
            unit: Unit::Seconds,
            better: Better::Lower,
            comparison: compare(
                &values(&before),
                &values(&after),
                Better::Lower,
                None,
                Significance {
                    alpha: 0.01,
                    min_points: 6,
                    min_change: 0.05,
                },
                Unit::Seconds.resolution(),
            ),
            before_values: before,
            after_values: after,
            ignored: false,
        };
        let report = Report {
            target: "app".into(),
            prometheus: "http://127.0.0.1:9090".into(),
            before: Range {
                start: 0.0,
                end: 60.0,
            },
            after: Range {
                start: 60.0,
                end: 120.0,
            },
            step_seconds: 5.0,
            significance: Significance {
                alpha: 0.01,
                min_points: 6,
                min_change: 0.05,
            },
            method: "m",
            rows: vec![row],
            query_seconds: 0.1,
        };
        let page = render(&report);
        assert!(page.contains("<svg") && page.contains("<polyline"));
        assert!(page.contains("workload=&lt;chat&gt;"));
        assert!(page.contains("class=\"improved\""));
        assert!(
            !page.contains("http://") || !page.contains("src=\"http"),
            "no external resource"
        );
        assert!(!page.contains("<script") && !page.contains("<link"));
    }
}
