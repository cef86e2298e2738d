//! Configuration: structs, layering and validation.
//!
//! Layers, lowest first: built-in defaults < config file (TOML, or YAML by extension) <
//! environment (`PGKPI_SECTION__KEY`, plus `DATA_SOURCE_NAME`) < command-line flags. The
//! `config` crate merges the layers; every struct denies unknown fields so a typo is an error,
//! never a silently ignored setting. `PGKPI_` variables without the `__` (and not a top-level
//! key) are not configuration and are left alone: orchestrators set such names, e.g.
//! Kubernetes' `PGKPI_SERVICE_HOST` (see [`ignored_env_vars`]). Errors name the file and line
//! (or the variable) and say what to do; see [`ConfigError`].

mod load;
mod validate;

pub use load::ignored_env_vars;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::collector::backups::settings::BackupsConfig;
use crate::collector::locks::settings::LocksConfig;
use crate::collector::queues::settings::QueueConfig;
use crate::collector::relations::settings::RelationsConfig;
use crate::collector::statements::settings::StatementsConfig;
use crate::collector::webhooks::settings::WebhooksConfig;
use crate::dsn;
use crate::duration;

/// The default listen address. 9187 is postgres_exporter's and 9630 pg_exporter's; 9188 lets
/// pgkpi run beside either during a migration.
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:9188";

/// Name of the target built from `DATA_SOURCE_NAME` / `PGKPI_DSN` when no name is given.
pub const DEFAULT_TARGET_NAME: &str = "default";

/// Environment variables read besides the `PGKPI_` prefix mapping.
pub const DSN_ENV_VARS: &[&str] = &["PGKPI_DSN", "DATA_SOURCE_NAME"];

/// A configuration problem, written for the person who has to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server settings.
    pub web: WebConfig,
    /// Logging settings.
    pub log: LogConfig,
    /// Session settings applied to every target unless the target overrides them.
    pub session: SessionConfig,
    /// Reconnect behaviour shared by all targets.
    pub poller: PollerConfig,
    /// Per-collector overrides, keyed by collector name.
    pub collectors: BTreeMap<String, CollectorConfig>,
    /// Collector definition files (or directories of `*.toml`) to load besides the built-ins.
    pub collector_paths: Vec<PathBuf>,
    /// The databases to monitor.
    pub targets: Vec<TargetConfig>,
    /// A directory of target files (`*.toml`, each holding `[[targets]]` only) added to
    /// `targets`; re-read on reload and whenever a file in it changes (checked every 5 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets_directory: Option<PathBuf>,
    /// Options of the `locks` and `activity_sampler` collectors.
    pub locks: LocksConfig,
    /// Options of the `statements` collector (pg_stat_statements).
    pub statements: StatementsConfig,
    /// Application queue tables measured by the `queues` collector (`[[queues]]`).
    pub queues: Vec<QueueConfig>,
    /// Webhook delivery tables measured by the `webhooks` collector (`[webhooks]`).
    pub webhooks: WebhooksConfig,
    /// Options of the `relation_stats`, `relation_sizes` and `index_health` collectors.
    pub relations: RelationsConfig,
    /// Where full backups land and the restore-test marker (`[backups]`).
    pub backups: BackupsConfig,
    /// Targets named by Prometheus on `/probe` (`[probe]`).
    #[serde(skip_serializing_if = "is_default")]
    pub probe: ProbeConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address the HTTP server binds, `host:port`.
    pub listen_address: String,
    /// Path that serves the metrics.
    pub telemetry_path: String,
    /// TLS and basic authentication for the HTTP server (exporter-toolkit web config file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// Most connections open at once; past it a new connection closes the one that has waited
    /// longest without a request in progress, or is closed itself. Clamped below the open-file
    /// limit at start.
    pub max_connections: usize,
    /// Longest a client may take to complete a TLS handshake or a request's headers, counted
    /// from when the server starts waiting for them (so it also closes idle keep-alive
    /// connections).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen_address: DEFAULT_LISTEN_ADDRESS.to_string(),
            telemetry_path: "/metrics".to_string(),
            config_file: None,
            max_connections: 100,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// What every monitoring session sets so that a monitoring query can never harm the database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// `application_name` shown in pg_stat_activity.
    pub application_name: String,
    /// Server-side limit for any one statement.
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
    /// How long a statement may wait for a lock before giving up.
    #[serde(with = "duration")]
    pub lock_timeout: Duration,
    /// Safety net: a session left idle inside a transaction is ended by the server.
    #[serde(with = "duration")]
    pub idle_in_transaction_session_timeout: Duration,
    /// Limit on establishing the connection (TCP, TLS and authentication).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Run every transaction read-only (`default_transaction_read_only`).
    pub read_only: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            application_name: "pgkpi".to_string(),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_millis(100),
            idle_in_transaction_session_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            read_only: true,
        }
    }
}

