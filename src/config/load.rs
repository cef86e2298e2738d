//! Building the configuration from its layers: defaults < file < environment < flags, with
//! errors that name the file and line (or the variable) and the fix.

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    Config, ConfigError, FlagOverrides, SessionOverrides, TargetConfig, TargetKind,
    DEFAULT_TARGET_NAME, DSN_ENV_VARS,
};

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
            .filter(|(k, _)| is_config_env(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(env_source(&prefixed));
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
        let mut cfg: Config = merged
            .try_deserialize()
            .map_err(|e| env_error(e, &prefixed))?;

        if let Some(directory) = &cfg.targets_directory {
            cfg.targets.extend(load_targets_directory(directory)?);
        }
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
                kind: TargetKind::Postgres,
                dsn: dsn.clone(),
                password_file: None,
                session: SessionOverrides::default(),
                data_directory: None,
                databases: None,
            }];
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A file of `targets_directory`: targets only.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    #[serde(default)]
    targets: Vec<TargetConfig>,
}

/// The targets of every `*.toml` file of `directory`, files in name order. Hidden files are
/// left out: Kubernetes mounts a ConfigMap as `..data` links and dot directories beside the
/// files.
fn load_targets_directory(directory: &Path) -> Result<Vec<TargetConfig>, ConfigError> {
    let entries = std::fs::read_dir(directory).map_err(|e| {
        ConfigError(format!(
            "targets_directory {}: cannot read it ({e}); create it or fix the path",
            directory.display()
        ))
    })?;
    let mut files: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    let mut targets = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| {
            ConfigError(format!(
                "target file {}: cannot read it ({e})",
                file.display()
            ))
        })?;
        let parsed: TargetFile = toml::from_str(&text).map_err(|e| {
            ConfigError(format!(
                "target file {}: {e}; a target file holds [[targets]] entries only, as in the configuration file",
                file.display()
            ))
        })?;
        targets.extend(parsed.targets);
    }
    Ok(targets)
}

/// Environment variables with a `PGKPI_` prefix read by name, not as config keys (the shard
/// ones are clap's, see main.rs).
fn is_special_env(key: &str) -> bool {
    DSN_ENV_VARS.contains(&key)
        || matches!(
            key,
            "PGKPI_TARGET_NAME"
                | "PGKPI_CONFIG_FILE"
                | "PGKPI_SHARD"
                | "PGKPI_TOTAL_SHARDS"
                | "PGKPI_SHARD_FROM_HOSTNAME"
        )
}

/// True for the variables read as configuration keys, strictly (an unknown key is an error):
/// `PGKPI_<SECTION>__<KEY>` (any name with `__` after the prefix, at any depth, such as
/// `PGKPI_COLLECTORS__SERVER__INTERVAL`) and `PGKPI_<KEY>` for a top-level key
/// (`PGKPI_COLLECTOR_PATHS`, `PGKPI_WEB`). Every other `PGKPI_` variable is someone else's:
/// Kubernetes gives every pod `PGKPI_SERVICE_HOST`, `PGKPI_PORT_9188_TCP`, ... when the
/// namespace has a Service named `pgkpi`, and none of those has a `__`.
fn is_config_env(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("PGKPI_") else {
        return false;
    };
    !is_special_env(key)
        && (rest.contains("__")
            || top_level_keys()
                .iter()
                .any(|k| k.eq_ignore_ascii_case(rest)))
}

/// The `PGKPI_` variables pgkpi does not read, sorted: neither configuration keys (see
/// [`is_config_env`]) nor variables it reads by name. Only their names are returned, so that
/// they can be logged without their values.
pub fn ignored_env_vars(env: &BTreeMap<String, String>) -> Vec<&str> {
    env.keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("PGKPI_") && !is_special_env(k) && !is_config_env(k))
        .collect()
}

/// The keys of the top level of the configuration (`web`, ..., `collector_paths`), from the
/// model itself so that a new one is known here without listing it.
fn top_level_keys() -> &'static [String] {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        toml::Table::try_from(Config::default())
            .map(|table| table.keys().cloned().collect())
            .unwrap_or_default()
    })
}

/// The environment layer: `PGKPI_WEB__LISTEN_ADDRESS` is `web.listen_address`.
fn env_source(vars: &config::Map<String, String>) -> config::Environment {
    config::Environment::with_prefix("PGKPI")
        .prefix_separator("_")
        .separator("__")
        .source(Some(vars.clone()))
}

/// The error for a configuration that does not deserialize once the environment and the flags
/// are merged (the file alone was checked before). Each configuration variable is tried alone
/// on the defaults, so that the message names the variable at fault when there is one.
fn env_error(error: config::ConfigError, vars: &config::Map<String, String>) -> ConfigError {
    let alone = |name: &String, value: &String| {
        let one = config::Map::from([(name.clone(), value.clone())]);
        let defaults = config::Config::try_from(&Config::default()).ok()?;
        config::Config::builder()
            .add_source(defaults)
            .add_source(env_source(&one))
            .build()
            .and_then(|c| c.try_deserialize::<Config>())
            .err()
            .map(|e| e.to_string())
    };
    let faults: Vec<String> = vars
        .iter()
        .filter_map(|(name, value)| {
            alone(name, value).map(|message| {
                format!(
                    "environment variable {name}: {message}{}",
                    env_hint(&message)
                )
            })
        })
        .collect();
    if !faults.is_empty() {
        return ConfigError(faults.join("; "));
    }
    let origin = if vars.is_empty() {
        "command-line flags".to_string()
    } else {
        format!(
            "environment ({}) or command-line flags",
            vars.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let message = error.to_string();
    ConfigError(format!(
        "invalid value from {origin}: {message}{}",
        env_hint(&message)
    ))
}

fn env_hint(message: &str) -> &'static str {
    if message.contains("unknown field") {
        "; variables named PGKPI_<SECTION>__<KEY> are configuration keys and must name one, \
         e.g. PGKPI_WEB__LISTEN_ADDRESS or PGKPI_LOG__LEVEL (docs/configuration.md lists every key)"
    } else if message.contains("expected a sequence")
        || message.contains("expected a map")
        || message.contains("expected struct")
    {
        "; lists and tables (targets, queues, collector_paths, statements.workloads, whole \
         sections) are set in the config file; the environment sets one scalar key per \
         variable, e.g. PGKPI_WEB__LISTEN_ADDRESS"
    } else {
        ""
    }
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
