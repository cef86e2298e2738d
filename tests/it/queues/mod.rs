//! The `queues` collector against real tables: the migrations' `core.notification_queue`
//! driven through its own queue functions (004), and faithful copies of pgmq, River and Oban
//! tables with known rows. Every expected value is read back from the database, a database of
//! the test's own on the shared cluster.
//!
//! [`notification_queue`] covers the migrations' queue, [`presets`] the pgmq, River and Oban
//! presets, and [`misconfigured`] a missing table and a rejected entry. This module keeps the
//! target name and the readers they share.

mod misconfigured;
mod notification_queue;
mod presets;

use crate::support::Metrics;

const T: &str = "q";

fn get(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.of(T, name, labels)
}

fn depth(m: &Metrics, queue: &str, state: &str) -> Option<f64> {
    get(m, "app_queue_depth", &[("queue", queue), ("state", state)])
}
