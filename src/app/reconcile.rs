//! The pollers running now, by target, and the one way they change: [`Pollers::reconcile`]
//! takes the targets wanted (after a reload, a change of the target files, or the shard
//! filter) and starts, stops or keeps pollers so that exactly those run.
//!
//! A target is kept when its fingerprint is unchanged: its connections, collector state
//! (deltas, caches) and counters carry on as if nothing happened. A changed target is stopped
//! and started again; a removed one is stopped and its series, status and self-metrics are
//! dropped, so that it disappears from the next scrape instead of freezing at its last values.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::TargetPlan;
use crate::collector::SkipReason;
use crate::poller;
use crate::shared::Shared;

/// How long a stopping target's tasks may take to finish a run in progress.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A target wanted by the configuration, ready to start, with what identifies its polling.
pub struct Wanted {
    pub plan: TargetPlan,
    /// Everything that decides how the target is polled (its own section and the sections
    /// its collectors read), rendered as text; equal fingerprints poll the same way.
    pub fingerprint: String,
}

/// One running target.
struct Running {
    fingerprint: String,
    kind: &'static str,
    collectors: Vec<String>,
    /// Flipped to stop this target's tasks, and only them.
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a reconcile did, by target name; logged and returned to `/-/reload`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
    pub kept: Vec<String>,
}

/// The running targets; owned by `app::run`, changed only through [`Pollers::reconcile`].
pub struct Pollers {
    running: BTreeMap<String, Running>,
    shared: Shared,
    /// Reconnect backoff (initial, max) given to targets started from now on.
    backoff: (Duration, Duration),
}

impl Pollers {
    pub fn new(shared: Shared) -> Pollers {
        Pollers {
            running: BTreeMap::new(),
            shared,
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
        }
    }

    /// Makes the running targets exactly `wanted`: unchanged ones are kept, changed ones
    /// restarted, new ones started and the others stopped (their series dropped).
    pub async fn reconcile(
        &mut self,
        wanted: Vec<Wanted>,
        backoff: (Duration, Duration),
    ) -> Changes {
        self.backoff = backoff;
        let mut changes = Changes::default();
        let mut wanted: BTreeMap<String, Wanted> = wanted
            .into_iter()
            .map(|w| (w.plan.target.name.clone(), w))
            .collect();
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| {
                wanted
                    .get(*name)
                    .is_none_or(|w| w.fingerprint != running.fingerprint)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let running = self.running.remove(&name).expect("listed above");
            self.stop(&name, running).await;
            if wanted.contains_key(&name) {
                changes.restarted.push(name);
            } else {
                changes.stopped.push(name);
            }
        }
        for name in self.running.keys() {
            wanted.remove(name);
            changes.kept.push(name.clone());
        }
        for (name, w) in wanted {
            if !changes.restarted.contains(&name) {
                changes.started.push(name.clone());
            }
            self.start(w);
        }
        changes
    }

    /// Stops every target (shutdown).
    pub async fn stop_all(&mut self) {
        let running = std::mem::take(&mut self.running);
        // Every target is told first, so that they wind down together.
        for running in running.values() {
            let _ = running.stop.send(true);
        }
        for (name, running) in running {
            finish(&name, running.tasks).await;
        }
    }

    /// The names of the running targets.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.running.keys().map(String::as_str)
    }

    fn start(&mut self, wanted: Wanted) {
        let Wanted { plan, fingerprint } = wanted;
        let (stop, stopped) = watch::channel(false);
        let name = plan.target.name.clone();
        let kind = plan.target.kind.as_str();
        let collectors = plan.collector_names();
        let tasks = poller::spawn_target(
            plan.target,
            plan.collectors,
            plan.databases,
            self.backoff,
            self.shared.clone(),
            stopped,
        );
        self.running.insert(
            name,
            Running {
                fingerprint,
                kind,
                collectors,
                stop,
                tasks,
            },
        );
    }

    async fn stop(&self, name: &str, running: Running) {
        let _ = running.stop.send(true);
        finish(name, running.tasks).await;
        // After the tasks ended, so that no run in flight writes the series back.
        self.shared.snapshot.remove(name, None);
        self.shared.status.remove(name);
        let reasons: Vec<&str> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        self.shared
            .telemetry
            .forget_target(name, running.kind, &running.collectors, &reasons);
        self.shared
            .telemetry
            .snapshot_bytes
            .set(self.shared.snapshot.body().len() as f64);
    }
}

/// Waits for a stopped target's tasks, for at most [`STOP_GRACE`]; aborts what is left (a
/// run stuck past its own timeout) so that nothing of the target outlives its stop.
async fn finish(name: &str, tasks: Vec<JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    let mut left = tasks.into_iter();
    while let Some(mut task) = left.next() {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!(
                target = name,
                "target's tasks still running 10s after it was stopped; aborting them"
            );
            for task in std::iter::once(task).chain(left.by_ref()) {
                task.abort();
                let _ = task.await;
            }
        }
    }
}
