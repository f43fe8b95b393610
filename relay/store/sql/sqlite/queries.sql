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
                        created_at_ms, updated_at_ms, notification)
VALUES (:event_id, :kind, :producer_id, :affiliate_code, :destination_key, :channel,
        :event_name, :status, :reason, :message_id, :next_attempt_at_ms, :now_ms, :now_ms,
        :notification);

-- name: queue_destinations
-- A pending row was inserted: its destination's bound in destination_queue moves earlier
-- if the row is due before it (migration 8: the update trigger covers every other way a
-- row becomes claimable). Run by every write that inserts deliveries.
INSERT INTO destination_queue (key, next_due_ms) VALUES (:key, :due_ms)
ON CONFLICT (key) DO UPDATE SET next_due_ms = excluded.next_due_ms
WHERE excluded.next_due_ms < destination_queue.next_due_ms;

-- name: skip_disabled_due
-- A row in flight is left to its holder, whose outcome write settles it. An alert is
-- keyed by the disabled destination it is about, and must still go to its producer.
-- Each disabled destination's due range of deliveries_pending_by_destination is read, not
-- the backlog; what stays there once the rest is skipped are its alerts and rows in flight.
UPDATE deliveries
SET status = 'skipped', next_attempt_at_ms = NULL, lease_until_ms = NULL, lease_token = NULL,
    lease_owner = NULL, updated_at_ms = :now_ms,
    reason = 'destination disabled: ' || (SELECT disabled_reason FROM destinations
                                          WHERE key = deliveries.destination_key)
WHERE id IN (
    -- CROSS JOIN: SQLite keeps this order, the few destinations outside, each one's range
    -- inside (the other order reads every pending row).
    SELECT d.id FROM destinations k
    CROSS JOIN deliveries d INDEXED BY deliveries_pending_by_destination
    WHERE d.destination_key = k.key AND k.enabled = 0 AND d.status = 'pending' AND d.next_attempt_at_ms <= :now_ms
      AND d.kind != 'alert'
      AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= :now_ms)
      AND d.id NOT IN (SELECT value FROM json_each(:exclude_ids))
)
RETURNING channel;

-- Claims (issue 10) -----------------------------------------------------------------------
-- A claim never reads the backlog: it reads the due rows of destination_queue (migration
-- 8 says what that table promises), then the head of each chosen destination's own range
-- of deliveries_pending_by_destination. What it reads is bounded by the claim's `limit`,
-- the caller's rows in flight and the leases that ran out, whatever waits behind them.
-- The steps, in one transaction (the Postgres twin: the same statements, the head read
-- FOR UPDATE SKIP LOCKED, or one statement with a LATERAL join per destination):
--   1. expired_leases_due: destinations holding a row whose lease ran out are due again.
--   2. held_by_destination: how many rows each destination has in the caller's hands.
--   3. due_destinations: the due destinations, earliest bound first; the caller drops the
--      full ones and visits those with the fewest held first (sqlite_claim.fair_share).
--   4. destination_head, per destination visited: its first claimable rows, oldest first,
--      one more than it may take, so the bound can be moved to the first row not taken
--      (set_destination_due), or the queue row dropped when nothing is left
--      (drop_destination_due).
--   5. lease_rows: one token for every row taken.

-- name: expired_leases_due
-- A lease that ran out makes its row claimable without any write: tell the queue.
-- Normally empty (a holder outlives its lease only by crashing): the head of
-- deliveries_leased up to now, plus the caller's own rows past their lease, which stay
-- excluded. Writes only when a bound moves earlier.
INSERT INTO destination_queue (key, next_due_ms)
SELECT destination_key, MIN(next_attempt_at_ms) FROM deliveries INDEXED BY deliveries_leased
WHERE status = 'pending' AND lease_until_ms IS NOT NULL AND lease_until_ms <= :now_ms
  AND destination_key IS NOT NULL AND next_attempt_at_ms IS NOT NULL
  AND id NOT IN (SELECT value FROM json_each(:exclude_ids))
