//! Sharding across exporters: `--total-shards N --shard I`. Over 60 databases, 3 exporters
//! poll each exactly once; with 4, at most about a third of the databases change exporter,
//! and each that moves goes to the new shard.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::{self, Cluster, Exporter, ExporterConfig, Metrics};

const DATABASES: usize = 60;

/// One target per database, named after it; only the server collector, rarely (the test
/// needs each target's first connection, not a stream of runs).
fn config(cluster: &Cluster, databases: &[String]) -> String {
    let (first, rest) = databases.split_first().unwrap();
    let mut extra = String::new();
    for db in rest {
        extra.push_str(&format!(
            "[[targets]]\nname = \"{db}\"\ndsn = \"{}\"\n",
            cluster.dsn(db)
        ));
    }
    ExporterConfig::new(first, &cluster.dsn(first))
        .only_builtin(&["server"])
        .interval("server", "30s")
        .raw(&extra)
        .build()
}

/// The targets each of `total` exporters polls (pg_up = 1), by shard, once every exporter
/// has connected to all of its targets.
fn assignment(cluster: &Cluster, databases: &[String], total: u32) -> BTreeMap<String, u32> {
    let toml = config(cluster, databases);
    let mut owner = BTreeMap::new();
    for shard in 0..total {
        let (index, total_text) = (shard.to_string(), total.to_string());
        let exporter =
            Exporter::start_with_args(&toml, &["--total-shards", &total_text, "--shard", &index]);
        let up = |m: &Metrics| -> BTreeSet<String> {
            m.find("pg_up", &[])
                .into_iter()
                .filter(|s| s.value == 1.0)
                .map(|s| s.labels["target"].clone())
                .collect()
        };
        let m = exporter.wait_for(
            Duration::from_secs(60),
            "every target of the shard up",
            |m| {
                m.value("pgkpi_targets_polled", &[])
                    .is_some_and(|n| n as usize == up(m).len())
            },
        );
        assert_eq!(
            m.value(
                "pgkpi_shard_info",
                &[("shard", &index), ("total_shards", &total_text)]
            ),
            Some(1.0)
        );
        assert_eq!(
            m.value("pgkpi_targets_configured", &[]),
            Some(DATABASES as f64)
        );
        assert_eq!(
            m.find("pgkpi_target_info", &[]).len(),
            up(&m).len(),
            "an exporter registers only its own shard's targets"
        );
        for target in up(&m) {
            assert!(
                owner.insert(target.clone(), shard).is_none(),
                "{target} is polled by two exporters"
            );
        }
    }
    owner
}

#[test]
fn shards_cover_a_fleet_exactly_once_and_growing_moves_few() {
    let cluster = Cluster::start();
    let databases: Vec<String> = (0..DATABASES)
        .map(|_| cluster.create_database("shard"))
        .collect();
    let three = assignment(&cluster, &databases, 3);
    assert_eq!(
        three.keys().cloned().collect::<Vec<_>>(),
        {
            let mut all = databases.clone();
            all.sort();
            all
        },
        "3 shards cover every database"
    );
    let sizes: Vec<usize> = (0..3)
        .map(|s| three.values().filter(|&&o| o == s).count())
        .collect();
    assert!(
        sizes.iter().all(|&n| n >= 10),
        "roughly balanced: {sizes:?}"
    );

    let four = assignment(&cluster, &databases, 4);
    assert_eq!(four.len(), DATABASES, "4 shards cover every database");
    let moved: Vec<&String> = databases.iter().filter(|d| three[*d] != four[*d]).collect();
    assert!(
        moved.len() <= DATABASES / 3,
        "{} of {DATABASES} moved going from 3 to 4 shards",
        moved.len()
    );
    assert!(
        moved.iter().all(|d| four[*d] == 3),
        "a database only moves to the new shard"
    );
    eprintln!(
        "3 -> 4 shards: {} of {DATABASES} databases moved; shard sizes with 3: {sizes:?}",
        moved.len()
    );
}

#[test]
fn a_shard_out_of_range_is_a_configuration_error() {
    let out = support::pgkpi(
        &["--total-shards", "3", "--shard", "3", "check-config"],
        &[("DATA_SOURCE_NAME", "postgresql://u@127.0.0.1/db")],
    );
    assert_eq!(out.status.code(), Some(2));
    let text = support::stderr(&out);
    assert!(
        text.contains("--shard 3 is out of range") && text.contains("0 to 2"),
        "{text}"
    );
    let out = support::pgkpi(
        &["check-config"],
        &[
            ("DATA_SOURCE_NAME", "postgresql://u@127.0.0.1/db"),
            ("PGKPI_TOTAL_SHARDS", "0"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
}
