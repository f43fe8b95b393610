-- Named queries for the SQLite store; each block runs under the name after "-- name:".
-- Claim and lease semantics avoid anything SQLite-only in spirit, so the Postgres
-- twin is the same statements with FOR UPDATE SKIP LOCKED.

-- name: insert_event
INSERT INTO events (producer_id, hotmart_id, event_name, source, outcome, transaction_code,
                    product_id, payload_json, received_at_ms)
VALUES (:producer_id, :hotmart_id, :event_name, :source, :outcome, :transaction_code,
        :product_id, :payload_json, :now_ms)
ON CONFLICT (producer_id, hotmart_id) DO NOTHING
RETURNING id;

-- name: find_event
SELECT id FROM events WHERE producer_id = :producer_id AND hotmart_id = :hotmart_id;

-- name: insert_delivery
INSERT INTO deliveries (event_id, kind, producer_id, affiliate_code, destination_key, channel,
                        event_name, status, reason, message_id, next_attempt_at_ms,
                        created_at_ms, updated_at_ms)
VALUES (:event_id, :kind, :producer_id, :affiliate_code, :destination_key, :channel,
        :event_name, :status, :reason, :message_id, :next_attempt_at_ms, :now_ms, :now_ms);

-- name: skip_disabled_due
UPDATE deliveries
SET status = 'skipped', next_attempt_at_ms = NULL, lease_until_ms = NULL, updated_at_ms = :now_ms,
    reason = 'destination disabled: ' || (SELECT disabled_reason FROM destinations
                                          WHERE key = deliveries.destination_key)
WHERE status = 'pending' AND next_attempt_at_ms <= :now_ms AND kind != 'alert'
  AND destination_key IN (SELECT key FROM destinations WHERE enabled = 0);

-- name: claim_due
-- Lease due rows, oldest first, but never more per destination than it has free slots:
-- destinations already full are left out entirely (so one slow affiliate cannot hold up
-- the rest), and the window function caps the others. The inner LIMIT bounds the work
-- however large the backlog.
UPDATE deliveries SET lease_until_ms = :lease_until_ms, updated_at_ms = :now_ms
WHERE id IN (
    SELECT id FROM (
        SELECT id, destination_key, next_attempt_at_ms,
               ROW_NUMBER() OVER (PARTITION BY destination_key
                                  ORDER BY next_attempt_at_ms, id) AS nth
        FROM (
            SELECT id, destination_key, next_attempt_at_ms FROM deliveries
            WHERE status = 'pending' AND next_attempt_at_ms <= :now_ms
              AND (lease_until_ms IS NULL OR lease_until_ms <= :now_ms)
              AND destination_key NOT IN (SELECT key FROM json_each(:in_flight)
                                          WHERE value >= :per_destination)
              AND (:only_ids IS NULL OR id IN (SELECT value FROM json_each(:only_ids)))
            ORDER BY next_attempt_at_ms, id
            LIMIT :scan_limit
        )
    )
    WHERE nth + COALESCE((SELECT value FROM json_each(:in_flight)
                          WHERE key = destination_key), 0) <= :per_destination
    ORDER BY next_attempt_at_ms, id
    LIMIT :limit
)
RETURNING id;

-- name: claimed_rows
SELECT d.id, d.kind, d.producer_id, d.affiliate_code, d.destination_key, d.channel,
       d.event_name, d.message_id, d.attempts, d.replayed_after, e.payload_json
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.id IN (SELECT value FROM json_each(:ids))
ORDER BY d.next_attempt_at_ms, d.id;

-- name: release_all_leases
UPDATE deliveries SET lease_until_ms = NULL WHERE status = 'pending' AND lease_until_ms IS NOT NULL;

-- name: next_due
SELECT MIN(CASE WHEN lease_until_ms > next_attempt_at_ms THEN lease_until_ms
                ELSE next_attempt_at_ms END)
FROM deliveries WHERE status = 'pending';

-- name: insert_attempt
INSERT INTO attempts (delivery_id, attempt_no, started_at_ms, latency_ms, outcome, status_code,
                      response_excerpt, response_headers, request_payload, detail)
VALUES (:delivery_id, :attempt_no, :started_at_ms, :latency_ms, :outcome, :status_code,
        :response_excerpt, :response_headers, :request_payload, :detail);

