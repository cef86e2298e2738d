//! The files of the full stack: docker-compose.yml (validated by Debian's docker-compose),
//! every file it mounts or builds from, the compose Prometheus config, and the conventions
//! every Grafana dashboard follows. Whether the dashboard queries return data is checked
//! against a real Prometheus in tests/it/e2e.rs.

use std::process::Command;

use yaml_rust2::YamlLoader;

use crate::support::{repo_files, repo_path, run_ok, TempDir};

fn tool_output(program: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(repo_path(""));
    run_ok(cmd, &format!("{program} {args:?}"))
}

#[test]
fn compose_file_is_valid_and_everything_it_mounts_exists() {
    tool_output(
        "docker-compose",
        &["-f", "docker-compose.yml", "config", "--quiet"],
    );
    let text = std::fs::read_to_string(repo_path("docker-compose.yml")).unwrap();
    let compose = YamlLoader::load_from_str(&text).unwrap().remove(0);
    let services = compose["services"].as_hash().unwrap();
    for expected in [
        "postgres",
        "workload",
        "pgkpi",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(
            services.keys().any(|k| k.as_str() == Some(expected)),
            "service {expected} missing"
        );
    }
    let mut mounts = 0;
    for (name, service) in services {
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(
                    repo_path(source).exists(),
                    "service {:?} mounts {source}, which does not exist",
                    name.as_str()
                );
                mounts += 1;
            }
        }
    }
    assert!(mounts >= 8, "expected the stack's mounts, found {mounts}");
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                repo_path(source).exists(),
                "Dockerfile copies {source}, which does not exist"
            );
        }
    }
}

/// The image's runtime stage (Dockerfile: distroless cc-debian12) has glibc and libgcc and no
/// other shared library, so the binaries it receives may link nothing else. Checked here
/// because this machine cannot build the image.
#[test]
fn binaries_link_only_what_the_image_base_has() {
    const IN_BASE_IMAGE: &[&str] = &[
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "ld-linux-x86-64.so.2",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
    ];
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("FROM gcr.io/distroless/cc-debian12:nonroot"),
        "the runtime base changed: update IN_BASE_IMAGE"
    );
    for binary in [
        env!("CARGO_BIN_EXE_pgkpi"),
        env!("CARGO_BIN_EXE_pgkpi-load"),
    ] {
        let headers = tool_output("objdump", &["-p", binary]);
        let needed: Vec<&str> = headers
            .lines()
            .filter_map(|l| l.trim().strip_prefix("NEEDED"))
            .map(str::trim)
            .collect();
        assert!(needed.contains(&"libc.so.6"), "{binary}: {needed:?}");
        for library in &needed {
            assert!(
                IN_BASE_IMAGE.contains(library),
                "{binary} needs {library}, which the image's base does not have"
            );
        }
    }
}

#[test]
fn compose_prometheus_loads_every_rule_file_and_nothing_else() {
    tool_output("promtool", &["check", "config", "docker/prometheus.yml"]);
    let config = std::fs::read_to_string(repo_path("docker/prometheus.yml")).unwrap();
    assert!(
        config.contains("/etc/prometheus/rules/[^a]*.yml"),
        "{config}"
    );
    for entry in std::fs::read_dir(repo_path("alerts")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yml") {
            let is_rules = name != "alertmanager.yml";
            assert_eq!(
                !name.starts_with('a'),
                is_rules,
                "alerts/{name}: the compose Prometheus glob [^a]*.yml must load rule files only"
            );
        }
    }
}

/// mixtool's dashboard lints and the project's: unique UIDs, a datasource variable and no
/// `${DS_...}` import inputs (the dashboards provision as they are), `$target` in every query,
/// `$__rate_interval` in every rate()/increase(), a unit and a description on every panel.
#[test]
fn dashboards_follow_the_conventions() {
    let mut boards = 0;
    let mut uids = std::collections::BTreeSet::new();
    for path in repo_files("dashboards", ".json") {
        boards += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let board: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: invalid JSON: {e}"));
        let uid = board["uid"].as_str().unwrap_or("");
        assert!(!uid.is_empty(), "{name}: uid");
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} used twice");
        assert!(
            board.get("__inputs").is_none() && !text.contains("${DS_"),
            "{name}: an import input (${{DS_...}}); use the datasource variable"
        );
        let variables = board["templating"]["list"].as_array().unwrap();
        let has = |var: &str, kind: &str| {
            variables
                .iter()
                .any(|v| v["name"] == var && v["type"] == kind)
        };
        assert!(
            has("datasource", "datasource"),
            "{name}: datasource variable"
        );
        assert!(has("target", "query"), "{name}: target variable");
        let mut panels = 0;
        for panel in board["panels"].as_array().unwrap() {
            if panel["type"] == "row" {
                continue;
            }
            panels += 1;
            let title = panel["title"].as_str().unwrap_or("");
            assert!(
                panel["description"].as_str().is_some_and(|d| d.len() > 20),
                "{name} / {title}: every panel needs a description"
            );
            assert!(
                panel["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
                "{name} / {title}: unit"
            );
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name} / {title}: datasource variable"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name} / {title}: no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                assert!(
                    expr.contains("$target"),
                    "{name} / {title}: filter by $target: {expr}"
                );
                for function in ["rate(", "increase("] {
                    for (i, _) in expr.match_indices(function) {
                        let rest = &expr[i..];
                        let window = rest
                            .find('[')
                            .map(|s| &rest[s..rest[s..].find(']').unwrap() + s + 1]);
                        assert_eq!(
                            window,
                            Some("[$__rate_interval]"),
                            "{name} / {title}: {function} must use $__rate_interval: {expr}"
                        );
                    }
                }
            }
        }
        assert!(panels >= 5, "{name}: only {panels} panels");
    }
    assert!(
        boards >= 4,
        "expected the overview and the area dashboards, found {boards}"
    );
}

/// The dashboards against Grafana's published types (scripts/check-dashboard-schema.sh:
/// @grafana/schema, the Prometheus query type of grafana-foundation-sdk); and the check fails,
/// naming the panel, on a copy with a panel Grafana would not load.
#[test]
fn dashboards_match_grafanas_schema_and_a_broken_panel_fails() {
    let out = tool_output("bash", &["scripts/check-dashboard-schema.sh"]);
    assert!(out.contains("match Grafana's schema"), "{out}");

    let dir = TempDir::new("broken-dashboard");
    let mut board: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("dashboards/pgkpi-locks.json")).unwrap(),
    )
    .unwrap();
    let panel = board["panels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["type"] == "timeseries")
        .unwrap();
    let title = panel["title"].as_str().unwrap().to_string();
    // Grafana's grid wants numbers, and StackingMode has no "stacked".
    panel["gridPos"]["w"] = "12".into();
    panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] = "stacked".into();
    dir.write("pgkpi-locks.json", &board.to_string());
    let mut cmd = Command::new("bash");
    cmd.arg(repo_path("scripts/check-dashboard-schema.sh"))
        .arg(&dir.0);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a broken panel passed: {text}");
    assert!(text.contains(&format!("panel \"{title}\"")), "{text}");
    assert!(
        text.contains("\"stacked\"") && text.contains("\"w\": \"12\""),
        "{text}"
    );
    assert!(text.contains("2 schema error(s)"), "{text}");
}