GROUP BY destination_key
ON CONFLICT (key) DO UPDATE SET next_due_ms = excluded.next_due_ms
WHERE excluded.next_due_ms < destination_queue.next_due_ms;

-- name: held_by_destination
-- The caller's rows in flight count against their destination's slots: primary-key reads.
-- `loose_due_ms`: the earliest of them already out of its lease (pending, unleased or
-- lease run out) while still in the caller's hands. That is every retry between its
-- outcome write and the moment the caller forgets the attempt: the claim must not move
-- its destination's bound past it (it is claimable as soon as it is no longer excluded).
SELECT destination_key, COUNT(*) AS held,
       MIN(CASE WHEN status = 'pending'
                 AND (lease_until_ms IS NULL OR lease_until_ms <= :now_ms)
                THEN next_attempt_at_ms END) AS loose_due_ms
FROM deliveries
WHERE id IN (SELECT value FROM json_each(:exclude_ids)) AND destination_key IS NOT NULL
GROUP BY destination_key;

-- name: due_destinations
-- The earliest due bounds first. `limit` is the claim's limit plus the number of
-- destinations the caller holds rows of: however many of those are full, the destinations
-- with nothing held that deserve a slot are among them.
SELECT key, next_due_ms FROM destination_queue INDEXED BY destination_queue_by_due
WHERE next_due_ms <= :now_ms
ORDER BY next_due_ms, key
LIMIT :limit;

-- name: destination_head
-- One destination's first claimable rows: pending, not under a live lease, not in the
-- caller's hands, oldest first (ids break ties, as the index stores them). Rows in flight
-- sit at the head of the range and are stepped over: at most the dispatchers' concurrency.
SELECT id, next_attempt_at_ms FROM deliveries INDEXED BY deliveries_pending_by_destination
WHERE destination_key = :key AND status = 'pending' AND next_attempt_at_ms IS NOT NULL
  AND (lease_until_ms IS NULL OR lease_until_ms <= :now_ms)
  AND id NOT IN (SELECT value FROM json_each(:exclude_ids))
ORDER BY next_attempt_at_ms, id
LIMIT :limit;

-- name: due_among_ids
-- A CLI burst claims among a few named rows: read by primary key, never the queue.
SELECT id, destination_key, next_attempt_at_ms FROM deliveries
WHERE id IN (SELECT value FROM json_each(:only_ids)) AND status = 'pending'
  AND next_attempt_at_ms <= :now_ms
  AND (lease_until_ms IS NULL OR lease_until_ms <= :now_ms)
  AND id NOT IN (SELECT value FROM json_each(:exclude_ids))
ORDER BY next_attempt_at_ms, id;

-- name: set_destination_due
UPDATE destination_queue SET next_due_ms = :next_due_ms WHERE key = :key;

-- name: drop_destination_due
DELETE FROM destination_queue WHERE key = :key;

-- name: lease_rows
-- Every row leased by one claim carries its token: the fence its outcome write names.
UPDATE deliveries
SET lease_until_ms = :lease_until_ms, lease_token = :lease_token, lease_owner = :lease_owner,
    updated_at_ms = :now_ms
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: claimed_rows
-- Read back as text, checked in Python: a row whose kind, channel or payload cannot be
-- read is failed inside the claim instead of killing it.
SELECT d.id, d.kind, d.producer_id, d.affiliate_code, d.destination_key, d.channel,
       d.event_name, d.message_id, d.attempts, d.replayed_after, d.lease_token,
       e.hotmart_id, json_valid(e.payload_json) AS payload_is_json, e.payload_json,
       d.notification
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.id IN (SELECT value FROM json_each(:ids))
ORDER BY d.next_attempt_at_ms, d.id;

-- name: fail_unreadable
UPDATE deliveries
SET status = 'failed', reason = :reason, last_error = :reason, next_attempt_at_ms = NULL,
    lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms
WHERE id = :id;

-- name: release_leases
-- At a serve start: what an earlier serve held (the single-instance lock says it is dead).
-- Rows leased before leases had owners count as a serve's.
UPDATE deliveries SET lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL
WHERE status = 'pending' AND lease_until_ms IS NOT NULL
  AND (lease_owner = :owner OR lease_owner IS NULL);