-- name: resolve_delivery
UPDATE deliveries
SET status = :status, attempts = :attempt_no, next_attempt_at_ms = :next_attempt_at_ms,
    lease_until_ms = NULL, last_error = :last_error, updated_at_ms = :now_ms,
    reason = CASE WHEN :status = 'pending' THEN reason ELSE :reason END
WHERE id = :delivery_id;

-- name: ensure_destination
INSERT INTO destinations (key) VALUES (:key) ON CONFLICT (key) DO NOTHING;

-- name: destination_success
UPDATE destinations SET consecutive_failures = 0, last_success_at_ms = :now_ms WHERE key = :key;

-- name: destination_error
UPDATE destinations SET last_error = :error, last_error_at_ms = :now_ms WHERE key = :key;

-- name: destination_failed
UPDATE destinations SET consecutive_failures = consecutive_failures + 1 WHERE key = :key
RETURNING consecutive_failures, enabled;

-- name: disable_destination
UPDATE destinations
SET enabled = 0, disabled_reason = :reason, disabled_at_ms = :now_ms, alerted_at_ms = :now_ms
WHERE key = :key AND enabled = 1;

-- name: set_destination_enabled
UPDATE destinations
SET enabled = :enabled, disabled_reason = :reason,
    disabled_at_ms = CASE WHEN :enabled THEN NULL ELSE :now_ms END,
    consecutive_failures = CASE WHEN :enabled THEN 0 ELSE consecutive_failures END
WHERE key = :key;

-- name: destination_health
SELECT key, enabled, disabled_reason, consecutive_failures, last_success_at_ms, last_error,
       last_error_at_ms
FROM destinations ORDER BY key;

-- name: delivery_row
SELECT d.id, d.kind, d.status, d.reason, d.producer_id, d.affiliate_code, d.destination_key,
       d.channel, d.event_name, e.hotmart_id, e.transaction_code, d.message_id, d.attempts,
       d.next_attempt_at_ms, d.last_error, d.created_at_ms, d.updated_at_ms, e.payload_json
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.id = :id;

-- name: history
SELECT d.id, d.kind, d.status, d.reason, d.producer_id, d.affiliate_code, d.destination_key,
       d.channel, d.event_name, e.hotmart_id, e.transaction_code, d.message_id, d.attempts,
       d.next_attempt_at_ms, d.last_error, d.created_at_ms, d.updated_at_ms
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE (:status IS NULL OR d.status = :status)
  AND (:affiliate_code IS NULL OR d.affiliate_code = :affiliate_code)
  AND (:event_name IS NULL OR d.event_name = :event_name)
  AND (:channel IS NULL OR d.channel = :channel)
  AND (:since_ms IS NULL OR d.created_at_ms >= :since_ms)
  AND (:before_id IS NULL OR d.id < :before_id)
  AND (:transaction_code IS NULL OR e.transaction_code = :transaction_code)
  AND (:hotmart_id IS NULL OR e.hotmart_id = :hotmart_id)
ORDER BY d.id DESC
LIMIT :limit;

-- name: attempts_of
SELECT attempt_no, started_at_ms, latency_ms, outcome, status_code, response_excerpt,
       response_headers, request_payload, detail
FROM attempts WHERE delivery_id = :id ORDER BY attempt_no, id;

-- name: requeue
-- A replay starts a fresh retry schedule; attempt numbers keep counting.
UPDATE deliveries
SET status = 'pending', next_attempt_at_ms = :now_ms, lease_until_ms = NULL, updated_at_ms = :now_ms,
    replayed_after = attempts
WHERE id IN (SELECT value FROM json_each(:ids))
  AND destination_key IS NOT NULL
  AND (status IN ('failed', 'delivered', 'pending')
       -- only a runtime disabling is undone by replay; decide's skips stay skipped
       OR (status = 'skipped' AND reason LIKE 'destination disabled:%'))
RETURNING id;

-- name: failed_since
SELECT id FROM deliveries
WHERE status = 'failed' AND (:since_ms IS NULL OR created_at_ms >= :since_ms)
ORDER BY id;

-- name: count_by_status
SELECT status, COUNT(*) FROM deliveries GROUP BY status;
