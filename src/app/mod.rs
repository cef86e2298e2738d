//! Wiring: from a validated configuration to running pollers and an HTTP server, and from
//! a reloaded configuration to the pollers that change (see `reconcile` and `reload`).

mod reconcile;
mod reload;

pub use self::reconcile::{Changes, Pollers, Wanted};
use self::reload::{Reloader, TARGET_FILES_CHECK};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::collector::registry::Entry;
use crate::collector::{self, Lane};
use crate::config::{Config, ConfigError, DatabaseFilter, Layers, Scope, SessionConfig};
use crate::http::{self, Site};
use crate::poller::{self, BuildCollectors, DatabasePlan, Scheduled};
use crate::shard::Shard;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::status::Status;
use crate::target::Target;
use crate::telemetry::Telemetry;
use crate::views::Views;

/// A target with the collectors it will run.
pub struct TargetPlan {
    pub target: Target,
    /// On its main and sampler connections: every collector, or for a server target the
    /// server-wide ones.
    pub collectors: Vec<Scheduled>,
    /// For a server target (`[targets.databases]`): its databases and their collectors.
    pub databases: Option<DatabasePlan>,
}

impl TargetPlan {
    /// Every collector name the target may export self-metrics for.
    pub fn collector_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.collectors.iter().map(|c| c.name.clone()).collect();
        if let Some(databases) = &self.databases {
            names.extend(databases.collectors.iter().cloned());
        }
        names
    }
}

