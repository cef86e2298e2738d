//! The supervisor of one connection of a target: connects, publishes the live session,
//! waits for it to end, and reconnects with capped exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{watch, Notify};

use super::{Conn, Live};
use crate::collector::{Lane, Session};
use crate::shared::Shared;
use crate::target::Target;

/// Reconnect timing: doubles from `initial` up to `max`, each wait drawn in [50%, 100%] of the
/// current step so that many exporters restarted together do not reconnect in lockstep.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            step: initial,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        step.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// How long a session being replaced may take to finish the runs still using it.
const RECYCLE_GRACE: Duration = Duration::from_secs(30);

/// What a lane reports about its connection: log lines, and for the main lane `pg_up` and the
/// status page; every lane publishes its state to its collectors.
struct Report<'a> {
    name: &'a str,
    lane: Lane,
    /// Only the main connection speaks for the target (pg_up, status); a sampler connection
    /// that fails shows through its collector's own metrics.
    main: bool,
    pg_up: &'a prometheus::Gauge,
    shared: &'a Shared,
    tx: &'a watch::Sender<Conn>,
}

impl Report<'_> {
    /// An attempt failed (or outlived its timeout: `counted` then, and not again when it ends).
    fn failed(&self, failures: &mut u32, message: String, count: bool) {
        let (name, lane) = (self.name, self.lane);
        if count {
            *failures += 1;
            self.shared
                .telemetry
                .connection_errors
                .with_label_values(&[name])
                .inc();
        }
        // The first failure is worth a warning; repeats only every 10th time.
        if count && (*failures == 1 || *failures % 10 == 0) {
            tracing::warn!(target = name, ?lane, error = %message, attempts = *failures, "connection failed");
        } else {
            tracing::debug!(target = name, ?lane, error = %message, attempts = *failures, "connection failed");
        }
        if self.main {
            self.pg_up.set(0.0);
            self.shared.status.update_target(name, |t| {
                t.attempted = true;
                t.up = false;
                t.last_error = Some(message.clone());
            });
        }
        self.tx.send_replace(Conn::Down(message));
    }
}

/// `pgkpi_target_connection_attempts_overdue` raised while an attempt that outlived its
/// timeout is still awaited; lowered when it ends, however it ends (drop included).
struct Overdue {
    gauge: prometheus::Gauge,
    on: bool,
}

impl Overdue {
    fn start(&mut self) {
        if !self.on {
            self.on = true;
            self.gauge.inc();
        }
    }
}

impl Drop for Overdue {
    fn drop(&mut self) {
        if self.on {
            self.gauge.dec();
        }
    }
}

/// Waits `delay` before the next attempt, or less: until another lane of the target connects
/// (`reconnected`; the server answers again, so this lane tries at once). Returns false on
/// shutdown.
async fn pause(
    delay: Duration,
    reconnected: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = reconnected.notified() => true,
        _ = shutdown.changed() => false,
    }
}