/// Per-target overrides of [`SessionConfig`]; unset fields inherit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<Duration>,
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub lock_timeout: Option<Duration>,
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub idle_in_transaction_session_timeout: Option<Duration>,
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PollerConfig {
    /// First wait after a failed connection attempt; doubles on each failure.
    #[serde(with = "duration")]
    pub reconnect_initial_backoff: Duration,
    /// Upper bound of the wait between connection attempts.
    #[serde(with = "duration")]
    pub reconnect_max_backoff: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            reconnect_initial_backoff: Duration::from_secs(1),
            reconnect_max_backoff: Duration::from_secs(30),
        }
    }
}

/// Overrides for one collector; unset fields keep the collector's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Time between two runs.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Client-side limit on one run; should exceed the session's statement_timeout so the
    /// server cancels first and the connection stays usable.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// How long the last good values are still served after runs start failing.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<Duration>,
}

/// What a target's DSN points at: a closed set, because each kind has its own session and
/// its own collectors.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A PostgreSQL database: the safe read-only session and the PostgreSQL collectors.
    #[default]
    Postgres,
    /// pgBouncer's admin console (database `pgbouncer`): no session settings (it accepts no
    /// SET), simple-query collectors over its SHOW commands.
    Pgbouncer,
}

impl TargetKind {
    /// The label value (`pgkpi_target_info{kind}`).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Postgres => "postgres",
            TargetKind::Pgbouncer => "pgbouncer",
        }
    }
}

/// Where a collector runs on a server target (one with `[targets.databases]`): once per
/// server, or in every database. A closed set; elsewhere every collector runs on the target's
/// one database.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// It reads views that cover the whole server (pg_stat_activity, pg_locks, WAL,
    /// replication, settings, pg_stat_database, ...): run once per server.
    Server,
    /// It reads the catalog of the database it is connected to (tables, indexes, sequences,
    /// partitions, application tables): run in each database, its series labelled `datname`.
    #[default]
    Database,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Server => "server",
            Scope::Database => "database",
        }
    }
}

/// `[targets.databases]`: poll every database of the server that matches, not only the
/// DSN's, over a bounded number of connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabasesConfig {
    /// Glob patterns (`*`, `?`) of the database names to poll; default every database.
    pub include: Vec<String>,
    /// Glob patterns of the database names left out (checked after `include`).
    pub exclude: Vec<String>,
    /// How often the list of databases is read again: a database created or dropped shows up
    /// or disappears within this time.
    #[serde(with = "duration")]
    pub discovery_interval: Duration,
    /// Most connections pgkpi holds to this server at once, the main connection (server-wide
    /// collectors) and the activity sampler's included; the databases take turns on the
    /// rest (connect, poll, disconnect). Default: 2 plus the sampler's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most databases polled; past it the first ones by name are kept and a warning says how
    /// many were left out (a bound on series and memory).
    pub max_databases: usize,
}

