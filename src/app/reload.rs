//! Reloading: builds the configuration again from its layers (file, target files,
//! environment, flags) and reconciles the pollers with it. A configuration that fails to load
//! or plan is rejected as a whole: it is logged, `pgkpi_config_last_reload_successful` drops
//! to 0, and the running one stays in place untouched.
//!
//! The web and log sections are read at start only (a listener cannot move without dropping
//! scrapes, nor the log format change under a running collector); a reload that changes them
//! says so in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::reconcile::{Changes, Pollers};
use super::wanted;
use crate::config::{Config, Layers, SessionOverrides, TargetConfig, TargetKind};
use crate::http::{ProbeQuery, ProbeRefused};
use crate::shard::Shard;
use crate::shared::Shared;
use crate::status::unix_now;
use crate::views::Views;

/// How often `targets_directory` is compared with what was loaded. Kubernetes takes up to a
/// minute to update a mounted ConfigMap anyway; reading a few small files costs nothing.
pub const TARGET_FILES_CHECK: Duration = Duration::from_secs(5);

/// Builds configurations and applies them.
pub struct Reloader {
    layers: Layers,
    shard: Shard,
    views: Arc<Views>,
    shared: Shared,
    /// The configuration running now.
    current: Option<Config>,
    /// The target files as last loaded (path → content), to notice a change.
    target_files: BTreeMap<PathBuf, Vec<u8>>,
    /// Targets named by `/probe`, by name, polled besides the configured ones.
    probed: BTreeMap<String, Probed>,
    /// Their names, for the HTTP side (served on /probe only).
    probed_names: Arc<RwLock<BTreeSet<String>>>,
}

/// A target named by `/probe`.
struct Probed {
    target: TargetConfig,
    auth_module: String,
    last_seen: Instant,
}

impl Reloader {
    pub fn new(
        layers: Layers,
        shard: Shard,
        views: Arc<Views>,
        shared: Shared,
        probed_names: Arc<RwLock<BTreeSet<String>>>,
    ) -> Reloader {
        Reloader {
            layers,
            shard,
            views,
            shared,
            current: None,
            target_files: BTreeMap::new(),
            probed: BTreeMap::new(),
            probed_names,
        }
    }

    /// Loads the configuration again and applies it; on failure the running one stays. The
    /// outcome (a summary, or the error) is what `POST /-/reload` answers.
    pub async fn reload(&mut self, pollers: &mut Pollers) -> Result<String, String> {
        // Read before loading: a file changed during the load differs again at the next
        // check and is loaded then.
        let files = self.read_target_files();
        let loaded = self.layers.load().map_err(|e| e.to_string());
        let outcome = match loaded {
            Ok(config) => self.apply(config, pollers).await,
            Err(error) => Err(error),
        };
        // After a success the files are those of the configuration now running (its
        // directory may have changed); after a failure, the broken ones, so that they are
        // not retried every check but as soon as they change again.
        self.target_files = match &outcome {
            Ok(_) => self.read_target_files(),
            Err(_) => files,
        };
        if let Err(error) = &outcome {
            self.shared.telemetry.config_reload_successful.set(0.0);
            tracing::error!(error = %error, "configuration rejected; the previous one keeps running");
        }
        outcome
    }

    /// Applies a loaded configuration: plans every target (a target that cannot be built
    /// rejects the whole configuration) and reconciles the pollers of this shard with it.
    pub async fn apply(&mut self, config: Config, pollers: &mut Pollers) -> Result<String, String> {
        if let Some(previous) = &self.current {
            if previous.web != config.web || previous.log != config.log {
                tracing::warn!(
                    "the web and log sections changed; they take effect at the next restart"
                );
            }
        }
        let first = self.current.is_none();
        let changes = self.reconcile(config, pollers).await?;
        if first {
            self.target_files = self.read_target_files();
        }
        let summary = format!(
            "started {}, restarted {}, stopped {}, unchanged {}",
            changes.started.len(),
            changes.restarted.len(),
            changes.stopped.len(),
            changes.kept.len()
        );
        tracing::info!(
            started = ?changes.started,
            restarted = ?changes.restarted,
            stopped = ?changes.stopped,
            unchanged = changes.kept.len(),
            "configuration applied"
        );
        let t = &self.shared.telemetry;
        t.config_reload_successful.set(1.0);
        t.config_reload_success_timestamp.set(unix_now());
        Ok(summary)
    }

    /// Makes the pollers match `config`'s targets of this shard plus the probed targets.
    async fn reconcile(
        &mut self,
        config: Config,
        pollers: &mut Pollers,
    ) -> Result<Changes, String> {
        // Probed targets outlive a reload while the configuration still allows them.
        self.probed.retain(|name, p| {
            config.probe.auth_modules.contains_key(&p.auth_module)
                && allowed(&config, name)
                && !config.targets.iter().any(|t| &t.name == name)
        });
        let mut polled = config.clone();
        polled
            .targets
            .extend(self.probed.values().map(|p| p.target.clone()));
        let probed: BTreeSet<String> = self.probed.keys().cloned().collect();
        let shard = self.shard;
        let wanted = wanted(
            &polled,
            |name| probed.contains(name) || shard.owns(name),
            &self.views,
        )
        .map_err(|e| e.to_string())?;
        let t = &self.shared.telemetry;
        t.targets_configured.set(config.targets.len() as i64);
        t.targets_polled.set((wanted.len() - probed.len()) as i64);
        t.probe_targets.set(probed.len() as i64);
        let backoff = (
            config.poller.reconnect_initial_backoff,
            config.poller.reconnect_max_backoff,
        );
        // Names first: a probe answered after this finds its target listed.
        *self.probed_names.write().expect("probed lock") = probed;
        let changes = pollers.reconcile(wanted, backoff).await;
        self.current = Some(config);
        Ok(changes)
    }