-- name: next_due
-- When the next pending row could be claimable: the earliest bound of destination_queue
-- (which counts every unleased pending row), or the first lease to run out (a leased row
-- is always due before its lease ends). Two index heads, never the backlog.
SELECT MIN(due) FROM (
    SELECT MIN(next_due_ms) AS due FROM destination_queue
    UNION ALL
    SELECT MIN(lease_until_ms) FROM deliveries INDEXED BY deliveries_leased
    WHERE status = 'pending' AND lease_until_ms IS NOT NULL
);

-- name: next_due_of_ids
-- The same, among a few named rows (a CLI burst waits only for its own).
SELECT MIN(CASE WHEN lease_until_ms > next_attempt_at_ms THEN lease_until_ms
                ELSE next_attempt_at_ms END)
FROM deliveries
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'pending';

-- name: insert_attempt
INSERT INTO attempts (delivery_id, attempt_no, started_at_ms, latency_ms, outcome, status_code,
                      response_excerpt, response_headers, request_payload, detail)
VALUES (:delivery_id, :attempt_no, :started_at_ms, :latency_ms, :outcome, :status_code,
        :response_excerpt, :response_headers, :request_payload, :detail);

-- name: resolve_delivery
-- Applies only while the row holds the writer's lease token: the fence.
UPDATE deliveries
SET status = :status, attempts = :attempt_no, next_attempt_at_ms = :next_attempt_at_ms,
    lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL, last_error = :last_error,
    updated_at_ms = :now_ms,
    reason = CASE WHEN :status = 'pending' THEN reason ELSE :reason END
WHERE id = :delivery_id AND status = 'pending' AND lease_token = :lease_token;

-- name: resolve_without_attempt
UPDATE deliveries
SET status = :status, reason = :reason, next_attempt_at_ms = NULL, lease_until_ms = NULL,
    lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms
WHERE id = :id AND status = 'pending' AND lease_token = :lease_token;

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
       d.next_attempt_at_ms, d.last_error, d.created_at_ms, d.updated_at_ms,
       d.event_id AS event_row_id, e.payload_json, d.notification,
       (SELECT a.status_code FROM attempts a WHERE a.delivery_id = d.id
        ORDER BY a.attempt_no DESC, a.id DESC LIMIT 1) AS last_status_code
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.id = :id;

-- name: attempts_of
SELECT attempt_no, started_at_ms, latency_ms, outcome, status_code, response_excerpt,
       response_headers, request_payload, detail
FROM attempts WHERE delivery_id = :id ORDER BY attempt_no, id;

-- name: requeue
-- A replay starts a fresh retry schedule; attempt numbers keep counting. A row in flight
-- (its lease live) is refused: its holder is sending it right now. So is a row whose
-- event was purged: it no longer holds the buyer and slip data a send needs.
UPDATE deliveries
SET status = 'pending', next_attempt_at_ms = :now_ms, lease_until_ms = NULL,
    lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms,
    replayed_after = attempts
WHERE id IN (SELECT value FROM json_each(:ids))
  AND destination_key IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = deliveries.event_id
                  AND e.scrubbed_at_ms IS NOT NULL)
  AND (lease_until_ms IS NULL OR lease_until_ms <= :now_ms)
  AND (status IN ('failed', 'delivered', 'pending')
       -- only a runtime disabling is undone by replay; decide's skips stay skipped
       OR (status = 'skipped' AND reason LIKE 'destination disabled:%'))
RETURNING id;

-- name: leased
SELECT id FROM deliveries
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'pending'
  AND lease_until_ms > :now_ms
ORDER BY id;

-- name: mark_unrecordable
-- An outcome that could not be written: fail the row (if still ours) so it is not
-- claimed again forever.
UPDATE deliveries
SET status = 'failed', reason = :reason, last_error = :reason, next_attempt_at_ms = NULL,
    lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms
