//! Configuration: structs, layering and validation.
//!
//! Layers, lowest first: built-in defaults < config file (TOML, or YAML by extension) <
//! environment (`PGKPI_SECTION__KEY`, plus `DATA_SOURCE_NAME`) < command-line flags. The
//! `config` crate merges the layers; every struct denies unknown fields so a typo is an error,
//! never a silently ignored setting. Errors name the file and line (or the variable) and say
//! what to do; see [`ConfigError`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::collector::locks::settings::LocksConfig;
use crate::collector::queues::settings::{self as queues, QueueConfig};
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
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen_address: DEFAULT_LISTEN_ADDRESS.to_string(),
            telemetry_path: "/metrics".to_string(),
            config_file: None,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Label value identifying this database in every metric (`target="..."`).
    pub name: String,
    /// libpq connection string or URL.
    pub dsn: String,
    /// File whose first line is the password (e.g. a mounted secret); keeps it out of the DSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Session setting overrides for this target.
    #[serde(default, skip_serializing_if = "is_default")]
    pub session: SessionOverrides,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
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
    /// Builds the effective configuration from all layers and validates it.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &FlagOverrides,
    ) -> Result<Config, ConfigError> {
        if let Some(path) = file {
            check_file(path)?;
        }
        let defaults = config::Config::try_from(&Config::default())
            .map_err(|e| ConfigError(format!("internal error building defaults: {e}")))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            builder = builder.add_source(config::File::new(
                &path.to_string_lossy(),
                file_format(path)?,
            ));
        }
        let prefixed: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("PGKPI_") && !is_special_env(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("PGKPI")
                .prefix_separator("_")
                .separator("__")
                .source(Some(prefixed.clone())),
        );
        let set = |b: config::ConfigBuilder<config::builder::DefaultState>,
                   key: &str,
                   v: &Option<String>| match v {
            Some(v) => b.set_override(key, v.clone()),
            None => Ok(b),
        };
        let err = |e: config::ConfigError| ConfigError(format!("command-line flag: {e}"));
        builder = set(builder, "web.listen_address", &flags.listen_address).map_err(err)?;
        builder = set(builder, "web.telemetry_path", &flags.telemetry_path).map_err(err)?;
        builder = set(builder, "web.config_file", &flags.web_config_file).map_err(err)?;
        builder = set(builder, "log.level", &flags.log_level).map_err(err)?;
        builder = set(builder, "log.format", &flags.log_format).map_err(err)?;

        let merged = builder
            .build()
            .map_err(|e| ConfigError(format!("cannot merge configuration: {e}")))?;
        let mut cfg: Config = merged.try_deserialize().map_err(|e| {
            let origin = if prefixed.is_empty() {
                "command-line flags".to_string()
            } else {
                format!(
                    "environment ({}) or command-line flags",
                    prefixed.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            ConfigError(format!(
                "invalid value from {origin}: {e}; environment variables are named \
                 PGKPI_<SECTION>__<KEY>, e.g. PGKPI_WEB__LISTEN_ADDRESS or PGKPI_LOG__LEVEL"
            ))
        })?;

        if let Some((var, dsn)) = DSN_ENV_VARS.iter().find_map(|var| {
            env.get(*var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*var, v))
        }) {
            // Like postgres_exporter: the DSN variable defines the monitored database, replacing
            // targets from the file.
            if !cfg.targets.is_empty() {
                tracing::info!(
                    variable = var,
                    "environment dsn replaces targets from the config file"
                );
            }
            let name = env
                .get("PGKPI_TARGET_NAME")
                .cloned()
                .unwrap_or_else(|| DEFAULT_TARGET_NAME.to_string());
            cfg.targets = vec![TargetConfig {
                name,
                dsn: dsn.clone(),
                password_file: None,
                session: SessionOverrides::default(),
            }];
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: addresses, paths, names, DSNs, timeouts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.web.listen_address.parse::<SocketAddr>().map_err(|_| {
            ConfigError(format!(
                "web.listen_address \"{}\" is not an address; use host:port, e.g. 127.0.0.1:9188",
                self.web.listen_address
            ))
        })?;
        let path = &self.web.telemetry_path;
        if !path.starts_with('/') || ["/", "/healthz", "/readyz"].contains(&path.as_str()) {
            return Err(ConfigError(format!(
                "web.telemetry_path \"{path}\" must start with '/' and not be /, /healthz or /readyz; e.g. /metrics"
            )));
        }
        if let Some(file) = &self.web.config_file {
            crate::web_config::WebSecurity::load(file).map_err(ConfigError)?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError(format!(
                "log.level \"{}\" is not valid ({e}); use error, warn, info, debug or trace",
                self.log.level
            ))
        })?;
        if self.targets.is_empty() {
            return Err(ConfigError(
                "no target to monitor; set DATA_SOURCE_NAME=postgresql://user@host:5432/db or add \
                 a [[targets]] table with name and dsn to the config file"
                    .into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, target) in self.targets.iter().enumerate() {
            let where_ = format!("targets[{i}] (name \"{}\")", target.name);
            if target.name.is_empty()
                || !target
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
            {
                return Err(ConfigError(format!(
                    "{where_}: name must be non-empty and use only letters, digits, '_', '.', ':' or '-'"
                )));
            }
            if !seen.insert(&target.name) {
                return Err(ConfigError(format!(
                    "{where_}: duplicate target name; each target needs its own name"
                )));
            }
            dsn::parse(&target.dsn).map_err(|e| ConfigError(format!("{where_}: dsn: {e}")))?;
            let session = self.session_for(target);
            for (key, value) in [
                ("statement_timeout", session.statement_timeout),
                ("connect_timeout", session.connect_timeout),
            ] {
                if value.is_zero() {
                    return Err(ConfigError(format!(
                        "{where_}: session.{key} is 0, which disables the limit; set a positive duration like \"5s\""
                    )));
                }
            }
        }
        if self.poller.reconnect_initial_backoff.is_zero()
            || self.poller.reconnect_max_backoff < self.poller.reconnect_initial_backoff
        {
            return Err(ConfigError(
                "poller.reconnect_initial_backoff must be positive and not above poller.reconnect_max_backoff".into(),
            ));
        }
        for (name, settings) in &self.collectors {
            if settings.interval.is_some_and(|d| d.is_zero())
                || settings.timeout.is_some_and(|d| d.is_zero())
            {
                return Err(ConfigError(format!(
                    "collectors.{name}: interval and timeout must be positive durations like \"15s\""
                )));
            }
        }
        self.locks.validate().map_err(ConfigError)?;
        self.statements.validate().map_err(ConfigError)?;
        queues::validate(&self.queues).map_err(ConfigError)?;
        self.webhooks.validate().map_err(ConfigError)?;
        self.relations.validate().map_err(ConfigError)?;
        Ok(())
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
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Environment variables with a `PGKPI_` prefix that are not config keys.
fn is_special_env(key: &str) -> bool {
    DSN_ENV_VARS.contains(&key) || key == "PGKPI_TARGET_NAME" || key == "PGKPI_CONFIG_FILE"
}

fn file_format(path: &Path) -> Result<config::FileFormat, ConfigError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Ok(config::FileFormat::Toml),
        Some("yaml" | "yml") => Ok(config::FileFormat::Yaml),
        _ => Err(ConfigError(format!(
            "config file {}: unknown format; name it *.toml, *.yaml or *.yml",
            path.display()
        ))),
    }
}

/// Parses the file on its own first, so that errors carry its name and the line.
fn check_file(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "config file {}: cannot read it ({e}); check the path given to --config.file",
            path.display()
        ))
    })?;
    let display = path.display();
    match file_format(path)? {
        config::FileFormat::Toml => toml::from_str::<Config>(&text).map(|_| ()).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().to_string();
            ConfigError(match line {
                Some(line) => format!(
                    "config file {display}, line {line}: {message}{}",
                    hint(&message)
                ),
                None => format!("config file {display}: {message}{}", hint(&message)),
            })
        }),
        _ => {
            let parsed = config::Config::builder()
                .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
                .build()
                .and_then(|c| c.try_deserialize::<Config>());
            parsed.map(|_| ()).map_err(|e| {
                let message = e.to_string();
                let line = unknown_field(&message).and_then(|field| line_of_key(&text, &field));
                ConfigError(match line {
                    Some(line) => format!(
                        "config file {display}, line {line}: {message}{}",
                        hint(&message)
                    ),
                    None => format!("config file {display}: {message}{}", hint(&message)),
                })
            })
        }
    }
}

fn hint(message: &str) -> &'static str {
    if message.contains("unknown field") {
        "; remove or rename the key (see docs/configuration.md for every key)"
    } else if message.contains("duration") {
        "; write durations as strings like \"500ms\", \"5s\" or \"1m\""
    } else {
        ""
    }
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let trimmed = line.trim_start().trim_start_matches("- ");
            trimmed.starts_with(key) && trimmed[key.len()..].trim_start().starts_with([':', '='])
        })
        .map(|i| i + 1)
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
