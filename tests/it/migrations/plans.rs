//! The plan checks, on one database built once as the contract in
//! `fixtures/query_patterns.toml` describes: baseline, seed at scale 1, EXPLAIN every pattern,
//! migrations 001..009 (timed), all of them again, seed again, EXPLAIN again. Checks that the
//! migrations apply twice without error or change, and that each query pattern uses its index
//! after the migrations and not before.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{migrated_template, migration_files};
use crate::support::schema::apply_migration;
use crate::support::{repo_path, Cluster};

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[derive(Deserialize)]
struct PatternFile {
    pattern: Vec<Pattern>,
}

#[derive(Deserialize, Debug)]
struct Pattern {
    name: String,
    sql: String,
    index: String,
    table: String,
    migration: String,
    in_baseline: bool,
}

fn patterns() -> Vec<Pattern> {
    let text = std::fs::read_to_string(repo_path("fixtures/query_patterns.toml")).unwrap();
    let file: PatternFile = toml::from_str(&text).expect("fixtures/query_patterns.toml");
    assert_eq!(
        file.pattern.len(),
        26,
        "the document names 26 query patterns"
    );
    file.pattern
}

/// Names of the indexes a JSON plan scans (Index Scan, Index Only Scan, Bitmap Index Scan).
fn plan_indexes(plan: &serde_json::Value, out: &mut Vec<String>) {
    match plan {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(name)) = map.get("Index Name") {
                out.push(name.clone());
            }
            map.values().for_each(|v| plan_indexes(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| plan_indexes(v, out)),
        _ => {}
    }
}

/// EXPLAIN (no ANALYZE: several patterns are UPDATE or FOR UPDATE) → indexes used, plus the
/// plan's text form for failure messages.
fn explain(cluster: &Cluster, db: &str, sql: &str) -> (Vec<String>, String) {
    let json = cluster.psql(db, &format!("EXPLAIN (FORMAT JSON) {sql}"));
    let plan: serde_json::Value = serde_json::from_str(&json).expect("EXPLAIN JSON");
    let mut used = Vec::new();
    plan_indexes(&plan, &mut used);
    let text = cluster.psql(db, &format!("EXPLAIN {sql}"));
    (used, text)
}

/// Everything a re-run could change: indexes (with definition and validity), tables, functions
/// (with body), triggers, grants on the audited tables and pgkpi's role settings.
const FINGERPRINT: &str = "
SELECT md5(string_agg(x, E'\\n' ORDER BY x)) FROM (
  SELECT format('index %s %s valid=%s oid=%s', i.indexrelid::regclass,
                pg_get_indexdef(i.indexrelid), i.indisvalid, i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('core', 'chat', 'public', 'integration')
  UNION ALL
  SELECT format('rel %s %s oid=%s acl=%s', c.oid::regclass, c.relkind, c.oid, c.relacl)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('core', 'chat', 'public', 'integration') AND c.relkind IN ('r', 'p', 'S', 'v')
  UNION ALL
  SELECT format('function %s oid=%s %s', p.oid::regprocedure, p.oid, md5(p.prosrc))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname IN ('core', 'chat', 'public', 'integration')
  UNION ALL
  SELECT format('trigger %s %s oid=%s', t.tgrelid::regclass, t.tgname, t.oid)
  FROM pg_trigger t WHERE NOT t.tgisinternal
  UNION ALL
  SELECT format('role %s %s', r.rolname, r.rolconfig) FROM pg_roles r WHERE r.rolname = 'pgkpi'
) s(x)";

/// The plan-check database and what was measured while building it.
struct Loaded {
    db: String,
    /// Per pattern (in_baseline only): indexes the plan used before the migrations, and the
    /// plan text.
    before: BTreeMap<String, (Vec<String>, String)>,
    /// Patterns whose table existed before the migrations (must equal in_baseline).
    table_existed_before: BTreeMap<String, bool>,
    first_apply: Vec<(String, Duration)>,
    second_apply: Vec<(String, Duration)>,
    fingerprint_after_first: String,
    fingerprint_after_second: String,
    seed_runs: (Duration, Duration),
}

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let (cluster, db) = Cluster::shared_database("plans");
        cluster.psql_file(&db, repo_path("fixtures/baseline.sql"), &[]);
        let t = Instant::now();
        cluster.psql_file(&db, repo_path("fixtures/seed.sql"), &[("scale", "1")]);
        let seed1 = t.elapsed();

        let mut before = BTreeMap::new();
        let mut table_existed_before = BTreeMap::new();
        for p in patterns() {
            let exists = cluster.psql(
                &db,
                &format!("SELECT to_regclass('{}') IS NOT NULL", p.table),
            );
            table_existed_before.insert(p.name.clone(), exists == "t");
            if p.in_baseline {
                before.insert(p.name.clone(), explain(cluster, &db, &p.sql));
            }
        }

        let mut first_apply = Vec::new();
        for file in migration_files() {
            let took = apply_migration(cluster, &db, &file);
            first_apply.push((file_name(&file), took));
        }
        let fingerprint_after_first = cluster.psql(&db, FINGERPRINT);
        let mut second_apply = Vec::new();
        for file in migration_files() {
            let took = apply_migration(cluster, &db, &file);
            second_apply.push((file_name(&file), took));
        }
        let fingerprint_after_second = cluster.psql(&db, FINGERPRINT);

        let t = Instant::now();
        cluster.psql_file(&db, repo_path("fixtures/seed.sql"), &[("scale", "1")]);
        let seed2 = t.elapsed();
        Loaded {
            db,
            before,
            table_existed_before,
            first_apply,
            second_apply,
            fingerprint_after_first,
            fingerprint_after_second,
            seed_runs: (seed1, seed2),
        }
    })
}

