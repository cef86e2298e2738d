//! pgkpi configurations for tests, built as TOML tables rather than by concatenating strings.
//!
//! ```ignore
//! let toml = ExporterConfig::new("q", &cluster.dsn(&db))
//!     .interval("queues", "1s")
//!     .session("application_name", "pgkpi-q")
//!     .raw("[[queues]]\nname = \"river\"\npreset = \"river\"\n")
//!     .build();
//! ```
//!
//! Every configuration has one target, reconnects fast (200 ms, at most 1 s) and runs the
//! `server` collector every second unless `[collectors.server]` is given.

use std::path::Path;

use toml::{Table, Value};

pub struct ExporterConfig {
    target: String,
    dsn: String,
    /// The target's `kind`, when not the default (PostgreSQL).
    kind: Option<String>,
    doc: Table,
}

impl ExporterConfig {
    /// One target named `target` on `dsn`.
    pub fn new(target: &str, dsn: &str) -> ExporterConfig {
        ExporterConfig {
            target: target.to_string(),
            dsn: dsn.to_string(),
            kind: None,
            doc: Table::new(),
        }
    }

    /// The target's `kind` (`"pgbouncer"`).
    pub fn kind(mut self, kind: &str) -> ExporterConfig {
        self.kind = Some(kind.to_string());
        self
    }

    /// `key = value` in the table at the dotted `path` (`"session"`, `"collectors.locks"`).
    pub fn set(mut self, path: &str, key: &str, value: impl Into<Value>) -> ExporterConfig {
        let mut table = &mut self.doc;
        for name in path.split('.') {
            table = table
                .entry(name)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{name} of {path} is not a table"));
        }
        table.insert(key.to_string(), value.into());
        self
    }

    /// `[collectors.<collector>] interval = <every>`.
    pub fn interval(self, collector: &str, every: &str) -> ExporterConfig {
        self.set(&format!("collectors.{collector}"), "interval", every)
    }

    /// `[collectors.<collector>] enabled = false`.
    pub fn disable(self, collector: &str) -> ExporterConfig {
        self.set(&format!("collectors.{collector}"), "enabled", false)
    }

    /// Disables every built-in collector but those in `keep` (definition files still run).
    pub fn only_builtin(self, keep: &[&str]) -> ExporterConfig {
        super::library::builtin_collectors()
            .iter()
            .filter(|name| !keep.contains(&name.as_str()))
            .fold(self, |config, name| config.disable(name))
    }

    /// `[session] key = value`.
    pub fn session(self, key: &str, value: impl Into<Value>) -> ExporterConfig {
        self.set("session", key, value)
    }

    /// `collector_paths = [...]`: definition files or directories.
    pub fn collector_paths(mut self, paths: &[&Path]) -> ExporterConfig {
        let paths = paths
            .iter()
            .map(|p| Value::from(p.display().to_string()))
            .collect();
        self.doc
            .insert("collector_paths".to_string(), Value::Array(paths));
        self
    }

    /// TOML text merged into the configuration: its tables are merged with those set so far,
    /// its arrays of tables (`[[queues]]`) appended to theirs.
    pub fn raw(mut self, toml: &str) -> ExporterConfig {
        let parsed: Table = toml
            .parse()
            .unwrap_or_else(|e| panic!("test configuration fragment: {e}\n{toml}"));
        merge(&mut self.doc, parsed);
        self
    }

    /// The configuration file's text.
    pub fn build(&self) -> String {
        let mut doc = self.doc.clone();
        let defaults = ExporterConfig::new("", "")
            .set("poller", "reconnect_initial_backoff", "200ms")
            .set("poller", "reconnect_max_backoff", "1s");
        merge_missing(&mut doc, defaults.doc);
        let collectors = doc
            .entry("collectors")
            .or_insert_with(|| Value::Table(Table::new()));
        let collectors = collectors.as_table_mut().expect("collectors is a table");
        if !collectors.contains_key("server") {
            collectors.insert(
                "server".to_string(),
                Value::Table(Table::from_iter([("interval".to_string(), "1s".into())])),
            );
        }
        let mut target = Table::from_iter([
            ("name".to_string(), Value::from(self.target.as_str())),
            ("dsn".to_string(), Value::from(self.dsn.as_str())),
        ]);
        if let Some(kind) = &self.kind {
            target.insert("kind".to_string(), Value::from(kind.as_str()));
        }
        merge(
            &mut doc,
            Table::from_iter([(
                "targets".to_string(),
                Value::Array(vec![Value::Table(target)]),
            )]),
        );
        toml::to_string(&doc).expect("serialize the test configuration")
    }
}

/// `from` into `into`: tables merged key by key, arrays appended, other values replaced.
fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(mine)), Value::Table(theirs)) => merge(mine, theirs),
            (Some(Value::Array(mine)), Value::Array(theirs)) => mine.extend(theirs),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The keys of `defaults` that `into` does not set, at any depth.
fn merge_missing(into: &mut Table, defaults: Table) {
    for (key, value) in defaults {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(mine)), Value::Table(theirs)) => merge_missing(mine, theirs),
            (Some(_), _) => {}
            (None, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tests wrote before the builder: `extra` first, then the fast reconnects, the
    /// server collector every second unless `extra` configures it, and the target.
    fn config_for(target: &str, dsn: &str, extra: &str) -> String {
        let server = if extra.contains("[collectors.server]") {
            ""
        } else {
            "[collectors.server]\ninterval = \"1s\"\n\n"
        };
        format!(
            "{extra}\n\
             [poller]\nreconnect_initial_backoff = \"200ms\"\nreconnect_max_backoff = \"1s\"\n\n\
             {server}\
             [[targets]]\nname = \"{target}\"\ndsn = \"{dsn}\"\n"
        )
    }

    fn parsed(toml: &str) -> Table {
        toml.parse().unwrap()
    }

    #[test]
    fn the_builder_means_what_config_for_meant() {
        let dsn = "host=127.0.0.1 port=5432 user=postgres dbname=d sslmode=disable";
        let built = ExporterConfig::new("t", dsn)
            .interval("locks", "1s")
            .session("application_name", "pgkpi-t")
            .raw("[[queues]]\nname = \"a\"\n[session]\nstatement_timeout = \"1s\"\n")
            .raw("[[queues]]\nname = \"b\"\n")
            .collector_paths(&[Path::new("/tmp/defs")])
            .disable("activity_sampler")
            .build();
        let extra = "collector_paths = [\"/tmp/defs\"]\n\
                     [collectors.locks]\ninterval = \"1s\"\n\
                     [collectors.activity_sampler]\nenabled = false\n\
                     [session]\napplication_name = \"pgkpi-t\"\nstatement_timeout = \"1s\"\n\
                     [[queues]]\nname = \"a\"\n[[queues]]\nname = \"b\"\n";
        assert_eq!(parsed(&built), parsed(&config_for("t", dsn, extra)));

        let server = ExporterConfig::new("s", dsn)
            .interval("server", "1s")
            .set("collectors.server", "stale_after", "3s")
            .build();
        let extra = "[collectors.server]\ninterval = \"1s\"\nstale_after = \"3s\"\n";
        assert_eq!(parsed(&server), parsed(&config_for("s", dsn, extra)));
    }
}
