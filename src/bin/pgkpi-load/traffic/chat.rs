//! Chat: messages sent, timelines and unread counts read, conversations marked read, inboxes.

use rand::Rng;

use super::Worker;

const MESSAGE_INSERT: &str = "\
INSERT INTO chat.messages (conversation_id, sender_user_id, body) VALUES ($1, $2, $3)";
const CONVERSATION_TOUCH: &str = "\
UPDATE chat.conversations SET last_message_preview = left($2, 100), updated_at = now()
WHERE id = $1";
const TIMELINE: &str = "\
SELECT id, sender_user_id, body, status, created_at
FROM chat.messages
WHERE conversation_id = $1
ORDER BY created_at DESC
LIMIT 50";
const UNREAD: &str = "\
SELECT count(*)
FROM chat.messages
WHERE conversation_id = $1
  AND status IN ('SENT', 'DELIVERED')
  AND sender_user_id <> $2
  AND is_deleted = false";
const MARK_READ: &str = "\
UPDATE chat.messages
SET status = 'READ', read_at = now()
WHERE conversation_id = $1
  AND sender_user_id = $2
  AND status IN ('SENT', 'DELIVERED')";
const INBOX_CLIENT: &str = "\
SELECT id, owner_user_id, last_message_preview, updated_at
FROM chat.conversations
WHERE client_user_id = $1 AND archived_by_client = false
ORDER BY updated_at DESC
LIMIT 20";
const INBOX_OWNER: &str = "\
SELECT id, client_user_id, last_message_preview, updated_at
FROM chat.conversations
WHERE owner_user_id = $1 AND archived_by_owner = false
ORDER BY updated_at DESC
LIMIT 20";

/// Chat: messages sent, timelines and unread counts read, conversations marked read, inboxes.
pub async fn chat(mut w: Worker) {
    while w.next().await {
        let c = w.conversation();
        // The reader is one participant, the other one sent the messages.
        let (reader, other) = if w.chance(0.5) {
            (c.client, c.owner)
        } else {
            (c.owner, c.client)
        };
        let roll: f64 = w.rng.random();
        if roll < 0.25 {
            let body = format!("pgkpi-load message {}", w.rng.random::<u32>());
            if w.q("send", MESSAGE_INSERT, &[&c.id, &reader, &body])
                .await
                .is_some()
            {
                w.q("conversation_touch", CONVERSATION_TOUCH, &[&c.id, &body])
                    .await;
            }
        } else if roll < 0.60 {
            w.q("timeline", TIMELINE, &[&c.id]).await;
        } else if roll < 0.75 {
            w.q("unread", UNREAD, &[&c.id, &reader]).await;
        } else if roll < 0.85 {
            w.q("mark_read", MARK_READ, &[&c.id, &other]).await;
        } else if reader == c.client {
            w.q("inbox", INBOX_CLIENT, &[&reader]).await;
        } else {
            w.q("inbox", INBOX_OWNER, &[&reader]).await;
        }
    }
}
