-- Named queries of the PostgreSQL store, twins of sql/sqlite/queries.sql. `:name` marks a
-- parameter (numbered $1, $2 ... when loaded: relay/store/postgres_connection.py); a list
-- of ids is one bigint[] parameter. Each UPDATE that leases, fences or counts runs under
-- PostgreSQL's row locks, which is what makes it right across instances.

-- name: insert_event
-- Two instances receiving one resend at once: the second waits on the first's row, then
-- does nothing, and find_event (a new snapshot) reads the committed row.
INSERT INTO events (producer_id, hotmart_id, event_name, source, outcome, transaction_code,
                    product_id, payload_json, received_at_ms)
VALUES (:producer_id, :hotmart_id, :event_name, :source, :outcome, :transaction_code,
        :product_id, :payload_json, :now_ms)
ON CONFLICT (producer_id, hotmart_id) DO NOTHING
RETURNING id

-- name: find_event
SELECT id FROM events WHERE producer_id = :producer_id AND hotmart_id = :hotmart_id

-- name: insert_delivery
INSERT INTO deliveries (event_id, kind, producer_id, affiliate_code, destination_key, channel,
                        event_name, status, reason, message_id, next_attempt_at_ms,
                        created_at_ms, updated_at_ms, notification)
VALUES (:event_id, :kind, :producer_id, :affiliate_code, :destination_key, :channel,
        :event_name, :status, :reason, :message_id, :next_attempt_at_ms, :now_ms, :now_ms,
        :notification)

-- name: skip_disabled_due
UPDATE deliveries d
SET status = 'skipped', next_attempt_at_ms = NULL, lease_until_ms = NULL, lease_token = NULL,
    lease_owner = NULL, updated_at_ms = :now_ms,
    reason = 'destination disabled: ' || x.disabled_reason
FROM destinations x
WHERE x.key = d.destination_key AND NOT x.enabled
  AND d.status = 'pending' AND d.next_attempt_at_ms <= :now_ms AND d.kind != 'alert'
  AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= :now_ms)
  AND NOT (d.id = ANY (:exclude_ids::bigint[]))
RETURNING d.channel

-- name: claim_due
-- Per destination, the oldest due rows not leased, read FOR UPDATE SKIP LOCKED, so
-- concurrent instances never wait on, nor take, each other's rows; then the oldest across
-- destinations, each destination capped at its free slots (`held`: this instance's rows
-- in flight, never claimed again), leased under this claim's token in the same statement.
-- `keys` walks the distinct destinations with pending rows (one index seek each), and each
-- destination reads at most its cap of rows: the cost is the number of destinations,
-- never the backlog's length. A destination's cap is the dispatcher's adaptive one
-- (`cap_keys`/`cap_values`) or `per_destination`; free slots go first to the destinations
-- with the fewest rows in flight, then to the oldest rows, as on SQLite.
WITH RECURSIVE keys (key) AS (
    SELECT MIN(destination_key) FROM deliveries WHERE status = 'pending'
    UNION ALL
    SELECT (SELECT MIN(destination_key) FROM deliveries
            WHERE status = 'pending' AND destination_key > keys.key)
    FROM keys WHERE keys.key IS NOT NULL
),
held (key, n) AS (
    SELECT destination_key, COUNT(*) FROM deliveries
    WHERE id = ANY (:exclude_ids::bigint[])
    GROUP BY destination_key
),
caps (key, cap) AS (
    SELECT * FROM unnest(:cap_keys::text[], :cap_values::bigint[])
),
capped (key, held, cap) AS (
    SELECT k.key, COALESCE(h.n, 0), COALESCE(cp.cap, :per_destination::bigint)
    FROM keys k
    LEFT JOIN held h ON h.key = k.key
    LEFT JOIN caps cp ON cp.key = k.key
    WHERE k.key IS NOT NULL
),
candidates AS (
    SELECT c.id, c.next_attempt_at_ms, k.held, k.cap,
           ROW_NUMBER() OVER (PARTITION BY k.key ORDER BY c.next_attempt_at_ms, c.id) AS nth
    FROM capped k
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at_ms FROM deliveries d
        WHERE d.destination_key = k.key AND d.status = 'pending'
          AND d.next_attempt_at_ms <= :now_ms
          AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= :now_ms)
          AND NOT (d.id = ANY (:exclude_ids::bigint[]))
          AND (:only_ids::bigint[] IS NULL OR d.id = ANY (:only_ids::bigint[]))
        ORDER BY d.next_attempt_at_ms, d.id
        -- Every row read here stays locked until COMMIT, chosen or not: read no more
        -- than this claim could take, so concurrent claims find the rest.
        LIMIT LEAST(GREATEST(k.cap - k.held, 0), :limit::bigint)
        FOR UPDATE OF d SKIP LOCKED
    ) c
),
chosen AS (
    SELECT id FROM candidates
    WHERE nth + held <= cap
    ORDER BY nth + held, next_attempt_at_ms, id
    LIMIT :limit
)
UPDATE deliveries d
SET lease_until_ms = :lease_until_ms, lease_token = :lease_token, lease_owner = :lease_owner,
    updated_at_ms = :now_ms