/// Resolves targets and collector schedules; everything `check-config` can check without
/// connecting (DSNs, TLS files, password files, collector names, connection budgets).
pub fn plan(config: &Config, views: &Arc<Views>) -> Result<Vec<TargetPlan>, ConfigError> {
    let entries = collector::registry::load(&config.collector_paths).map_err(ConfigError)?;
    let known: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    for name in config.collectors.keys() {
        if !known.contains(name.as_str()) {
            return Err(ConfigError(format!(
                "collectors.{name}: no collector has this name; known collectors: {}",
                known.iter().copied().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let entries = Arc::new(entries);
    let shared_config = Arc::new(config.clone());
    let mut plans = Vec::new();
    for (i, target_config) in config.targets.iter().enumerate() {
        let target = Target::from_config(config, target_config).map_err(ConfigError)?;
        let server = target_config.databases.is_some();
        let derived_sizes = Arc::new(collector::relations::DerivedSizes::default());
        let mut collectors = Vec::new();
        let mut per_database = Vec::new();
        for entry in entries.iter().filter(|e| e.kind == target.kind) {
            if !enabled(config, entry) {
                continue;
            }
            if server && entry.scope == Scope::Database {
                per_database.push(entry.name.clone());
                continue;
            }
            collectors.push(schedule(
                config,
                entry,
                &PerTarget {
                    name: &target.name,
                    session: &target.session,
                    data_directory: target_config.data_directory.as_deref(),
                    backups: (config.backups_target() == Some(target.name.as_str()))
                        .then_some(&config.backups),
                    views,
                    derived_sizes: &derived_sizes,
                },
            ));
        }
        // relation_sizes on the target's own connection (a plain target; on a server target it
        // runs in the databases found) measures the connected database: database_size awaits it.
        if let Some(sizes) = collectors.iter().find(|c| c.name == "relation_sizes") {
            derived_sizes.await_connected(3 * sizes.interval);
        }
        let databases = match &target_config.databases {
            None => None,
            Some(settings) => {
                let at = format!("targets[{i}] (name \"{}\")", target.name);
                let lanes = 1 + usize::from(collectors.iter().any(|c| c.lane == Lane::Sampler));
                let budget = settings.max_connections.map_or(lanes + 1, |m| m as usize);
                if budget <= lanes {
                    let taken = if lanes == 2 {
                        "the main connection and the activity sampler's take 2"
                    } else {
                        "the main connection takes 1"
                    };
                    return Err(ConfigError(format!(
                        "{at}: databases.max_connections = {budget} leaves no connection for the databases ({taken}); set it to at least {}{}",
                        lanes + 1,
                        if lanes == 2 { ", or disable the activity_sampler collector" } else { "" }
                    )));
                }
                let filter = DatabaseFilter::new(settings, &at).map_err(ConfigError)?;
                let build = per_database_builder(
                    shared_config.clone(),
                    entries.clone(),
                    per_database.clone(),
                    target.name.clone(),
                    target.session.clone(),
                    views.clone(),
                    derived_sizes.clone(),
                );
                Some(DatabasePlan {
                    filter,
                    discovery_interval: settings.discovery_interval,
                    slots: budget - lanes,
                    budget,
                    max_databases: settings.max_databases,
                    collectors: per_database,
                    build,
                })
            }
        };
        plans.push(TargetPlan {
            target,
            collectors,
            databases,
        });
    }
    Ok(plans)
}

fn enabled(config: &Config, entry: &Entry) -> bool {
    config
        .collectors
        .get(&entry.name)
        .and_then(|s| s.enabled)
        .unwrap_or(entry.enabled_by_default)
}

/// Builds the collectors of one database of a server target, when it is found.
fn per_database_builder(
    config: Arc<Config>,
    entries: Arc<Vec<Entry>>,
    names: Vec<String>,
    target: String,
    session: SessionConfig,
    views: Arc<Views>,
    derived_sizes: Arc<collector::relations::DerivedSizes>,
) -> BuildCollectors {
    Arc::new(move |_database: &str| {
        entries
            .iter()
            .filter(|e| names.contains(&e.name))
            .map(|entry| {
                let per_target = PerTarget {
                    name: &target,
                    session: &session,
                    data_directory: None,
                    backups: None,
                    views: &views,
                    derived_sizes: &derived_sizes,
                };
                schedule(&config, entry, &per_target)
            })
            .collect()
    })
}

/// What a target gives the collectors built for it (the database ones of a server target:
/// neither its data directory nor the backups, which are server-wide).
struct PerTarget<'a> {
    name: &'a str,
    session: &'a SessionConfig,
    data_directory: Option<&'a std::path::Path>,
    backups: Option<&'a crate::collector::backups::settings::BackupsConfig>,
    views: &'a Arc<Views>,
    derived_sizes: &'a Arc<collector::relations::DerivedSizes>,
}

/// One collector instance with its effective schedule.
fn schedule(config: &Config, entry: &Entry, target: &PerTarget) -> Scheduled {
    let PerTarget {
        name: target,
        session,
        data_directory,
        backups,
        views,
        derived_sizes,
    } = *target;
    let settings = config
        .collectors
        .get(&entry.name)
        .cloned()
        .unwrap_or_default();
    let interval = settings.interval.unwrap_or(entry.default_interval);
    Scheduled {
        name: entry.name.clone(),
        lane: entry.lane,
        interval,
        // Past the server's own limit, so the server cancels first and the connection stays
        // usable.
        timeout: settings
            .timeout
            .or(entry.default_timeout)
            .unwrap_or(session.statement_timeout + Duration::from_secs(1)),
        stale_after: settings.stale_after.unwrap_or(interval * 3),
        declared: entry.families.iter().map(|f| f.name.clone()).collect(),
        collector: entry.build(&collector::BuildContext {
            target,
            session,
            interval,
            locks: &config.locks,
            statements: &config.statements,
            queues: &config.queues,
            webhooks: &config.webhooks,
            relations: &config.relations,
            data_directory,
            backups,
            views: views.clone(),
            derived_sizes: derived_sizes.clone(),
        }),
    }
}

/// What decides how a target is polled besides its own section: the sections collectors and
/// sessions read. The web, log and probe sections and the target list are left out: changing
/// them restarts no poller.
fn polling_fingerprint(config: &Config) -> String {
    let mut polling = config.clone();
    polling.targets.clear();
    polling.targets_directory = None;
    polling.probe = Default::default();
    polling.web = Default::default();
    polling.log = Default::default();
    toml::to_string(&polling).unwrap_or_default()
}

/// The targets of `config` this exporter polls (those `owns` accepts: its shard's), planned
/// and fingerprinted.
pub fn wanted(
    config: &Config,
    owns: impl Fn(&str) -> bool,
    views: &Arc<Views>,
) -> Result<Vec<Wanted>, ConfigError> {
    let common = polling_fingerprint(config);
    let by_name: std::collections::BTreeMap<&str, &crate::config::TargetConfig> = config
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    Ok(plan(config, views)?
        .into_iter()
        .filter(|p| owns(&p.target.name))
        .map(|plan| {
            let own = by_name
                .get(plan.target.name.as_str())
                .and_then(|t| toml::to_string(t).ok())
                .unwrap_or_default();
            // A password file's content is read when the target is built; a rotated password
            // must restart the target, so the fingerprint covers it (hashed, never shown).
            Wanted {
                fingerprint: format!("{own}\n{common}\n{}", plan.target.secret_fingerprint()),
                plan,
            }
        })
        .collect())
}

/// Runs the exporter until SIGINT or SIGTERM; re-reads the configuration from `layers` on
/// SIGHUP, `POST /-/reload` and changes of the target files.
pub async fn run(
    layers: Layers,
    config: Config,
    shard: Shard,
    views: Arc<Views>,
) -> anyhow::Result<()> {
    let shared = Shared {
        views: views.clone(),
        snapshot: Arc::new(Snapshot::new()),
        status: Arc::new(Status::new()),
        telemetry: Telemetry::new(),
    };
    shared
        .telemetry
        .shard_info
        .with_label_values(&[&shard.index.to_string(), &shard.total.to_string()])
        .set(1.0);
    // Checked by Config::validate already; read again here so the files are the current ones.
    let security = match &config.web.config_file {
        Some(file) => crate::web_config::WebSecurity::load(file).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let address = &config.web.listen_address;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address}; choose another with --web.listen-address")
    })?;
    let mut pollers = Pollers::new(shared.clone());
    let probed_names = Arc::new(std::sync::RwLock::new(Default::default()));
    let mut reloader = Reloader::new(layers, shard, views, shared.clone(), probed_names.clone());
    reloader
        .apply(config.clone(), &mut pollers)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        path = %config.web.telemetry_path,
        tls = security.tls.is_some(),
        basic_auth = security.auth.is_some(),
        shard = %shard,
        targets = pollers.names().count(),
        "listening"
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(poller::spawn_janitor(shared.clone(), shutdown_rx.clone()));
    let (max_connections, clamped) = http::clamp_to_fd_limit(config.web.max_connections, None);
    if clamped {
        tracing::warn!(
            configured = config.web.max_connections,
            max_connections,
            "web.max_connections lowered to fit the open-file limit (ulimit -n) with room for \
             pgkpi's own files and sessions; raise LimitNOFILE / ulimit -n to allow more"
        );
    }
    let limits = http::Limits {
        max_connections,
        header_read_timeout: config.web.header_read_timeout,
    };
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let (probe_tx, mut probe_rx) = mpsc::channel(256);
    let site = Arc::new(Site {
        shared,
        telemetry_path: config.web.telemetry_path.clone(),
        auth: security.auth,
        reload: Some(reload_tx),
        probe: Some(probe_tx),
        probed: probed_names,
    });
    tasks.push(tokio::spawn(http::serve(
        listener,
        security.tls,
        site,
        limits,
        shutdown_rx,
    )));

    let terminate = wait_for_signal();
    tokio::pin!(terminate);
    let mut hangups = Hangups::new();
    let mut files_tick = tokio::time::interval(TARGET_FILES_CHECK);
    files_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut terminate => break,
            _ = hangups.next() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reloader.reload(&mut pollers).await;
            }
            Some(reply) = reload_rx.recv() => {
                tracing::info!("POST /-/reload: reloading the configuration");
                let outcome = reloader.reload(&mut pollers).await;
                let _ = reply.send(outcome);
            }
            Some(first) = probe_rx.recv() => {
                // Prometheus probes many targets at once: every request waiting is taken in
                // one reconcile.
                let mut batch = vec![first];
                while let Ok(more) = probe_rx.try_recv() {
                    batch.push(more);
                }
                reloader.probe(batch, &mut pollers).await;
            }
            _ = files_tick.tick() => {
                if reloader.target_files_changed() {
                    tracing::info!("target files changed: reloading the configuration");
                    let _ = reloader.reload(&mut pollers).await;
                }
                reloader.expire_probes(&mut pollers).await;
            }
        }
    }
    tracing::info!("shutting down");
    pollers.stop_all().await;
    let _ = shutdown_tx.send(true);
    let all = futures_join(tasks);
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        tracing::warn!("tasks still running 10s after shutdown; exiting anyway");
    }
    Ok(())
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// SIGHUP, the conventional "read your configuration again".
struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    fn new() -> Hangups {
        Hangups {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .expect("install SIGHUP handler"),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    }
}