/// Supervises one lane of a target. At most one attempt or session of the lane exists at any
/// time: an attempt that outlives its timeout is reported as a failure but awaited to its end
/// (see [`Target::connect`]) before the lane starts another, so that a backend stuck in
/// startup on the server (behind a catalog lock, say) is never joined by a second one.
/// `reconnected` is shared by the target's lanes: a lane that connects wakes the others from
/// their backoff.
pub(super) async fn supervise(
    target: Arc<Target>,
    lane: Lane,
    tx: watch::Sender<Conn>,
    mut backoff: Backoff,
    reconnected: Arc<Notify>,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = target.name.as_str();
    let main = lane == Lane::Main;
    let pg_up = shared.telemetry.pg_up.with_label_values(&[name]);
    let overdue_gauge = shared
        .telemetry
        .connection_attempts_overdue
        .with_label_values(&[name]);
    let report = Report {
        name,
        lane,
        main,
        pg_up: &pg_up,
        shared: &shared,
        tx: &tx,
    };
    let mut failures: u32 = 0;
    loop {
        shared
            .telemetry
            .connection_attempts
            .with_label_values(&[name])
            .inc();
        let mut overdue = Overdue {
            gauge: overdue_gauge.clone(),
            on: false,
        };
        let attempt = {
            let mut on_overdue = |error: &crate::target::ConnectError| {
                overdue.start();
                report.failed(&mut failures, error.to_string(), true);
            };
            tokio::select! {
                attempt = target.connect(&mut on_overdue) => attempt,
                _ = shutdown.changed() => return,
            }
        };
        let counted = overdue.on;
        drop(overdue);
        match attempt {
            Ok((client, server, mut driver)) => {
                backoff.reset();
                failures = 0;
                reconnected.notify_waiters();
                tracing::info!(target = name, ?lane, endpoint = %target.endpoint, version = %server.version, "connected");
                if main {
                    pg_up.set(1.0);
                    shared.status.update_target(name, |t| {
                        t.attempted = true;
                        t.connected_once = true;
                        t.up = true;
                        t.server_version = Some(server.version.clone());
                        t.last_error = None;
                    });
                }
                let live = Arc::new(Live {
                    session: Session { client, server },
                    broken: Notify::new(),
                    recycle: Notify::new(),
                    turn: tokio::sync::Mutex::new(()),
                });
                tx.send_replace(Conn::Up(live.clone()));
                let reason = tokio::select! {
                    _ = &mut driver => "connection closed".to_string(),
                    _ = live.broken.notified() => "session unusable (timeout or closed connection)".to_string(),
                    _ = live.recycle.notified() => {
                        // Collectors see Connecting and wait; the old backend ends (the
                        // client sends Terminate when the last run using it drops it) before
                        // the new one starts, so the lane never holds two.
                        tracing::debug!(target = name, ?lane, "replacing the session to release its server memory");
                        tx.send_replace(Conn::Connecting);
                        drop(live);
                        if tokio::time::timeout(RECYCLE_GRACE, &mut driver).await.is_err() {
                            driver.abort();
                        }
                        continue;
                    }
                    _ = shutdown.changed() => {
                        driver.abort();
                        return;
                    }
                };
                driver.abort();
                tracing::warn!(target = name, ?lane, reason = %reason, "lost connection");
                if main {
                    pg_up.set(0.0);
                    shared.status.update_target(name, |t| {
                        t.up = false;
                        t.last_error = Some(reason.clone());
                    });
                }
                tx.send_replace(Conn::Down(reason));
                // Reconnect at once: a dropped session is often a one-off (restart, failover).
                continue;
            }
            Err(error) => report.failed(&mut failures, error.to_string(), !counted),
        }
        if !pause(backoff.next_delay(), &reconnected, &mut shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let step = Duration::from_millis((100u64 << i).min(1000));
            assert!(
                *d >= step / 2 && *d <= step,
                "attempt {i}: {d:?} not in [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    /// A lane sleeping in a long backoff retries as soon as another lane of the target
    /// connects, and not before; shutdown still ends the wait.
    #[tokio::test(start_paused = true)]
    async fn a_lane_in_backoff_wakes_when_another_connects() {
        let reconnected = Arc::new(Notify::new());
        let (stop, shutdown) = watch::channel(false);
        let start = tokio::time::Instant::now();
        let waiter = {
            let (reconnected, mut shutdown) = (reconnected.clone(), shutdown.clone());
            tokio::spawn(async move {
                let go_on = pause(Duration::from_secs(30), &reconnected, &mut shutdown).await;
                (go_on, start.elapsed())
            })
        };
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woke without a reason");
        reconnected.notify_waiters();
        let (go_on, waited) = waiter.await.unwrap();
        assert!(go_on);
        assert_eq!(waited, Duration::from_secs(1));

        // Without a wake-up the whole delay; shutdown ends it early with false.
        let mut own = shutdown.clone();
        let start = tokio::time::Instant::now();
        assert!(pause(Duration::from_secs(2), &reconnected, &mut own).await);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let mut own = shutdown.clone();
        let stopping =
            tokio::spawn(
                async move { pause(Duration::from_secs(30), &Notify::new(), &mut own).await },
            );
        tokio::task::yield_now().await;
        stop.send_replace(true);
        assert!(!stopping.await.unwrap());
    }
}