impl Default for DatabasesConfig {
    fn default() -> Self {
        DatabasesConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            discovery_interval: Duration::from_secs(60),
            max_connections: None,
            max_databases: 1000,
        }
    }
}

/// A glob pattern (`*` any run of characters, `?` one character) as an anchored regex.
pub fn glob(pattern: &str) -> Result<regex::Regex, regex::Error> {
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re)
}

/// `[probe]`: targets named by Prometheus (`/probe?target=host:port&auth_module=name`), for
/// fleets whose list lives in Prometheus service discovery. Off unless `allowed_targets` is
/// set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Glob patterns of `host:port` a probe may name (e.g. `"*.db.example.net:5432"`);
    /// anything else is refused (403). Empty: `/probe` is off.
    pub allowed_targets: Vec<String>,
    /// A probed target that has not been probed for this long stops being polled and its
    /// series go.
    #[serde(with = "duration")]
    pub expire_after: Duration,
    /// Most probed targets polled at once; a probe past it is refused (503).
    pub max_targets: usize,
    /// Credentials by name, chosen by the probe's `auth_module` parameter: credentials never
    /// travel in the URL.
    pub auth_modules: BTreeMap<String, AuthModule>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            allowed_targets: Vec::new(),
            expire_after: Duration::from_secs(300),
            max_targets: 100,
            auth_modules: BTreeMap::new(),
        }
    }
}

/// How to log in to a probed server: a DSN without host and port (the probe gives them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthModule {
    /// libpq key=value string without `host`, `hostaddr` or `port`, e.g.
    /// `"user=pgkpi dbname=postgres sslmode=verify-full sslrootcert=system"`.
    pub dsn: String,
    /// File whose first line is the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// Compiled `include`/`exclude` patterns of [`DatabasesConfig`].
#[derive(Debug, Clone)]
pub struct DatabaseFilter {
    include: Vec<regex::Regex>,
    exclude: Vec<regex::Regex>,
}

impl DatabaseFilter {
    /// Compiles the patterns; `at` names the configuration key in errors.
    pub fn new(config: &DatabasesConfig, at: &str) -> Result<DatabaseFilter, String> {
        let compile = |key: &str, patterns: &[String]| -> Result<Vec<regex::Regex>, String> {
            patterns
                .iter()
                .map(|p| {
                    if p.is_empty() {
                        return Err(format!(
                            "{at}: databases.{key}: an empty pattern matches nothing; remove it or write \"*\""
                        ));
                    }
                    glob(p).map_err(|e| format!("{at}: databases.{key}: pattern \"{p}\": {e}"))
                })
                .collect()
        };
        Ok(DatabaseFilter {
            include: compile("include", &config.include)?,
            exclude: compile("exclude", &config.exclude)?,
        })
    }

    /// True for a database to poll: included (or no include patterns) and not excluded.
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(name)))
            && !self.exclude.iter().any(|r| r.is_match(name))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Label value identifying this database in every metric (`target="..."`).
    pub name: String,
    /// What the DSN points at: `postgres` (default) or `pgbouncer` (its admin console).
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: TargetKind,
    /// libpq connection string or URL.
    pub dsn: String,
    /// File whose first line is the password (e.g. a mounted secret); keeps it out of the DSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Session setting overrides for this target.
    #[serde(default, skip_serializing_if = "is_default")]
    pub session: SessionOverrides,
    /// Where pgkpi sees the server's data directory when it is mounted at another path (a
    /// shared volume); default: the server's own `data_directory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_directory: Option<PathBuf>,
    /// Poll every matching database of the server (see [`DatabasesConfig`]); without it,
    /// only the DSN's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<DatabasesConfig>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What a configuration is built from, kept so that a reload builds it again the same way.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub file: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub flags: FlagOverrides,
}

impl Layers {
    /// Builds and validates the configuration from the layers' current contents.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.file.as_deref(), &self.env, &self.flags)
    }
}

