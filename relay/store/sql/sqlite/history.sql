-- The history the admin page, its API and `relay history` list: a fixed select, and one
-- named condition per filter, joined with AND for the filters given (sqlite_history.py).
-- A condition of the form `(:x IS NULL OR col = :x)` would keep SQLite from using any
-- index, so each filter present adds its own term instead. `{statuses}` is filled with
-- parameter names (`:status_0, :status_1`), never with values.

-- name: history_page
-- The ids of one page, from deliveries alone: SQLite then reads each filter's index
-- backwards and stops at LIMIT (with `status IN (...)`, at LIMIT per status). Joined to
-- events in the same query, it would read every matching row and sort them.
SELECT d.id FROM deliveries d

-- name: history_order
ORDER BY d.id DESC LIMIT :limit

-- name: history_select
-- The page's rows. The code of the last attempt (HTTP status or SMTP reply) is one seek
-- per row in attempts_by_delivery.
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
-- SQLite reads each value's run of deliveries_by_status backwards and stops at LIMIT.
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
-- Through deliveries_by_event, so the planner never walks every delivery to find a few.
d.event_id IN (SELECT id FROM events WHERE transaction_code = :transaction_code)

-- name: history_hotmart_id
d.event_id IN (SELECT id FROM events WHERE hotmart_id = :hotmart_id)

-- name: history_since
-- A date becomes a range of ids (ids grow with time): one seek in deliveries_by_created
-- finds the first row of that moment, and the range combines with any other filter's
-- index. The exact test stays, unary + keeping it off the planner's choice of index.
d.id >= COALESCE((SELECT id FROM deliveries INDEXED BY deliveries_by_created
                  WHERE created_at_ms >= :since_ms ORDER BY created_at_ms LIMIT 1),
                 9223372036854775807)
AND +d.created_at_ms >= :since_ms

-- name: history_until
d.id < COALESCE((SELECT id FROM deliveries INDEXED BY deliveries_by_created
                 WHERE created_at_ms >= :until_ms ORDER BY created_at_ms LIMIT 1),
                9223372036854775807)
AND +d.created_at_ms < :until_ms

-- name: known_statuses
-- Every status the store holds, one seek per distinct value in deliveries_by_status,
-- not a read of every row.
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
WHERE (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC LIMIT :limit

-- name: audit_page_of_producer
WHERE producer_id = :producer_id AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC LIMIT :limit

-- name: audit_entry
WHERE id = :id
