//! Lock contention (`--lock-contention`): one session keeps a booking row locked inside an open
//! transaction, others update the same row with a short `lock_timeout` and give up.

use tokio_postgres::error::SqlState;

use super::Worker;

const HOLD: &str = "SELECT id FROM core.bookings WHERE id = $1 FOR UPDATE";
const WAIT: &str = "UPDATE core.bookings SET updated_at = now() WHERE id = $1";

/// Every `--lock-every`, locks one booking row and keeps the transaction open for
/// `--lock-hold`, like a request that does slow work (an HTTP call) inside a transaction.
pub async fn lock_holder(mut w: Worker) {
    let hot = w.shared.samples.hot_booking;
    let hold = w.shared.knobs.lock_hold;
    while w.next().await {
        if !w.control("BEGIN").await {
            continue;
        }
        if w.q("hold", HOLD, &[&hot]).await.is_none() {
            w.rollback().await;
            continue;
        }
        w.sleep(hold).await;
        w.control("COMMIT").await;
    }
}

/// Updates the same row with `lock_timeout = 1s`: waits while it is held, and gives up
/// (expected 55P03, counted separately) when the hold outlasts the timeout.
pub async fn lock_waiter(mut w: Worker) {
    w.init_sql = Some("SET lock_timeout = '1s'");
    w.expected.push(SqlState::LOCK_NOT_AVAILABLE);
    let hot = w.shared.samples.hot_booking;
    while w.next().await {
        w.q("wait", WAIT, &[&hot]).await;
    }
}
