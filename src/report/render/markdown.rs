//! Markdown for a pull-request comment: the verdict line first, a table per KPI group, the
//! method at the end.

use super::super::Report;
use super::{change, header_lines, name, p_value, side, summary, target};

pub fn render(report: &Report) -> String {
    let mut out = String::from("## pgkpi report\n\n");
    out.push_str(&format!("**{}**\n\n", summary(report)));
    for line in header_lines(report) {
        out.push_str(&format!("- {}\n", cell(&line)));
    }
    out.push('\n');
    let mut groups: Vec<_> = report.rows.iter().map(|r| r.group).collect();
    groups.dedup();
    for group in groups {
        out.push_str(&format!("### {}\n\n", group.title()));
        out.push_str("| KPI | before | after | change | p | target | verdict |\n");
        out.push_str("|---|---:|---:|---:|---:|---|---|\n");
        for row in report.rows.iter().filter(|r| r.group == group) {
            let c = &row.comparison;
            let verdict = match c.verdict {
                super::Verdict::Improved | super::Verdict::Regressed => {
                    format!("**{}**", super::verdict(row))
                }
                _ => super::verdict(row),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {verdict} |\n",
                cell(&name(row)),
                side(row.unit, c.before, c.before_points),
                side(row.unit, c.after, c.after_points),
                change(c),
                p_value(c),
                target(row),
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!("<sub>{}</sub>\n", cell(report.method)));
    out
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
