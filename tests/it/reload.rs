//! Reloading without a restart: SIGHUP, `POST /-/reload` and a watched directory of target
//! files. An unchanged target keeps its session (same backend pid) and its counters; a
//! changed one reconnects with its new settings; a removed one's series disappear; a broken
//! configuration is rejected and reported while the running one keeps polling.
//!
//! Each target has an application_name of its own, so its sessions are found in
//! pg_stat_activity of the shared cluster.

use std::time::Duration;

use crate::support::{Cluster, Exporter, ExporterConfig, Metrics, TempDir};

const WAIT: Duration = Duration::from_secs(30);

/// How a test asks for a reload.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Sighup,
    Post,
}

/// A target: (name, application_name); all on database `db`.
fn config(cluster: &Cluster, db: &str, targets: &[(&str, &str)]) -> String {
    let (first, rest) = targets.split_first().expect("a target");
    let mut extra = String::new();
    for (name, app) in rest {
        extra.push_str(&format!(
            "[[targets]]\nname = \"{name}\"\ndsn = \"{}\"\n[targets.session]\napplication_name = \"{app}\"\n",
            cluster.dsn(db)
        ));
    }
    ExporterConfig::new(first.0, &cluster.dsn(db))
        .only_builtin(&["server"])
        .session("application_name", first.1)
        .raw(&extra)
        .build()
}

/// The backend pids of the sessions named `app`, sorted.
fn pids(cluster: &Cluster, app: &str) -> String {
    cluster.psql(
        "postgres",
        &format!(
            "SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') FROM pg_stat_activity WHERE application_name = '{app}'"
        ),
    )
}

fn has_target(m: &Metrics, target: &str) -> bool {
    m.samples
        .iter()
        .any(|s| s.labels.get("target").map(String::as_str) == Some(target))
}

fn counter(m: &Metrics, name: &str, target: &str) -> f64 {
    m.value(name, &[("target", target)]).unwrap_or(-1.0)
}

/// Asks for a reload and, for POST, checks the answer's status.
fn reload(exporter: &Exporter, trigger: Trigger, expect_status: u16) {
    match trigger {
        Trigger::Sighup => exporter.signal(libc::SIGHUP),
        Trigger::Post => {
            let response = exporter.post("/-/reload");
            assert_eq!(
                response.status,
                expect_status,
                "POST /-/reload: {}",
                response.text()
            );
        }
    }
}

