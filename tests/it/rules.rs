//! Alert and recording rules with the real promtool and amtool: syntax, unit tests, and the
//! project's own conventions (every alert has a firing and a non-firing test case, a severity,
//! a summary, a description and a runbook section that exists).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::{repo_files, repo_path, rule_files, run_ok};

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
    for file in rule_files() {
        for group in load(&file)["groups"].as_vec().unwrap() {
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

#[test]
fn every_alert_is_documented_and_routed() {
    let runbooks = std::fs::read_to_string(repo_path("docs/runbooks.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase().replace(' ', "-"))
        .collect();
    for (name, rule) in alerts() {
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["page", "ticket"].contains(&severity),
            "{name}: severity must be page or ticket"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|v| !v.is_empty()),
                "{name}: annotation {key} missing"
            );
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = url
            .strip_prefix("docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url must point into docs/runbooks.md"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/runbooks.md has no section '## {name}'"
        );
    }
}

#[test]
fn alertmanager_config_is_valid_and_routes_both_severities() {
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
    for severity in ["page", "ticket"] {
        assert!(
            routes
                .iter()
                .any(|r| r.contains(&format!("severity=\\\"{severity}\\\""))),
            "no route for severity {severity}: {routes:?}"
        );
    }
}
