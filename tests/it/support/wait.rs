//! Waiting for a condition: the one way the tests poll (the exporter's [`wait_for`] is built
//! on it). Wait for the value you assert on, never for a neighbouring one.
//!
//! [`wait_for`]: super::Exporter::wait_for

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls `attempt` every `every` until it returns `Ok`, for `timeout` at most; returns the last
/// outcome, so that the caller asserts on (or reports) what it saw last.
pub fn retry<T, E>(
    timeout: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = attempt();
        if outcome.is_ok() || Instant::now() > deadline {
            return outcome;
        }
        std::thread::sleep(every);
    }
}

/// [`retry`] for async attempts (a tokio-postgres client's queries), sleeping on the runtime.
pub async fn retry_async<T, E, F: Future<Output = Result<T, E>>>(
    timeout: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = attempt().await;
        if outcome.is_ok() || Instant::now() > deadline {
            return outcome;
        }
        tokio::time::sleep(every).await;
    }
}
