//! Bookings: host and guest lists, availability checks, new bookings with their payment, the
//! payment-deadline expiry job.

use rand::Rng;

use super::Worker;

const BY_HOST: &str = "\
SELECT id, guest_user_id, status, check_in_date, check_out_date
FROM core.bookings
WHERE host_user_id = $1
ORDER BY created_at DESC
LIMIT 20";
const BY_GUEST: &str = "\
SELECT id, host_user_id, status, check_in_date, check_out_date
FROM core.bookings
WHERE guest_user_id = $1
ORDER BY created_at DESC
LIMIT 20";
const AVAILABILITY: &str = "\
SELECT id, status, check_in_date, check_out_date
FROM core.bookings
WHERE listing_id = $1
  AND status IN ('pending_payment', 'confirmed')
  AND check_in_date < current_date + $3::int
  AND check_out_date > current_date + $2::int";
const BOOKING_INSERT: &str = "\
INSERT INTO core.bookings (listing_id, host_user_id, guest_user_id, status, check_in_date,
                           check_out_date, guests, total_amount, payment_deadline)
VALUES ($1, $2, $3, 'pending_payment', current_date + $4::int, current_date + $5::int, 2,
        $6::float8, now() + make_interval(secs => $7))
RETURNING id";
const PAYMENT_INSERT: &str = "\
INSERT INTO core.booking_payments (booking_id, payment_type, status, amount)
VALUES ($1, 'charge', 'pending', $2::float8)";
const PAYMENT_SUCCEEDED: &str = "\
UPDATE core.booking_payments SET status = 'succeeded', updated_at = now()
WHERE booking_id = $1 AND status = 'pending'";
const BOOKING_CONFIRM: &str = "\
UPDATE core.bookings SET status = 'confirmed', updated_at = now()
WHERE id = $1 AND status = 'pending_payment'";
const PAYMENTS_BY_BOOKING: &str = "\
SELECT id, payment_type, status, amount, created_at
FROM core.booking_payments
WHERE booking_id = $1
ORDER BY created_at DESC";
const EXPIRE: &str = "\
UPDATE core.bookings SET status = 'expired', updated_at = now()
WHERE id IN (SELECT id FROM core.bookings
             WHERE status = 'pending_payment' AND payment_deadline < now()
             ORDER BY payment_deadline
             LIMIT 100
             FOR UPDATE SKIP LOCKED)";

/// Bookings: host and guest lists, availability checks, new bookings with a payment (most
/// are paid, the rest expire and are swept by the payment-deadline job).
pub async fn bookings(mut w: Worker) {
    let mut created: Vec<i64> = Vec::new();
    while w.next().await {
        let b = w.booking();
        let roll: f64 = w.rng.random();
        if roll < 0.25 {
            w.q("by_host", BY_HOST, &[&b.host]).await;
        } else if roll < 0.45 {
            w.q("by_guest", BY_GUEST, &[&b.guest]).await;
        } else if roll < 0.65 {
            let from: i32 = w.rng.random_range(1..120);
            let to = from + w.rng.random_range(1..10);
            w.q("availability", AVAILABILITY, &[&b.listing, &from, &to])
                .await;
        } else if roll < 0.85 {
            let check_in: i32 = w.rng.random_range(1..180);
            let check_out = check_in + w.rng.random_range(1..14);
            let amount: f64 = w.rng.random_range(50.0..2000.0);
            let deadline: f64 = w.rng.random_range(2.0..30.0);
            let Some(rows) = w
                .q(
                    "create",
                    BOOKING_INSERT,
                    &[
                        &b.listing, &b.host, &b.guest, &check_in, &check_out, &amount, &deadline,
                    ],
                )
                .await
            else {
                continue;
            };
            let id: i64 = rows[0].get(0);
            w.q("payment", PAYMENT_INSERT, &[&id, &amount]).await;
            if w.chance(0.7) {
                w.q("payment_succeeded", PAYMENT_SUCCEEDED, &[&id]).await;
                w.q("confirm", BOOKING_CONFIRM, &[&id]).await;
            }
            if created.len() < 10_000 {
                created.push(id);
            }
        } else if roll < 0.95 {
            let id = if created.is_empty() || w.chance(0.5) {
                let n = w.shared.samples.bookings.len();
                w.shared.samples.hot_booking + w.skewed(n) as i64
            } else {
                created[w.rng.random_range(0..created.len())]
            };
            w.q("payments_by_booking", PAYMENTS_BY_BOOKING, &[&id])
                .await;
        } else {
            w.q("expire", EXPIRE, &[]).await;
        }
    }
}