WHERE id = :id AND status = 'pending' AND lease_token = :lease_token;

-- name: write_probe
INSERT INTO write_probe (id, written_at_ms) VALUES (1, :now_ms)
ON CONFLICT (id) DO UPDATE SET written_at_ms = excluded.written_at_ms;

-- name: delivery_ids_of_event
SELECT id FROM deliveries WHERE event_id = :event_id ORDER BY id;

-- name: failed_since
-- Failures that can still be replayed: not those whose event was purged (see requeue).
SELECT id FROM deliveries
WHERE status = 'failed' AND (:since_ms IS NULL OR created_at_ms >= :since_ms)
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = deliveries.event_id
                  AND e.scrubbed_at_ms IS NOT NULL)
ORDER BY id;

-- name: count_by_status
SELECT status, COUNT(*) AS deliveries FROM deliveries GROUP BY status;

-- name: pending_count
-- For /metrics. The rows of the partial index deliveries_due are the pending ones, so the
-- count walks that small index and nothing else: its cost is the backlog's, not history's.
SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_due WHERE status = 'pending';

-- name: earliest_due
-- For /metrics: the head of deliveries_due, one index read. In-flight rows count: a row
-- being sent has not been delivered yet, and one held back by a full destination waits.
SELECT MIN(next_attempt_at_ms) FROM deliveries INDEXED BY deliveries_due
WHERE status = 'pending';

-- name: destinations_disabled
-- For /metrics: the destinations table holds one row per destination ever attempted,
-- tens or hundreds, so a scan of it is cheap.
SELECT COUNT(*) FROM destinations WHERE enabled = 0;

-- name: settled_since_replay
-- Rows whose outcome is known since they were last queued: no longer pending, or with an
-- attempt made after the replay (then a retry may be scheduled). A CLI waits on these.
SELECT id FROM deliveries
WHERE id IN (SELECT value FROM json_each(:ids))
  AND (status != 'pending' OR attempts > replayed_after)
ORDER BY id;

-- name: step_done
SELECT 1 FROM one_time_steps WHERE name = :name;

-- name: mark_step_done
INSERT INTO one_time_steps (name, done_at_ms, detail) VALUES (:name, :now_ms, :detail);

-- name: rekey_deliveries
-- A positional key becomes the destination's id key, on its deliveries and its alerts.
UPDATE deliveries SET destination_key = :new WHERE destination_key = :old;

-- name: rekey_alerts
-- What an alert is about (relay/alerts.py: DestinationDisabled) follows its destination.
UPDATE events SET payload_json = json_set(payload_json, '$.destination_key', :new)
WHERE source = 'relay' AND event_name = 'DESTINATION_DISABLED' AND json_valid(payload_json)
  AND json_extract(payload_json, '$.destination_key') = :old;

-- name: rekey_destinations
UPDATE destinations SET key = :new WHERE key = :old;

-- name: stored_keys
-- Every destination key the store holds, for the rekey to name those left unmapped.
SELECT DISTINCT destination_key FROM deliveries WHERE destination_key IS NOT NULL
UNION SELECT key FROM destinations;

-- name: withheld_rows
-- Withheld notifications, newest first, a page at a time (keyset: ids below :before_id,
-- so rows a regrant adds meanwhile are never read back), with their stored event and
-- every destination that event already has a row for, for this affiliate (so deciding
-- again never adds a second row for one destination).
SELECT d.id, d.event_id AS event_row_id, d.producer_id, d.affiliate_code, d.destination_key,
       e.payload_json,
       (SELECT json_group_array(o.destination_key) FROM deliveries o
        WHERE o.event_id = d.event_id AND o.affiliate_code = d.affiliate_code
          AND o.kind = 'notification' AND o.destination_key IS NOT NULL) AS event_keys
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.status = 'withheld' AND d.kind = 'notification'
  -- A reminder or follow-up withheld when it fell due is not sent late: it had its moment.
  AND (d.notification IS NULL OR d.notification IN ('slip', 'event'))
  AND (:before_id IS NULL OR d.id < :before_id)
  AND (:ids IS NULL OR d.id IN (SELECT value FROM json_each(:ids)))
  AND (:since_ms IS NULL OR d.created_at_ms >= :since_ms)
  AND (:affiliate_code IS NULL OR d.affiliate_code = :affiliate_code)