    /// Takes probe requests: a target allowed by `[probe]` starts being polled (or, probed
    /// before, stays polled); each request is answered with the target's name or why not.
    pub async fn probe(
        &mut self,
        batch: Vec<(ProbeQuery, oneshot::Sender<Result<String, ProbeRefused>>)>,
        pollers: &mut Pollers,
    ) {
        let mut answers = Vec::new();
        let mut added = false;
        for (query, reply) in batch {
            let outcome = self.admit(&query);
            if let Ok(true) = outcome {
                added = true;
            }
            answers.push((reply, outcome.map(|_| query.name())));
        }
        if added {
            if let Some(config) = self.current.clone() {
                if let Err(error) = self.reconcile(config, pollers).await {
                    // The running configuration was valid; only a new probed target can fail
                    // to plan, and `admit` built it already.
                    tracing::warn!(error = %error, "probed targets not applied");
                }
            }
        }
        for (reply, outcome) in answers {
            let _ = reply.send(outcome);
        }
    }

    /// Checks a probe against `[probe]` and records it; true when the target is new.
    fn admit(&mut self, query: &ProbeQuery) -> Result<bool, ProbeRefused> {
        let Some(config) = &self.current else {
            return Err(ProbeRefused::Full("starting".into()));
        };
        let probe = &config.probe;
        if probe.allowed_targets.is_empty() {
            return Err(ProbeRefused::Forbidden(
                "/probe is off: list the host:port patterns it may name in [probe] allowed_targets"
                    .into(),
            ));
        }
        let name = query.name();
        if !allowed(config, &name) {
            return Err(ProbeRefused::Forbidden(format!(
                "target {name} matches no pattern of probe.allowed_targets"
            )));
        }
        if config.targets.iter().any(|t| t.name == name) {
            return Err(ProbeRefused::BadRequest(format!(
                "{name} is a configured target; it is served on the metrics path"
            )));
        }
        let Some(module) = probe.auth_modules.get(&query.auth_module) else {
            return Err(ProbeRefused::BadRequest(format!(
                "no auth module \"{}\"; known: {}",
                query.auth_module,
                probe
                    .auth_modules
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if let Some(known) = self.probed.get_mut(&name) {
            if known.auth_module == query.auth_module {
                known.last_seen = Instant::now();
                return Ok(false);
            }
        } else if self.probed.len() >= probe.max_targets {
            return Err(ProbeRefused::Full(format!(
                "already polling probe.max_targets = {} probed targets",
                probe.max_targets
            )));
        }
        let target = TargetConfig {
            name: name.clone(),
            kind: TargetKind::Postgres,
            dsn: format!("{} host={} port={}", module.dsn, query.host, query.port),
            password_file: module.password_file.clone(),
            session: SessionOverrides::default(),
            data_directory: None,
            databases: None,
        };
        crate::target::Target::from_config(config, &target).map_err(ProbeRefused::BadRequest)?;
        tracing::info!(target = %name, auth_module = %query.auth_module, "probed target: polling it");
        self.probed.insert(
            name,
            Probed {
                target,
                auth_module: query.auth_module.clone(),
                last_seen: Instant::now(),
            },
        );
        Ok(true)
    }

    /// Stops polling the probed targets not probed for `probe.expire_after`.
    pub async fn expire_probes(&mut self, pollers: &mut Pollers) {
        let Some(config) = self.current.clone() else {
            return;
        };
        let before = self.probed.len();
        self.probed
            .retain(|_, p| p.last_seen.elapsed() < config.probe.expire_after);
        if self.probed.len() != before {
            tracing::info!(
                expired = before - self.probed.len(),
                "probed targets no longer probed: stopped"
            );
            if let Err(error) = self.reconcile(config, pollers).await {
                tracing::warn!(error = %error, "probed targets not applied");
            }
        }
    }

    /// True when the files of `targets_directory` differ from those last loaded.
    pub fn target_files_changed(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.targets_directory.is_some())
            && self.read_target_files() != self.target_files
    }

    /// The contents of the target files. Contents, not modification times: a mounted
    /// ConfigMap's files are links whose target changes while their own times do not.
    fn read_target_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let Some(directory) = self
            .current
            .as_ref()
            .and_then(|c| c.targets_directory.clone())
        else {
            return BTreeMap::new();
        };
        let Ok(entries) = std::fs::read_dir(&directory) else {
            return BTreeMap::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .filter_map(|p| std::fs::read(&p).ok().map(|text| (p, text)))
            .collect()
    }
}

/// True when `name` (host:port) matches a pattern of `probe.allowed_targets`.
fn allowed(config: &Config, name: &str) -> bool {
    config
        .probe
        .allowed_targets
        .iter()
        .filter_map(|p| crate::config::glob(p).ok())
        .any(|re| re.is_match(name))
}
