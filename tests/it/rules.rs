//! Alert and recording rules with the real promtool and amtool: syntax, unit tests, the
//! monitoring-mixin conventions mixtool lints for (severity critical/warning/info, summary,
//! description and an absolute runbook_url on every alert, unique group and alert names), the
//! project's own (a firing and a non-firing test case per alert, a runbook section that exists),
//! and the mixin rendered with another `_config` (mixin/).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::{repo_files, repo_path, rule_files, run_ok, TempDir};

fn tool(name: &str) -> Command {
    let found = Command::new(name).arg("--version").output().is_ok();
    assert!(
        found,
        "{name} not found: run the README's test command (scripts/test.sh), which installs \
         Debian's prometheus and prometheus-alertmanager"
    );
    Command::new(name)
}

fn load(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .remove(0)
}

/// alert name → its rule (as YAML).
fn alerts() -> BTreeMap<String, Yaml> {
    let mut alerts = BTreeMap::new();
    let mut groups = BTreeSet::new();
    for file in rule_files() {
        for group in load(&file)["groups"].as_vec().unwrap() {
            let name = group["name"].as_str().unwrap_or("").to_string();
            assert!(
                !name.is_empty() && groups.insert(name.clone()),
                "{}: rule group {name:?} is unnamed or defined twice",
                file.display()
            );
            for rule in group["rules"].as_vec().unwrap() {
                if let Some(name) = rule["alert"].as_str() {
                    assert!(
                        alerts.insert(name.to_string(), rule.clone()).is_none(),
                        "alert {name} defined twice"
                    );
                }
            }
        }
    }
    alerts
}

#[test]
fn promtool_checks_every_rule_file() {
    let mut cmd = tool("promtool");
    cmd.args(["check", "rules"]).args(rule_files());
    let out = run_ok(cmd, "promtool check rules");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let tests = repo_files("alerts/tests", "_test.yml");
    assert!(!tests.is_empty());
    let mut cmd = tool("promtool");
    cmd.args(["test", "rules"])
        .args(&tests)
        .current_dir(repo_path("alerts/tests"));
    let out = run_ok(cmd, "promtool test rules");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_test_case() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in repo_files("alerts/tests", "_test.yml") {
        for test in load(&file)["tests"].as_vec().unwrap() {
            for case in test["alert_rule_test"].as_vec().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap().to_string();
                match case["exp_alerts"].as_vec() {
                    Some(expected) if !expected.is_empty() => firing.insert(name),
                    _ => quiet.insert(name),
                };
            }
        }
    }
    let mut missing = Vec::new();
    for name in alerts().keys() {
        if !firing.contains(name) {
            missing.push(format!("{name}: no firing case"));
        }
        if !quiet.contains(name) {
            missing.push(format!("{name}: no non-firing case"));
        }
    }
    assert!(
        missing.is_empty(),
        "alert unit tests missing:\n{}",
        missing.join("\n")
    );
}

/// The severities monitoring mixins use, which kube-prometheus-style Alertmanager routes match.
const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

/// The runbook URL pattern of the mixin's default _config (mixin/config.libsonnet).
const RUNBOOK_PREFIX: &str = "https://github.com/pgkpi/pgkpi/blob/main/docs/runbooks.md#";

#[test]
fn every_alert_follows_the_mixin_conventions_and_has_a_runbook() {
    let runbooks = std::fs::read_to_string(repo_path("docs/runbooks.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase().replace(' ', "-"))
        .collect();
    let alerts = alerts();
    assert!(alerts.len() >= 30, "only {} alerts", alerts.len());
    let mut problems = Vec::new();
    for (name, rule) in &alerts {
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        if !SEVERITIES.contains(&severity) {
            problems.push(format!(
                "{name}: severity {severity:?} is not one of {SEVERITIES:?}"
            ));
        }
        for key in ["summary", "description", "runbook_url"] {
            if rule["annotations"][key].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: annotation {key} missing"));
            }
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        match url.strip_prefix(RUNBOOK_PREFIX) {
            None => problems.push(format!(
                "{name}: runbook_url {url:?} is not built from the pattern {RUNBOOK_PREFIX}%s"
            )),
            Some(anchor) if anchor != name.to_lowercase() => {
                problems.push(format!("{name}: runbook anchor {anchor:?}"))
            }
            Some(anchor) if !anchors.contains(anchor) => problems.push(format!(
                "{name}: docs/runbooks.md has no section '## {name}'"
            )),
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The mixin with another scrape job (and an extra matcher), another runbook location and a
/// 50 ms p95 target: its rules pass promtool's check, and the promtool tests rendered through
/// the same _config pass against them.
#[test]
fn mixin_renders_rules_that_pass_their_tests_with_another_config() {
    let dir = TempDir::new("mixin-config");
    let config = dir.write(
        "config.jsonnet",
        "{\n  selectorLabels: { job: 'postgres-kpi', cluster: 'eu1' },\n  \
         runbookURLPattern: 'https://wiki.example.com/pgkpi#%s',\n  \
         kpi+: { statement_p95_target_seconds: 0.05 },\n}\n",
    );
    let out = dir.0.join("rendered");
    let mut render = Command::new("bash");
    render
        .arg(repo_path("scripts/render-mixin.sh"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out);
    run_ok(render, "scripts/render-mixin.sh --config");

    let rules: Vec<_> = std::fs::read_dir(out.join("alerts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    assert_eq!(rules.len(), rule_files().len(), "{rules:?}");
    let text: String = rules
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!text.contains("job=\"pgkpi\""), "the default job is left");
    assert!(text.contains("up{cluster=\"eu1\", job=\"postgres-kpi\"} == 0"));
    assert!(text.contains("vector(0.05)"), "the p95 target");
    assert!(text.contains("https://wiki.example.com/pgkpi#postgreslockwaits"));

    let mut check = tool("promtool");
    check.args(["check", "rules"]).args(&rules);
    let checked = run_ok(check, "promtool check rules (another config)");
    assert_eq!(checked.matches("SUCCESS").count(), rules.len(), "{checked}");

    let tests = out.join("alerts/tests");
    let names: Vec<_> = std::fs::read_dir(&tests)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names.len(),
        repo_files("alerts/tests", "_test.yml").len(),
        "{names:?}"
    );
    let test_text: String = names
        .iter()
        .map(|n| std::fs::read_to_string(tests.join(n)).unwrap())
        .collect();
    assert!(test_text.contains("statement p95 above the 50ms target"));
    let mut test = tool("promtool");
    test.args(["test", "rules"])
        .args(&names)
        .current_dir(&tests);
    let tested = run_ok(test, "promtool test rules (another config)");
    assert!(!tested.contains("FAILED"), "{tested}");
    assert_eq!(tested.matches("SUCCESS").count(), names.len(), "{tested}");
}

#[test]
fn alertmanager_config_is_valid_and_routes_critical_and_warning() {
    let mut cmd = tool("amtool");
    cmd.args(["check-config"])
        .arg(repo_path("alerts/alertmanager.yml"));
    let out = run_ok(cmd, "amtool check-config");
    assert!(out.contains("SUCCESS"), "{out}");
    let config = load(&repo_path("alerts/alertmanager.yml"));
    let routes: Vec<String> = config["route"]["routes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| format!("{:?}", r["matchers"]))
        .collect();
    for severity in ["critical", "warning"] {
        assert!(
            routes
                .iter()
                .any(|r| r.contains(&format!("severity=\\\"{severity}\\\""))),
            "no route for severity {severity}: {routes:?}"
        );
    }
}