/// Values given on the command line; each overrides every other layer.
#[derive(Debug, Default, Clone)]
pub struct FlagOverrides {
    pub listen_address: Option<String>,
    pub telemetry_path: Option<String>,
    pub web_config_file: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

impl Config {
    /// The target `[backups]` belongs to: the one it names, else the first PostgreSQL
    /// target; None when `[backups]` sets no source (directory or JSON file).
    pub fn backups_target(&self) -> Option<&str> {
        self.backups.source()?;
        match &self.backups.target {
            Some(name) => Some(name.as_str()),
            None => self
                .targets
                .iter()
                .find(|t| t.kind == TargetKind::Postgres)
                .map(|t| t.name.as_str()),
        }
    }

    /// The effective session settings of a target.
    pub fn session_for(&self, target: &TargetConfig) -> SessionConfig {
        let o = &target.session;
        let d = &self.session;
        SessionConfig {
            application_name: o
                .application_name
                .clone()
                .unwrap_or_else(|| d.application_name.clone()),
            statement_timeout: o.statement_timeout.unwrap_or(d.statement_timeout),
            lock_timeout: o.lock_timeout.unwrap_or(d.lock_timeout),
            idle_in_transaction_session_timeout: o
                .idle_in_transaction_session_timeout
                .unwrap_or(d.idle_in_transaction_session_timeout),
            connect_timeout: o.connect_timeout.unwrap_or(d.connect_timeout),
            read_only: o.read_only.unwrap_or(d.read_only),
        }
    }