#[test]
fn migrations_apply_on_the_loaded_baseline_then_again_without_error() {
    let cluster = Cluster::shared();
    let loaded = loaded();
    // Every file ran twice with ON_ERROR_STOP (psql_file panics otherwise); print the timings
    // for the record (cargo test -- --nocapture).
    eprintln!(
        "seed scale 1: first run {:.2?}, second run {:.2?}",
        loaded.seed_runs.0, loaded.seed_runs.1
    );
    for ((file, first), (_, second)) in loaded.first_apply.iter().zip(&loaded.second_apply) {
        eprintln!("{file:<36} first apply {first:>9.2?}   re-apply {second:>9.2?}");
    }
    assert_eq!(
        loaded.fingerprint_after_first, loaded.fingerprint_after_second,
        "re-applying the migrations changed the catalog (indexes, tables, functions, triggers, \
         grants or role settings)"
    );
    let invalid = cluster.psql(
        &loaded.db,
        "SELECT coalesce(string_agg(indexrelid::regclass::text, ', '), '') \
         FROM pg_index WHERE NOT indisvalid",
    );
    assert_eq!(invalid, "", "invalid indexes after the migrations");
    // Every index the document names exists, on its table, and is valid.
    for p in patterns() {
        let schema = p.table.split('.').next().unwrap();
        let row = cluster.psql(
            &loaded.db,
            &format!(
                "SELECT i.indrelid = '{}'::regclass, i.indisvalid FROM pg_index i \
                 WHERE i.indexrelid = to_regclass('{schema}.{}')",
                p.table, p.index
            ),
        );
        assert_eq!(
            row, "t|t",
            "pattern {}: index {schema}.{} (migration {}) missing, invalid or on another table",
            p.name, p.index, p.migration
        );
    }
    // The same holds on an empty baseline (the template the queue tests clone).
    let template = migrated_template();
    let invalid = cluster.psql(
        &format!("{template}_probe"),
        "SELECT count(*) FROM pg_index WHERE NOT indisvalid",
    );
    assert_eq!(invalid, "0");
}

#[test]
fn query_patterns_use_their_index_after_the_migrations_and_not_before() {
    let cluster = Cluster::shared();
    let loaded = loaded();
    let mut failures = Vec::new();
    for p in patterns() {
        assert_eq!(
            loaded.table_existed_before[&p.name],
            p.in_baseline,
            "pattern {}: in_baseline says {} but table {} {} before the migrations",
            p.name,
            p.in_baseline,
            p.table,
            if p.in_baseline {
                "did not exist"
            } else {
                "existed"
            }
        );
        if let Some((used, text)) = loaded.before.get(&p.name) {
            if used.contains(&p.index) {
                failures.push(format!(
                    "{}: uses {} BEFORE the migrations:\n{text}",
                    p.name, p.index
                ));
            }
        }
        let (used, text) = explain(cluster, &loaded.db, &p.sql);
        if !used.contains(&p.index) {
            failures.push(format!(
                "{}: expected {} after the migrations, plan uses {used:?}:\n{text}",
                p.name, p.index
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
