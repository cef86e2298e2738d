//! The terminal table: one block per KPI group, columns aligned.

use super::super::Report;
use super::{change, header_lines, name, p_value, side, summary, target};

const HEADINGS: [&str; 7] = ["KPI", "before", "after", "change", "p", "target", "verdict"];

pub fn render(report: &Report) -> String {
    let mut out = header_lines(report).join("\n");
    out.push_str("\n\n");
    let mut groups: Vec<_> = report.rows.iter().map(|r| r.group).collect();
    groups.dedup();
    for group in groups {
        let rows: Vec<[String; 7]> = report
            .rows
            .iter()
            .filter(|r| r.group == group)
            .map(|row| {
                let c = &row.comparison;
                [
                    name(row),
                    side(row.unit, c.before, c.before_points),
                    side(row.unit, c.after, c.after_points),
                    change(c),
                    p_value(c),
                    target(row),
                    super::verdict(row),
                ]
            })
            .collect();
        let mut widths = HEADINGS.map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        out.push_str(group.title());
        out.push('\n');
        let line = |cells: &[String]| -> String {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("  {}\n", padded.join("  ").trim_end())
        };
        out.push_str(&line(&HEADINGS.map(String::from)));
        for row in &rows {
            out.push_str(&line(row));
        }
        out.push('\n');
    }
    out.push_str(&summary(report));
    out.push('\n');
    out
}
