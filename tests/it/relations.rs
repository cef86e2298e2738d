//! Tables, indexes and partitions against real PostgreSQL, on the schema the migrations
//! create: unused, invalid and duplicate indexes, partition coverage and the DEFAULT
//! partition, the maintenance function moving coverage, and the series caps. Each test works in
//! a database of its own on the shared cluster (the statistics reset is the database's own).

use std::time::Duration;

use crate::support::schema::app_database;
use crate::support::{retry, Cluster, Exporter, ExporterConfig, Metrics};

const WAIT: Duration = Duration::from_secs(20);

/// Every relations collector at 1s, plus `[relations]` settings (TOML).
fn config(target: &str, dsn: &str, relations: &str) -> String {
    [
        "relation_stats",
        "relation_sizes",
        "index_health",
        "partitions",
    ]
    .iter()
    .fold(ExporterConfig::new(target, dsn), |config, collector| {
        config.interval(collector, "1s")
    })
    .raw(relations)
    .build()
}

fn listed<'a>(m: &'a Metrics, family: &str, target: &str) -> Vec<&'a str> {
    m.find(family, &[("target", target)])
        .iter()
        .map(|s| s.labels["indexrelname"].as_str())
        .collect()
}

#[test]
fn unused_index_appears_after_a_stats_reset_and_leaves_once_used() {
    let cluster = Cluster::shared();
    let db = app_database(cluster, "unused");
    cluster.psql(
        &db,
        "CREATE INDEX bookings_probe_idx ON core.bookings (created_at, id); \
         SELECT pg_stat_reset()",
    );
    let extra = "[relations]\nunused_min_bytes = 0\nmax_listed = 1000\n";
    let exporter = Exporter::start(&config("unused", &cluster.dsn(&db), extra));
    let m = exporter.wait_for(WAIT, "the new index listed as unused", |m| {
        listed(m, "pg_index_unused_size_bytes", "unused").contains(&"bookings_probe_idx")
    });
    let size = cluster.number(&db, "SELECT pg_relation_size('core.bookings_probe_idx')");
    assert_eq!(
        m.value(
            "pg_index_unused_size_bytes",
            &[("target", "unused"), ("indexrelname", "bookings_probe_idx")]
        ),
        Some(size)
    );
    // No index backing a primary key, unique or exclusion constraint is ever listed, although
    // nothing scanned them since the reset.
    let unused = listed(&m, "pg_index_unused_size_bytes", "unused");
    let constrained = cluster.psql(
        &db,
        "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname IN ('core', 'chat', 'public', 'integration') \
           AND (x.indisprimary OR x.indisunique OR x.indisexclusion)",
    );
    let constrained: Vec<&str> = constrained.lines().collect();
    assert!(constrained.contains(&"bookings_pkey"), "{constrained:?}");
    for name in &constrained {
        assert!(!unused.contains(name), "{name} listed as unused");
    }
    // A partitioned index is judged as one tree: listed under its root's name with the size
    // of all its partitions' indexes, never a partition's index by itself.
    let tree = cluster.psql(
        &db,
        "SELECT c.relname || ' ' || (SELECT sum(pg_relation_size(p.relid)) \
                                     FROM pg_partition_tree(c.oid) p) \
         FROM pg_class c JOIN pg_index x ON x.indexrelid = c.oid \
         WHERE c.relkind = 'I' AND NOT c.relispartition \
           AND NOT (x.indisprimary OR x.indisunique OR x.indisexclusion) \
         ORDER BY 1 LIMIT 1",
    );
    let (root, tree_bytes) = tree
        .split_once(' ')
        .expect("a partitioned index in the schema");
    assert_eq!(
        m.value(
            "pg_index_unused_size_bytes",
            &[("target", "unused"), ("indexrelname", root)]
        ),
        Some(tree_bytes.parse().unwrap()),
        "{root} as one tree"
    );
    let partitions = cluster.psql(
        &db,
        "SELECT relname FROM pg_class WHERE relkind = 'i' AND relispartition",
    );
    for name in partitions.lines() {
        assert!(
            !unused.contains(&name),
            "partition index {name} listed by itself"
        );
    }
    // The totals cover exactly what is listed (max_listed is above their number).
    let listed_bytes: f64 = m
        .find("pg_index_unused_size_bytes", &[("target", "unused")])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(
        m.value("pg_index_unused_indexes", &[("target", "unused")]),
        Some(unused.len() as f64)
    );
    assert_eq!(
        m.value("pg_index_unused_reclaimable_bytes", &[("target", "unused")]),
        Some(listed_bytes)
    );
    // The statistics they are judged on are as old as the reset.
    let age = m
        .value("pg_index_usage_stats_age_seconds", &[("target", "unused")])
        .unwrap();
    let since_reset = cluster.number(
        &db,
        "SELECT extract(epoch FROM now() - stats_reset) FROM pg_stat_database \
         WHERE datname = current_database()",
    );
    assert!(
        age >= 0.0 && age <= since_reset + 1.0 && age >= since_reset - 10.0,
        "stats age {age}, reset {since_reset}s ago"
    );

    // One index scan and the index is used.
    cluster.psql(
        &db,
        "SET enable_seqscan = off; SET enable_bitmapscan = off; \
         SELECT count(*) FROM core.bookings WHERE created_at > now() - interval '1 day'",
    );
    let scans = cluster.number(
        &db,
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'bookings_probe_idx'",
    );
    assert!(scans >= 1.0, "the probe query did not use the index");
    let m = exporter.wait_for(WAIT, "the used index no longer unused", |m| {
        !listed(m, "pg_index_unused_size_bytes", "unused").contains(&"bookings_probe_idx")
            && m.value(
                "pg_index_scans_total",
                &[("target", "unused"), ("indexrelname", "bookings_probe_idx")],
            ) == Some(scans)
    });
    assert_eq!(
        m.value("pg_index_unused_indexes", &[("target", "unused")]),
        Some(unused.len() as f64 - 1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_and_duplicate_indexes_are_reported() {
    let cluster = Cluster::shared();
    let db = app_database(cluster, "invalid");
    cluster.psql(
        &db,
        "CREATE TABLE core.relations_probe (id int PRIMARY KEY, code int, note text); \
         INSERT INTO core.relations_probe SELECT g, g % 10, 'n' FROM generate_series(1, 100) g; \
         CREATE INDEX relations_probe_code_idx ON core.relations_probe (code); \
         CREATE INDEX relations_probe_code_again_idx ON core.relations_probe (code); \
         CREATE UNIQUE INDEX relations_probe_id_copy_idx ON core.relations_probe (id); \
         CREATE INDEX relations_probe_partial_idx ON core.relations_probe (code) WHERE note IS NULL",
    );
    // A CREATE INDEX CONCURRENTLY failing on a unique violation leaves an INVALID index.
    let client = cluster.client(&db).await;
    let error = client
        .batch_execute(
            "CREATE UNIQUE INDEX CONCURRENTLY relations_probe_code_uniq \
             ON core.relations_probe (code)",
        )
        .await
        .expect_err("duplicate codes must fail the unique build");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{error}"
    );
    let invalid_count = cluster.number(
        &db,
        "SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT x.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
    );
    assert!(invalid_count >= 1.0);

    let exporter = Exporter::start(&config("invalid", &cluster.dsn(&db), ""));
    let m = exporter.wait_for(WAIT, "index health", |m| {
        m.value("pg_index_duplicate_indexes", &[("target", "invalid")])
            .is_some()
    });
    assert_eq!(
        m.value(
            "pg_index_invalid",
            &[
                ("target", "invalid"),
                ("relname", "relations_probe"),
                ("indexrelname", "relations_probe_code_uniq")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("pg_index_invalid_indexes", &[("target", "invalid")]),
        Some(invalid_count)
    );
    // The second identical index duplicates the first; the unique copy of the primary key
    // duplicates the key's index (the constraint's index is the one to keep); the partial
    // index differs by its predicate and the invalid one is not compared.
    let duplicates: Vec<(String, String)> = m
        .find("pg_index_duplicate_size_bytes", &[("target", "invalid")])
        .iter()
        .map(|s| {
            (
                s.labels["indexrelname"].clone(),
                s.labels["duplicate_of"].clone(),
            )
        })
        .collect();
    let expected = [
        ("relations_probe_code_again_idx", "relations_probe_code_idx"),
        ("relations_probe_id_copy_idx", "relations_probe_pkey"),
    ];
    for (index, of) in expected {
        assert!(
            duplicates.contains(&(index.to_string(), of.to_string())),
            "{index} as a duplicate of {of} in {duplicates:?}"
        );
    }
    assert!(
        !duplicates.iter().any(|(i, _)| i.contains("partial")
            || i.contains("uniq")
            || i == "relations_probe_code_idx"),
        "{duplicates:?}"
    );
    assert_eq!(
        m.value("pg_index_duplicate_indexes", &[("target", "invalid")]),
        Some(duplicates.len() as f64)
    );
    let size = cluster.number(
        &db,
        "SELECT pg_relation_size('core.relations_probe_code_again_idx')",
    );
    assert_eq!(
        m.value(
            "pg_index_duplicate_size_bytes",
            &[
                ("target", "invalid"),
                ("indexrelname", "relations_probe_code_again_idx")
            ]
        ),
        Some(size)
    );
    // The duplicates found are kept while the index definitions stay; a new duplicate, a
    // dropped one and a grown one show at the next run all the same.
    cluster.psql(
        &db,
        "CREATE INDEX relations_probe_note_idx ON core.relations_probe (note);          CREATE INDEX relations_probe_note_again_idx ON core.relations_probe (note);          DROP INDEX core.relations_probe_id_copy_idx;          INSERT INTO core.relations_probe SELECT g, g % 10, 'n' FROM generate_series(101, 5000) g",
    );
    let grown = cluster.number(
        &db,
        "SELECT pg_relation_size('core.relations_probe_code_again_idx')",
    );
    assert!(grown > size);
    let m = exporter.wait_for(WAIT, "the duplicates after the change", |m| {
        let listed = listed(m, "pg_index_duplicate_size_bytes", "invalid");
        listed.contains(&"relations_probe_note_again_idx")
            && !listed.contains(&"relations_probe_id_copy_idx")
    });
    let at_next_run = exporter.wait_more_runs("invalid", "index_health", 1.0);
    for m in [&m, &at_next_run] {
        assert_eq!(
            m.value("pg_index_duplicate_indexes", &[("target", "invalid")]),
            Some(2.0)
        );
    }
    assert_eq!(
        at_next_run.value(
            "pg_index_duplicate_size_bytes",
            &[
                ("target", "invalid"),
                ("indexrelname", "relations_probe_code_again_idx")
            ]
        ),
        Some(grown)
    );
    // Names are read every run: a renamed duplicate (or kept index) shows under its new name.
    cluster.psql(
        &db,
        "ALTER INDEX core.relations_probe_note_idx RENAME TO relations_probe_note_first_idx",
    );
    exporter.wait_for(WAIT, "the kept index under its new name", |m| {
        m.find(
            "pg_index_duplicate_size_bytes",
            &[
                ("target", "invalid"),
                ("indexrelname", "relations_probe_note_again_idx"),
                ("duplicate_of", "relations_probe_note_first_idx"),
            ],
        )
        .len()
            == 1
    });
}

/// Seconds from now to the start of the UTC month `months` after the current one.
fn seconds_to_month_start(cluster: &Cluster, db: &str, months: i32) -> f64 {
    cluster.number(
        db,
        &format!(
            "SELECT extract(epoch FROM (date_trunc('month', now() AT TIME ZONE 'UTC') \
             + interval '{months} months') AT TIME ZONE 'UTC' - now())"
        ),
    )
}

#[test]
fn partition_coverage_default_rows_and_the_maintenance_function() {
    let cluster = Cluster::shared();
    let db = app_database(cluster, "parts");
    // 007 created this month + 3; keep partitions through next month only.
    cluster.psql(
        &db,
        "DO $$ DECLARE r record; BEGIN \
           FOR r IN SELECT c.oid::regclass AS part FROM pg_inherits i \
                    JOIN pg_class c ON c.oid = i.inhrelid \
                    WHERE i.inhparent = 'core.analytics_events'::regclass \
                      AND c.relname LIKE 'analytics_events_p%' \
                      AND c.relname >= 'analytics_events_p' || to_char(date_trunc('month', \
                          now() AT TIME ZONE 'UTC') + interval '2 months', 'YYYY_MM') \
           LOOP \
             EXECUTE format('ALTER TABLE core.analytics_events DETACH PARTITION %s', r.part); \
             EXECUTE format('DROP TABLE %s', r.part); \
           END LOOP; END $$",
    );
    let parts = |cluster: &Cluster| {
        cluster.number(
            &db,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'core.analytics_events'::regclass",
        )
    };
    assert_eq!(parts(cluster), 3.0, "default + this month + next month");
    let exporter = Exporter::start(&config("parts", &cluster.dsn(&db), ""));
    let table = [("target", "parts"), ("relname", "analytics_events")];
    let coverage = |m: &Metrics| m.value("pg_partitioned_table_coverage_seconds", &table);

    let m = exporter.wait_for(WAIT, "coverage through next month", |m| {
        m.value("pg_partitioned_table_partitions", &table) == Some(3.0)
    });
    let expected = seconds_to_month_start(cluster, &db, 2);
    let got = coverage(&m).unwrap();
    assert!(
        (got - expected).abs() < 60.0,
        "coverage {got}, expected {expected}"
    );
    let oldest = m
        .value("pg_partitioned_table_oldest_partition_age_seconds", &table)
        .unwrap();
    let expected_oldest = -seconds_to_month_start(cluster, &db, 0);
    assert!(
        (oldest - expected_oldest).abs() < 60.0,
        "oldest partition age {oldest}, expected {expected_oldest}"
    );
    assert_eq!(
        m.value("pg_partitioned_table_default_rows", &table),
        Some(0.0)
    );

    // Rows beyond the coverage land in the DEFAULT partition, and it shows.
    cluster.psql(
        &db,
        "INSERT INTO core.analytics_events (occurred_at, event_type) \
         SELECT date_trunc('month', now()) + interval '4 months 3 days', 'late' \
         FROM generate_series(1, 25)",
    );
    let m = exporter.wait_for(WAIT, "25 rows in the default partition", |m| {
        m.value("pg_partitioned_table_default_rows", &table) == Some(25.0)
    });
    assert_eq!(m.value("pg_partitioned_table_rows", &table), Some(25.0));
    let default_size = cluster.number(
        &db,
        "SELECT pg_total_relation_size('core.analytics_events_default')",
    );
    assert_eq!(
        m.value("pg_partitioned_table_default_size_bytes", &table),
        Some(default_size)
    );

    // The maintenance function creates five months ahead and moves the rows out of DEFAULT.
    let report = cluster.psql(
        &db,
        "SELECT core.create_future_partitions('core.analytics_events', 5)",
    );
    assert!(report.contains("moved 25 rows"), "{report}");
    assert_eq!(parts(cluster), 7.0);
    let m = exporter.wait_for(WAIT, "coverage raised, default emptied", |m| {
        m.value("pg_partitioned_table_partitions", &table) == Some(7.0)
            && m.value("pg_partitioned_table_default_rows", &table) == Some(0.0)
    });
    let expected = seconds_to_month_start(cluster, &db, 6);
    let got = coverage(&m).unwrap();
    assert!(
        (got - expected).abs() < 60.0,
        "coverage {got}, expected {expected}"
    );
    // Sizes roll up to the root: the partitioned table, and the table series of relation_sizes
    // (partitions are not exported one by one by default).
    let tree_size = cluster.number(
        &db,
        "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('core.analytics_events')",
    );
    let m = exporter.wait_for(WAIT, "sizes of the new partitions", |m| {
        m.value("pg_partitioned_table_size_bytes", &table) == Some(tree_size)
            && m.value("pg_table_size_bytes", &table) == Some(tree_size)
    });
    assert!(
        m.find("pg_table_size_bytes", &[("target", "parts")])
            .iter()
            .all(|s| !s.labels["relname"].starts_with("analytics_events_p")),
        "partitions exported one by one"
    );
}

#[test]
fn partition_children_are_exported_when_configured() {
    let cluster = Cluster::shared();
    let db = app_database(cluster, "children");
    let extra = "[relations]\npartition_children = true\n";
    let exporter = Exporter::start(&config("children", &cluster.dsn(&db), extra));
    let default = [
        ("target", "children"),
        ("relname", "analytics_events_default"),
        ("parent", "core.analytics_events"),
    ];
    let m = exporter.wait_for(WAIT, "the default partition as a table", |m| {
        m.value("pg_table_size_bytes", &default).is_some()
            && m.value("pg_table_seq_scans_total", &default).is_some()
    });
    let size = cluster.number(
        &db,
        "SELECT pg_total_relation_size('core.analytics_events_default')",
    );
    assert_eq!(m.value("pg_table_size_bytes", &default), Some(size));
    assert!(!m
        .find(
            "pg_index_scans_total",
            &[("target", "children"), ("parent", "core.analytics_events")]
        )
        .is_empty());
}

#[test]
fn series_caps_keep_the_cap_and_count_the_rest() {
    let cluster = Cluster::shared();
    let db = app_database(cluster, "caps");
    // As pgkpi counts them: partitions (and their indexes) rolled up into their root.
    let indexes = cluster.number(
        &db,
        "SELECT count(DISTINCT coalesce(CASE WHEN c.relispartition \
           THEN pg_partition_root(s.indexrelid) END, s.indexrelid)) \
         FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid",
    );
    let tables = cluster.number(
        &db,
        "SELECT count(DISTINCT coalesce(CASE WHEN c.relispartition \
           THEN pg_partition_root(s.relid) END, s.relid)) \
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid",
    );
    let (max_indexes, max_tables) = (10.0, 5.0);
    assert!(indexes > max_indexes && tables > max_tables);
    let extra = format!("[relations]\nmax_indexes = {max_indexes}\nmax_tables = {max_tables}\n");
    let exporter = Exporter::start(&config("caps", &cluster.dsn(&db), &extra));
    let dropped = [("target", "caps"), ("collector", "relation_stats")];
    let m = exporter.wait_for(WAIT, "capped relation stats", |m| {
        m.value("pgkpi_collector_dropped_series", &dropped)
            .is_some()
            && !m
                .find("pg_index_scans_total", &[("target", "caps")])
                .is_empty()
            && !m
                .find("pg_index_size_bytes", &[("target", "caps")])
                .is_empty()
            && !m
                .find("pg_table_size_bytes", &[("target", "caps")])
                .is_empty()
    });
    let own = |family: &str, label: &str| {
        m.find(family, &[("target", "caps")])
            .iter()
            .filter(|s| s.labels[label] != "(other)")
            .count() as f64
    };
    assert_eq!(own("pg_index_scans_total", "indexrelname"), max_indexes);
    assert_eq!(own("pg_index_size_bytes", "indexrelname"), max_indexes);
    assert_eq!(own("pg_table_seq_scans_total", "relname"), max_tables);
    assert_eq!(own("pg_table_size_bytes", "relname"), max_tables);
    assert_eq!(
        m.value("pgkpi_collector_dropped_series", &dropped),
        Some(indexes - max_indexes + tables - max_tables)
    );
    assert_eq!(
        m.value(
            "pgkpi_collector_dropped_series",
            &[("target", "caps"), ("collector", "relation_sizes")]
        ),
        Some(indexes - max_indexes + tables - max_tables)
    );
    // Nothing is lost: the (other) rows hold the rest, so the totals match the database.
    let total_size: f64 = m
        .find("pg_index_size_bytes", &[("target", "caps")])
        .iter()
        .map(|s| s.value)
        .sum();
    let expected = cluster.number(
        &db,
        "SELECT sum(pg_relation_size(indexrelid)) FROM pg_stat_user_indexes",
    );
    assert_eq!(total_size, expected);
    // Rollups are per table when the table kept series, else one global row.
    let others = m.find(
        "pg_index_scans_total",
        &[("target", "caps"), ("indexrelname", "(other)")],
    );
    assert!(!others.is_empty());
    assert!(others.len() as f64 <= max_indexes + 1.0);
}

/// When the largest table changes, the `(other)` row's counters keep counting instead of
/// stepping down (which rate() would read as a reset): kept by size, t_big leaves t_hot and
/// its 50 scans in `(other)`; t_hot then outgrows it and swaps places. A plain sum would fall
/// to t_big's 0 scans; the row stays at 50, plus whatever t_big does from then on.
#[test]
fn other_counters_do_not_step_down_when_the_largest_table_changes() {
    let (cluster, db) = Cluster::shared_database("rollup");
    cluster.psql(
        &db,
        "CREATE TABLE t_big AS SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 2000) g; \
         CREATE TABLE t_hot (id int, pad text)",
    );
    cluster.psql(&db, "VACUUM ANALYZE t_big");
    for _ in 0..50 {
        cluster.psql(&db, "SELECT count(*) FROM t_hot");
    }
    let exporter = Exporter::start(&config(
        "rollup",
        &cluster.dsn(&db),
        "[relations]\nmax_tables = 1\n",
    ));
    let scans = |m: &Metrics, relname: &str| {
        m.value(
            "pg_table_seq_scans_total",
            &[("target", "rollup"), ("relname", relname)],
        )
    };
    let m = exporter.wait_for(WAIT, "t_big kept, t_hot in (other)", |m| {
        scans(m, "t_big").is_some() && scans(m, "(other)") == Some(50.0)
    });
    assert!(scans(&m, "t_hot").is_none());

    cluster.psql(
        &db,
        "INSERT INTO t_hot SELECT g, repeat('y', 100) FROM generate_series(1, 20000) g",
    );
    cluster.psql(&db, "VACUUM ANALYZE t_hot");
    let m = exporter.wait_for(WAIT, "t_hot kept, t_big in (other)", |m| {
        scans(m, "t_hot").is_some() && scans(m, "t_big").is_none()
    });
    let plain_sum = cluster.number(
        &db,
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 't_big'",
    );
    let other = scans(&m, "(other)").unwrap();
    assert!(
        other >= 50.0 && other <= 50.0 + plain_sum,
        "(other) = {other}: it stepped down from 50 (t_big alone has {plain_sum} scans)"
    );
}

/// `relation_sizes` re-measures only the tables changed since its previous run and carries the
/// others: a table written after a full pass shows its new size within one run of the
/// statistics seeing the write, and an untouched one keeps its (still right) size.
#[test]
fn a_written_table_is_re_measured_and_an_untouched_one_keeps_its_size() {
    let (cluster, db) = Cluster::shared_database("resize");
    cluster.psql(
        &db,
        // No autovacuum: its visibility and free space maps would grow the files after the
        // test read their size, and the assertions compare with that reading.
        "CREATE TABLE written (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = off); \
         CREATE TABLE untouched (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = off); \
         INSERT INTO written SELECT g, 'n' FROM generate_series(1, 10) g; \
         INSERT INTO untouched SELECT g, 'n' FROM generate_series(1, 10) g; \
         ANALYZE written, untouched",
    );
    let exporter = Exporter::start(&config("resize", &cluster.dsn(&db), ""));
    let size = |m: &Metrics, table: &str| {
        m.value(
            "pg_table_size_bytes",
            &[("target", "resize"), ("relname", table)],
        )
    };
    let actual =
        |table: &str| cluster.number(&db, &format!("SELECT pg_total_relation_size('{table}')"));
    let (written_before, untouched_before) = (actual("written"), actual("untouched"));
    exporter.wait_for(WAIT, "sizes of the first (full) pass", |m| {
        size(m, "written") == Some(written_before) && size(m, "untouched") == Some(untouched_before)
    });
    cluster.psql(
        &db,
        "INSERT INTO written SELECT g, repeat('x', 200) FROM generate_series(11, 5000) g",
    );
    let written_after = actual("written");
    assert!(written_after > written_before);
    // Once the statistics show the write (they are flushed within a second of the commit),
    // the next run that starts measures it.
    retry(WAIT, Duration::from_millis(100), || {
        let seen = cluster.number(
            &db,
            "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'written'",
        );
        if seen >= 5000.0 {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .expect("the statistics never showed the insert");
    let m = exporter.wait_more_runs("resize", "relation_sizes", 2.0);
    assert_eq!(size(&m, "written"), Some(written_after));
    assert_eq!(size(&m, "untouched"), Some(untouched_before));
    assert_eq!(actual("untouched"), untouched_before);
}

/// On a catalog within one slice of first estimates, a table's bloat estimates come in the
/// same run as its first sizes (larger catalogs get theirs a slice per interval).
#[test]
fn bloat_estimates_come_with_the_first_sizes_on_a_small_catalog() {
    let (cluster, db) = Cluster::shared_database("estimates");
    cluster.psql(
        &db,
        "CREATE TABLE bloated (id int PRIMARY KEY, note text); \
         INSERT INTO bloated SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g; \
         DELETE FROM bloated WHERE id % 10 <> 0; \
         ANALYZE bloated",
    );
    let exporter = Exporter::start(&config("estimates", &cluster.dsn(&db), ""));
    let labels = [("target", "estimates"), ("relname", "bloated")];
    let m = exporter.wait_for(WAIT, "the table's first size", |m| {
        m.value("pg_table_size_bytes", &labels).is_some()
    });
    let bloat = m
        .value("pg_table_bloat_bytes", &labels)
        .unwrap_or_else(|| panic!("no bloat estimate with the first size:\n{}", m.text));
    // Nine rows in ten deleted and not vacuumed: most of the heap is beyond what 2 000 rows need.
    let heap = cluster.number(&db, "SELECT pg_relation_size('bloated')");
    assert!(
        bloat > 0.8 * heap && bloat < heap,
        "bloat {bloat} of a {heap}-byte heap"
    );
    let index = [("target", "estimates"), ("indexrelname", "bloated_pkey")];
    assert!(
        m.value("pg_index_bloat_bytes", &index).is_some(),
        "no index estimate with the first size:\n{}",
        m.text
    );
}

/// A run that measured thousands of relations leaves a relation cache entry per table and
/// index in its server session, memory the backend keeps for its life: `relation_sizes` then
/// asks for a fresh session. The main session's backend is replaced, the target never looks
/// down, no collector fails, the next runs keep the schedule and the sizes stay right.
#[test]
fn a_large_measure_is_followed_by_a_fresh_session_without_a_failure() {
    let (cluster, db) = Cluster::shared_database("fresh");
    // 800 tables with a primary key and an index: 2 400 relations for the first run to open.
    for from in (1..=800).step_by(200) {
        cluster.psql(
            &db,
            &format!(
                "DO $$ BEGIN FOR i IN {from}..{} LOOP
                   EXECUTE format('CREATE TABLE f%s (id int PRIMARY KEY, v int)', i);
                   EXECUTE format('CREATE INDEX f%s_v_idx ON f%s (v)', i, i);
                 END LOOP; END $$",
                from + 199
            ),
        );
    }
    let config = ExporterConfig::new("fresh", &cluster.dsn(&db))
        .only_builtin(&["relation_sizes", "server"])
        .interval("relation_sizes", "1s")
        .interval("server", "1s")
        .raw("[relations]\nmax_tables = 1000\n")
        .build();
    let main_backends = || -> Vec<String> {
        cluster
            .psql(
                "postgres",
                &format!(
                    "SELECT pid FROM pg_stat_activity WHERE datname = '{db}' \
                     AND application_name = 'pgkpi' ORDER BY pid"
                ),
            )
            .lines()
            .map(str::to_string)
            .collect()
    };
    let exporter = Exporter::start(&config);
    let first = exporter.wait_for(WAIT, "all 800 tables measured", |m| {
        m.find("pg_table_size_bytes", &[("target", "fresh")]).len() == 800
    });
    // The first run opened at least a chunk's 1 500 relations: after it, the session is
    // replaced (a second connection attempt, not an error). Wait for runs on the fresh one.
    let later = exporter.wait_more_runs("fresh", "relation_sizes", 3.0);
    let attempts = later.of("fresh", "pgkpi_target_connection_attempts_total", &[]);
    assert!(
        attempts >= Some(2.0),
        "the session was not replaced: {attempts:?} connection attempts"
    );
    let backends = main_backends();
    assert_eq!(
        backends.len(),
        1,
        "one main session at a time: {backends:?}"
    );
    for m in [&first, &later] {
        assert_eq!(m.of("fresh", "pg_up", &[]), Some(1.0));
        assert_eq!(
            m.of("fresh", "pgkpi_target_connection_errors_total", &[]),
            Some(0.0)
        );
        for collector in ["relation_sizes", "server"] {
            assert_eq!(
                m.of(
                    "fresh",
                    "pgkpi_collector_errors_total",
                    &[("collector", collector)]
                ),
                Some(0.0),
                "{collector} failed around the replacement:\n{}",
                exporter.logs()
            );
        }
    }
    // Nothing changed since: later runs carry the sizes and open nothing, so the session
    // stays (attempts settle).
    let settled = exporter.wait_more_runs("fresh", "relation_sizes", 3.0);
    assert_eq!(
        settled.of("fresh", "pgkpi_target_connection_attempts_total", &[]),
        attempts
    );
    assert_eq!(
        settled
            .find("pg_table_size_bytes", &[("target", "fresh")])
            .len(),
        800
    );
}

/// The catalog-wide statements read 100 tables at a time here (`page_size`), with a
/// partitioned table whose partitions fall on different pages: the series, their labels and
/// their values are the same as with everything on one page.
#[test]
fn paged_catalog_reads_give_the_same_series_as_one_page() {
    let cluster = Cluster::shared();
    let db = app_database(cluster, "paged");
    cluster.psql(
        &db,
        "CREATE TABLE core.spread (id int, at date NOT NULL) PARTITION BY RANGE (at); \
         CREATE INDEX spread_at_idx ON core.spread (at); \
         DO $$ BEGIN FOR i IN 1..300 LOOP \
           EXECUTE format('CREATE TABLE core.filler%s (id int PRIMARY KEY, v int)', i); \
           EXECUTE format('INSERT INTO core.filler%s SELECT g, g FROM generate_series(1, %s) g', i, i); \
           IF i % 60 = 0 THEN \
             EXECUTE format('CREATE TABLE core.spread_p%s PARTITION OF core.spread \
                             FOR VALUES FROM (%L) TO (%L)', i, \
                            date '2026-01-01' + i, date '2026-01-01' + i + 60); \
             EXECUTE format('INSERT INTO core.spread_p%s SELECT %s, %L', i, i, date '2026-01-01' + i); \
           END IF; \
         END LOOP; END $$",
    );
    let relations = cluster.number(&db, "SELECT count(*) FROM pg_stat_user_indexes");
    assert!(
        relations > 300.0,
        "{relations} indexes: not enough for 3 pages"
    );
    let caps = "max_tables = 10000\nmax_indexes = 10000\n";
    let paged = Exporter::start(&config(
        "paged",
        &cluster.dsn(&db),
        &format!("[relations]\n{caps}page_size = 100\n"),
    ));
    let whole = Exporter::start(&config(
        "whole",
        &cluster.dsn(&db),
        &format!("[relations]\n{caps}page_size = 100000\n"),
    ));
    // Row counters only change with writes, and nothing writes now: both must agree exactly.
    // Sizes may move meanwhile (a visibility map written by autovacuum): their labels must agree.
    let series = |m: &Metrics, target: &str, families: &[&str], values: bool| {
        let mut all: Vec<String> = families
            .iter()
            .flat_map(|family| m.find(family, &[("target", target)]))
            .map(|s| {
                let mut labels: Vec<String> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != "target")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                labels.sort();
                let value = if values {
                    s.value.to_string()
                } else {
                    String::new()
                };
                format!("{} {} {value}", s.name, labels.join(","))
            })
            .collect();
        all.sort();
        all
    };
    let spread = [("relname", "spread"), ("schemaname", "core")];
    // relation_stats and relation_sizes are separate collectors on their own schedules: wait
    // for both families the assertions compare, sizes included.
    let ready = |target: &'static str| {
        move |m: &Metrics| {
            [
                "pg_table_tup_inserted_total",
                "pg_table_size_bytes",
                "pg_index_size_bytes",
            ]
            .iter()
            .all(|family| m.find(family, &[("target", target)]).len() > 300)
                && m.value(
                    "pg_table_tup_inserted_total",
                    &[&[("target", target)], &spread[..]].concat(),
                ) == Some(5.0)
        }
    };
    // The first size pass measures 600 relations; on 2 loaded cores that takes a while.
    let wait = Duration::from_secs(60);
    let p = paged.wait_for(
        wait,
        "every table and index, the partitions summed",
        ready("paged"),
    );
    let w = whole.wait_for(
        wait,
        "every table and index, the partitions summed",
        ready("whole"),
    );
    let counters = ["pg_table_tup_inserted_total", "pg_index_scans_total"];
    let sizes = ["pg_table_size_bytes", "pg_index_size_bytes"];
    assert_eq!(
        series(&p, "paged", &counters, true),
        series(&w, "whole", &counters, true)
    );
    assert_eq!(
        series(&p, "paged", &sizes, false),
        series(&w, "whole", &sizes, false)
    );
    assert!(
        p.find(
            "pg_index_scans_total",
            &[("target", "paged"), ("indexrelname", "spread_at_idx")]
        )
        .len()
            == 1
    );
}

/// A table's index scans and fetches are its indexes' own, summed per table by pgkpi from the
/// index rows it reads anyway: they equal `pg_stat_user_tables`' for a table with indexes, for
/// one without any (the view's NULL sums exported as 0, though the table's own fetch counter
/// is not 0 there: it had an index), and for a partitioned table, its partitions summed into it.
#[test]
fn table_index_counters_equal_the_views_sums() {
    let cluster = Cluster::shared();
    let db = app_database(cluster, "idxsums");
    cluster.psql(
        &db,
        "CREATE TABLE core.indexed (id int PRIMARY KEY, v int); \
         CREATE INDEX indexed_v_idx ON core.indexed (v); \
         INSERT INTO core.indexed SELECT g, g % 10 FROM generate_series(1, 1000) g; \
         CREATE TABLE core.bare (id int, v int); \
         INSERT INTO core.bare SELECT g, g FROM generate_series(1, 100) g; \
         CREATE TABLE core.split (id int, at date NOT NULL) PARTITION BY RANGE (at); \
         CREATE INDEX split_at_idx ON core.split (at); \
         CREATE TABLE core.split_a PARTITION OF core.split \
           FOR VALUES FROM ('2026-01-01') TO ('2026-02-01'); \
         CREATE TABLE core.split_b PARTITION OF core.split \
           FOR VALUES FROM ('2026-02-01') TO ('2026-03-01'); \
         INSERT INTO core.split SELECT g, date '2026-01-01' + g % 59 FROM generate_series(1, 590) g; \
         CREATE INDEX split_a_id_idx ON core.split_a (id); \
         ANALYZE core.indexed, core.bare, core.split",
    );
    // Index scans only where there is an index. The table without one had one, for a bitmap
    // scan: its own fetch counter counts that scan's rows and stays when the index goes. The
    // sessions' counters are flushed as their backends exit, after psql has returned.
    cluster.psql(
        &db,
        "CREATE INDEX bare_v_idx ON core.bare (v); ANALYZE core.bare; \
         SET enable_seqscan = off; SET enable_indexscan = off; SET enable_indexonlyscan = off; \
         SELECT sum(id) FROM core.bare WHERE v < 50",
    );
    cluster.psql(&db, "DROP INDEX core.bare_v_idx");
    cluster.psql(
        &db,
        "SET enable_seqscan = off; SET enable_bitmapscan = off; \
         SELECT count(*) FROM core.indexed WHERE id < 50; \
         SELECT count(*) FROM core.indexed WHERE v = 3; \
         SELECT count(*) FROM core.split WHERE at = '2026-01-05'; \
         SELECT count(*) FROM core.split WHERE at BETWEEN '2026-02-05' AND '2026-02-07'; \
         SELECT count(*) FROM core.split_a WHERE id = 7; \
         SELECT count(*) FROM core.bare",
    );
    // Each session's last counter: once it shows, that session's others do (one flush).
    for counter in [
        "pg_stat_get_tuples_fetched('core.bare'::regclass)",
        "pg_stat_get_numscans('core.split_b_at_idx'::regclass)",
    ] {
        let sql = format!("SELECT {counter}");
        retry(WAIT, Duration::from_millis(100), || {
            Some(cluster.number(&db, &sql))
                .filter(|&n| n > 0.0)
                .ok_or(())
        })
        .unwrap_or_else(|()| panic!("{counter} stayed 0"));
    }
    let view = |column: &str, like: &str| {
        cluster.number(
            &db,
            &format!(
                "SELECT coalesce(sum(coalesce({column}, 0)), 0) FROM pg_stat_user_tables \
                 WHERE schemaname = 'core' AND relname LIKE '{like}'"
            ),
        )
    };
    let expected: Vec<(&str, f64, f64)> = [
        ("indexed", "indexed"),
        ("bare", "bare"),
        ("split", "split%"),
    ]
    .iter()
    .map(|&(table, like)| (table, view("idx_scan", like), view("idx_tup_fetch", like)))
    .collect();
    assert!(expected[0].1 >= 2.0 && expected[0].2 > 0.0, "{expected:?}");
    assert!(expected[2].1 >= 2.0 && expected[2].2 > 0.0, "{expected:?}");
    assert_eq!((expected[1].1, expected[1].2), (0.0, 0.0), "{expected:?}");
    // Per index: the partitions' indexes attached to split_at_idx are summed into it; the one
    // created on a partition alone is reported as itself, under the partitioned table.
    let index_scans = |like: &str| {
        cluster.number(
            &db,
            &format!(
                "SELECT sum(idx_scan) FROM pg_stat_user_indexes \
                 WHERE schemaname = 'core' AND indexrelname LIKE '{like}'"
            ),
        )
    };
    let indexes = [
        ("split_at_idx", index_scans("split%at_idx")),
        ("split_a_id_idx", index_scans("split_a_id_idx")),
    ];
    assert!(
        indexes.iter().all(|&(_, scans)| scans >= 1.0),
        "{indexes:?}"
    );
    let exporter = Exporter::start(&config("idxsums", &cluster.dsn(&db), ""));
    exporter.wait_for(WAIT, "the views' index sums per table and index", |m| {
        expected.iter().all(|&(table, scans, fetched)| {
            let labels = [
                ("target", "idxsums"),
                ("schemaname", "core"),
                ("relname", table),
                ("parent", ""),
            ];
            m.value("pg_table_idx_scans_total", &labels) == Some(scans)
                && m.value("pg_table_idx_tup_fetch_total", &labels) == Some(fetched)
        }) && indexes.iter().all(|&(index, scans)| {
            let labels = [
                ("target", "idxsums"),
                ("relname", "split"),
                ("indexrelname", index),
            ];
            m.value("pg_index_scans_total", &labels) == Some(scans)
        })
    });
}

/// `relation_stats` lists the tables again only when `pg_class` was written since its last
/// list: a table created while it runs shows with its counters, and a dropped one goes.
#[test]
fn a_table_created_or_dropped_while_running_shows_in_relation_stats() {
    let cluster = Cluster::shared();
    let db = app_database(cluster, "listed");
    let exporter = Exporter::start(&config("listed", &cluster.dsn(&db), ""));
    // Runs from a list made before the table exists.
    exporter.wait_more_runs("listed", "relation_stats", 2.0);
    cluster.psql(
        &db,
        "CREATE TABLE core.late (id int); INSERT INTO core.late SELECT generate_series(1, 42)",
    );
    let late = [
        ("target", "listed"),
        ("schemaname", "core"),
        ("relname", "late"),
        ("parent", ""),
    ];
    // Within a few runs (the creating session's statistics are flushed as it exits), not
    // only when the list is made again anyway, ten runs after the last.
    let m = exporter.wait_more_runs("listed", "relation_stats", 4.0);
    assert_eq!(m.value("pg_table_tup_inserted_total", &late), Some(42.0));
    cluster.psql(&db, "DROP TABLE core.late");
    exporter.wait_for(WAIT, "the dropped table gone", |m| {
        m.value("pg_table_tup_inserted_total", &late).is_none()
    });
}

/// A database whose tables pgkpi measures is not walked a second time: its size is the sum of
/// those measures plus its catalogs and sequences, equal to `pg_database_size` but for the few
/// per-database files that belong to no relation. A stray file in each database's directory
/// (as a crash can leave behind) shows which way each size was found: `pg_database_size`
/// counts it, the derived size cannot; the database pgkpi does not inspect table by table
/// (`postgres`) is still walked. A table written afterwards grows the derived size.
#[test]
fn a_measured_database_s_size_is_derived_from_its_measures_and_the_others_are_walked() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql(
        "app",
        "CREATE TABLE notes (id serial PRIMARY KEY, body text); \
         ALTER TABLE notes ALTER body SET STORAGE EXTERNAL; \
         INSERT INTO notes (body) SELECT repeat(md5(g::text), 100) FROM generate_series(1, 500) g; \
         CREATE UNLOGGED TABLE scratch (id bigserial PRIMARY KEY, v int); \
         INSERT INTO scratch (v) SELECT g FROM generate_series(1, 20000) g; \
         CREATE MATERIALIZED VIEW totals AS SELECT v % 10 AS k, count(*) FROM scratch GROUP BY 1; \
         CREATE SCHEMA billing; CREATE SEQUENCE billing.invoice_no; \
         DELETE FROM scratch WHERE v % 3 = 0",
    );
    cluster.psql("app", "VACUUM ANALYZE");
    let stray = 1024.0 * 1024.0;
    for db in ["app", "postgres"] {
        let oid = cluster.number(
            "postgres",
            &format!("SELECT oid FROM pg_database WHERE datname = '{db}'"),
        );
        let path = cluster.dir.join(format!("data/base/{oid}/999999999"));
        std::fs::write(path, vec![0u8; stray as usize]).unwrap();
    }
    let exporter = Exporter::start(
        &ExporterConfig::new("size", &cluster.dsn("app"))
            .only_builtin(&["server", "relation_sizes", "database_size"])
            .interval("relation_sizes", "1s")
            .interval("database_size", "1s")
            .build(),
    );
    let size = |m: &Metrics, db: &str| {
        m.value(
            "pg_database_size_bytes",
            &[("target", "size"), ("datname", db)],
        )
    };
    let walked = |db: &str| cluster.number("postgres", &format!("SELECT pg_database_size('{db}')"));
    // What no relation holds: PG_VERSION and the relation map (515 bytes), and the relation
    // cache init file when a session wrote one (a few hundred kilobytes at most).
    let close = |a: f64, b: f64| (a - b).abs() <= 512.0 * 1024.0;
    let app = walked("app");
    // The first database_size run may come before relation_sizes' first one and walk.
    let m = exporter.wait_for(WAIT, "app's size derived from the measures", |m| {
        size(m, "app").is_some_and(|derived| close(derived, app - stray))
    });
    let postgres = size(&m, "postgres").expect("postgres is walked");
    assert!(
        close(postgres, walked("postgres")),
        "{postgres} vs {}",
        walked("postgres")
    );
    // The measures themselves, to the byte, whether unlogged (an index's init fork is a page)
    // or not: pgkpi asks only for the forks a relation can have.
    let exact: Vec<_> = [
        ("notes", None),
        ("notes", Some("notes_pkey")),
        ("scratch", None),
        ("scratch", Some("scratch_pkey")),
    ]
    .into_iter()
    .map(|(table, index)| {
        let mut labels = vec![
            ("target", "size"),
            ("schemaname", "public"),
            ("relname", table),
            ("parent", ""),
        ];
        let (family, relation) = match index {
            Some(index) => {
                labels.push(("indexrelname", index));
                ("pg_index_size_bytes", index)
            }
            None => ("pg_table_size_bytes", table),
        };
        let bytes = cluster.number(
            "app",
            &format!("SELECT pg_total_relation_size('{relation}')"),
        );
        (family, labels, bytes)
    })
    .collect();
    let init = cluster.number("app", "SELECT pg_relation_size('scratch_pkey', 'init')");
    assert!(init > 0.0, "the unlogged index has an init fork");
    exporter.wait_for(WAIT, "every measure equal to pg_total_relation_size", |m| {
        exact
            .iter()
            .all(|(family, labels, bytes)| m.value(family, labels) == Some(*bytes))
    });

    cluster.psql(
        "app",
        "INSERT INTO notes (body) SELECT repeat(md5(g::text), 100) FROM generate_series(1, 5000) g",
    );
    let grown = walked("app");
    assert!(grown > app + 10_000_000.0, "{grown} vs {app}");
    exporter.wait_for(WAIT, "app's derived size after the insert", |m| {
        size(m, "app").is_some_and(|derived| close(derived, grown - stray))
    });
}
