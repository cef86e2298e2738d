//! What serde cannot check: addresses, paths, names, DSNs, timeouts, and each collector
//! section's own bounds. Runs without connecting, so `check-config` can use it.

use std::net::SocketAddr;

use super::{Config, ConfigError, TargetKind};
use crate::collector::queues::settings as queues;
use crate::dsn;

impl Config {
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
        if self.web.max_connections == 0 || self.web.header_read_timeout.is_zero() {
            return Err(ConfigError(
                "web.max_connections and web.header_read_timeout must be positive, e.g. 100 and \"10s\"".into(),
            ));
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
        // An empty targets_directory is a fleet waiting for its first file, not a mistake.
        if self.targets.is_empty() && self.targets_directory.is_none() {
            return Err(ConfigError(
                "no target to monitor; set DATA_SOURCE_NAME=postgresql://user@host:5432/db or add \
                 a [[targets]] table with name and dsn to the config file (or a targets_directory)"
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
            let parsed =
                dsn::parse(&target.dsn).map_err(|e| ConfigError(format!("{where_}: dsn: {e}")))?;
            if target.kind == TargetKind::Pgbouncer {
                // The admin console is the database named pgbouncer; any other name is a pool,
                // which would forward the SHOW commands to PostgreSQL and fail obscurely.
                if parsed.pg.get_dbname() != Some("pgbouncer") {
                    return Err(ConfigError(format!(
                        "{where_}: a pgbouncer target's dsn must name the admin console, dbname=pgbouncer, with a user listed in pgBouncer's stats_users or admin_users"
                    )));
                }
                if parsed.pg.get_options().is_some() {
                    return Err(ConfigError(format!(
                        "{where_}: pgBouncer's admin console rejects the options startup parameter; remove options from the dsn"
                    )));
                }
            }
            if let Some(databases) = &target.databases {
                if target.kind != TargetKind::Postgres {
                    return Err(ConfigError(format!(
                        "{where_}: databases is for a PostgreSQL server; remove it from this {} target",
                        target.kind.as_str()
                    )));
                }
                crate::config::DatabaseFilter::new(databases, &where_).map_err(ConfigError)?;
                if databases.discovery_interval < std::time::Duration::from_secs(1) {
                    return Err(ConfigError(format!(
                        "{where_}: databases.discovery_interval must be at least 1s, e.g. \"1m\""
                    )));
                }
                if databases.max_databases == 0 {
                    return Err(ConfigError(format!(
                        "{where_}: databases.max_databases is 0; set a positive bound like 1000"
                    )));
                }
            }
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
        for pattern in &self.probe.allowed_targets {
            crate::config::glob(pattern).map_err(|e| {
                ConfigError(format!("probe.allowed_targets: pattern \"{pattern}\": {e}"))
            })?;
        }
        if !self.probe.allowed_targets.is_empty() && self.probe.auth_modules.is_empty() {
            return Err(ConfigError(
                "probe.allowed_targets is set but probe.auth_modules is empty; add a [probe.auth_modules.<name>] with a dsn (user, dbname, sslmode) for /probe to log in with".into(),
            ));
        }
        let names_host = regex::Regex::new(r"(^|\s)(host|hostaddr|port)\s*=").expect("valid regex");
        for (name, module) in &self.probe.auth_modules {
            let at = format!("probe.auth_modules.{name}");
            if module.dsn.contains("://") {
                return Err(ConfigError(format!(
                    "{at}.dsn: use the key=value form (user=... dbname=...), without host and port: the probe's target gives them"
                )));
            }
            if names_host.is_match(&module.dsn) {
                return Err(ConfigError(format!(
                    "{at}.dsn: remove host, hostaddr and port; the probe's target (host:port) gives them"
                )));
            }
            // As a probe completes it.
            dsn::parse(&format!("{} host=probe.invalid", module.dsn))
                .map_err(|e| ConfigError(format!("{at}.dsn: {e}")))?;
        }
        if self.probe.expire_after < std::time::Duration::from_secs(1)
            || self.probe.max_targets == 0
        {
            return Err(ConfigError(
                "probe.expire_after must be at least 1s (e.g. \"5m\") and probe.max_targets positive".into(),
            ));
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
        self.backups.validate().map_err(ConfigError)?;
        if let Some(name) = &self.backups.target {
            if !self
                .targets
                .iter()
                .any(|t| &t.name == name && t.kind == TargetKind::Postgres)
            {
                return Err(ConfigError(format!(
                    "backups.target \"{name}\" is not the name of a PostgreSQL target; name one of [[targets]]"
                )));
            }
        }
        Ok(())
    }
}