fn reload_scenario(trigger: Trigger) {
    let (cluster, db) = Cluster::shared_database("reload");
    let p = format!("{db}_{}", format!("{trigger:?}").to_lowercase());
    let (a, b, c) = (format!("{p}-a"), format!("{p}-b"), format!("{p}-c"));
    let (app_b1, app_b2) = (format!("{p}-b1"), format!("{p}-b2"));
    let exporter = Exporter::start(&config(cluster, &db, &[(&a, &a), (&b, &app_b1)]));
    let m = exporter.wait_for(WAIT, "both targets up with runs", |m| {
        m.runs(&a, "server") >= 2.0 && m.value("pg_up", &[("target", &b)]) == Some(1.0)
    });
    assert_eq!(
        m.value("pgkpi_config_last_reload_successful", &[]),
        Some(1.0)
    );
    let loaded_at = m
        .value("pgkpi_config_last_reload_success_timestamp_seconds", &[])
        .expect("reload timestamp");
    let pid_a = pids(cluster, &a);
    assert!(!pid_a.is_empty(), "target a has a session");
    let attempts_a = counter(&m, "pgkpi_target_connection_attempts_total", &a);
    let runs_a = m.runs(&a, "server");

    // Add c, change b (its application_name), keep a.
    std::fs::write(
        exporter.config_path(),
        config(cluster, &db, &[(&a, &a), (&b, &app_b2), (&c, &c)]),
    )
    .unwrap();
    reload(&exporter, trigger, 200);
    let m = exporter.wait_for(WAIT, "c added and b restarted", |m| {
        m.value("pg_up", &[("target", &c)]) == Some(1.0)
            && m.runs(&b, "server") >= 1.0
            && m.value("pgkpi_config_last_reload_success_timestamp_seconds", &[]) > Some(loaded_at)
    });
    assert!(
        m.runs(&a, "server") >= runs_a,
        "a's counters did not reset: {} then {}",
        runs_a,
        m.runs(&a, "server")
    );
    assert_eq!(
        counter(&m, "pgkpi_target_connection_attempts_total", &a),
        attempts_a,
        "a did not reconnect"
    );
    assert_eq!(pids(cluster, &a), pid_a, "a kept its session");
    crate::support::retry(WAIT, Duration::from_millis(100), || {
        let (old, new) = (pids(cluster, &app_b1), pids(cluster, &app_b2));
        (old.is_empty() && !new.is_empty())
            .then_some(())
            .ok_or((old, new))
    })
    .unwrap_or_else(|(old, new)| {
        panic!("b should reconnect as {app_b2}: old sessions [{old}], new [{new}]")
    });

    // Remove c: its series go, its session closes.
    std::fs::write(
        exporter.config_path(),
        config(cluster, &db, &[(&a, &a), (&b, &app_b2)]),
    )
    .unwrap();
    reload(&exporter, trigger, 200);
    exporter.wait_for(WAIT, "c's series gone", |m| !has_target(m, &c));
    crate::support::retry(WAIT, Duration::from_millis(100), || {
        let left = pids(cluster, &c);
        left.is_empty().then_some(()).ok_or(left)
    })
    .unwrap_or_else(|left| panic!("c's session still open: {left}"));

    // A broken file: rejected and reported; a and b keep polling on the old configuration.
    std::fs::write(exporter.config_path(), "[[targets]\nname = \"oops\"\n").unwrap();
    reload(&exporter, trigger, 500);
    let m = exporter.wait_for(WAIT, "the failed reload reported", |m| {
        m.value("pgkpi_config_last_reload_successful", &[]) == Some(0.0)
    });
    let runs_a = m.runs(&a, "server");
    exporter.wait_for(WAIT, "a still polled", |m| {
        m.runs(&a, "server") >= runs_a + 2.0 && m.value("pg_up", &[("target", &b)]) == Some(1.0)
    });
    assert_eq!(
        pids(cluster, &a),
        pid_a,
        "a kept its session through it all"
    );
    assert!(
        exporter.logs().contains("configuration rejected"),
        "the rejection is logged"
    );

    // Fixed again: reported as successful.
    std::fs::write(
        exporter.config_path(),
        config(cluster, &db, &[(&a, &a), (&b, &app_b2)]),
    )
    .unwrap();
    reload(&exporter, trigger, 200);
    exporter.wait_for(WAIT, "the reload reported successful again", |m| {
        m.value("pgkpi_config_last_reload_successful", &[]) == Some(1.0)
    });
}

#[test]
fn reload_through_sighup() {
    reload_scenario(Trigger::Sighup);
}

#[test]
fn reload_through_post() {
    reload_scenario(Trigger::Post);
}

#[test]
fn reload_endpoint_only_accepts_post() {
    let (cluster, db) = Cluster::shared_database("reload_get");
    let exporter = Exporter::start(&config(cluster, &db, &[(&db, &db)]));
    let response = exporter.get("/-/reload");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("POST"));
}

#[test]
fn a_watched_directory_of_target_files() {
    let (cluster, db) = Cluster::shared_database("reload_dir");
    let dir = TempDir::new("targets");
    let main = format!("{db}-main");
    let extra = format!("{db}-file");
    let toml = ExporterConfig::new(&main, &cluster.dsn(&db))
        .only_builtin(&["server"])
        .raw(&format!("targets_directory = \"{}\"\n", dir.0.display()))
        .build();
    let exporter = Exporter::start(&toml);
    exporter.wait_for(WAIT, "the main target", |m| m.runs(&main, "server") >= 1.0);
    dir.write(
        "more.toml",
        &format!(
            "[[targets]]\nname = \"{extra}\"\ndsn = \"{}\"\n",
            cluster.dsn(&db)
        ),
    );
    exporter.wait_for(WAIT, "the file's target polled", |m| {
        m.value("pg_up", &[("target", &extra)]) == Some(1.0)
    });
    // A broken file is rejected (and reported) without touching what runs.
    dir.write("broken.toml", "[[targets]]\nname = 1\n");
    exporter.wait_for(WAIT, "the broken file reported", |m| {
        m.value("pgkpi_config_last_reload_successful", &[]) == Some(0.0)
            && m.value("pg_up", &[("target", &extra)]) == Some(1.0)
    });
    std::fs::remove_file(dir.0.join("broken.toml")).unwrap();
    std::fs::remove_file(dir.0.join("more.toml")).unwrap();
    let m = exporter.wait_for(WAIT, "the file's target gone", |m| !has_target(m, &extra));
    assert_eq!(
        m.value("pgkpi_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert!(m.runs(&main, "server") >= 1.0);
}