    /// The configuration as TOML with every password masked, for `check-config`.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for target in &mut shown.targets {
            target.dsn = dsn::mask(&target.dsn);
        }
        for module in shown.probe.auth_modules.values_mut() {
            module.dsn = dsn::mask(&module.dsn);
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgkpi-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn data_source_name_alone_is_enough() {
        let cfg = Config::load(
            None,
            &env(&[("DATA_SOURCE_NAME", "postgresql://u@h/db")]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.targets.len(), 1);
        assert_eq!(cfg.targets[0].name, "default");
        assert_eq!(cfg.web.listen_address, DEFAULT_LISTEN_ADDRESS);
        assert_eq!(cfg.session.statement_timeout, Duration::from_secs(5));
        assert_eq!(cfg.session.lock_timeout, Duration::from_millis(100));
    }

    #[test]
    fn layers_override_in_order_and_keep_mixed_case_names() {
        let path = write(
            "layers.toml",
            "[web]\nlisten_address = \"127.0.0.1:1111\"\ntelemetry_path = \"/file\"\n\
             [log]\nlevel = \"debug\"\n\
             [[targets]]\nname = \"Primary-EU\"\ndsn = \"host=h\"\n[targets.session]\nlock_timeout = \"250ms\"\n\
             [collectors.server]\ninterval = \"2s\"\n",
        );
        let flags = FlagOverrides {
            log_level: Some("warn".into()),
            ..Default::default()
        };
        let cfg = Config::load(
            Some(&path),
            &env(&[("PGKPI_WEB__LISTEN_ADDRESS", "127.0.0.1:2222")]),
            &flags,
        )
        .unwrap();
        assert_eq!(cfg.web.listen_address, "127.0.0.1:2222", "env beats file");
        assert_eq!(cfg.web.telemetry_path, "/file", "file beats default");
        assert_eq!(cfg.log.level, "warn", "flag beats file");
        assert_eq!(
            cfg.targets[0].name, "Primary-EU",
            "target names keep their case"
        );
        assert_eq!(
            cfg.session_for(&cfg.targets[0]).lock_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(
            cfg.collectors["server"].interval,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn database_filters_are_globs_include_then_exclude() {
        let config = DatabasesConfig {
            include: vec!["app_*".into(), "crm".into()],
            exclude: vec!["app_tmp?".into()],
            ..Default::default()
        };
        let filter = DatabaseFilter::new(&config, "targets[0]").unwrap();
        assert!(filter.matches("app_1") && filter.matches("crm"));
        assert!(
            !filter.matches("app_tmp1") && !filter.matches("crm2") && !filter.matches("xapp_1")
        );
        assert!(DatabaseFilter::new(&Default::default(), "t")
            .unwrap()
            .matches("anything"));
        let empty = DatabasesConfig {
            exclude: vec![String::new()],
            ..Default::default()
        };
        let error = DatabaseFilter::new(&empty, "targets[0]").unwrap_err();
        assert!(error.contains("targets[0]: databases.exclude"), "{error}");
    }

    #[test]
    fn yaml_is_accepted() {
        let path = write(
            "c.yaml",
            "web:\n  listen_address: 127.0.0.1:3333\ntargets:\n  - name: a\n    dsn: host=h\n",
        );
        let cfg = Config::load(Some(&path), &env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(cfg.web.listen_address, "127.0.0.1:3333");
        assert_eq!(cfg.targets[0].name, "a");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let path = write(
            "typo.toml",
            "[web]\nlisten_address = \"127.0.0.1:1\"\n\n[log]\nlevl = \"info\"\n",
        );
        let err = Config::load(Some(&path), &env(&[]), &FlagOverrides::default())
            .unwrap_err()
            .0;
        assert!(err.contains("typo.toml, line 5"), "{err}");
        assert!(err.contains("levl"), "{err}");

        let path = write("typo.yaml", "web:\n  listen_adress: x\n");
        let err = Config::load(Some(&path), &env(&[]), &FlagOverrides::default())
            .unwrap_err()
            .0;
        assert!(err.contains("typo.yaml, line 2"), "{err}");
        assert!(err.contains("listen_adress"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let path = write("dur.toml", "[session]\nstatement_timeout = \"five\"\n");
        let err = Config::load(Some(&path), &env(&[]), &FlagOverrides::default())
            .unwrap_err()
            .0;
        assert!(
            err.contains("line 2") && err.contains("invalid duration \"five\""),
            "{err}"
        );

        let err = Config::load(
            None,
            &env(&[("DATA_SOURCE_NAME", "host=h port=x password=hunter2")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .0;
        assert!(err.contains("dsn") && !err.contains("hunter2"), "{err}");

        let err = Config::load(None, &env(&[]), &FlagOverrides::default())
            .unwrap_err()
            .0;
        assert!(err.contains("no target"), "{err}");

        let err = Config::load(
            None,
            &env(&[("DATA_SOURCE_NAME", "host=h"), ("PGKPI_WEB__NOPE", "1")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .0;
        assert!(
            err.contains("PGKPI_WEB__NOPE") && err.contains("nope"),
            "{err}"
        );
    }

    /// What Kubernetes puts in every pod of a namespace with a Service named `pgkpi` (port 9188
    /// named `http`), service links being on by default.
    const KUBERNETES_SERVICE_LINKS: &[(&str, &str)] = &[
        ("PGKPI_SERVICE_HOST", "10.96.12.34"),
        ("PGKPI_SERVICE_PORT", "9188"),
        ("PGKPI_SERVICE_PORT_HTTP", "9188"),
        ("PGKPI_PORT", "tcp://10.96.12.34:9188"),
        ("PGKPI_PORT_9188_TCP", "tcp://10.96.12.34:9188"),
        ("PGKPI_PORT_9188_TCP_PROTO", "tcp"),
        ("PGKPI_PORT_9188_TCP_PORT", "9188"),
        ("PGKPI_PORT_9188_TCP_ADDR", "10.96.12.34"),
    ];

    #[test]
    fn kubernetes_service_links_are_not_configuration() {
        let plain = env(&[
            ("DATA_SOURCE_NAME", "postgresql://u@h/db"),
            ("PGKPI_TARGET_NAME", "primary"),
            ("PGKPI_WEB__LISTEN_ADDRESS", "127.0.0.1:2222"),
        ]);
        let mut linked = plain.clone();
        linked.extend(env(KUBERNETES_SERVICE_LINKS));
        let expected = Config::load(None, &plain, &FlagOverrides::default()).unwrap();
        let cfg = Config::load(None, &linked, &FlagOverrides::default()).unwrap();
        assert_eq!(cfg, expected, "the service links change nothing");
        assert_eq!(cfg.web.listen_address, "127.0.0.1:2222");
        assert_eq!(cfg.targets[0].name, "primary");

        let mut names: Vec<&str> = KUBERNETES_SERVICE_LINKS.iter().map(|(k, _)| *k).collect();
        names.sort();
        assert_eq!(ignored_env_vars(&linked), names);
        assert!(
            ignored_env_vars(&plain).is_empty(),
            "variables read by name or as keys are not ignored"
        );
    }

    #[test]
    fn every_documented_environment_form_is_read() {
        let cfg = Config::load(
            None,
            &env(&[
                ("PGKPI_DSN", "postgresql://u@h/db"),
                ("PGKPI_TARGET_NAME", "primary"),
                ("PGKPI_CONFIG_FILE", "/not/read/by/load"),
                ("PGKPI_WEB__LISTEN_ADDRESS", "127.0.0.1:2222"),
                ("PGKPI_WEB__TELEMETRY_PATH", "/m"),
                ("PGKPI_LOG__LEVEL", "debug"),
                ("PGKPI_LOG__FORMAT", "json"),
                ("PGKPI_SESSION__STATEMENT_TIMEOUT", "2s"),
                ("PGKPI_SESSION__READ_ONLY", "false"),
                ("PGKPI_POLLER__RECONNECT_MAX_BACKOFF", "1m"),
                ("PGKPI_COLLECTORS__SERVER__INTERVAL", "3s"),
                ("PGKPI_LOCKS__TOP_BLOCKERS", "7"),
                ("PGKPI_STATEMENTS__TOP_N", "10"),
                ("PGKPI_RELATIONS__MAX_TABLES", "20"),
                ("PGKPI_WEBHOOKS__TOP_FAILING", "3"),
            ]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.targets[0].name, "primary");
        assert_eq!(cfg.targets[0].dsn, "postgresql://u@h/db");
        assert_eq!(cfg.web.listen_address, "127.0.0.1:2222");
        assert_eq!(cfg.web.telemetry_path, "/m");
        assert_eq!(cfg.log.level, "debug");
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.session.statement_timeout, Duration::from_secs(2));
        assert!(!cfg.session.read_only);
        assert_eq!(cfg.poller.reconnect_max_backoff, Duration::from_secs(60));
        assert_eq!(
            cfg.collectors["server"].interval,
            Some(Duration::from_secs(3))
        );
        assert_eq!(cfg.locks.top_blockers, 7);
        assert_eq!(cfg.statements.top_n, 10);
        assert_eq!(cfg.relations.max_tables, 20);
        assert_eq!(cfg.webhooks.top_failing, 3);
    }

    #[test]
    fn a_typo_in_a_configuration_variable_is_still_an_error() {
        let load = |pairs: &[(&str, &str)]| {
            let mut vars = env(&[("DATA_SOURCE_NAME", "host=h")]);
            vars.extend(env(KUBERNETES_SERVICE_LINKS));
            vars.extend(env(pairs));
            Config::load(None, &vars, &FlagOverrides::default())
                .unwrap_err()
                .0
        };
        // A misspelt key, a misspelt section: the variable, the key and the right names.
        let err = load(&[
            ("PGKPI_LOG__LEVEL", "debug"),
            ("PGKPI_WEB__LISTEN_ADRESS", "127.0.0.1:1"),
        ]);
        assert!(
            err.starts_with(
                "environment variable PGKPI_WEB__LISTEN_ADRESS: unknown field `listen_adress`"
            ) && err.contains("`listen_address`")
                && err.contains("PGKPI_<SECTION>__<KEY>"),
            "{err}"
        );
        assert!(
            err.matches("environment variable ").count() == 1 && !err.contains("PGKPI_SERVICE_"),
            "only the faulty variable is named: {err}"
        );
        let err = load(&[("PGKPI_WBE__LISTEN_ADDRESS", "127.0.0.1:1")]);
        assert!(
            err.contains("environment variable PGKPI_WBE__LISTEN_ADDRESS: unknown field `wbe`")
                && err.contains("`web`"),
            "{err}"
        );
        // Deeper keys and bad values keep their checks.
        let err = load(&[("PGKPI_COLLECTORS__SERVER__INTERVALL", "1s")]);
        assert!(
            err.contains("PGKPI_COLLECTORS__SERVER__INTERVALL") && err.contains("intervall"),
            "{err}"
        );
        let err = load(&[("PGKPI_SESSION__LOCK_TIMEOUT", "soon")]);
        assert!(
            err.contains("PGKPI_SESSION__LOCK_TIMEOUT") && err.contains("invalid duration"),
            "{err}"
        );
        // A top-level key is configuration too, and says where lists go.
        for name in ["PGKPI_COLLECTOR_PATHS", "PGKPI_TARGETS"] {
            let err = load(&[(name, "/etc/pgkpi/collectors")]);
            assert!(
                err.contains(&format!("environment variable {name}:"))
                    && err.contains("expected a sequence")
                    && err.contains("config file"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_pgbouncer_target_must_name_the_admin_console() {
        let load = |dsn: &str| {
            let path = write(
                "pgbouncer.toml",
                &format!("[[targets]]\nname = \"pooler\"\nkind = \"pgbouncer\"\ndsn = \"{dsn}\"\n"),
            );
            Config::load(Some(&path), &env(&[]), &FlagOverrides::default())
        };
        let cfg = load("host=h port=6432 user=pgkpi dbname=pgbouncer").unwrap();
        assert_eq!(cfg.targets[0].kind, TargetKind::Pgbouncer);
        let err = load("host=h port=6432 user=pgkpi dbname=app")
            .unwrap_err()
            .0;
        assert!(
            err.contains("dbname=pgbouncer") && err.contains("stats_users"),
            "{err}"
        );
        let err = load("host=h user=pgkpi dbname=pgbouncer options='-c jit=off'")
            .unwrap_err()
            .0;
        assert!(err.contains("options"), "{err}");
    }

    #[test]
    fn backups_name_an_existing_postgres_target() {
        let path = write(
            "backups.toml",
            "[backups]\ndirectory = \"/b\"\ntarget = \"nope\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
        );
        let err = Config::load(Some(&path), &env(&[]), &FlagOverrides::default())
            .unwrap_err()
            .0;
        assert!(err.contains("backups.target \"nope\""), "{err}");
        let path = write(
            "backups-default.toml",
            "[backups]\ndirectory = \"/b\"\n[[targets]]\nname = \"p\"\nkind = \"pgbouncer\"\ndsn = \"host=h dbname=pgbouncer\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
        );
        let cfg = Config::load(Some(&path), &env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(
            cfg.backups_target(),
            Some("a"),
            "the first PostgreSQL target"
        );
    }

    #[test]
    fn masked_output_hides_passwords() {
        let cfg = Config::load(
            None,
            &env(&[("DATA_SOURCE_NAME", "postgresql://u:hunter2@h/db")]),
            &FlagOverrides::default(),
        )
        .unwrap();
        let shown = cfg.to_masked_toml();
        assert!(shown.contains("postgresql://u:****@h/db"), "{shown}");
        assert!(!shown.contains("hunter2"));
    }
}
