//! Wiring: from a validated configuration to running pollers and an HTTP server.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::collector;
use crate::config::{Config, ConfigError};
use crate::http::{self, Site};
use crate::poller::{self, Scheduled};
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::status::Status;
use crate::target::Target;
use crate::telemetry::Telemetry;
use crate::views::Views;

/// A target with the collectors it will run.
pub struct TargetPlan {
    pub target: Target,
    pub collectors: Vec<Scheduled>,
}

/// Resolves targets and collector schedules; everything `check-config` can check without
/// connecting (DSNs, TLS files, password files, collector names).
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
    let mut plans = Vec::new();
    for target_config in &config.targets {
        let target = Target::from_config(config, target_config).map_err(ConfigError)?;
        let mut collectors = Vec::new();
        for entry in entries.iter().filter(|e| e.kind == target.kind) {
            let settings = config
                .collectors
                .get(&entry.name)
                .cloned()
                .unwrap_or_default();
            if !settings.enabled.unwrap_or(entry.enabled_by_default) {
                continue;
            }
            let interval = settings.interval.unwrap_or(entry.default_interval);
            collectors.push(Scheduled {
                name: entry.name.clone(),
                lane: entry.lane,
                interval,
                // Past the server's own limit, so the server cancels first and the
                // connection stays usable.
                timeout: settings
                    .timeout
                    .or(entry.default_timeout)
                    .unwrap_or(target.session.statement_timeout + Duration::from_secs(1)),
                stale_after: settings.stale_after.unwrap_or(interval * 3),
                declared: entry.families.iter().map(|f| f.name.clone()).collect(),
                collector: entry.build(&collector::BuildContext {
                    target: &target.name,
                    session: &target.session,
                    interval,
                    locks: &config.locks,
                    statements: &config.statements,
                    queues: &config.queues,
                    webhooks: &config.webhooks,
                    relations: &config.relations,
                    data_directory: target_config.data_directory.as_deref(),
                    backups: (config.backups_target() == Some(target.name.as_str()))
                        .then_some(&config.backups),
                    views: views.clone(),
                }),
            });
        }
        plans.push(TargetPlan { target, collectors });
    }
    Ok(plans)
}

/// Runs the exporter until SIGINT or SIGTERM.
pub async fn run(config: Config, plans: Vec<TargetPlan>, views: Arc<Views>) -> anyhow::Result<()> {
    let shared = Shared {
        views,
        snapshot: Arc::new(Snapshot::new()),
        status: Arc::new(Status::new()),
        telemetry: Telemetry::new(),
    };
    // Checked by Config::validate already; read again here so the files are the current ones.
    let security = match &config.web.config_file {
        Some(file) => crate::web_config::WebSecurity::load(file).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let address = &config.web.listen_address;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address}; choose another with --web.listen-address")
    })?;
    tracing::info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        path = %config.web.telemetry_path,
        tls = security.tls.is_some(),
        basic_auth = security.auth.is_some(),
        targets = plans.len(),
        "listening"
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for plan in plans {
        let backoff = (
            config.poller.reconnect_initial_backoff,
            config.poller.reconnect_max_backoff,
        );
        tasks.extend(poller::spawn_target(
            plan.target,
            plan.collectors,
            backoff,
            shared.clone(),
            shutdown_rx.clone(),
        ));
    }
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
    let site = Arc::new(Site {
        shared,
        telemetry_path: config.web.telemetry_path.clone(),
        auth: security.auth,
    });
    tasks.push(tokio::spawn(http::serve(
        listener,
        security.tls,
        site,
        limits,
        shutdown_rx,
    )));

    wait_for_signal().await;
    tracing::info!("shutting down");
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
