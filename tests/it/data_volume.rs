//! The `data_volume` collector: the test cluster's data directory is on this host, so its
//! free space must match df's; a target whose directory pgkpi cannot see, or that holds
//! another cluster, is skipped with the reason.

use std::process::Command;
use std::time::Duration;

use crate::support::{Cluster, Exporter, ExporterConfig, TempDir};

const T: &str = "vol";

/// df's (available, size) in bytes for the file system holding `path`.
fn df(path: &str) -> (f64, f64) {
    let out = Command::new("df")
        .args(["-B1", "--output=avail,size", path])
        .output()
        .expect("run df");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<f64> = text
        .lines()
        .nth(1)
        .expect("df output line")
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn free_space_matches_df_and_a_foreign_directory_is_skipped() {
    let (cluster, db) = Cluster::shared_database("volume");
    let data_directory = cluster
        .psql("postgres", "SHOW data_directory")
        .trim()
        .to_string();
    let impostor = TempDir::new("impostor");
    std::fs::create_dir_all(impostor.0.join("global")).unwrap();
    std::fs::write(impostor.0.join("global/pg_control"), [7u8; 64]).unwrap();
    let dsn = cluster.dsn(&db);
    let config = ExporterConfig::new(T, &dsn)
        .only_builtin(&["server", "data_volume"])
        .interval("data_volume", "1s")
        .raw(&format!(
            "[[targets]]\nname = \"elsewhere\"\ndsn = \"{dsn}\"\ndata_directory = \"/nonexistent/pgdata\"\n\
             [[targets]]\nname = \"impostor\"\ndsn = \"{dsn}\"\ndata_directory = \"{}\"\n",
            impostor.0.display()
        ))
        .build();
    let exporter = Exporter::start(&config);
    let skip = |m: &crate::support::Metrics, target: &str| {
        m.value(
            "pgkpi_collector_skipped",
            &[
                ("target", target),
                ("collector", "data_volume"),
                ("reason", "remote"),
            ],
        )
    };
    let m = exporter.wait_for(
        Duration::from_secs(30),
        "volume values and both skips",
        |m| {
            m.of(T, "pg_data_volume_free_bytes", &[("directory", "data")])
                .is_some()
                && skip(m, "elsewhere") == Some(1.0)
                && skip(m, "impostor") == Some(1.0)
        },
    );
    let (avail, size) = df(&data_directory);
    for directory in ["data", "wal"] {
        let free = m
            .of(T, "pg_data_volume_free_bytes", &[("directory", directory)])
            .unwrap();
        let total = m
            .of(T, "pg_data_volume_size_bytes", &[("directory", directory)])
            .unwrap();
        let off = (free - avail).abs() / avail;
        eprintln!("{directory}: exported free {free} size {total}; df avail {avail} size {size}; off by {:.4} %", off * 100.0);
        assert!(off < 0.01, "{directory}: free {free} vs df {avail}");
        assert_eq!(total, size, "{directory}: size");
    }
    assert!(m
        .find("pg_data_volume_free_bytes", &[("target", "elsewhere")])
        .is_empty());
    assert!(m
        .find("pg_data_volume_free_bytes", &[("target", "impostor")])
        .is_empty());
    // A skip is logged once with what to do.
    let logs = exporter.logs();
    assert!(logs.contains("is not visible here"), "{logs}");
    assert!(logs.contains("belongs to another cluster"), "{logs}");
}