FROM chosen
WHERE d.id = chosen.id
RETURNING d.id

-- name: claimed_rows
SELECT d.id, d.kind, d.producer_id, d.affiliate_code, d.destination_key, d.channel,
       d.event_name, d.message_id, d.attempts, d.replayed_after, d.lease_token,
       e.hotmart_id, e.payload_json, d.notification
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.id = ANY (:ids::bigint[])
ORDER BY d.next_attempt_at_ms, d.id

-- name: fail_unreadable
UPDATE deliveries
SET status = 'failed', reason = :reason, last_error = :reason, next_attempt_at_ms = NULL,
    lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms
WHERE id = :id

-- name: release_leases
-- At an instance's start: what this very instance held before it died (its lock proves
-- it: relay/store/postgres.py). Other instances' leases run out by time.
UPDATE deliveries SET lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL
WHERE status = 'pending' AND lease_until_ms IS NOT NULL AND lease_owner = :owner

-- name: next_due
-- The head of deliveries_due among rows not leased, and the head of deliveries_leased:
-- two index reads; LEAST ignores the one that is NULL.
SELECT LEAST(
    (SELECT next_attempt_at_ms FROM deliveries
     WHERE status = 'pending' AND lease_until_ms IS NULL
     ORDER BY next_attempt_at_ms, id LIMIT 1),
    (SELECT MIN(lease_until_ms) FROM deliveries
     WHERE status = 'pending' AND lease_until_ms IS NOT NULL))

-- name: next_due_of_ids
SELECT MIN(GREATEST(next_attempt_at_ms, lease_until_ms))
FROM deliveries
WHERE id = ANY (:ids::bigint[]) AND status = 'pending'

-- name: insert_attempt
INSERT INTO attempts (delivery_id, attempt_no, started_at_ms, latency_ms, outcome, status_code,
                      response_excerpt, response_headers, request_payload, detail)
VALUES (:delivery_id, :attempt_no, :started_at_ms, :latency_ms, :outcome, :status_code,
        :response_excerpt, :response_headers, :request_payload, :detail)

-- name: resolve_delivery
-- Applies only while the row holds the writer's lease token: the fence.
UPDATE deliveries
SET status = :status, attempts = :attempt_no, next_attempt_at_ms = :next_attempt_at_ms,
    lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL, last_error = :last_error,
    updated_at_ms = :now_ms,
    reason = CASE WHEN :status::text = 'pending' THEN reason ELSE :reason END
WHERE id = :delivery_id AND status = 'pending' AND lease_token = :lease_token

-- name: resolve_without_attempt
UPDATE deliveries
SET status = :status, reason = :reason, next_attempt_at_ms = NULL, lease_until_ms = NULL,
    lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms
WHERE id = :id AND status = 'pending' AND lease_token = :lease_token

-- name: ensure_destination
INSERT INTO destinations (key) VALUES (:key) ON CONFLICT (key) DO NOTHING

-- name: destination_success
INSERT INTO destinations (key, last_success_at_ms) VALUES (:key, :now_ms)
ON CONFLICT (key) DO UPDATE SET consecutive_failures = 0, last_success_at_ms = :now_ms

