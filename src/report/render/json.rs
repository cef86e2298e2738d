//! JSON for tools: the whole report (every per-step value included) and the exit code.

use super::super::Report;

pub fn render(report: &Report) -> String {
    let mut json = serde_json::to_value(report).unwrap_or_default();
    json["fails"] = report.fails().into();
    json["exit_code"] = if report.fails() {
        super::super::EXIT_FAILED_KPI
    } else {
        0
    }
    .into();
    let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
    text.push('\n');
    text
}