ORDER BY d.id DESC
LIMIT :limit;

-- name: regrant
-- A withheld row decided again: due now with a fresh schedule, as a replay makes it, or
-- still withheld with its new reason. Only while it is still withheld.
UPDATE deliveries
SET status = :status, reason = :reason, channel = COALESCE(:channel, channel),
    next_attempt_at_ms = CASE WHEN :status = 'pending' THEN :now_ms END,
    replayed_after = attempts, lease_until_ms = NULL, lease_token = NULL, lease_owner = NULL,
    updated_at_ms = :now_ms
WHERE id = :id AND status = 'withheld'
RETURNING id;

-- name: still_withheld
SELECT id FROM deliveries
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'withheld'
ORDER BY id;

-- name: insert_redecided
-- A new row of an old event, unless that event already has one for this destination.
INSERT INTO deliveries (event_id, kind, producer_id, affiliate_code, destination_key, channel,
                        event_name, status, reason, message_id, next_attempt_at_ms,
                        created_at_ms, updated_at_ms, notification)
SELECT e.id, :kind, e.producer_id, :affiliate_code, :destination_key, :channel, e.event_name,
       :status, :reason, :message_id, :next_attempt_at_ms, :now_ms, :now_ms, :notification
FROM events e
WHERE e.id = :event_id
  AND NOT EXISTS (SELECT 1 FROM deliveries o
                  WHERE o.event_id = e.id AND o.destination_key = :destination_key
                    AND o.kind = :kind)
RETURNING id;

-- name: supersede
UPDATE deliveries SET status = 'superseded', reason = :reason, updated_at_ms = :now_ms
WHERE id = :id AND status = 'withheld';

-- name: scrub_candidates
-- Events received before :before_ms that still hold buyer data and have no delivery left
-- to send, in (received_at_ms, id) order after the last one seen: an event kept back by a
-- pending delivery is passed over, and the next batch starts after it. The relay's own
-- events (source 'relay': producer alerts) hold no buyer data, and their payload is not a
-- Hotmart event: they are never scrubbed.
SELECT e.id, e.received_at_ms, e.hotmart_id, e.event_name, e.payload_json
FROM events e INDEXED BY events_unscrubbed
WHERE e.scrubbed_at_ms IS NULL AND e.received_at_ms < :before_ms AND e.source != 'relay'
  AND (e.received_at_ms, e.id) > (:after_ms, :after_id)
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
ORDER BY e.received_at_ms, e.id
LIMIT :limit;

-- name: scrub_event
-- Checked again here, in the writing transaction: a replay may have queued one of its
-- deliveries since the candidates were read, and that delivery needs the data.
UPDATE events SET payload_json = :payload_json, scrubbed_at_ms = :now_ms
WHERE id = :id AND scrubbed_at_ms IS NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id
                  AND d.status = 'pending');

-- name: scrub_attempts_of_event
-- What was sent, and what came back (a receiver may echo the payload, in its body or its
-- headers). Outcome, status code, latency, times and the reason stay.
UPDATE attempts SET request_payload = '', response_excerpt = '', response_headers = '{}'
WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = :id);

-- Sale recovery (issue 11) ---------------------------------------------------------------

-- name: settling_event
-- The first event that settled a purchase (paid, canceled, expired, refunded): after it,
-- none of the transaction's reminders is due. Through events_by_transaction.
SELECT event_name FROM events
WHERE producer_id = :producer_id AND transaction_code = :transaction_code
  AND event_name IN (SELECT value FROM json_each(:settling))
ORDER BY id
LIMIT 1;

-- name: cancel_reminders
-- A purchase settled: the reminders of its transaction still waiting are not needed. One
-- in flight is left to its attempt, which looks for the settling event before it sends.
UPDATE deliveries
SET status = 'cancelled', reason = :reason, next_attempt_at_ms = NULL, lease_until_ms = NULL,
    lease_token = NULL, lease_owner = NULL, updated_at_ms = :now_ms