-- name: destination_error
INSERT INTO destinations (key, last_error, last_error_at_ms) VALUES (:key, :error, :now_ms)
ON CONFLICT (key) DO UPDATE SET last_error = :error, last_error_at_ms = :now_ms

-- name: destination_failed
-- One statement: the count moves under the row's lock, so two instances failing at once
-- count two, and each reads the count its own failure made.
INSERT INTO destinations (key, consecutive_failures, last_error, last_error_at_ms)
VALUES (:key, 1, :error, :now_ms)
ON CONFLICT (key) DO UPDATE
SET consecutive_failures = destinations.consecutive_failures + 1, last_error = :error,
    last_error_at_ms = :now_ms
RETURNING consecutive_failures, enabled

-- name: disable_destination
-- Under the row lock destination_failed took: of two instances, only the first disables.
UPDATE destinations
SET enabled = FALSE, disabled_reason = :reason, disabled_at_ms = :now_ms, alerted_at_ms = :now_ms
WHERE key = :key AND enabled

-- name: set_destination_enabled
UPDATE destinations
SET enabled = :enabled, disabled_reason = :reason,
    disabled_at_ms = CASE WHEN :enabled::boolean THEN NULL ELSE :now_ms::bigint END,
    consecutive_failures = CASE WHEN :enabled::boolean THEN 0 ELSE consecutive_failures END
WHERE key = :key

-- name: destination_health
SELECT key, enabled, disabled_reason, consecutive_failures, last_success_at_ms, last_error,
       last_error_at_ms
FROM destinations ORDER BY key

-- name: delivery_row
SELECT d.id, d.kind, d.status, d.reason, d.producer_id, d.affiliate_code, d.destination_key,
       d.channel, d.event_name, e.hotmart_id, e.transaction_code, d.message_id, d.attempts,
       d.next_attempt_at_ms, d.last_error, d.created_at_ms, d.updated_at_ms,
       d.event_id AS event_row_id, e.payload_json, d.notification,
       (SELECT a.status_code FROM attempts a WHERE a.delivery_id = d.id
        ORDER BY a.attempt_no DESC, a.id DESC LIMIT 1) AS last_status_code
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.id = :id

-- name: attempts_of
SELECT attempt_no, started_at_ms, latency_ms, outcome, status_code, response_excerpt,
       response_headers, request_payload, detail
FROM attempts WHERE delivery_id = :id ORDER BY attempt_no, id

-- name: requeue
UPDATE deliveries
SET status = 'pending', next_attempt_at_ms = :now_ms, lease_until_ms = NULL,
    lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms,
    replayed_after = attempts
WHERE id = ANY (:ids::bigint[])
  AND destination_key IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = deliveries.event_id
                  AND e.scrubbed_at_ms IS NOT NULL)
  AND (lease_until_ms IS NULL OR lease_until_ms <= :now_ms)
  AND (status IN ('failed', 'delivered', 'pending')
       OR (status = 'skipped' AND reason LIKE 'destination disabled:%'))
RETURNING id

-- name: leased
SELECT id FROM deliveries
WHERE id = ANY (:ids::bigint[]) AND status = 'pending' AND lease_until_ms > :now_ms
ORDER BY id

-- name: mark_unrecordable
UPDATE deliveries
SET status = 'failed', reason = :reason, last_error = :reason, next_attempt_at_ms = NULL,
    lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms
WHERE id = :id AND status = 'pending' AND lease_token = :lease_token

-- name: write_probe
INSERT INTO write_probe (id, written_at_ms) VALUES (1, :now_ms)
ON CONFLICT (id) DO UPDATE SET written_at_ms = excluded.written_at_ms

-- name: delivery_ids_of_event
SELECT id FROM deliveries WHERE event_id = :event_id ORDER BY id

-- name: failed_since
SELECT id FROM deliveries
WHERE status = 'failed' AND (:since_ms::bigint IS NULL OR created_at_ms >= :since_ms::bigint)
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = deliveries.event_id
                  AND e.scrubbed_at_ms IS NOT NULL)
ORDER BY id

-- name: count_by_status
SELECT status, COUNT(*) AS deliveries FROM deliveries GROUP BY status

