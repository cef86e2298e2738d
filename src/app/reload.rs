//! Reloading: builds the configuration again from its layers (file, target files,
//! environment, flags) and reconciles the pollers with it. A configuration that fails to load
//! or plan is rejected as a whole: it is logged, `pgkpi_config_last_reload_successful` drops
//! to 0, and the running one stays in place untouched.
//!
//! The web and log sections are read at start only (a listener cannot move without dropping
//! scrapes, nor the log format change under a running collector); a reload that changes them
//! says so in the log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::reconcile::Pollers;
use super::wanted;
use crate::config::{Config, Layers};
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
}

impl Reloader {
    pub fn new(layers: Layers, shard: Shard, views: Arc<Views>, shared: Shared) -> Reloader {
        Reloader {
            layers,
            shard,
            views,
            shared,
            current: None,
            target_files: BTreeMap::new(),
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
        let wanted = wanted(&config, &self.shard, &self.views).map_err(|e| e.to_string())?;
        let t = &self.shared.telemetry;
        t.targets_configured.set(config.targets.len() as i64);
        t.targets_polled.set(wanted.len() as i64);
        let backoff = (
            config.poller.reconnect_initial_backoff,
            config.poller.reconnect_max_backoff,
        );
        let changes = pollers.reconcile(wanted, backoff).await;
        if let Some(previous) = &self.current {
            if previous.web != config.web || previous.log != config.log {
                tracing::warn!(
                    "the web and log sections changed; they take effect at the next restart"
                );
            }
        } else {
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
        self.current = Some(config);
        t.config_reload_successful.set(1.0);
        t.config_reload_success_timestamp.set(unix_now());
        Ok(summary)
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