WHERE id IN (
    -- From the transaction's few events to their rows, not from every pending row.
    SELECT d.id FROM events e JOIN deliveries d INDEXED BY deliveries_by_event
        ON d.event_id = e.id
    WHERE e.producer_id = :producer_id AND e.transaction_code = :transaction_code
      AND d.notification = 'reminder' AND d.status = 'pending'
      AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= :now_ms)
);

-- name: transaction_notices
-- The slip, paid and expired notices of one transaction and where they went, oldest first.
SELECT d.id, d.affiliate_code, d.destination_key, d.channel, d.notification, d.status,
       d.attempts
FROM events e JOIN deliveries d ON d.event_id = e.id
WHERE e.producer_id = :producer_id AND e.transaction_code = :transaction_code
  AND d.kind = 'notification' AND d.destination_key IS NOT NULL
  AND d.notification IN ('slip', 'paid', 'expired')
ORDER BY d.id;

-- name: recovery_figures
-- For each affiliate of each producer, and for each producer as a whole (affiliate NULL):
-- the slips notified since :since_ms (delivered, or sent at least once), counted once per
-- transaction from when the relay first heard of it; how many were paid, how many expired
-- unpaid; and the median time from the slip to its payment. The slips come from the
-- partial index deliveries_slip_notices (INDEXED BY: should it ever not serve, this fails
-- loudly instead of reading the whole history); each outcome is a look-up in
-- events_by_transaction. The median is the middle row (or the mean of the middle two).
WITH slips AS (
    SELECT d.producer_id, d.affiliate_code, e.transaction_code,
           MIN(e.received_at_ms) AS slip_at_ms
    FROM deliveries d INDEXED BY deliveries_slip_notices JOIN events e ON e.id = d.event_id
    WHERE d.notification = 'slip' AND d.kind = 'notification'
      AND d.created_at_ms >= :since_ms
      AND (d.status = 'delivered' OR d.attempts > 0)
      AND e.transaction_code != ''
      AND (:producer_id IS NULL OR d.producer_id = :producer_id)
      AND (:affiliate_code IS NULL OR d.affiliate_code = :affiliate_code)
    GROUP BY d.producer_id, d.affiliate_code, e.transaction_code
),
outcomes AS (
    SELECT s.producer_id, s.affiliate_code, s.slip_at_ms,
           (SELECT MIN(p.received_at_ms) FROM events p
            WHERE p.producer_id = s.producer_id AND p.transaction_code = s.transaction_code
              AND p.event_name IN (SELECT value FROM json_each(:paid_events))) AS paid_at_ms,
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
    SELECT producer_id, affiliate_code, MAX(paid_at_ms - slip_at_ms, 0) AS to_pay_ms,
           ROW_NUMBER() OVER (PARTITION BY producer_id, affiliate_code
                              ORDER BY MAX(paid_at_ms - slip_at_ms, 0)) AS nth,
           COUNT(*) OVER (PARTITION BY producer_id, affiliate_code) AS paid
    FROM grouped
    WHERE paid_at_ms IS NOT NULL
),
medians AS (
    SELECT producer_id, affiliate_code, AVG(to_pay_ms) AS median_ms
    FROM ranked
    WHERE nth IN ((paid + 1) / 2, (paid + 2) / 2)
    GROUP BY producer_id, affiliate_code
)
SELECT g.producer_id, g.affiliate_code, COUNT(*) AS notified,
       COUNT(g.paid_at_ms) AS paid,
       SUM(g.expired AND g.paid_at_ms IS NULL) AS expired,
       MAX(m.median_ms) AS median_ms_to_pay
FROM grouped g
LEFT JOIN medians m ON m.producer_id = g.producer_id
                   AND m.affiliate_code IS g.affiliate_code
GROUP BY g.producer_id, g.affiliate_code
ORDER BY g.producer_id, g.affiliate_code IS NULL, g.affiliate_code;