-- name: queue_gauges
-- Each through a partial index or the small destinations table.
SELECT (SELECT COUNT(*) FROM deliveries WHERE status = 'pending') AS pending,
       (SELECT MIN(next_attempt_at_ms) FROM deliveries WHERE status = 'pending') AS earliest,
       (SELECT COUNT(*) FROM destinations WHERE NOT enabled) AS disabled

-- name: settled_since_replay
SELECT id FROM deliveries
WHERE id = ANY (:ids::bigint[]) AND (status != 'pending' OR attempts > replayed_after)
ORDER BY id

-- name: step_done
SELECT 1 FROM one_time_steps WHERE name = :name

-- name: mark_step_done
INSERT INTO one_time_steps (name, done_at_ms, detail) VALUES (:name, :now_ms, :detail)
ON CONFLICT (name) DO NOTHING

-- name: withheld_rows
SELECT d.id, d.event_id AS event_row_id, d.producer_id, d.affiliate_code, d.destination_key,
       e.payload_json,
       ARRAY(SELECT o.destination_key FROM deliveries o
             WHERE o.event_id = d.event_id AND o.affiliate_code = d.affiliate_code
               AND o.kind = 'notification' AND o.destination_key IS NOT NULL) AS event_keys
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.status = 'withheld' AND d.kind = 'notification'
  AND (d.notification IS NULL OR d.notification IN ('slip', 'event'))
  AND (:before_id::bigint IS NULL OR d.id < :before_id::bigint)
  AND (:ids::bigint[] IS NULL OR d.id = ANY (:ids::bigint[]))
  AND (:since_ms::bigint IS NULL OR d.created_at_ms >= :since_ms::bigint)
  AND (:affiliate_code::text IS NULL OR d.affiliate_code = :affiliate_code::text)
ORDER BY d.id DESC
LIMIT :limit

-- name: regrant
UPDATE deliveries
SET status = :status, reason = :reason, channel = COALESCE(:channel::text, channel),
    next_attempt_at_ms = CASE WHEN :status::text = 'pending' THEN :now_ms::bigint END,
    replayed_after = attempts, lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL,
    updated_at_ms = :now_ms
WHERE id = :id AND status = 'withheld'
RETURNING id

-- name: still_withheld
SELECT id FROM deliveries
WHERE id = ANY (:ids::bigint[]) AND status = 'withheld'
ORDER BY id

-- name: insert_redecided
INSERT INTO deliveries (event_id, kind, producer_id, affiliate_code, destination_key, channel,
                        event_name, status, reason, message_id, next_attempt_at_ms,
                        created_at_ms, updated_at_ms, notification)
SELECT e.id, :kind, e.producer_id, :affiliate_code, :destination_key, :channel, e.event_name,
       :status, :reason, :message_id, :next_attempt_at_ms, :now_ms, :now_ms, :notification
FROM events e
WHERE e.id = :event_id
  AND NOT EXISTS (SELECT 1 FROM deliveries o
                  WHERE o.event_id = e.id AND o.destination_key = :destination_key::text
                    AND o.kind = :kind::text)
RETURNING id

-- name: supersede
UPDATE deliveries SET status = 'superseded', reason = :reason, updated_at_ms = :now_ms
WHERE id = :id AND status = 'withheld'

-- name: scrub_candidates
SELECT e.id, e.received_at_ms, e.hotmart_id, e.event_name, e.payload_json
FROM events e
WHERE e.scrubbed_at_ms IS NULL AND e.received_at_ms < :before_ms AND e.source != 'relay'
  AND (e.received_at_ms, e.id) > (:after_ms::bigint, :after_id::bigint)
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
ORDER BY e.received_at_ms, e.id
LIMIT :limit

-- name: scrub_event
UPDATE events SET payload_json = :payload_json, scrubbed_at_ms = :now_ms
WHERE id = :id AND scrubbed_at_ms IS NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id
                  AND d.status = 'pending')

-- name: scrub_attempts_of_event
UPDATE attempts SET request_payload = '', response_excerpt = '', response_headers = '{}'
WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = :id)

-- name: settling_event
SELECT event_name FROM events
WHERE producer_id = :producer_id AND transaction_code = :transaction_code
  AND event_name = ANY (:settling::text[])
ORDER BY id
LIMIT 1

