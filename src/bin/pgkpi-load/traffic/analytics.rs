//! Analytics (migrated schema only): inserts into the partitioned history tables and a
//! per-user read.

use rand::Rng;

use super::Worker;

const ANALYTICS_EVENT: &str = "\
INSERT INTO core.analytics_events (occurred_at, event_type, user_id, session_id, properties)
VALUES (now(), $1, $2, $3, jsonb_build_object('source', 'pgkpi-load'))";
const LISTING_VIEW: &str = "\
INSERT INTO core.listing_views (viewed_at, listing_id, viewer_user_id, session_id, referrer)
VALUES (now(), $1, $2, $3, $4)";
const USER_ACTIVITY: &str = "\
INSERT INTO core.user_activity (user_id, activity_type) VALUES ($1, $2)";
const API_LOG: &str = "\
INSERT INTO integration.external_api_logs (provider, endpoint, status_code, duration_ms, error)
VALUES ($1, $2, $3, $4, CASE WHEN $3 >= 500 THEN 'upstream error' END)";
const USER_EVENTS: &str = "\
SELECT event_type, count(*)
FROM core.analytics_events
WHERE user_id = $1 AND occurred_at >= now() - interval '30 days'
GROUP BY event_type";

/// Migrated schema only (the partitioned history tables of 007): analytics events, listing
/// views, user activity and external API call logs, plus a per-user read.
pub async fn analytics(mut w: Worker) {
    const KINDS: [&str; 5] = [
        "page_view",
        "search",
        "listing_click",
        "booking_start",
        "login",
    ];
    while w.next().await {
        let user = w.conversation().client;
        let session = format!("{:016x}", w.rng.random::<u64>());
        let roll: f64 = w.rng.random();
        if roll < 0.6 {
            let kind = KINDS[w.skewed(KINDS.len())];
            w.q("event", ANALYTICS_EVENT, &[&kind, &user, &session])
                .await;
        } else if roll < 0.8 {
            let listing = w.booking().listing;
            w.q(
                "listing_view",
                LISTING_VIEW,
                &[&listing, &user, &session, &"search"],
            )
            .await;
        } else if roll < 0.9 {
            w.q("user_activity", USER_ACTIVITY, &[&user, &"login"])
                .await;
        } else if roll < 0.95 {
            let status: i32 = if w.chance(0.04) { 500 } else { 200 };
            let duration: i32 = w.rng.random_range(20..2000);
            w.q(
                "api_log",
                API_LOG,
                &[&"stripe", &"/v1/charges", &status, &duration],
            )
            .await;
        } else {
            w.q("user_events", USER_EVENTS, &[&user]).await;
        }
    }
}
