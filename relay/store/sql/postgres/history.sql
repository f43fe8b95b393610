-- The history on PostgreSQL: the same named conditions as sql/sqlite/history.sql, joined
-- the same way (relay/store/sqlite_history.history_statement), in PostgreSQL's words.

-- name: history_page
SELECT d.id FROM deliveries d

-- name: history_order
ORDER BY d.id DESC LIMIT :limit

-- name: history_select
SELECT d.id, d.kind, d.status, d.reason, d.producer_id, d.affiliate_code, d.destination_key,
       d.channel, d.event_name, e.hotmart_id, e.transaction_code, d.message_id, d.attempts,
       d.next_attempt_at_ms, d.last_error, d.created_at_ms, d.updated_at_ms,
       d.event_id AS event_row_id, d.notification,
       (SELECT a.status_code FROM attempts a WHERE a.delivery_id = d.id
        ORDER BY a.attempt_no DESC, a.id DESC LIMIT 1) AS last_status_code
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.id IN ({page})
ORDER BY d.id DESC

-- name: history_status
d.status = :status

-- name: history_statuses
d.status IN ({statuses})

-- name: history_affiliate
d.affiliate_code = :affiliate_code

-- name: history_event_name
d.event_name = :event_name

-- name: history_channel
d.channel = :channel

-- name: history_producer
d.producer_id = :producer_id

-- name: history_notification
d.notification = :notification

-- name: history_before
d.id < :before_id

-- name: history_event_row
d.event_id = :event_row_id

-- name: history_transaction
d.event_id IN (SELECT id FROM events WHERE transaction_code = :transaction_code)

-- name: history_hotmart_id
d.event_id IN (SELECT id FROM events WHERE hotmart_id = :hotmart_id)

-- name: history_since
-- A date becomes a range of ids, through deliveries_by_created, as on SQLite.
d.id >= COALESCE((SELECT id FROM deliveries WHERE created_at_ms >= :since_ms
                  ORDER BY created_at_ms LIMIT 1), 9223372036854775807)
AND d.created_at_ms >= :since_ms

-- name: history_until
d.id < COALESCE((SELECT id FROM deliveries WHERE created_at_ms >= :until_ms
                 ORDER BY created_at_ms LIMIT 1), 9223372036854775807)
AND d.created_at_ms < :until_ms

-- name: known_statuses
WITH RECURSIVE seen (status) AS (
    SELECT MIN(status) FROM deliveries
    UNION ALL
    SELECT (SELECT MIN(status) FROM deliveries WHERE status > seen.status)
    FROM seen WHERE seen.status IS NOT NULL
)
SELECT status FROM seen WHERE status IS NOT NULL

-- name: event_row
SELECT id, producer_id, hotmart_id, event_name, source, outcome, transaction_code,
       product_id, payload_json, received_at_ms, scrubbed_at_ms
FROM events WHERE id = :id

-- name: insert_audit
INSERT INTO audit_log (at_ms, action, via, remote, producer_id, target, delivery_ids, outcome)
VALUES (:at_ms, :action, :via, :remote, :producer_id, :target, :delivery_ids, :outcome)
RETURNING id

-- name: audit_select
SELECT id, at_ms, action, via, remote, producer_id, target, delivery_ids, outcome
FROM audit_log

-- name: audit_page
WHERE (:before_id::bigint IS NULL OR id < :before_id::bigint)
ORDER BY id DESC LIMIT :limit

-- name: audit_page_of_producer
WHERE producer_id = :producer_id AND (:before_id::bigint IS NULL OR id < :before_id::bigint)
ORDER BY id DESC LIMIT :limit

-- name: audit_entry
WHERE id = :id
