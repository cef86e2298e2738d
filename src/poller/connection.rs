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

pub(super) async fn supervise(
    target: Arc<Target>,
    lane: Lane,
    tx: watch::Sender<Conn>,
    mut backoff: Backoff,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = target.name.as_str();
    // Only the main connection speaks for the target (pg_up, status); a sampler connection
    // that fails shows through its collector's own metrics.
    let main = lane == Lane::Main;
    let pg_up = shared.telemetry.pg_up.with_label_values(&[name]);
    let mut failures: u32 = 0;
    loop {
        shared
            .telemetry
            .connection_attempts
            .with_label_values(&[name])
            .inc();
        let attempt = tokio::select! {
            attempt = target.connect() => attempt,
            _ = shutdown.changed() => return,
        };
        match attempt {
            Ok((client, server, mut driver)) => {
                backoff.reset();
                failures = 0;
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
                    turn: tokio::sync::Mutex::new(()),
                });
                tx.send_replace(Conn::Up(live.clone()));
                let reason = tokio::select! {
                    _ = &mut driver => "connection closed".to_string(),
                    _ = live.broken.notified() => "session unusable (timeout or closed connection)".to_string(),
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
            Err(error) => {
                failures += 1;
                shared
                    .telemetry
                    .connection_errors
                    .with_label_values(&[name])
                    .inc();
                let message = error.to_string();
                // The first failure is worth a warning; repeats only every 10th time.
                if failures == 1 || failures % 10 == 0 {
                    tracing::warn!(target = name, ?lane, error = %message, attempts = failures, "connection failed");
                } else {
                    tracing::debug!(target = name, ?lane, error = %message, attempts = failures, "connection failed");
                }
                if main {
                    pg_up.set(0.0);
                    shared.status.update_target(name, |t| {
                        t.attempted = true;
                        t.up = false;
                        t.last_error = Some(message.clone());
                    });
                }
                tx.send_replace(Conn::Down(message));
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
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
}