-- name: cancel_reminders
UPDATE deliveries
SET status = 'cancelled', reason = :reason, next_attempt_at_ms = NULL, lease_until_ms = NULL,
    lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms
WHERE id IN (
    SELECT d.id FROM events e JOIN deliveries d ON d.event_id = e.id
    WHERE e.producer_id = :producer_id AND e.transaction_code = :transaction_code
      AND d.notification = 'reminder' AND d.status = 'pending'
      AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= :now_ms)
)

-- name: transaction_notices
SELECT d.id, d.affiliate_code, d.destination_key, d.channel, d.notification, d.status,
       d.attempts
FROM events e JOIN deliveries d ON d.event_id = e.id
WHERE e.producer_id = :producer_id AND e.transaction_code = :transaction_code
  AND d.kind = 'notification' AND d.destination_key IS NOT NULL
  AND d.notification IN ('slip', 'paid', 'expired')
ORDER BY d.id

-- name: recovery_figures
-- As sql/sqlite/queries.sql says, in PostgreSQL's words (GREATEST, FILTER, IS NOT
-- DISTINCT FROM); the slips come through the partial index deliveries_slip_notices.
WITH slips AS (
    SELECT d.producer_id, d.affiliate_code, e.transaction_code,
           MIN(e.received_at_ms) AS slip_at_ms
    FROM deliveries d JOIN events e ON e.id = d.event_id
    WHERE d.notification = 'slip' AND d.kind = 'notification'
      AND d.created_at_ms >= :since_ms
      AND (d.status = 'delivered' OR d.attempts > 0)
      AND e.transaction_code != ''
      AND (:producer_id::text IS NULL OR d.producer_id = :producer_id::text)
      AND (:affiliate_code::text IS NULL OR d.affiliate_code = :affiliate_code::text)
    GROUP BY d.producer_id, d.affiliate_code, e.transaction_code
),
outcomes AS (
    SELECT s.producer_id, s.affiliate_code, s.slip_at_ms,
           (SELECT MIN(p.received_at_ms) FROM events p
            WHERE p.producer_id = s.producer_id AND p.transaction_code = s.transaction_code
              AND p.event_name = ANY (:paid_events::text[])) AS paid_at_ms,
           EXISTS (SELECT 1 FROM events x
                   WHERE x.producer_id = s.producer_id
                     AND x.transaction_code = s.transaction_code
                     AND x.event_name = :expired_event) AS expired
    FROM slips s
),
grouped AS (
    SELECT producer_id, affiliate_code, slip_at_ms, paid_at_ms, expired FROM outcomes
    UNION ALL
    SELECT producer_id, NULL, slip_at_ms, paid_at_ms, expired FROM outcomes
),
ranked AS (
    SELECT producer_id, affiliate_code, GREATEST(paid_at_ms - slip_at_ms, 0) AS to_pay_ms,
           ROW_NUMBER() OVER (PARTITION BY producer_id, affiliate_code
                              ORDER BY GREATEST(paid_at_ms - slip_at_ms, 0)) AS nth,
           COUNT(*) OVER (PARTITION BY producer_id, affiliate_code) AS paid
    FROM grouped
    WHERE paid_at_ms IS NOT NULL
),
medians AS (
    SELECT producer_id, affiliate_code, AVG(to_pay_ms)::double precision AS median_ms
    FROM ranked
    WHERE nth IN ((paid + 1) / 2, (paid + 2) / 2)
    GROUP BY producer_id, affiliate_code
)
SELECT g.producer_id, g.affiliate_code, COUNT(*)::int AS notified,
       COUNT(g.paid_at_ms)::int AS paid,
       (COUNT(*) FILTER (WHERE g.expired AND g.paid_at_ms IS NULL))::int AS expired,
       MAX(m.median_ms) AS median_ms_to_pay
FROM grouped g
LEFT JOIN medians m ON m.producer_id = g.producer_id
                   AND m.affiliate_code IS NOT DISTINCT FROM g.affiliate_code
GROUP BY g.producer_id, g.affiliate_code
ORDER BY g.producer_id, g.affiliate_code IS NULL, g.affiliate_code

-- name: events_count
SELECT COUNT(*) FROM events
